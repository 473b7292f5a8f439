"""Distribution cases: `case(jit_compile) -> (model, dataset)` (see `harness.py`).

Small shapes, dropout and input noise off (replicas would draw different masks),
SGD so that the update is linear in the gradient, two global batches of 8.
"""

import keras
import numpy as np
import tensorflow as tf

from tfinfo.architectures import build_classifier

SHAPE = (8, 8, 1)
CLASSES = 3
BATCH = 8
STEPS = 2


def _classifier():
    return build_classifier(
        "small", input_shape=SHAPE, num_classes=CLASSES, image_size=12, dropout=0.0, noise_stddev=0.0, seed=0
    )


def _images(n, seed, low=0.0, high=255.0):
    return np.random.default_rng(seed).uniform(low, high, size=(n,) + SHAPE).astype("float32")


def _labels(n, seed):
    return np.random.default_rng(seed).integers(0, CLASSES, size=n).astype("int32")


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def source_target_dataset():
    """`((x_source, x_target), y_source)` global batches."""
    n = BATCH * STEPS
    return tf.data.Dataset.from_tensor_slices(((_images(n, 1), _images(n, 2, 0.0, 128.0)), _labels(n, 3))).batch(BATCH)


def standard(jit_compile):
    """The plain classifier under `fit` (standard transfer, both stages)."""
    model = _classifier()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_ce(), metrics=["accuracy"], jit_compile=jit_compile)
    n = BATCH * STEPS
    return model, tf.data.Dataset.from_tensor_slices((_images(n, 1), _labels(n, 3))).batch(BATCH)


def mmd(jit_compile):
    """Mk-MMD transfer: the MMD^2 of the all-gathered global batch."""
    from tfinfo.models import MMDTransferModel
    from tfinfo.regularizers import MMDRegularizer

    model = MMDTransferModel(_classifier(), MMDRegularizer(), mmd_weight=3.0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_ce(), jit_compile=jit_compile)
    return model, source_target_dataset()
