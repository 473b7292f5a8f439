"""Raw images in, network-ready images out."""

import keras
import numpy as np
import tensorflow as tf


def interpolation_matrix(size_in, size_out):
    """The `(size_out, size_in)` matrix of 1-D bilinear resizing, as `tf.image.resize` does it.

    Bilinear resizing is separable and linear: `resize(X) = A_h X A_w^T` per channel.
    Columns are read off `tf.image.resize` applied to the unit vectors, so the result
    matches it exactly (half-pixel centers, no antialiasing).
    """
    basis = np.eye(size_in, dtype=np.float32)[:, None, :]  # (size_in, 1, size_in): channel k = e_k
    resized = tf.image.resize(basis, (size_out, 1), method="bilinear").numpy()
    return resized[:, 0, :]


@keras.saving.register_keras_serializable(package="tfinfo")
class ImagePreprocessing(keras.layers.Layer):
    """Casts raw 0..255 images to float, rescales to [0, 1], resizes and sets channels.

    Putting this layer first in the classifier makes the exported model take raw
    images, and makes the Lautum Jacobian proxy the gradient with respect to the raw
    pixels (D = H * W * C of the data, e.g. 784 for MNIST) through the resize.

    The resize is `tf.image.resize`'s bilinear map written as two matrix products
    (`A_h X A_w^T`): the same numbers, but twice differentiable. TensorFlow registers no
    second derivative for `ResizeBilinearGrad`, so double backprop through
    `tf.image.resize` (the Lautum weight proxy) silently yields no gradient.

    Args:
        image_size: output height and width (the paper's CNN uses 32).
        channels: output channels; 1 -> 3 repeats the gray channel, 3 -> 1 averages.
        scale: multiplier applied after casting (1/255 for uint8 pixels).

    Call arguments:
        inputs: `(N, H, W, C)` tensor of any real or integer dtype.

    Example:

    >>> layer = ImagePreprocessing(image_size=32, channels=3)
    >>> layer(tf.zeros((2, 28, 28, 1), tf.uint8)).shape
    TensorShape([2, 32, 32, 3])
    """

    def __init__(self, image_size=32, channels=3, scale=1.0 / 255.0, **kwargs):
        super().__init__(**kwargs)
        if int(image_size) < 1:
            raise ValueError(f"Expected `image_size` >= 1. Received: image_size={image_size}")
        if int(channels) not in (1, 3):
            raise ValueError(f"Expected `channels` to be 1 or 3. Received: channels={channels}")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.scale = float(scale)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        self._resize = None
        if height is not None and width is not None and (height, width) != (self.image_size,) * 2:
            self._resize = (
                tf.constant(interpolation_matrix(int(height), self.image_size)),
                tf.constant(interpolation_matrix(int(width), self.image_size)),
            )

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype) * self.scale
        if getattr(self, "_resize", None) is not None:
            rows, cols = self._resize
            x = tf.einsum("oh,nhwc,pw->nopc", tf.cast(rows, x.dtype), x, tf.cast(cols, x.dtype))
        elif x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            x = tf.image.resize(x, (self.image_size, self.image_size), method="bilinear")
            x = tf.cast(x, self.compute_dtype)
        c = x.shape[-1]
        if c != self.channels:
            if c == 1:
                x = tf.repeat(x, self.channels, axis=-1)
            elif self.channels == 1:
                x = tf.reduce_mean(x, axis=-1, keepdims=True)
            else:
                raise ValueError(
                    f"Expected inputs with 1 or {self.channels} channels. Received: {c} channels"
                )
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, self.channels)

    def get_config(self):
        config = {"image_size": self.image_size, "channels": self.channels, "scale": self.scale}
        base_config = super().get_config()
        return {**base_config, **config}
