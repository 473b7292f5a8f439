import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.regularizers import ActivationL2Regularizer


def _reference(z):
    """E ||Z||^2 in float64: mean over samples of the squared norm of the flattened sample."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    return float(np.mean(np.sum(z * z, axis=1)))


def test_matches_float64_reference_on_fixed_activations():
    z = np.random.default_rng(0).normal(0.5, 2.0, size=(37, 11))
    reg = ActivationL2Regularizer()
    value = reg(z.astype("float32"))
    assert value.shape == () and value.dtype == tf.float32
    np.testing.assert_allclose(float(value), _reference(z.astype("float32")), rtol=1e-6)
    # float64 stays float64 and is exact.
    value64 = reg(z)
    assert value64.dtype == tf.float64
    np.testing.assert_allclose(float(value64), _reference(z), rtol=1e-13)
    # A hand-computed case: (9 + 16 + 0 + 1) / 2.
    assert float(reg(np.array([[3.0, 4.0], [0.0, 1.0]], "float32"))) == 13.0


def test_every_non_batch_axis_counts_as_units():
    z = np.random.default_rng(1).normal(size=(5, 4, 4, 3))
    np.testing.assert_allclose(float(ActivationL2Regularizer()(z)), _reference(z), rtol=1e-13)
    z1 = np.array([1.0, 2.0, 3.0])  # (N,) is one unit per sample
    np.testing.assert_allclose(float(ActivationL2Regularizer()(z1)), 14.0 / 3.0)


def test_half_precision_is_accumulated_in_float32():
    # Squares of ~200 summed over 64 units overflow float16 (max 65504); float32 does not.
    z = np.random.default_rng(2).uniform(150, 250, size=(8, 64)).astype("float16")
    reg = ActivationL2Regularizer(dtype="mixed_float16")
    value = reg(z)
    assert value.dtype == tf.float32 and np.isfinite(float(value))
    np.testing.assert_allclose(float(value), _reference(z), rtol=1e-6)


def test_gradient_is_two_z_over_n():
    z = np.random.default_rng(3).normal(size=(6, 4))
    z_t = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z_t)
        value = ActivationL2Regularizer()(z_t)
    np.testing.assert_allclose(tape.gradient(value, z_t).numpy(), 2 * z / 6, rtol=1e-12)


def test_works_inside_a_compiled_function():
    reg = ActivationL2Regularizer()
    z = np.random.default_rng(4).normal(size=(10, 3)).astype("float32")
    fn = tf.function(lambda t: reg(t), input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    np.testing.assert_allclose(float(fn(z)), _reference(z), rtol=1e-6)


def test_get_config_round_trip():
    reg = ActivationL2Regularizer(name="l2_z")
    config = reg.get_config()
    clone = ActivationL2Regularizer.from_config(config)
    assert clone.get_config() == config and clone.name == "l2_z" and clone.autocast is False
    serialized = keras.saving.serialize_keras_object(reg)
    assert serialized["registered_name"] == "tfinfo>ActivationL2Regularizer"
    assert isinstance(keras.saving.deserialize_keras_object(serialized), ActivationL2Regularizer)


def test_scalar_input_raises():
    with pytest.raises(ValueError, match=r"Expected `z` with a batch axis \(rank >= 1\)\. Received: z.shape=\(\)"):
        ActivationL2Regularizer()(np.float32(1.0))
