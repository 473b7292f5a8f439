import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.layers import PatternLeakyReLU
from tfinfo.layers import PatternMaxPooling2D


def _net(activation, pooling):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, padding="same"),
        activation(),
        pooling(),
        keras.layers.Conv2D(3, 3, padding="same"),
        activation(),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ])


def _double_backprop(model, x, r, g):
    """Gradient w.r.t. the weights of <g, d(r . f(x))/dx>: the Lautum proxy's path."""
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            projected = tf.reduce_sum(model(x) * r)
        w = inner.gradient(projected, x)
        target = tf.reduce_sum(w * g)
    return w, outer.gradient(target, model.trainable_variables)


def test_forward_first_and_second_derivatives_equal_keras_layers():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(6, 8, 8, 2)), tf.float32)
    r = tf.constant(rng.normal(size=5), tf.float32)
    g = tf.constant(rng.normal(size=(6, 8, 8, 2)), tf.float32)
    reference = _net(lambda: keras.layers.LeakyReLU(negative_slope=0.1), lambda: keras.layers.MaxPooling2D(2))
    pattern = _net(lambda: PatternLeakyReLU(0.1), lambda: PatternMaxPooling2D(2))
    pattern.set_weights(reference.get_weights())
    np.testing.assert_allclose(pattern(x).numpy(), reference(x).numpy(), rtol=1e-6, atol=1e-6)
    w_ref, grads_ref = _double_backprop(reference, x, r, g)
    w_pat, grads_pat = _double_backprop(pattern, x, r, g)
    np.testing.assert_allclose(w_pat.numpy(), w_ref.numpy(), rtol=1e-5, atol=1e-6)
    for a, b, v in zip(grads_pat, grads_ref, pattern.trainable_variables):
        # Biases reach w only through the activation pattern: Keras's layers send them a
        # gradient of exact zeros (the wasted pass), the pattern layers none at all.
        a = np.zeros(v.shape) if a is None else a.numpy()
        b = np.zeros(v.shape) if b is None else b.numpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(b is not None and np.abs(b.numpy()).max() > 0 for b in grads_ref)


def test_config_round_trips_and_bad_arguments_are_refused():
    layer = PatternMaxPooling2D((2, 3), strides=1)
    clone = PatternMaxPooling2D.from_config(layer.get_config())
    assert clone.pool_size == (2, 3) and clone.strides == (1, 1)
    assert clone.compute_output_shape((None, 7, 7, 4)) == (None, 6, 5, 4)
    assert PatternLeakyReLU.from_config(PatternLeakyReLU(0.3).get_config()).negative_slope == 0.3
    with pytest.raises(ValueError, match="Expected `pool_size` to be a positive int or a pair of them. Received: pool_size=0"):
        PatternMaxPooling2D(0)
    with pytest.raises(ValueError, match="Expected `negative_slope` to be a number >= 0. Received: negative_slope=None"):
        PatternLeakyReLU(None)
    with pytest.raises(ValueError, match="Expected inputs at least as large as pool_size"):
        PatternMaxPooling2D(3)(tf.zeros((1, 2, 2, 1)))
