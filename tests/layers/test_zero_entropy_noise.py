import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfinfo.layers import ZERO_ENTROPY_VARIANCE
from tfinfo.layers import ZeroEntropyNoise

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = 1.0 / (2.0 * math.pi * math.e)  # written out again: the test must not trust the module


def _variance_interval(samples, alpha=1e-6):
    """Two-sided (1 - alpha) chi-square confidence interval of the variance of normal samples."""
    samples = np.asarray(samples, np.float64).ravel()
    n = samples.size
    ss = np.sum((samples - samples.mean()) ** 2)
    return ss / stats.chi2.ppf(1 - alpha / 2, n - 1), ss / stats.chi2.ppf(alpha / 2, n - 1)


def test_noise_has_variance_one_over_two_pi_e_and_zero_mean():
    assert ZERO_ENTROPY_VARIANCE == pytest.approx(TARGET, rel=1e-15)
    # The Gaussian with this variance has differential entropy exactly 0.
    assert 0.5 * math.log(2 * math.pi * math.e * TARGET) == pytest.approx(0.0, abs=1e-15)
    n = 100_000
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(n, 1)).astype("float32")
    noise = (ZeroEntropyNoise(seed=7)(x).numpy() - x).astype(np.float64).ravel()
    low, high = _variance_interval(noise)
    assert low < TARGET < high
    # The interval is tight enough to catch the plausible mistakes.
    for wrong in (1.0 / (2 * math.pi), TARGET**2, 1.05 * TARGET, 0.95 * TARGET):
        assert not low < wrong < high
    # Zero mean: |mean| within 5 standard errors (a shift of 0.01 would fail).
    assert abs(noise.mean()) < 5 * math.sqrt(TARGET / n)


def test_noise_is_independent_across_units_and_calls():
    layer = ZeroEntropyNoise(seed=3)
    zeros = tf.zeros((2000, 50))
    first, second = layer(zeros).numpy(), layer(zeros).numpy()
    assert not np.allclose(first, second)  # fresh noise on every call
    corr = np.corrcoef(first.T)
    off_diagonal = corr[~np.eye(50, dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / math.sqrt(2000)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 5 / math.sqrt(first.size)
    # Seeded: a layer with the same seed reproduces the sequence.
    again = ZeroEntropyNoise(seed=3)
    np.testing.assert_array_equal(again(zeros).numpy(), first)


def test_default_adds_noise_in_inference_too_and_training_only_is_gaussian_noise():
    x = tf.ones((64, 8))
    always = ZeroEntropyNoise(seed=1)
    for training in (None, False, True):
        assert np.abs(always(x, training=training).numpy() - 1.0).max() > 0.1
    model = keras.Sequential([keras.Input((8,)), ZeroEntropyNoise(seed=2)])
    predicted = model.predict(x, verbose=0)  # inference mode
    assert np.std(predicted - 1.0) == pytest.approx(math.sqrt(TARGET), rel=0.15)

    train_only = ZeroEntropyNoise(training_only=True, seed=1)
    for training in (None, False):
        np.testing.assert_array_equal(train_only(x, training=training).numpy(), x.numpy())
    assert np.abs(train_only(x, training=True).numpy() - 1.0).max() > 0.1


def test_gradient_is_the_identity():
    x = tf.random.normal((16, 4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ZeroEntropyNoise(seed=0)(x)
        loss = tf.reduce_sum(y * tf.range(4.0))
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), np.tile(np.arange(4.0), (16, 1)))


def test_mixed_precision_output_is_half_with_the_same_variance():
    layer = ZeroEntropyNoise(seed=5, dtype="mixed_float16")
    out = layer(np.zeros((50_000, 2), "float32"))
    assert out.dtype == tf.float16
    low, high = _variance_interval(out.numpy())
    # float16 rounds each draw (relative 5e-4): the variance is still within 1%.
    assert low * 0.99 < TARGET < high * 1.01


def test_get_config_round_trip():
    layer = ZeroEntropyNoise(training_only=True, seed=11, name="bottleneck_noise")
    config = layer.get_config()
    assert config["training_only"] is True and config["seed"] == 11 and config["name"] == "bottleneck_noise"
    clone = ZeroEntropyNoise.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "tfinfo>ZeroEntropyNoise"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(revived, ZeroEntropyNoise) and revived.get_config() == config
    # Same seed, same noise after the round trip.
    x = tf.zeros((8, 3))
    np.testing.assert_array_equal(revived(x, training=True).numpy(), ZeroEntropyNoise(seed=11)(x).numpy())


def test_saved_model_file_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), ZeroEntropyNoise(seed=4)])
    path = str(tmp_path / "noise.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1], ZeroEntropyNoise) and loaded.layers[-1].seed == 4


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"training_only": "yes"}, "Expected `training_only` to be True or False. Received: training_only='yes'"),
        ({"training_only": 1}, "Expected `training_only` to be True or False. Received: training_only=1"),
        ({"seed": 1.5}, "Expected `seed` to be an integer or None. Received: seed=1.5"),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        ZeroEntropyNoise(**kwargs)


def test_xla_draws_the_same_noise_as_graph_mode():
    x = tf.zeros((64, 5))
    draws = []
    for jit_compile in (False, True):
        layer = ZeroEntropyNoise(seed=3)
        step = tf.function(lambda t, layer=layer: layer(t), jit_compile=jit_compile)
        draws.append(np.stack([step(x).numpy() for _ in range(2)]))
    # keras.random.normal would differ completely: XLA derives other numbers from the seed.
    np.testing.assert_allclose(draws[1], draws[0], rtol=0, atol=1e-6)
    assert np.abs(draws[0][0] - draws[0][1]).max() > 0.1  # a new draw on every call


@pytest.mark.slow  # a fresh process (logical devices must precede any TF op): ~6-10 s
def test_each_replica_gets_the_noise_of_its_rows_in_the_global_batch():
    """Two CPU replicas with uneven halves (3 + 2 rows) of a 5-row batch, two calls: the
    concatenated outputs equal one device's on the whole batch."""
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfinfo.layers import ZeroEntropyNoise
        x = tf.constant(np.arange(15, dtype="float32").reshape(5, 3))
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            layer = ZeroEntropyNoise(seed=7)
        def replica_fn():
            first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
            rows = tf.where(first, tf.range(3), tf.range(3, 6))[: tf.where(first, 3, 2)]
            return layer(tf.gather(x, rows))
        step = tf.function(lambda: strategy.run(replica_fn))
        replicas = [np.concatenate([v.numpy() for v in strategy.experimental_local_results(step())]) for _ in range(2)]
        one = ZeroEntropyNoise(seed=7)
        single = [one(x).numpy() for _ in range(2)]
        print(float(np.max(np.abs(np.array(replicas) - np.array(single)))), float(np.std(single[0] - x.numpy())))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    difference, noise_std = map(float, proc.stdout.strip().splitlines()[-1].split())
    assert difference < 1e-6
    assert noise_std > 0.1  # the noise is there


def test_inference_noise_off_bypasses_the_noise_in_a_block_and_restores_it():
    from tfinfo.layers import inference_noise_off
    from tfinfo.layers import zero_entropy_noise_layers

    inputs = keras.Input((4,))
    always = ZeroEntropyNoise(seed=0, name="always")(inputs)
    inner = keras.Sequential([keras.Input((4,)), ZeroEntropyNoise(seed=1, name="nested")], name="inner")
    out = ZeroEntropyNoise(training_only=True, seed=2, name="train_only")(inner(always))
    model = keras.Model(inputs, out)
    assert [layer.name for layer in zero_entropy_noise_layers(model)] == ["always", "nested", "train_only"]
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    with inference_noise_off(model) as switched:
        assert [layer.name for layer in switched] == ["always", "nested"]  # train_only was already off
        np.testing.assert_array_equal(keras.Model(model.inputs, model.outputs).predict(x, verbose=0), x)
    assert [layer.training_only for layer in zero_entropy_noise_layers(model)] == [False, False, True]
    assert np.abs(keras.Model(model.inputs, model.outputs).predict(x, verbose=0) - x).max() > 0.1
    with pytest.raises(RuntimeError):
        with inference_noise_off(model):
            raise RuntimeError("restored anyway")
    assert model.get_layer("always").training_only is False
