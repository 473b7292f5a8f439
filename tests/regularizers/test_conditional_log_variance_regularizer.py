import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.layers import ZERO_ENTROPY_VARIANCE
from tfinfo.regularizers import ConditionalLogVarianceRegularizer
from tfinfo.regularizers import LogVarianceRegularizer

TWO_PI_E = 2.0 * math.pi * math.e


def _reference(z, y, epsilon=1e-6, ddof=1):
    """E_y sum_i 1/2 ln(2 pi e (Var[Z_i | y] + eps)) in float64, over classes with >= 2 samples.

    A plain loop over the classes that occur, weighted by their counts, renormalized.
    """
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    y = np.asarray(y).ravel()
    terms, counts = [], []
    for c in np.unique(y):
        zc = z[y == c]
        if len(zc) < 2:
            continue
        terms.append(np.sum(0.5 * np.log(TWO_PI_E * (np.var(zc, axis=0, ddof=ddof) + epsilon))))
        counts.append(len(zc))
    if not counts:
        return 0.0
    return float(np.dot(np.asarray(counts) / np.sum(counts), terms))


def _batch(seed=0, n=48, units=5, num_classes=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=n)
    centers = rng.normal(scale=3.0, size=(num_classes, units))
    scales = rng.uniform(0.3, 2.0, size=(num_classes, units))
    z = centers[y] + scales[y] * rng.normal(size=(n, units))
    return z, y


@pytest.mark.parametrize("unbiased, ddof", [(True, 1), (False, 0)])
def test_matches_float64_reference_on_fixed_activations(unbiased, ddof):
    z, y = _batch()
    assert len(np.unique(y)) == 4 and np.bincount(y).min() >= 2
    reg = ConditionalLogVarianceRegularizer(num_classes=4, unbiased=unbiased)
    value = reg(z.astype("float32"), y)
    assert value.shape == () and value.dtype == tf.float32
    np.testing.assert_allclose(float(value), _reference(z.astype("float32"), y, ddof=ddof), rtol=1e-5)
    value64 = reg(z, y)
    assert value64.dtype == tf.float64
    np.testing.assert_allclose(float(value64), _reference(z, y, ddof=ddof), rtol=1e-12)


def test_hand_computed_weights_of_the_classes_present():
    # Class 0: samples {0, 2} (unbiased variance 2); class 2: {1, 1, 3, 3} (variance 4/3);
    # classes 1 and 3 absent. Weights 2/6 and 4/6.
    z = np.array([[0.0], [2.0], [1.0], [1.0], [3.0], [3.0]])
    y = np.array([0, 0, 2, 2, 2, 2])
    expected = (2 / 6) * 0.5 * math.log(TWO_PI_E * 2.0) + (4 / 6) * 0.5 * math.log(TWO_PI_E * 4.0 / 3.0)
    value = ConditionalLogVarianceRegularizer(num_classes=4, epsilon=0.0)(z, y)
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_a_class_absent_from_the_batch_is_ignored():
    z, y = _batch(seed=1, num_classes=3)
    sparse = np.array([0, 2, 4])[y]  # labels 0, 2, 4 of 5 classes: 1 and 3 never occur
    value = ConditionalLogVarianceRegularizer(num_classes=5)(z, sparse)
    np.testing.assert_allclose(float(value), _reference(z, y), rtol=1e-12)
    np.testing.assert_allclose(float(value), float(ConditionalLogVarianceRegularizer(num_classes=3)(z, y)), rtol=1e-12)


def test_a_class_with_a_single_example_gets_no_weight_and_no_gradient():
    z, y = _batch(seed=2, n=30, num_classes=3)
    y = y.copy()
    y[7] = 3  # the only sample of class 3
    z_t = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z_t)
        value = ConditionalLogVarianceRegularizer(num_classes=4)(z_t, y)
    grad = tape.gradient(value, z_t).numpy()
    mask = np.arange(len(y)) != 7
    np.testing.assert_allclose(float(value), _reference(z[mask], y[mask]), rtol=1e-12)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[7], 0.0)
    assert np.abs(grad[mask]).min() > 0


def test_no_estimable_class_gives_zero():
    z = np.random.default_rng(3).normal(size=(3, 4))
    assert float(ConditionalLogVarianceRegularizer(num_classes=5)(z, np.array([0, 1, 2]))) == 0.0
    assert float(ConditionalLogVarianceRegularizer(num_classes=5)(z, np.array([-1, -1, -1]))) == 0.0


def test_gradient_matches_the_analytic_float64_gradient_even_with_zero_epsilon():
    z, y = _batch(seed=4, n=20, units=3, num_classes=5)
    y[y == 4] = 0  # class 4 absent
    y[0] = 4  # ... then a singleton
    z_t = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z_t)
        value = ConditionalLogVarianceRegularizer(num_classes=6, epsilon=0.0)(z_t, y)  # class 5 absent
    counts = np.bincount(y, minlength=6)
    kept = np.where(counts >= 2, counts, 0)
    expected = np.zeros_like(z)
    for c in np.flatnonzero(kept):
        rows = y == c
        zc = z[rows]
        var = np.var(zc, axis=0, ddof=1)
        expected[rows] = kept[c] / kept.sum() * (zc - zc.mean(axis=0)) / ((len(zc) - 1) * var)
    np.testing.assert_allclose(tape.gradient(value, z_t).numpy(), expected, rtol=1e-9, atol=1e-15)


def test_label_formats_agree_and_unknown_labels_are_ignored():
    z, y = _batch(seed=5)
    reg = ConditionalLogVarianceRegularizer(num_classes=4)
    reference = float(reg(z, y))
    np.testing.assert_allclose(float(reg(z, y.reshape(-1, 1))), reference, rtol=1e-12)
    np.testing.assert_allclose(float(reg(z, np.eye(4, dtype="float32")[y])), reference, rtol=1e-12)
    np.testing.assert_allclose(float(reg(z, y.astype("float32"))), reference, rtol=1e-12)
    with_unlabeled = np.concatenate([z, np.random.default_rng(0).normal(size=(5, z.shape[1])) * 50])
    labels = np.concatenate([y, [-1, -1, 4, 7, -1]])  # outside [0, 4): ignored
    np.testing.assert_allclose(float(reg(with_unlabeled, labels)), reference, rtol=1e-12)


def test_one_class_is_the_unconditional_log_variance():
    z = np.random.default_rng(6).normal(size=(25, 6)) * 2.0
    np.testing.assert_allclose(
        float(ConditionalLogVarianceRegularizer(num_classes=1)(z, np.zeros(25, "int32"))),
        float(LogVarianceRegularizer()(z)),
        rtol=1e-12,
    )


def test_zero_entropy_epsilon_makes_collapsed_classes_cost_zero():
    centers = np.array([[0.0, 5.0], [3.0, -1.0]])
    y = np.array([0, 1] * 8)
    z = centers[y]  # every class collapsed to a point
    value = ConditionalLogVarianceRegularizer(num_classes=2, epsilon=ZERO_ENTROPY_VARIANCE)(z, y)
    assert float(value) == pytest.approx(0.0, abs=1e-12)


def test_half_precision_variance_is_computed_in_float32():
    z, y = _batch(seed=7, n=64)
    z16 = (z + 300.0).astype("float16")
    reg = ConditionalLogVarianceRegularizer(num_classes=4, dtype="mixed_float16")
    value = reg(z16, y)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(float(value), _reference(z16, y), rtol=1e-5)


def test_compiles_with_xla_and_unknown_batch_size():
    reg = ConditionalLogVarianceRegularizer(num_classes=4)
    fn = tf.function(
        lambda z, y: reg(z, y),
        input_signature=[tf.TensorSpec((None, 5), tf.float32), tf.TensorSpec((None,), tf.int32)],
        jit_compile=True,
    )
    z, y = _batch(seed=8)
    np.testing.assert_allclose(float(fn(z.astype("float32"), y.astype("int32"))), _reference(z, y), rtol=1e-5)


def test_get_config_round_trip():
    reg = ConditionalLogVarianceRegularizer(
        num_classes=10, epsilon=ZERO_ENTROPY_VARIANCE, unbiased=False, cross_replica=False, name="cond_logvar"
    )
    config = reg.get_config()
    assert config["num_classes"] == 10 and config["epsilon"] == ZERO_ENTROPY_VARIANCE
    clone = ConditionalLogVarianceRegularizer.from_config(config)
    assert clone.get_config() == config and clone.name == "cond_logvar" and clone.unbiased is False
    serialized = keras.saving.serialize_keras_object(reg)
    assert serialized["registered_name"] == "tfinfo>ConditionalLogVarianceRegularizer"
    revived = keras.saving.deserialize_keras_object(serialized)
    z, y = _batch()
    assert float(revived(z, y)) == float(reg(z, y))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"num_classes": 0}, r"Expected `num_classes` to be an integer >= 1\. Received: num_classes=0"),
        ({"num_classes": 2.5}, r"Expected `num_classes` to be an integer >= 1\. Received: num_classes=2\.5"),
        ({"num_classes": 3, "epsilon": -1.0}, r"Expected `epsilon` to be a finite number >= 0\. Received: epsilon=-1\.0"),
        ({"num_classes": 3, "unbiased": None}, r"Expected `unbiased` to be True or False\. Received: unbiased=None"),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ConditionalLogVarianceRegularizer(**kwargs)


def test_bad_inputs_raise():
    reg = ConditionalLogVarianceRegularizer(num_classes=3)
    z = np.zeros((6, 2), "float32")
    with pytest.raises(ValueError, match=r"Expected one-hot `y` with num_classes=3 columns\. Received: y.shape=\(6, 4\)"):
        reg(z, np.eye(4)[[0, 1, 2, 0, 1, 2]])
    with pytest.raises(ValueError, match=r"Expected `z` and `y` with the same number of samples\. Received: z.shape=\(6, 2\), y.shape=\(5,\)"):
        reg(z, np.zeros(5, "int32"))
    with pytest.raises(ValueError, match=r"Expected `y` of shape \(N,\), \(N, 1\) or \(N, num_classes\)\. Received: y.shape=\(6, 1, 1\)"):
        reg(z, np.zeros((6, 1, 1), "int32"))
