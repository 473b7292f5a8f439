import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.regularizers import ActivationL2Regularizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    reg = ActivationL2Regularizer(cross_replica=False, name="l2_z")
    config = reg.get_config()
    assert config["cross_replica"] is False
    clone = ActivationL2Regularizer.from_config(config)
    assert clone.get_config() == config and clone.name == "l2_z" and clone.autocast is False
    serialized = keras.saving.serialize_keras_object(reg)
    assert serialized["registered_name"] == "tfinfo>ActivationL2Regularizer"
    assert isinstance(keras.saving.deserialize_keras_object(serialized), ActivationL2Regularizer)


def test_scalar_input_raises():
    with pytest.raises(ValueError, match=r"Expected `z` with a batch axis \(rank >= 1\)\. Received: z.shape=\(\)"):
        ActivationL2Regularizer()(np.float32(1.0))


def test_bad_cross_replica_raises():
    with pytest.raises(ValueError, match="Expected `cross_replica` to be True or False. Received: cross_replica=1"):
        ActivationL2Regularizer(cross_replica=1)


@pytest.mark.slow  # a fresh process (logical devices must precede any TF op): ~6-10 s
def test_cross_replica_value_and_gradient_are_the_global_batch_ones():
    """Two CPU replicas with uneven parts (3 + 5 rows) of an 8-row batch: each returns the
    global value, and the gradient of value / replicas on a replica's rows is the
    single-device gradient `2 z / N` of those rows."""
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfinfo.regularizers import ActivationL2Regularizer
        z = tf.constant(np.random.default_rng(0).normal(size=(8, 3)).astype("float32"))
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            reg = ActivationL2Regularizer()
        def replica_fn():
            first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
            rows = tf.where(first, tf.range(5), tf.range(3, 8))[: tf.where(first, 3, 5)]  # 0..2 | 3..7
            zi = tf.gather(z, rows)
            with tf.GradientTape() as tape:
                tape.watch(zi)
                value = reg(zi)
                loss = value / 2.0
            return value, tape.gradient(loss, zi)
        values, grads = tf.function(lambda: strategy.run(replica_fn))()
        values = [float(v) for v in strategy.experimental_local_results(values)]
        grad = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads)])
        print(values[0], values[1], float(ActivationL2Regularizer()(z)), float(ActivationL2Regularizer()(z[:3])))
        print(grad.shape[0], float(np.max(np.abs(grad - 2.0 * z.numpy() / 8.0))))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.strip().splitlines()[-2:]
    *values, global_value, part_value = map(float, first.split())
    rows, gradient_error = second.split()
    np.testing.assert_allclose(values, [global_value] * 2, rtol=1e-6)
    assert abs(part_value - global_value) > 1e-2  # the check is not vacuous
    assert int(rows) == 8 and float(gradient_error) < 1e-6
