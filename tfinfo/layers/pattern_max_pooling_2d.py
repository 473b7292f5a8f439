"""2D max pooling whose gradient holds the argmax fixed (cheap double backprop)."""

import numbers

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinfo")
class PatternMaxPooling2D(keras.layers.Layer):
    """Max pooling (NHWC, `padding="valid"`) whose gradient reads the argmax under `stop_gradient`.

    The forward pass and the first derivative are those of `keras.layers.MaxPooling2D`.
    Max pooling is piecewise linear: its gradient routes `dy` to the argmax, and the
    argmax has zero derivative almost everywhere. TensorFlow's second derivative of
    `MaxPoolGrad` nevertheless returns zeros for the pooled input, which double backprop
    (the Lautum weight proxy) then carries back through the whole forward pass. Holding
    the argmax fixed removes that branch; see `PatternLeakyReLU`.

    Args:
        pool_size: int or pair, the pooling window (2 in Laine & Aila's CNN).
        strides: int or pair; defaults to `pool_size`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: a 4D tensor `(batch, height, width, channels)`.

    Example:

    >>> PatternMaxPooling2D(2)(tf.reshape(tf.range(16.0), (1, 4, 4, 1))).shape
    TensorShape([1, 2, 2, 1])
    """

    def __init__(self, pool_size=2, strides=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else _pair("strides", strides)

    def call(self, inputs):
        ksize = [1, *self.pool_size, 1]
        strides = [1, *self.strides, 1]

        @tf.custom_gradient
        def pool(x):
            y = tf.nn.max_pool2d(x, ksize, strides, "VALID")

            def grad(dy):
                return tf.raw_ops.MaxPoolGrad(
                    orig_input=tf.stop_gradient(x),
                    orig_output=tf.stop_gradient(y),
                    grad=dy,
                    ksize=ksize,
                    strides=strides,
                    padding="VALID",
                )

            return y, grad

        return pool(inputs)

    def build(self, input_shape):
        for axis, size in ((1, self.pool_size[0]), (2, self.pool_size[1])):
            if input_shape[axis] is not None and input_shape[axis] < size:
                raise ValueError(
                    f"Expected inputs at least as large as pool_size={self.pool_size} (NHWC). "
                    f"Received: input_shape={tuple(input_shape)}"
                )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        rows = None if input_shape[1] is None else (input_shape[1] - self.pool_size[0]) // self.strides[0] + 1
        cols = None if input_shape[2] is None else (input_shape[2] - self.pool_size[1]) // self.strides[1] + 1
        return (input_shape[0], rows, cols, input_shape[3])

    def get_config(self):
        config = {"pool_size": self.pool_size, "strides": self.strides}
        base_config = super().get_config()
        return {**base_config, **config}


def _pair(name, value):
    values = (value, value) if isinstance(value, numbers.Integral) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(values) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"Expected `{name}` to be a positive int or a pair of them. Received: {name}={value!r}")
    return tuple(int(v) for v in values)
