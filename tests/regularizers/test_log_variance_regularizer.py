import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.layers import ZERO_ENTROPY_VARIANCE
from tfinfo.regularizers import LogVarianceRegularizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWO_PI_E = 2.0 * math.pi * math.e


def _reference(z, epsilon=1e-6, ddof=1):
    """sum_i 1/2 ln(2 pi e (Var[Z_i] + epsilon)), float64 numpy."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    return float(np.sum(0.5 * np.log(TWO_PI_E * (np.var(z, axis=0, ddof=ddof) + epsilon))))


def _activations(seed=0, n=40, units=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, units)) * rng.uniform(0.2, 3.0, size=units) + rng.normal(size=units)


@pytest.mark.parametrize("unbiased, ddof", [(True, 1), (False, 0)])
def test_matches_float64_reference_on_fixed_activations(unbiased, ddof):
    z = _activations()
    reg = LogVarianceRegularizer(unbiased=unbiased)
    value = reg(z.astype("float32"))
    assert value.shape == () and value.dtype == tf.float32
    np.testing.assert_allclose(float(value), _reference(z.astype("float32"), ddof=ddof), rtol=1e-5)
    value64 = reg(z)
    assert value64.dtype == tf.float64
    np.testing.assert_allclose(float(value64), _reference(z, ddof=ddof), rtol=1e-12)
    # Hand-computed: one unit, samples {0, 2}: unbiased variance 2, biased 1.
    two = np.array([[0.0], [2.0]])
    assert float(reg(two)) == pytest.approx(0.5 * math.log(TWO_PI_E * ((2.0 if unbiased else 1.0) + 1e-6)))


def test_gaussian_latent_recovers_its_entropy():
    # For Gaussian units the bound is tight: d/2 ln(2 pi e sigma^2); 0 for zero-entropy noise.
    rng = np.random.default_rng(5)
    zero_entropy = rng.normal(size=(20_000, 6)) * math.sqrt(1.0 / TWO_PI_E)
    assert float(LogVarianceRegularizer(epsilon=0.0)(zero_entropy)) == pytest.approx(0.0, abs=0.05)
    wide = rng.normal(size=(20_000, 3)) * 2.0
    assert float(LogVarianceRegularizer(epsilon=0.0)(wide)) == pytest.approx(1.5 * math.log(TWO_PI_E * 4.0), abs=0.05)


def test_tiny_variances_are_guarded():
    z = _activations(seed=1)
    z[:, 2] = 4.0  # a constant unit (no noise layer): the log would be -inf
    z_t = tf.constant(z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z_t)
        value = LogVarianceRegularizer()(z_t)
    grad = tape.gradient(value, z_t).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), _reference(z.astype("float32")), rtol=1e-5)
    # With the zero-entropy variance as epsilon, a collapsed latent costs exactly 0 nats.
    constant = np.full((16, 5), 3.0)
    assert float(LogVarianceRegularizer(epsilon=ZERO_ENTROPY_VARIANCE)(constant)) == pytest.approx(0.0, abs=1e-12)
    # ... and every term is non-negative, whatever the latent.
    assert float(LogVarianceRegularizer(epsilon=ZERO_ENTROPY_VARIANCE)(z)) >= 0.0


def test_gradient_matches_the_analytic_float64_gradient():
    z = _activations(seed=2, n=12, units=4)
    z_t = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z_t)
        value = LogVarianceRegularizer(epsilon=1e-3)(z_t)
    var = np.var(z, axis=0, ddof=1)
    expected = (z - z.mean(axis=0)) / ((len(z) - 1) * (var + 1e-3))
    np.testing.assert_allclose(tape.gradient(value, z_t).numpy(), expected, rtol=1e-10)


def test_half_precision_variance_is_computed_in_float32():
    # A large common offset: float16 centring would leave ~0.1 errors on unit-scale spreads.
    rng = np.random.default_rng(3)
    z = (300.0 + rng.normal(size=(64, 5)) * [0.5, 1.0, 2.0, 3.0, 4.0]).astype("float16")
    reg = LogVarianceRegularizer(dtype="mixed_float16")
    value = reg(z)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(float(value), _reference(z), rtol=1e-5)


def test_rank_four_activations_are_units():
    z = np.random.default_rng(4).normal(size=(9, 2, 2, 3))
    np.testing.assert_allclose(float(LogVarianceRegularizer()(z)), _reference(z), rtol=1e-12)


@pytest.mark.slow  # a fresh process (logical devices must precede any TF op): ~5-9 s
def test_cross_replica_value_is_the_global_batch_value():
    """Two CPU replicas, each with half the batch, compute the variances of the whole batch.

    Covers `LogVarianceRegularizer` and `ConditionalLogVarianceRegularizer` (labels are
    gathered with the latents).
    """
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfinfo.regularizers import ConditionalLogVarianceRegularizer, LogVarianceRegularizer
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        rng = np.random.default_rng(0)
        z = rng.normal(size=(16, 3)).astype("float32") * [1.0, 2.0, 3.0]
        y = (np.arange(16) % 3).astype("int32")
        with strategy.scope():
            reg, cond = LogVarianceRegularizer(), ConditionalLogVarianceRegularizer(num_classes=3)
        def replica_fn():
            i = tf.distribute.get_replica_context().replica_id_in_sync_group
            zi, yi = tf.gather(z, tf.range(8) + 8 * i), tf.gather(y, tf.range(8) + 8 * i)
            return reg(zi), cond(zi, yi)
        out = strategy.run(replica_fn)
        values = [[float(v) for v in strategy.experimental_local_results(o)] for o in out]
        print(values)
        print(float(reg(z)), float(cond(z, y)), float(reg(z[:8])))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    per_replica = eval(lines[-2])  # noqa: S307 - our own output
    global_value, global_conditional, half_value = map(float, lines[-1].split())
    np.testing.assert_allclose(per_replica[0], [global_value] * 2, rtol=1e-6)
    np.testing.assert_allclose(per_replica[1], [global_conditional] * 2, rtol=1e-6)
    assert abs(half_value - global_value) > 1e-3  # the check is not vacuous


def test_get_config_round_trip():
    reg = LogVarianceRegularizer(epsilon=ZERO_ENTROPY_VARIANCE, unbiased=False, cross_replica=False, name="logvar")
    config = reg.get_config()
    assert config["epsilon"] == ZERO_ENTROPY_VARIANCE and config["unbiased"] is False
    clone = LogVarianceRegularizer.from_config(config)
    assert clone.get_config() == config and clone.name == "logvar" and clone.cross_replica is False
    serialized = keras.saving.serialize_keras_object(reg)
    assert serialized["registered_name"] == "tfinfo>LogVarianceRegularizer"
    revived = keras.saving.deserialize_keras_object(serialized)
    z = _activations()
    assert float(revived(z)) == float(reg(z))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"epsilon": -1e-3}, r"Expected `epsilon` to be a finite number >= 0\. Received: epsilon=-0\.001"),
        ({"epsilon": float("nan")}, r"Expected `epsilon` to be a finite number >= 0\. Received: epsilon=nan"),
        ({"epsilon": "small"}, r"Expected `epsilon` to be a finite number >= 0\. Received: epsilon='small'"),
        ({"unbiased": "yes"}, r"Expected `unbiased` to be True or False\. Received: unbiased='yes'"),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        LogVarianceRegularizer(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"Expected at least 2 samples to estimate variances\. Received: z.shape=\(1, 3\)"):
        LogVarianceRegularizer()(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"Expected `z` with a batch axis \(rank >= 1\)\. Received: z.shape=\(\)"):
        LogVarianceRegularizer()(np.float32(1.0))
