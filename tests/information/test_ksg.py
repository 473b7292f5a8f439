import numpy as np
import pytest
from scipy import special

from tfinfo.information.ksg import ksg_mutual_information


def _correlated_gaussians(n, rho, dim, seed):
    """`dim` independent pairs of standard normals, pair i with correlation `rho`.

    Returns `(x, z, true_mi)` with `true_mi = -dim / 2 * log(1 - rho^2)` nats.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    z = rho * x + np.sqrt(1.0 - rho**2) * rng.normal(size=(n, dim))
    return x, z, -0.5 * dim * np.log(1.0 - rho**2)


def _brute_force_ksg(x, z, k):
    """Independent reference: full pairwise max-norm distances, sorted, and digamma."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    n = len(x)
    dx = np.abs(x[:, None, :] - x[None, :, :]).max(axis=-1)
    dz = np.abs(z[:, None, :] - z[None, :, :]).max(axis=-1)
    np.fill_diagonal(dx, np.inf)
    np.fill_diagonal(dz, np.inf)
    eps = np.sort(np.maximum(dx, dz), axis=1)[:, k - 1]
    n_x = np.sum(dx < eps[:, None], axis=1)
    n_z = np.sum(dz < eps[:, None], axis=1)
    return special.digamma(k) + special.digamma(n) - np.mean(
        special.digamma(n_x + 1) + special.digamma(n_z + 1)
    )


def test_correlated_two_dimensional_gaussians_are_within_a_tenth_of_a_nat():
    x, z, truth = _correlated_gaussians(2000, 0.8, dim=2, seed=0)
    np.testing.assert_allclose(truth, -np.log(1 - 0.64))  # 1.0217 nats
    estimate = ksg_mutual_information(x, z, k=3)
    assert isinstance(estimate, float)
    assert abs(estimate - truth) < 0.1, (estimate, truth)


def test_independent_variables_are_close_to_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 2))
    z = rng.uniform(size=(2000, 3))
    assert abs(ksg_mutual_information(x, z, k=3)) < 0.05


@pytest.mark.parametrize("k,seed", [(1, 0), (3, 1), (7, 2)])
def test_matches_brute_force(k, seed):
    x, z, _ = _correlated_gaussians(200, 0.6, dim=2, seed=seed)
    z = z[:, :1] * [[1.0, 3.0, -0.5]]  # a different dimension and non-unit scales
    np.testing.assert_allclose(
        ksg_mutual_information(x, z, k=k), _brute_force_ksg(x, z, k), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("k", [2, 5])
def test_matches_brute_force_with_ties(k):
    # Quantized values: many marginal distances equal eps exactly, so the strict
    # inequality of the counts matters; joint duplicates stay fewer than k.
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(200, 1)), 1)
    z = np.round(x + rng.normal(size=(200, 1)), 1)
    joint = np.concatenate([x, z], axis=1)
    _, copies = np.unique(joint, axis=0, return_counts=True)
    assert 1 < copies.max() <= k
    np.testing.assert_allclose(
        ksg_mutual_information(x, z, k=k), _brute_force_ksg(x, z, k), rtol=0, atol=1e-10
    )


def test_symmetric_and_invariant_to_sample_order():
    x, z, _ = _correlated_gaussians(500, 0.7, dim=2, seed=4)
    estimate = ksg_mutual_information(x, z)
    # Exact: the joint distances are the same doubles and n_x, n_z only swap roles.
    assert ksg_mutual_information(z, x) == estimate
    order = np.random.default_rng(5).permutation(500)
    assert ksg_mutual_information(x[order], z[order]) == pytest.approx(estimate, rel=1e-12)


def test_increases_with_correlation():
    estimates = [
        ksg_mutual_information(*_correlated_gaussians(1000, rho, dim=1, seed=6)[:2])
        for rho in (0.3, 0.6, 0.9)
    ]
    assert estimates[0] < estimates[1] < estimates[2], estimates


def test_accepts_tensors_lists_and_trailing_shapes():
    import tensorflow as tf

    x, z, _ = _correlated_gaussians(100, 0.8, dim=4, seed=7)
    expected = ksg_mutual_information(x, z)
    assert ksg_mutual_information(x.reshape(100, 2, 2), z.reshape(100, 4, 1)) == expected
    assert ksg_mutual_information(tf.constant(x), tf.constant(z)) == expected
    assert ksg_mutual_information(x.tolist(), z) == expected
    # One-dimensional inputs are N scalar samples.
    assert ksg_mutual_information(x[:, 0], z[:, 0]) == ksg_mutual_information(
        x[:, :1], z[:, :1]
    )
    assert isinstance(ksg_mutual_information(x, z, k=np.int64(4)), float)


def test_too_many_duplicates_raise():
    x = np.arange(20.0)[:, None]
    z = np.arange(20.0)[:, None]
    x[:3] = 0.0
    z[:3] = 0.0  # sample 0 has two exact copies: fine for k=3, undefined for k=2
    ksg_mutual_information(x, z, k=3)
    with pytest.raises(ValueError, match="duplicates.*Add small noise"):
        ksg_mutual_information(x, z, k=2)


@pytest.mark.parametrize(
    "x,z,k,message",
    [
        (np.zeros((10, 2)), np.zeros((9, 2)), 3, "`x` and `z`.*same number.*Received: x.shape\\[0\\]=10, z.shape\\[0\\]=9"),
        (np.zeros((1, 2)), np.zeros((1, 2)), 3, "Expected at least 2.*Received: N=1"),
        (np.eye(10), np.eye(10), 0, "Expected `k`.*Received: k=0"),
        (np.eye(10), np.eye(10), 10, "Expected `k`.*N=10.*Received: k=10"),
        (np.eye(10), np.eye(10), 2.0, "Expected `k`.*Received: k=2.0"),
        (np.eye(10), np.eye(10), True, "Expected `k`.*Received: k=True"),
        (np.full((10, 2), np.nan), np.eye(10), 3, "Expected `x`.*finite.*Received: x with 20 "),
        (np.eye(10), np.where(np.eye(10) > 0, np.inf, 0.0), 3, "Expected `z`.*finite.*Received: z with 10 "),
        (np.float64(1.0), np.eye(10), 3, "Expected `x`.*samples axis.*Received: x.shape=\\(\\)"),
        (np.eye(10), np.zeros((10, 0)), 3, "Expected `z`.*at least one value.*Received: z.shape=\\(10, 0\\)"),
        (np.array(["a", "b"]), np.eye(2), 1, "Expected `x` to be a numeric array. Received: ndarray"),
    ],
    ids=["mismatched_n", "one_sample", "k_zero", "k_equal_n", "k_float", "k_bool", "x_nan", "z_inf",
         "x_scalar", "z_no_features", "x_strings"],
)
def test_invalid_arguments_raise_value_errors_naming_them(x, z, k, message):
    with pytest.raises(ValueError, match=message):
        ksg_mutual_information(x, z, k=k)


def _mixed_brute_force(y, z, k):
    """Ross (2014) by explicit distance matrices, float64."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    dist = np.max(np.abs(z[:, None, :] - z[None, :, :]), axis=-1)
    n = len(y)
    terms = []
    for i in range(n):
        same = np.flatnonzero((y == y[i]) & (np.arange(n) != i))
        d = np.sort(dist[i, same])[k - 1]
        m = np.sum(dist[i] < d)  # includes i itself
        terms.append(special.digamma(np.sum(y == y[i])) - special.digamma(k) + special.digamma(m))
    return special.digamma(n) - np.mean(terms)


def test_mixed_ksg_equals_brute_force_and_the_closed_form_of_a_gaussian_mixture():
    from scipy import integrate
    from scipy import stats

    from tfinfo.information.ksg import mixed_ksg_mutual_information

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    z = rng.normal(size=(300, 2)) + y[:, None]
    assert mixed_ksg_mutual_information(y, z, k=3) == pytest.approx(_mixed_brute_force(y, z, 3), abs=1e-12)

    # y uniform on {0, 1}, z | y ~ N(2y, 1): I = H(z) - 1/2 log(2 pi e), H(z) by quadrature.
    def density(t):
        return 0.5 * stats.norm.pdf(t) + 0.5 * stats.norm.pdf(t, loc=2.0)

    h_z, _ = integrate.quad(lambda t: -density(t) * np.log(density(t)), -12, 14)
    truth = h_z - 0.5 * np.log(2 * np.pi * np.e)
    y = np.repeat([0, 1], 3000)
    z = 2.0 * y[:, None] + np.random.default_rng(1).normal(size=(6000, 1))
    assert mixed_ksg_mutual_information(y, z, k=5) == pytest.approx(truth, abs=0.03)
    independent = np.random.default_rng(2).normal(size=(6000, 1))
    assert abs(mixed_ksg_mutual_information(y, independent, k=5)) < 0.02


def test_mixed_ksg_refuses_bad_input():
    from tfinfo.information.ksg import mixed_ksg_mutual_information

    z = np.random.default_rng(0).normal(size=(6, 1))
    for labels, z_in, k, match in (
        (np.zeros(6, np.float32), z, 3, "Expected `labels` to be a 1-D integer array"),
        (np.arange(5), z, 3, "Expected `labels` and `z` to have the same number of samples"),
        (np.arange(6), z, 3, "Expected at least one class with 2 or more samples"),
        (np.zeros(6, np.int64), z, 0, "Expected `k` to be an integer >= 1. Received: k=0"),
        (np.zeros(6, np.int64), np.zeros((6, 1)), 2, "zero k-th neighbour distance"),
    ):
        with pytest.raises(ValueError, match=match):
            mixed_ksg_mutual_information(labels, z_in, k=k)
