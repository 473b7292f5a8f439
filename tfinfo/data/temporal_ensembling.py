"""The Temporal Ensembling pipeline: labeled and unlabeled target images, keyed by index."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf


def _as_images(x, name):
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise ValueError(f"Expected `{name}` to be a numeric image array. Received: {name}.dtype={x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"Expected `{name}` to hold images of shape (N, ...). Received: {name}.shape={x.shape}")
    return x


def temporal_ensembling_dataset(x_labeled, y_labeled, x_unlabeled, batch_size, seed=0, shuffle=True):
    """Batches of the labeled + unlabeled target set, each example tagged with its index.

    The examples are numbered `0..N-1` with the labeled ones first
    (`0..L-1`, in the order of `x_labeled`) and the unlabeled ones after
    (`L..N-1`, in the order of `x_unlabeled`), `N = L + U`. The index is how a
    `TemporalEnsemblingModel` finds each example's slot in its ensemble state,
    so every epoch is exactly one pass over all `N` examples: the last batch
    is kept even when it is partial (`ceil(N / batch_size)` steps). With
    `shuffle`, the order is redrawn every epoch from `seed` (combined with
    TensorFlow's global seed, if one is set). Pixels stay in their range and
    are cast to float32; the classifier rescales them. Only the indices are
    shuffled, and each batch gathers its images.

    Args:
        x_labeled: labeled images, shape `(L, ...)`, L >= 1.
        y_labeled: their integer labels (>= 0), shape `(L,)`.
        x_unlabeled: unlabeled images, shape `(U, ...)` with the same
            per-image shape (U may be 0).
        batch_size: examples per batch (>= 1).
        seed: seed of the per-epoch shuffle.
        shuffle: reshuffle every epoch; if False, batches follow the index.

    Returns:
        A tuple `(dataset, num_examples)`: a `tf.data.Dataset` of
        `((x float32, index int32), (y int32, mask float32))` batches, where
        `mask` is 1 for labeled and 0 for unlabeled examples (whose `y` is 0),
        and `num_examples = L + U` (the model's `num_examples`).

    Raises:
        ValueError: for a batch size below 1, no labeled image, mismatched
            lengths or image shapes, or labels that are not non-negative
            integers.

    Example:

    >>> ds, n = temporal_ensembling_dataset(x_l, y_l, x_u, batch_size=50, seed=0)
    >>> model = TemporalEnsemblingModel(classifier, num_examples=n, num_labeled=len(x_l))
    >>> model.fit(ds, epochs=300, callbacks=[TemporalEnsemblingUpdate()])
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be an integer >= 1. Received: batch_size={batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Expected `seed` to be an integer. Received: seed={seed!r}")
    x_labeled = _as_images(x_labeled, "x_labeled")
    x_unlabeled = _as_images(x_unlabeled, "x_unlabeled")
    y_labeled = np.asarray(y_labeled)
    if len(x_labeled) == 0:
        raise ValueError(f"Expected at least one labeled image. Received: x_labeled.shape={x_labeled.shape}")
    if y_labeled.ndim != 1 or len(y_labeled) != len(x_labeled):
        raise ValueError(
            f"Expected one label per labeled image, shape ({len(x_labeled)},). "
            f"Received: y_labeled.shape={y_labeled.shape}"
        )
    if len(x_unlabeled) and x_unlabeled.shape[1:] != x_labeled.shape[1:]:
        raise ValueError(
            f"Expected unlabeled images of the labeled images' shape {x_labeled.shape[1:]}. "
            f"Received: x_unlabeled.shape={x_unlabeled.shape}"
        )
    if y_labeled.dtype.kind not in "iu" and not (
        y_labeled.dtype.kind == "f" and np.all(np.isfinite(y_labeled)) and np.all(y_labeled == np.round(y_labeled))
    ):
        raise ValueError(f"Expected integer labels. Received: y_labeled.dtype={y_labeled.dtype}")
    if y_labeled.min() < 0:
        raise ValueError(f"Expected labels >= 0. Received: y_labeled containing {y_labeled.min()}")

    num_labeled, num_unlabeled = len(x_labeled), len(x_unlabeled)
    num_examples = num_labeled + num_unlabeled
    if num_unlabeled:
        x = np.concatenate([x_labeled, x_unlabeled])
    else:
        x = x_labeled
    y = np.concatenate([y_labeled.astype(np.int32), np.zeros(num_unlabeled, np.int32)])
    mask = np.concatenate([np.ones(num_labeled, np.float32), np.zeros(num_unlabeled, np.float32)])
    x, y, mask = tf.constant(x), tf.constant(y), tf.constant(mask)

    def gather(index):
        return (tf.cast(tf.gather(x, index), tf.float32), index), (tf.gather(y, index), tf.gather(mask, index))

    # Only the indices are shuffled (the buffer holds N integers, not N images); each
    # batch gathers its examples.
    ds = tf.data.Dataset.range(num_examples).map(lambda i: tf.cast(i, tf.int32))
    if shuffle:
        ds = ds.shuffle(num_examples, seed=int(seed), reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), num_examples
