import numpy as np
import pytest
import tensorflow as tf

from tfinfo.layers import ImagePreprocessing
from tfinfo.layers.image_preprocessing import interpolation_matrix


@pytest.mark.parametrize("shape", [(28, 28, 1), (12, 12, 1), (40, 40, 3), (20, 24, 3)])
def test_resize_matches_tf_image_resize(shape):
    x = np.random.default_rng(0).uniform(0, 255, size=(3,) + shape).astype(np.float32)
    layer = ImagePreprocessing(image_size=32, channels=shape[-1])
    out = layer(tf.constant(x)).numpy()
    expected = tf.image.resize(x / 255.0, (32, 32), method="bilinear").numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_interpolation_rows_are_convex_weights():
    a = interpolation_matrix(28, 32)
    assert a.shape == (32, 28)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(a >= 0)


def test_second_derivative_through_the_resize_exists():
    """Double backprop (the Lautum weight proxy) must reach weights behind the resize."""
    x = tf.random.normal((2, 28, 28, 1))
    kernel = tf.Variable(tf.random.normal((3, 3, 3, 4)))
    layer = ImagePreprocessing(image_size=32, channels=3, scale=1.0)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(tf.nn.conv2d(layer(x), kernel, 1, "SAME") ** 2)
        w = inner.gradient(y, x)
        s = tf.reduce_sum(w**2)
    grad = outer.gradient(s, kernel)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    # Against a float64 finite difference on one kernel entry.
    def value(k):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.nn.conv2d(layer(x), k, 1, "SAME") ** 2)
        return float(tf.reduce_sum(tape.gradient(y, x) ** 2))
    eps = 1e-2
    k = kernel.numpy()
    plus, minus = k.copy(), k.copy()
    plus[1, 1, 0, 0] += eps
    minus[1, 1, 0, 0] -= eps
    numeric = (value(tf.constant(plus)) - value(tf.constant(minus))) / (2 * eps)
    assert grad.numpy()[1, 1, 0, 0] == pytest.approx(numeric, rel=2e-2)
