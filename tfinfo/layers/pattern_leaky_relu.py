"""Leaky ReLU whose gradient holds the activation pattern fixed (cheap double backprop)."""

import numbers

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinfo")
class PatternLeakyReLU(keras.layers.Layer):
    """`x` for `x > 0`, else `negative_slope * x`; the pattern `x > 0` is held fixed in the gradient.

    The forward pass and the first derivative are those of `keras.layers.LeakyReLU`.
    The function is piecewise linear, so its true second derivative is zero almost
    everywhere; TensorFlow still sends double backprop (the Lautum weight proxy, an
    input gradient differentiated with respect to the weights) a tensor of zeros back
    through the forward pass, one full backward pass of wasted work. Here the gradient
    reads the pattern under `stop_gradient`, so that branch does not exist. Together
    with `PatternMaxPooling2D` this makes a Lautum training step about 15-20% cheaper
    (`bench/step_cost.py`), with the same numbers.

    Args:
        negative_slope: slope for `x < 0` (0.1 in Laine & Aila's CNN).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: a tensor of any shape.

    Example:

    >>> layer = PatternLeakyReLU(0.1)
    >>> layer(tf.constant([-1.0, 2.0])).numpy()
    array([-0.1,  2. ], dtype=float32)
    """

    def __init__(self, negative_slope=0.1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real) or not negative_slope >= 0:
            raise ValueError(f"Expected `negative_slope` to be a number >= 0. Received: negative_slope={negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self.supports_masking = True

    def call(self, inputs):
        slope = self.negative_slope

        @tf.custom_gradient
        def leaky_relu(x):
            y = tf.nn.leaky_relu(x, alpha=slope)

            def grad(dy):
                # The pattern is read from the output: y > 0 exactly where x > 0, since
                # the slope is >= 0. Reading it from x made Grappler's remapper fail
                # (it fuses Conv2D + BiasAdd + LeakyRelu and removes the BiasAdd that
                # the comparison read) and print an error on every run.
                positive = tf.sign(tf.nn.relu(tf.stop_gradient(y)))  # 1 where y > 0, else 0; no bool tensor
                return dy * (slope + (1.0 - slope) * positive)

            return y, grad

        return leaky_relu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {"negative_slope": self.negative_slope}
        base_config = super().get_config()
        return {**base_config, **config}
