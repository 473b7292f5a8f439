"""Labeled/unlabeled target splits, source-target harmonization and pipelines."""

from __future__ import annotations

import dataclasses
import logging
import numbers

import numpy as np
import tensorflow as tf

from tfinfo.data.image_splits import ImageSplits
from tfinfo.data.image_splits import check_seed
from tfinfo.data.image_splits import validate_labels

logger = logging.getLogger(__name__)

_RANK_SHAPES = {3: "(N, H, W)", 4: "(N, H, W, C)"}
_RESIZE_CHUNK = 4096
_MAX_LISTED = 5  # classes listed in an error message


def _check_count(value, name: str, minimum: int = 1) -> int:
    """An integer (or integral float) >= `minimum`, as a Python int."""
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and float(value).is_integer())
    if isinstance(value, bool) or not integral or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}. "
                         f"Received: {name}={value!r}")
    return int(value)


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Expected `{name}` to be an integer. Received: {name}={value!r}")
    return int(value)


def _check_batch_images(x, name: str) -> np.ndarray:
    """Checks images handed to a pipeline: `(N, H, W, C)`, N >= 1, numeric,
    finite and in 0..255. Returns them as an array, unchanged."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"Expected `{name}` to be an array of images of one shape. "
                         f"Received: {type(x).__name__} ({e})") from e
    if x.dtype.kind not in "uif":
        raise ValueError(f"Expected `{name}` to be a numeric image array (uint8 or float). "
                         f"Received: dtype={x.dtype}")
    if x.ndim != 4 or 0 in x.shape[1:]:
        raise ValueError(f"Expected `{name}` to be images of shape (N, H, W, C). "
                         f"Received: shape={x.shape}")
    if len(x) == 0:
        raise ValueError(f"Expected `{name}` to hold at least one image. "
                         f"Received: shape={x.shape}")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "f":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"Expected finite pixel values in `{name}`. "
                             f"Received: {bad} NaN or inf values")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise ValueError(f"Expected pixel values in 0..255 in `{name}`. "
                         f"Received: min={low}, max={high}")
    if x.dtype.kind == "f" and high <= 1.0:
        logger.warning("The pixel values of `%s` lie in [0, 1]; the pipelines and models "
                       "expect 0..255 (scale them by 255, or pass uint8 images).", name)
    return x


def _check_pipeline_labels(y, num_images: int, name: str, what: str) -> np.ndarray:
    """Integer labels in 0.. as int32, one per image."""
    try:
        count = len(y)
    except TypeError:  # a scalar
        count = None
    if count != num_images:
        raise ValueError(f"Expected one label per {what} ({num_images}). "
                         f"Received: {count if count is not None else repr(y)} labels")
    return validate_labels(y, num_images=num_images, name=name)


def labeled_unlabeled_split(
    x, y, num_labeled: int, *, num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draws a seeded, class-balanced labeled subset; the rest is unlabeled.

    Every class gets `num_labeled // num_classes` labeled images (so at
    least one); the remainder goes one each to the first classes of a seeded
    class order.

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
        ValueError: if `num_classes < 2`, `num_labeled` is not an integer in
            `num_classes..N-1` (every class must get a labeled image and at
            least one image must stay unlabeled), a label is not an integer
            in `0..num_classes-1`, a class has no training image at all, or
            a class holds fewer images than its share.

    Example:

    >>> x_l, y_l, x_u, idx_u = labeled_unlabeled_split(
    ...     x_train, y_train, 100, num_classes=10, seed=0)
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("Expected target training images of shape (N, ...). "
                         f"Received: shape={x.shape}")
    y = _check_pipeline_labels(y, len(x), "y", "target training image")
    num_labeled = _check_count(num_labeled, "labeled")
    num_classes = _check_count(num_classes, "num_classes")
    if num_classes < 2:  # one class: a perfect, meaningless score
        raise ValueError("Expected at least 2 classes in the target training labels to train "
                         f"a classifier. Received: num_classes={num_classes}")
    seed = check_seed(seed)
    if num_labeled > len(x):
        raise ValueError(
            f"Expected `labeled` <= the {len(x)} target training images. "
            f"Received: labeled={num_labeled}")
    if len(y) and y.max() >= num_classes:
        raise ValueError(
            f"Expected labels in 0..{num_classes - 1}. Received: labels containing {y.max()}")
    if num_labeled == len(x):
        raise ValueError(
            "Expected at least one unlabeled target image after drawing the labeled "
            f"ones. Received: labeled={num_labeled} of {len(x)} target training images")
    present = np.unique(y)  # sorted; no allocation of num_classes entries
    if len(present) < num_classes:
        missing, c, i = [], 0, 0
        while len(missing) < _MAX_LISTED and c < num_classes:
            if i < len(present) and present[i] == c:
                i += 1
            else:
                missing.append(c)
            c += 1
        more = num_classes - len(present) - len(missing)
        raise ValueError(
            f"Expected target training images of every class 0..{num_classes - 1} "
            f"(num_classes={num_classes}). Received: none of class"
            f"{'es' if num_classes - len(present) > 1 else ''} {missing}"
            f"{f' and {more} more' if more > 0 else ''}")
    if num_labeled < num_classes:
        raise ValueError(
            f"Expected `labeled` >= the number of classes ({num_classes}), so that every "
            f"class has a labeled image. Received: labeled={num_labeled}")
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


def _check_geometry(splits: ImageSplits, role: str) -> None:
    """Checks that `splits` holds uint8 `(N, H, W, C)` train and test images of one
    shape with C in {1, 3} and one label per image (an `ImageSplits` built by hand
    may not)."""
    shapes = {}
    for part in ("train", "test"):
        x, y = getattr(splits, f"x_{part}"), getattr(splits, f"y_{part}")
        shown = f"`x_{part}` of the {role} ({splits.name})"
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or (
                x.shape[-1] not in (1, 3)) or 0 in x.shape[1:]:
            raise ValueError(
                f"Expected {shown} to be uint8 images of shape (N, H, W, C) with C in "
                f"{{1, 3}}. Received: {type(x).__name__} of dtype="
                f"{getattr(x, 'dtype', None)}, shape={getattr(x, 'shape', None)}")
        if np.shape(y) != (len(x),):
            raise ValueError(f"Expected one label per image in {shown} ({len(x)}). "
                             f"Received: labels of shape {np.shape(y)}")
        shapes[part] = x.shape[1:]
    if shapes["train"] != shapes["test"]:
        raise ValueError(
            f"Expected the test images of the {role} ({splits.name}) to have the image "
            f"shape of its training images {shapes['train']}. Received: {shapes['test']}")


def check_compatible(source: ImageSplits, target: ImageSplits) -> None:
    """Checks that source and target hold images `harmonize` can bring together.

    Both must hold uint8 `(N, H, W, C)` images with C in {1, 3}, one shape per
    dataset, stored by their source with the same rank.

    Args:
        source: the source dataset.
        target: the target dataset.

    Raises:
        ValueError: if the original ranks differ, e.g. `(N, H, W)` and
            `(N, H, W, C)`, or a dataset's arrays are malformed (e.g. an
            `ImageSplits` built by hand with 4 channels, float images, or
            train and test images of different shapes).

    Example:

    >>> check_compatible(load_spec("tfds:mnist"), load_spec("dir:/notMNIST"))
    """
    _check_geometry(source, "source")
    _check_geometry(target, "target")
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
    if abs(hs * wt - ht * ws) > 0.02 * max(hs * wt, ht * ws):
        logger.warning("Source images of %dx%d and target images of %dx%d differ in aspect "
                       "ratio: both are stretched to %dx%d.", hs, ws, ht, wt, *size)
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
        ValueError: for a batch size that is not a positive integer, a
            non-integer seed, images that are not `(N, H, W, C)` numeric
            arrays with finite values in 0..255, source and target images of
            different shapes, labels that are not non-negative integers, one
            per source image, an empty side, or (with `drop_remainder`) fewer
            source images than `batch_size`.

    Example:

    >>> ds = transfer_dataset(x_src, y_src, x_unl, batch_size=50, seed=0)
    >>> model.fit(ds, epochs=10)
    """
    batch_size = _check_count(batch_size, "batch_size")
    seed = _check_int(seed, "seed")
    x_source = _check_batch_images(x_source, "x_source")
    y_source = _check_pipeline_labels(y_source, len(x_source), "y_source", "source image")
    x_unlabeled = _check_batch_images(x_unlabeled, "x_unlabeled")
    if x_unlabeled.shape[1:] != x_source.shape[1:]:
        raise ValueError(f"Expected `x_unlabeled` to have the image shape (H, W, C) of "
                         f"`x_source` {x_source.shape[1:]}. Received: {x_unlabeled.shape[1:]}")
    if drop_remainder and len(x_source) < batch_size:
        raise ValueError(f"Expected at least `batch_size` ({batch_size}) source images. "
                         f"Received: {len(x_source)}")
    source = tf.data.Dataset.from_tensor_slices((x_source, y_source)).shuffle(
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
        x: uint8 images (or numbers in 0..255), shape `(N, H, W, C)`.
        y: integer labels, shape `(N,)`.
        batch_size: examples per batch; the last batch may be smaller.
        shuffle: reshuffle in a seeded order every epoch.
        seed: seed of the shuffle.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: for a batch size that is not a positive integer, a
            non-integer seed, images that are not a non-empty `(N, H, W, C)`
            numeric array with finite values in 0..255, or labels that are
            not non-negative integers, one per image.

    Example:

    >>> model.evaluate(labeled_dataset(x_test, y_test, batch_size=256, shuffle=False))
    """
    batch_size = _check_count(batch_size, "batch_size")
    seed = _check_int(seed, "seed")
    x = _check_batch_images(x, "x")
    y = _check_pipeline_labels(y, len(x), "y", "image")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
