"""A labeled pipeline that also yields each example's index (for per-example state)."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf


def indexed_dataset(x, y, batch_size, seed=0, shuffle=True):
    """Batches of `((x, index), y)`, where `index` is the example's row in `x`.

    Models that keep per-example state (the memory bank of an
    `InformationAggregationModel`) find each example's slot by its index, so
    every epoch is exactly one pass over all `N` examples and the last batch
    is kept even when it is partial (`ceil(N / batch_size)` steps). With
    `shuffle`, the order is redrawn every epoch from `seed` (combined with
    TensorFlow's global seed, if one is set). Only the indices are shuffled;
    each batch gathers its images, so the shuffle buffer holds `N` integers,
    not `N` images. Pixels keep their range and are cast to float32; the
    classifier rescales them.

    Each new iterator draws the next order: under a `tf.distribute` strategy
    Keras's `fit` iterates the dataset once before the first epoch (to build the
    model), so its epochs see the second, third, ... orders, not the ones a
    single-device `fit` sees. Compare single-device and distributed runs with
    `shuffle=False` (every global batch is then split between the replicas in
    order).

    Args:
        x: images (or any numeric features), shape `(N, ...)`, N >= 1.
        y: integer labels (>= 0), shape `(N,)`.
        batch_size: examples per batch (>= 1).
        seed: seed of the per-epoch shuffle.
        shuffle: reshuffle every epoch; if False, batches follow the index.

    Returns:
        A `tf.data.Dataset` of `((x float32, index int32), y int32)` batches.

    Raises:
        ValueError: for a batch size below 1, a non-integer seed, no image,
            non-numeric images, mismatched lengths, or labels that are not
            non-negative integers.

    Example:

    >>> ds = indexed_dataset(x_source, y_source, batch_size=64, seed=0)
    >>> model = InformationAggregationModel(classifier, num_examples=len(x_source))
    >>> model.fit(ds, epochs=200)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be an integer >= 1. Received: batch_size={batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Expected `seed` to be an integer. Received: seed={seed!r}")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "uif":
        raise ValueError(f"Expected `x` to be a numeric array. Received: x.dtype={x.dtype}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"Expected `x` of shape (N, ...) with N >= 1. Received: x.shape={x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"Expected one label per image, shape ({len(x)},). Received: y.shape={y.shape}")
    if y.dtype.kind not in "iu" and not (
        y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    ):
        raise ValueError(f"Expected integer labels. Received: y.dtype={y.dtype}")
    if y.min() < 0:
        raise ValueError(f"Expected labels >= 0. Received: a label {y.min()}")
    if len(x) > np.iinfo(np.int32).max:
        raise ValueError(f"Expected at most {np.iinfo(np.int32).max} examples (int32 index). Received: {len(x)}")

    images = tf.constant(x)
    labels = tf.constant(y.astype(np.int32))
    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=int(seed), reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def gather(index):
        index = tf.cast(index, tf.int32)
        return (tf.cast(tf.gather(images, index), tf.float32), index), tf.gather(labels, index)

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
