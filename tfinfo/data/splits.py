"""Labeled/unlabeled target splits, source-target harmonization and pipelines."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from tfinfo.data.sources import ImageSplits

logger = logging.getLogger(__name__)

_RANK_SHAPES = {3: "(N, H, W)", 4: "(N, H, W, C)"}
_RESIZE_CHUNK = 4096


def labeled_unlabeled_split(
    x, y, num_labeled: int, *, num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draws a seeded, class-balanced labeled subset; the rest is unlabeled.

    Every class gets `num_labeled // num_classes` labeled images; the
    remainder goes one each to the first classes of a seeded class order.

    Args:
        x: training images, shape `(N, ...)`.
        y: integer labels in `0..num_classes-1`, shape `(N,)`.
        num_labeled: total number of labeled images to draw (>= 1).
        num_classes: number of classes.
        seed: seed of the draw.

    Returns:
        A tuple `(x_labeled, y_labeled, x_unlabeled, unlabeled_indices)`:
        the labeled images and int32 labels in a seeded shuffled order, the
        remaining images, and their sorted indices into `x`.

    Raises:
        ValueError: if `num_labeled` is below 1 or leaves no unlabeled image,
            a label is outside `0..num_classes-1`, or a class holds fewer
            images than its share.

    Example:

    >>> x_l, y_l, x_u, idx_u = labeled_unlabeled_split(
    ...     x_train, y_train, 100, num_classes=10, seed=0)
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            f"Expected one label per target training image ({len(x)}). "
            f"Received: {len(y)} labels")
    if isinstance(num_labeled, bool) or int(num_labeled) != num_labeled or num_labeled < 1:
        raise ValueError(f"Expected `labeled` >= 1. Received: labeled={num_labeled}")
    num_labeled = int(num_labeled)
    if num_labeled > len(x):
        raise ValueError(
            f"Expected `labeled` <= the {len(x)} target training images. "
            f"Received: labeled={num_labeled}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = y.min() if y.min() < 0 else y.max()
        raise ValueError(
            f"Expected labels in 0..{num_classes - 1}. Received: labels containing {bad}")
    if num_labeled == len(x):
        raise ValueError(
            "Expected at least one unlabeled target image after drawing the labeled "
            f"ones. Received: labeled={num_labeled} of {len(x)} target training images")
    if num_labeled < num_classes:
        logger.warning("Only %d labeled images for %d classes: some classes get none.",
                       num_labeled, num_classes)
    rng = np.random.default_rng(seed)
    counts = np.full(num_classes, num_labeled // num_classes)
    counts[rng.permutation(num_classes)[:num_labeled % num_classes]] += 1
    labeled = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < counts[c]:
            raise ValueError(
                f"Expected at least {counts[c]} training images of class {c} to draw "
                f"{counts[c]} labeled ones (labeled={num_labeled}). Received: {len(idx)}")
        labeled.append(rng.permutation(idx)[:counts[c]])
    labeled = rng.permutation(np.concatenate(labeled))
    mask = np.ones(len(x), bool)
    mask[labeled] = False
    unlabeled_indices = np.flatnonzero(mask)
    return x[labeled], y[labeled].astype(np.int32), x[unlabeled_indices], unlabeled_indices


def check_compatible(source: ImageSplits, target: ImageSplits) -> None:
    """Checks that source and target images were stored with the same rank.

    Args:
        source: the source dataset.
        target: the target dataset.

    Raises:
        ValueError: if the original ranks differ, e.g. `(N, H, W)` and
            `(N, H, W, C)`.

    Example:

    >>> check_compatible(load_spec("tfds:mnist"), load_spec("dir:/notMNIST"))
    """
    if source.original_rank != target.original_rank:
        raise ValueError(
            "Expected source and target images of the same rank. Received: source rank "
            f"{source.original_rank} {_RANK_SHAPES.get(source.original_rank, '')}, "
            f"target rank {target.original_rank} "
            f"{_RANK_SHAPES.get(target.original_rank, '')}".rstrip())


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of uint8 NHWC images, in chunks, back to uint8."""
    if x.shape[1:3] == tuple(size):
        return x
    out = np.empty((len(x),) + tuple(size) + x.shape[3:], np.uint8)
    for start in range(0, len(x), _RESIZE_CHUNK):
        chunk = tf.image.resize(x[start:start + _RESIZE_CHUNK], size, method="bilinear")
        out[start:start + _RESIZE_CHUNK] = np.clip(np.rint(chunk.numpy()), 0, 255)
    return out


def _to_geometry(splits: ImageSplits, size: tuple[int, int], channels: int) -> ImageSplits:
    if splits.image_shape == tuple(size) + (channels,):
        return splits
    if splits.image_shape[2] not in (1, channels):
        raise ValueError(
            f"Expected images with 1 or {channels} channels in {splits.name}. "
            f"Received: {splits.image_shape[2]} channels")

    def convert(x):
        x = _resize(x, size)
        return np.repeat(x, channels, axis=-1) if x.shape[-1] != channels else x

    return dataclasses.replace(splits, x_train=convert(splits.x_train),
                               x_test=convert(splits.x_test))


def harmonize(source: ImageSplits, target: ImageSplits) -> tuple[ImageSplits, ImageSplits]:
    """Brings source and target images to a common geometry.

    Both get the larger height and width of the two (bilinear resize, back to
    uint8) and the larger channel count (gray repeated into 3 channels).

    Args:
        source: the source dataset.
        target: the target dataset.

    Returns:
        `(source, target)`; an input that needs no change is returned as is.

    Raises:
        ValueError: if `check_compatible` fails.

    Example:

    >>> source, target = harmonize(mnist, cifar)  # both 32x32x3
    """
    check_compatible(source, target)
    (hs, ws, cs), (ht, wt, ct) = source.image_shape, target.image_shape
    size, channels = (max(hs, ht), max(ws, wt)), max(cs, ct)
    return _to_geometry(source, size, channels), _to_geometry(target, size, channels)


def transfer_dataset(x_source, y_source, x_unlabeled, *, batch_size: int, seed: int = 0,
                     drop_remainder: bool = True) -> tf.data.Dataset:
    """A dataset of paired source and unlabeled target batches.

    The source defines the epoch: one pass over `x_source` in a seeded order
    that changes every epoch. The target is reshuffled every epoch and
    repeated as needed, so both sides of a step have the same batch size.
    Pixels stay in 0..255 (as float32); the model rescales them.

    Args:
        x_source: uint8 source images, shape `(N, H, W, C)`.
        y_source: integer source labels, shape `(N,)`.
        x_unlabeled: uint8 unlabeled target images, shape `(M, H, W, C)`.
        batch_size: examples per side and step.
        seed: seed of both shuffles (combined with TensorFlow's global seed,
            if one is set).
        drop_remainder: drop the last incomplete batch; the epoch has
            `floor(N / batch_size)` steps, else `ceil(N / batch_size)`.

    Returns:
        A `tf.data.Dataset` of `((x_source float32, x_target float32),
        y_source int32)`.

    Raises:
        ValueError: for a non-positive batch size, mismatched lengths, or an
            empty side.

    Example:

    >>> ds = transfer_dataset(x_src, y_src, x_unl, batch_size=50, seed=0)
    >>> model.fit(ds, epochs=10)
    """
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1. Received: batch_size={batch_size}")
    if len(x_source) != len(y_source):
        raise ValueError(f"Expected one label per source image ({len(x_source)}). "
                         f"Received: {len(y_source)} labels")
    if len(x_source) == 0 or len(x_unlabeled) == 0:
        raise ValueError("Expected non-empty source and unlabeled target images. Received: "
                         f"{len(x_source)} source and {len(x_unlabeled)} target images")
    if drop_remainder and len(x_source) < batch_size:
        raise ValueError(f"Expected at least `batch_size` ({batch_size}) source images. "
                         f"Received: {len(x_source)}")
    source = tf.data.Dataset.from_tensor_slices(
        (x_source, np.asarray(y_source, np.int32))).shuffle(
        len(x_source), seed=seed, reshuffle_each_iteration=True)
    target = tf.data.Dataset.from_tensor_slices(x_unlabeled).shuffle(
        len(x_unlabeled), seed=seed + 1, reshuffle_each_iteration=True).repeat()
    ds = tf.data.Dataset.zip(source, target).batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda s, t: ((tf.cast(s[0], tf.float32), tf.cast(t, tf.float32)), s[1]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def labeled_dataset(x, y, *, batch_size: int, shuffle: bool, seed: int = 0) -> tf.data.Dataset:
    """A batched dataset of `(x float32 in 0..255, y int32)`.

    Args:
        x: uint8 images, shape `(N, H, W, C)`.
        y: integer labels, shape `(N,)`.
        batch_size: examples per batch; the last batch may be smaller.
        shuffle: reshuffle in a seeded order every epoch.
        seed: seed of the shuffle.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: for a non-positive batch size or mismatched lengths.

    Example:

    >>> model.evaluate(labeled_dataset(x_test, y_test, batch_size=256, shuffle=False))
    """
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1. Received: batch_size={batch_size}")
    if len(x) != len(y):
        raise ValueError(f"Expected one label per image ({len(x)}). Received: {len(y)} labels")
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
