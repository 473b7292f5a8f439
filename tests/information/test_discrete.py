import math

import numpy as np
import pytest

from tfinfo.information import bin_activations
from tfinfo.information import binned_mutual_information
from tfinfo.information import conditional_entropy
from tfinfo.information import discrete_entropy
from tfinfo.information import discrete_mutual_information

LN2 = math.log(2.0)


def _h(*p):
    """Entropy of a probability vector written out by hand (nats)."""
    return -sum(q * math.log(q) for q in p if q > 0)


# ---- exact H[Y | Z] and I[Y; Z] -------------------------------------------------------


def test_y_equal_z_has_no_conditional_entropy():
    y = np.array([0, 0, 1, 2])
    assert discrete_entropy(y) == pytest.approx(1.5 * LN2, rel=1e-14)  # p = (1/2, 1/4, 1/4)
    assert conditional_entropy(y, y) == 0.0
    assert discrete_mutual_information(y, y) == pytest.approx(1.5 * LN2, rel=1e-14)
    # A relabelled copy (a bijection) carries the same information.
    assert conditional_entropy(y, 10 - 3 * y) == 0.0


def test_independent_variables_have_conditional_entropy_h_y():
    # Every (y, z) pair of a 3 x 4 grid exactly once (y uniform on 3, z uniform on 4).
    y = np.repeat(np.arange(3), 4)
    z = np.tile(np.arange(4), 3)
    assert conditional_entropy(y, z) == pytest.approx(math.log(3), rel=1e-14)
    assert conditional_entropy(z, y) == pytest.approx(math.log(4), rel=1e-14)
    assert discrete_mutual_information(y, z) == pytest.approx(0.0, abs=1e-14)


def test_small_table_matches_the_hand_computation():
    # Joint counts (rows y, columns z): [[2, 1], [0, 1]], N = 4.
    # p(z) = (1/2, 1/2); p(y | z=0) = (1, 0), p(y | z=1) = (1/2, 1/2).
    y = np.array([0, 0, 0, 1])
    z = np.array([0, 0, 1, 1])
    assert conditional_entropy(y, z) == pytest.approx(0.5 * LN2, rel=1e-14)
    assert discrete_mutual_information(y, z) == pytest.approx(_h(0.75, 0.25) - 0.5 * LN2, rel=1e-13)
    # H[Z | Y]: p(y) = (3/4, 1/4); p(z | y=0) = (2/3, 1/3), p(z | y=1) = (0, 1).
    assert conditional_entropy(z, y) == pytest.approx(0.75 * _h(2 / 3, 1 / 3), rel=1e-14)
    # Symmetry of the mutual information.
    assert discrete_mutual_information(z, y) == pytest.approx(discrete_mutual_information(y, z), rel=1e-14)


def test_z_a_function_of_y_keeps_half_of_it():
    y = np.arange(8) % 4  # uniform on 4 classes
    z = y // 2  # merges pairs of classes
    assert conditional_entropy(y, z) == pytest.approx(LN2, rel=1e-14)
    assert conditional_entropy(z, y) == 0.0
    assert discrete_mutual_information(y, z) == pytest.approx(LN2, rel=1e-14)


def test_stochastic_categorical_encoder_as_in_section_5_4():
    # Two samples, labels 0 and 1; p(z | x_1) = (1, 0), p(z | x_2) = (1/2, 1/2).
    # p(y, z) = [[1/2, 0], [1/4, 1/4]]: p(z) = (3/4, 1/4), p(y | z=0) = (2/3, 1/3), p(y | z=1) = (0, 1).
    y = np.array([0, 1])
    z = np.array([[1.0, 0.0], [0.5, 0.5]])
    expected = 0.75 * (math.log(3) - (2 / 3) * LN2)  # 0.75 * H(2/3, 1/3)
    assert conditional_entropy(y, z) == pytest.approx(expected, rel=1e-14)
    assert discrete_mutual_information(y, z) == pytest.approx(LN2 - expected, rel=1e-13)
    # Soft labels given as one-hot rows give the same numbers.
    assert conditional_entropy(np.eye(2)[y], z) == pytest.approx(expected, rel=1e-14)
    assert discrete_entropy(z) == pytest.approx(_h(0.75, 0.25), rel=1e-14)


def test_one_hot_rows_equal_symbols_and_integer_rows_are_vector_symbols():
    y = np.array([0, 1, 1, 2, 2, 2])
    z = np.array([1, 0, 0, 1, 2, 2])
    expected = conditional_entropy(y, z)
    assert conditional_entropy(y, np.eye(3)[z]) == pytest.approx(expected, rel=1e-14)  # float rows
    assert conditional_entropy(y, np.eye(3, dtype=int)[z]) == pytest.approx(expected, rel=1e-14)  # int rows
    assert conditional_entropy(y[:, None].astype(float), z) == expected  # an (N, 1) float column is symbols
    codes = np.array([[0, 1], [0, 1], [1, 1], [0, 1], [1, 0], [1, 0]])  # 3 distinct vectors
    assert discrete_entropy(codes) == pytest.approx(_h(0.5, 1 / 6, 1 / 3), rel=1e-14)


# ---- binning estimator ----------------------------------------------------------------


def test_equal_width_bins_by_hand():
    t = np.array([0.0, 0.24, 0.26, 0.74, 0.76, 1.0])
    # 4 bins of width 1/4 over [0, 1]; the maximum falls in the last bin.
    np.testing.assert_array_equal(bin_activations(t[:, None], num_bins=4).ravel(), [0, 0, 1, 2, 3, 3])
    x = np.arange(6.0)  # distinct inputs: I(X; T) = H(T), T ~ (2, 1, 1, 2) / 6
    assert binned_mutual_information(x, t[:, None], num_bins=4) == pytest.approx(_h(1 / 3, 1 / 6, 1 / 6, 1 / 3), rel=1e-13)
    # Labels whose bins do not overlap: I(Y; T) = H(Y) = ln 2.
    y = np.array([0, 0, 0, 1, 1, 1])
    assert binned_mutual_information(y, t[:, None], num_bins=4) == pytest.approx(LN2, rel=1e-13)
    # One bin holds both classes equally: T | Y independent of Y -> 0.
    y_mixed = np.array([0, 1, 0, 1])
    t_mixed = np.array([0.0, 0.1, 0.9, 1.0])  # bins 0, 0, 1, 1: each class once in each bin
    assert binned_mutual_information(y_mixed, t_mixed[:, None], num_bins=2) == pytest.approx(0.0, abs=1e-14)


def test_fine_bins_on_distinct_values_give_log_n_and_one_bin_gives_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5))  # 64 distinct inputs
    t = np.tanh(x @ rng.normal(size=(5, 3)))
    assert binned_mutual_information(x, t, num_bins=100_000) == pytest.approx(math.log(64), rel=1e-13)
    assert binned_mutual_information(x, t, num_bins=1) == 0.0
    assert 0.0 < binned_mutual_information(x, t, num_bins=4) < math.log(64)


def test_labels_known_answer_with_many_samples():
    # Y uniform on 4 classes, one activation that places class k in [k, k + 0.5]:
    # with 8 bins over [0, 3.5] the classes never share a bin, so I(Y; T) = ln 4.
    rng = np.random.default_rng(1)
    y = np.arange(400) % 4
    t = y + rng.uniform(0, 0.5, size=400)
    t[:4] = np.arange(4)  # pin the range to [0, 3.5]
    t[4:8] = np.arange(4) + 0.5
    assert binned_mutual_information(y, t[:, None], num_bins=7) == pytest.approx(math.log(4), rel=1e-13)


def test_bin_range_options():
    a = np.array([[0.0, 0.0], [0.4, 40.0], [0.6, 60.0], [1.0, 100.0]])
    np.testing.assert_array_equal(bin_activations(a, num_bins=2, bin_range="unit"), [[0, 0], [0, 0], [1, 1], [1, 1]])
    # One range for the layer, [0, 100]: the first unit falls entirely in bin 0.
    np.testing.assert_array_equal(bin_activations(a, num_bins=2, bin_range="layer"), [[0, 0], [0, 0], [0, 1], [0, 1]])
    # A fixed range; values outside it are clipped to the end bins.
    np.testing.assert_array_equal(
        bin_activations(np.array([[-5.0], [-0.5], [0.5], [5.0]]), num_bins=2, bin_range=(-1, 1)).ravel(), [0, 0, 1, 1]
    )
    # A constant unit is one bin.
    np.testing.assert_array_equal(bin_activations(np.full((3, 1), 7.0), num_bins=5).ravel(), [0, 0, 0])


# ---- argument checking ----------------------------------------------------------------


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"Expected `num_bins` to be an integer >= 1\. Received: num_bins=0"):
        binned_mutual_information(np.arange(3), np.zeros((3, 1)), num_bins=0)
    with pytest.raises(ValueError, match=r"Expected `bin_range` to be one of \('unit', 'layer'\) or a \(low, high\) pair\. Received: bin_range='global'"):
        binned_mutual_information(np.arange(3), np.zeros((3, 1)), bin_range="global")
    with pytest.raises(ValueError, match=r"Expected a finite `bin_range` with low < high\. Received: bin_range=\(1, 1\)"):
        bin_activations(np.zeros((3, 1)), bin_range=(1, 1))
    with pytest.raises(ValueError, match=r"Expected `x_or_labels` and `activations` with the same number of samples\. Received: 3 and 4"):
        binned_mutual_information(np.arange(3), np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"Expected `y` and `z` with the same number of samples\. Received: 3 and 2"):
        conditional_entropy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"Expected a floating \(N, C\) `z` to hold probability rows .* Received: z with row sums"):
        conditional_entropy([0, 1], np.array([[0.5, 0.2], [0.3, 0.7]]))
    with pytest.raises(ValueError, match=r"Expected `z` to contain only finite values\. Received: z with 1 NaN"):
        discrete_mutual_information([0, 1], [0.0, np.nan])
    with pytest.raises(ValueError, match=r"Expected `x` to have a samples axis \(axis 0\)\. Received: x.shape=\(\)"):
        discrete_entropy(3)


# ---- which range: rescaling one unit (Shwartz-Ziv & Tishby: fixed bins; Saxe et al.: fixed width) ----


def test_rescaling_one_unit_changes_fixed_and_layer_bins_but_not_per_unit_bins():
    rng = np.random.default_rng(0)
    t = np.tanh(rng.normal(size=(500, 3)))
    scaled = t * np.array([100.0, 1.0, 1.0])
    x, y = np.arange(500), (t[:, 0] > 0).astype(int)
    for target in (x, y):
        # Per unit (the default here): each unit cut at its own [min, max], so a positive
        # rescaling of one unit moves its bin edges with it; the bins are the same.
        unscaled = binned_mutual_information(target, t, num_bins=10)
        assert binned_mutual_information(target, scaled, num_bins=10) == unscaled
    # Fixed bins on [-1, 1] (Shwartz-Ziv & Tishby): unit 0 now lands in the end bins.
    fixed = [binned_mutual_information(x, a, num_bins=10, bin_range=(-1, 1)) for a in (t, scaled)]
    # One range for the layer: unit 0 takes it all, the other two fall into 1 bin or so.
    layer = [binned_mutual_information(x, a, num_bins=10, bin_range="layer") for a in (t, scaled)]
    # Fixed width (Saxe et al.'s code): unit 0 now spans 1000 bins of width 0.2.
    width = [binned_mutual_information(x, a, bin_width=0.2) for a in (t, scaled)]
    for before, after in (fixed, layer, width):
        assert abs(before - after) > 0.3
    # By hand: on the tanh range, fixed bins on [-1, 1] are the per-layer bins of a layer
    # whose values reach -1 and 1.
    pinned = np.vstack([t, -np.ones((1, 3)), np.ones((1, 3))])
    np.testing.assert_array_equal(bin_activations(pinned, num_bins=10, bin_range=(-1, 1)),
                                  bin_activations(pinned, num_bins=10, bin_range="layer"))


def test_fixed_bin_width_is_floor_of_t_over_w():
    t = np.array([[-0.51, 0.0], [-0.49, 0.49], [0.5, 1.2], [2.6, -3.0]])
    np.testing.assert_array_equal(bin_activations(t, bin_width=0.5), [[-2, 0], [-1, 0], [1, 2], [5, -6]])
    # num_bins and bin_range are not used with a width.
    np.testing.assert_array_equal(bin_activations(t, num_bins=2, bin_range=(0, 1), bin_width=0.5),
                                  bin_activations(t, bin_width=0.5))
    # Distinct bins for all four rows: H = ln 4; the labels split by bin of unit 0: ln 2.
    assert binned_mutual_information(np.arange(4), t, bin_width=0.5) == pytest.approx(math.log(4), rel=1e-13)
    for bad in (0.0, -1.0, float("nan"), "wide", True):
        with pytest.raises(ValueError, match=r"Expected `bin_width` to be None or a finite number > 0\. Received"):
            bin_activations(t, bin_width=bad)
