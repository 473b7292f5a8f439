import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfinfo.layers import MeasurementNoise


def _variance_interval(samples, alpha=1e-6):
    samples = np.asarray(samples, np.float64).ravel()
    ss = np.sum((samples - samples.mean()) ** 2)
    return ss / stats.chi2.ppf(1 - alpha / 2, samples.size - 1), ss / stats.chi2.ppf(alpha / 2, samples.size - 1)


def _dense_stack(seed):
    keras.utils.set_random_seed(seed)
    return keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)


def test_forward_pass_is_unchanged_in_every_mode():
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    first, second = _dense_stack(0)
    inputs = keras.Input((5,))
    plain = keras.Model(inputs, second(first(inputs)))
    noise = MeasurementNoise(variance=2.0, seed=0)
    with_noise = keras.Model(inputs, second(noise(first(inputs))))  # same Dense layers, same weights
    for training in (False, True):
        np.testing.assert_array_equal(with_noise(x, training=training).numpy(), plain(x, training=training).numpy())
    np.testing.assert_array_equal(with_noise.predict(x, verbose=0), plain.predict(x, verbose=0))
    # Gradients of the network are untouched too.
    grads = []
    for model in (plain, with_noise):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) ** 2)
        grads.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_call_is_the_identity_without_casting():
    noise = MeasurementNoise(variance=0.5, dtype="mixed_float16")
    for dtype in ("float16", "float32", "float64"):
        x = tf.constant(np.linspace(-3, 3, 12).reshape(4, 3), dtype)
        out = noise(x, training=True)
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(out.numpy(), x.numpy())


@pytest.mark.parametrize("variance", [2.0, 0.3])
def test_samples_have_the_chosen_variance_and_zero_mean(variance):
    noise = MeasurementNoise(variance=variance, seed=1)
    x = np.random.default_rng(1).uniform(-5, 5, size=(50_000, 2)).astype("float32")
    eps = (noise.sample(x).numpy().astype(np.float64) - x).ravel()
    low, high = _variance_interval(eps)
    assert low < variance < high
    assert not low < 1.05 * variance < high and not low < math.sqrt(variance) < high
    assert abs(eps.mean()) < 5 * math.sqrt(variance / eps.size)
    assert noise.stddev == pytest.approx(math.sqrt(variance))


def test_each_sample_is_fresh_and_the_seed_reproduces_them():
    x = tf.zeros((4000, 3))
    noise = MeasurementNoise(variance=1.0, seed=9)
    a, b = noise.sample(x).numpy(), noise.sample(x).numpy()
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / math.sqrt(a.size)
    np.testing.assert_array_equal(MeasurementNoise(variance=1.0, seed=9).sample(x).numpy(), a)

    @tf.function
    def two_draws(t):
        return noise.sample(t), noise.sample(t)

    c, d = two_draws(x)
    assert not np.allclose(c.numpy(), d.numpy())


def test_sample_dtypes_and_gradient():
    noise = MeasurementNoise(variance=1.0, seed=0)
    assert noise.sample(tf.zeros((2, 2), tf.float64)).dtype == tf.float64
    assert noise.sample(tf.zeros((2, 2), tf.float32)).dtype == tf.float32
    assert noise.sample(tf.zeros((2, 2), tf.float16)).dtype == tf.float32
    assert noise.sample(np.zeros((2, 2), np.int32)).dtype == tf.float32
    x = tf.random.normal((5, 3))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(3.0 * noise.sample(x))
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 3.0)


def test_noise_entropy_is_the_gaussian_closed_form():
    # h(N(0, 2 I_3)) = 3/2 ln(4 pi e) = 1.5 * (ln(4 pi) + 1).
    assert MeasurementNoise(variance=2.0).noise_entropy(3) == pytest.approx(1.5 * (math.log(4 * math.pi) + 1))
    assert MeasurementNoise(variance=1 / (2 * math.pi * math.e)).noise_entropy(10) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"Expected `num_features` to be an integer >= 1\. Received: num_features=0"):
        MeasurementNoise(variance=2.0).noise_entropy(0)


def test_get_config_round_trip():
    noise = MeasurementNoise(variance=2.0, seed=3, name="eps")
    config = noise.get_config()
    assert config["variance"] == 2.0 and config["seed"] == 3
    clone = MeasurementNoise.from_config(config)
    assert clone.get_config() == config and clone.autocast is False and clone.name == "eps"
    serialized = keras.saving.serialize_keras_object(noise)
    assert serialized["registered_name"] == "tfinfo>MeasurementNoise"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(revived, MeasurementNoise) and revived.get_config() == config
    x = tf.zeros((6, 2))
    np.testing.assert_array_equal(revived.sample(x).numpy(), MeasurementNoise(variance=2.0, seed=3).sample(x).numpy())


@pytest.mark.parametrize("variance", [0, 0.0, -1.0, float("nan"), float("inf"), "2", True, None])
def test_variance_must_be_positive(variance):
    with pytest.raises(ValueError, match=r"Expected `variance` to be a finite number > 0\. Received: variance="):
        MeasurementNoise(variance=variance)


def test_bad_seed_raises():
    with pytest.raises(ValueError, match=r"Expected `seed` to be an integer or None\. Received: seed='a'"):
        MeasurementNoise(variance=1.0, seed="a")


def test_portable_draws_are_the_same_under_xla_and_have_their_distribution():
    from tfinfo.layers.measurement_noise import portable_normal
    from tfinfo.layers.measurement_noise import portable_randint

    draws = []
    for jit_compile in (False, True):
        generator = keras.random.SeedGenerator(4)

        def draw(generator=generator):
            return portable_normal((20_000,), generator, stddev=2.0), portable_randint((2_000,), 3, 17, generator)

        step = tf.function(draw, jit_compile=jit_compile)
        draws.append([[t.numpy() for t in step()] for _ in range(2)])
    (normal, ints), (normal_next, _) = draws[0]
    for (a, b), (c, d) in zip(draws[0], draws[1]):
        np.testing.assert_allclose(c, a, rtol=0, atol=1e-5)  # float rounding of log and cos only
        np.testing.assert_array_equal(d, b)
    assert not np.allclose(normal, normal_next)  # the generator advances
    low, high = _variance_interval(normal)
    assert low < 4.0 < high and abs(normal.mean()) < 5 * 2.0 / np.sqrt(normal.size)
    assert ints.dtype == np.int32 and set(np.unique(ints)) == set(range(3, 17))


def test_sample_under_xla_equals_graph_mode():
    x = tf.zeros((32, 3))
    samples = []
    for jit_compile in (False, True):
        noise = MeasurementNoise(variance=2.0, seed=1)
        samples.append(tf.function(noise.sample, jit_compile=jit_compile)(x).numpy())
    np.testing.assert_allclose(samples[1], samples[0], rtol=0, atol=1e-5)
