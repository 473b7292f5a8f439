"""The CNN of Laine & Aila used by seed 000 (Appendix C) and a narrow CPU variant."""

import keras

from tfinfo.layers.image_preprocessing import ImagePreprocessing
from tfinfo.layers.pattern_leaky_relu import PatternLeakyReLU
from tfinfo.layers.pattern_max_pooling_2d import PatternMaxPooling2D

# Channel widths (conv block 1, conv block 2, valid 3x3 conv, 1x1, 1x1).
_WIDTHS = {
    "paper": (128, 256, 512, 256, 128),
    "small": (32, 64, 128, 64, 32),
}

FEATURES_LAYER = "features"


def build_classifier(
    architecture="small",
    input_shape=(28, 28, 1),
    num_classes=10,
    image_size=32,
    channels=3,
    noise_stddev=0.15,
    dropout=0.5,
    seed=None,
    name=None,
):
    """Builds the Laine & Aila CNN (or its narrow variant) behind an `ImagePreprocessing` layer.

    Gaussian noise 0.15; 3 x conv 3x3 LeakyReLU(0.1); maxpool 2; dropout 0.5; 3 x conv
    3x3; maxpool; dropout; conv 3x3 valid; conv 1x1; conv 1x1; global average pool
    (the `"features"` layer); dense logits.

    Args:
        architecture: `"paper"` (128/256/512/256/128 channels) or `"small"` (a quarter).
        input_shape: raw per-sample image shape, e.g. `(28, 28, 1)`.
        num_classes: number of logits.
        image_size: side the images are resized to (32 in the paper).
        channels: channels the images are converted to (3 in the paper).
        noise_stddev: input Gaussian noise (on [0, 1] pixels).
        dropout: dropout rate after each pooling.
        seed: seed for the initializers, noise and dropout.
        name: model name (defaults to `"<architecture>_cnn"`).

    Returns:
        A functional `keras.Model` from raw images to logits.

    Example:

    >>> model = build_classifier("small", input_shape=(28, 28, 1))
    >>> model.output_shape
    (None, 10)
    """
    if architecture not in _WIDTHS:
        raise ValueError(
            f"Expected `architecture` to be one of {sorted(_WIDTHS)}. "
            f"Received: architecture={architecture!r}"
        )
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            f"Expected `input_shape` (H, W, C). Received: input_shape={tuple(input_shape)}"
        )
    if int(image_size) < 12:
        raise ValueError(
            "Expected `image_size` >= 12 (two 2x2 poolings then a valid 3x3 convolution). "
            f"Received: image_size={image_size}"
        )
    w1, w2, w3, w4, w5 = _WIDTHS[architecture]
    seeds = iter(range(0 if seed is None else int(seed) * 100, 10**9))

    def init():
        return keras.initializers.HeNormal(seed=None if seed is None else next(seeds))

    def conv(filters, kernel, padding="same"):
        return keras.layers.Conv2D(filters, kernel, padding=padding, kernel_initializer=init())

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ImagePreprocessing(image_size=image_size, channels=channels, name="preprocess")(inputs)
    x = keras.layers.GaussianNoise(noise_stddev, seed=None if seed is None else next(seeds))(x)
    for block, width in enumerate((w1, w2)):
        for _ in range(3):
            x = conv(width, 3)(x)
            x = PatternLeakyReLU(negative_slope=0.1)(x)
        x = PatternMaxPooling2D(2)(x)
        x = keras.layers.Dropout(dropout, seed=None if seed is None else next(seeds))(x)
    for width, kernel, padding in ((w3, 3, "valid"), (w4, 1, "same"), (w5, 1, "same")):
        x = conv(width, kernel, padding)(x)
        x = PatternLeakyReLU(negative_slope=0.1)(x)
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=init(), name="logits")(features)
    return keras.Model(inputs, logits, name=name or f"{architecture}_cnn")

