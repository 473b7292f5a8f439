"""`ImageSplits`, the train/test arrays every loader returns, and the checks behind it.

Kept apart from the loaders (`tfinfo.data.sources`) so that the embedded default and
the split helpers can build on it without importing the loaders.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSplits:
    """Train/test image arrays of one dataset.

    Args:
        x_train: uint8 images of shape `(N, H, W, C)`.
        y_train: int32 labels in `0..num_classes-1`, shape `(N,)`.
        x_test: uint8 images of shape `(M, H, W, C)`.
        y_test: int32 labels, shape `(M,)`.
        num_classes: number of classes.
        name: a short name of the dataset, used in logs and messages.
        original_rank: rank of the images as stored by the source (3 for
            `(N, H, W)`, 4 for `(N, H, W, C)`).
        skipped_files: number of unreadable image files that were skipped.

    Example:

    >>> splits = load_spec("embedded", role="source")
    >>> splits.image_shape
    (28, 28, 1)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    original_rank: int = 4
    skipped_files: int = 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The `(H, W, C)` shape of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])


def _display(name: str) -> str:
    return name if "`" in name else f"`{name}`"


def check_seed(seed, *, name: str = "seed") -> int:
    """Checks a seed of NumPy's generators: a non-negative integer.

    Args:
        seed: the value to check.
        name: the argument name used in error messages.

    Returns:
        The seed as a Python int.

    Raises:
        ValueError: for a bool, a non-integer or a negative value.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"Expected `{name}` to be a non-negative integer. "
                         f"Received: {name}={seed!r}")
    return int(seed)


def _as_array(x, shown: str) -> np.ndarray:
    """`np.asarray(x)`, with ragged or unconvertible input reported in our format."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"Expected {shown} to be an array of one shape and numeric dtype. "
                         f"Received: {type(x).__name__} ({e})") from e


def validate_images(x, *, name: str) -> np.ndarray:
    """Checks an image array and converts it to uint8 NHWC.

    Float images with a maximum of at most 1.0 are scaled by 255; float images
    in [0, 255] are kept. Values are rounded to the nearest integer.

    Args:
        x: images of shape `(N, H, W)` or `(N, H, W, C)` with C in {1, 3},
            integer or float.
        name: the argument name used in error messages, e.g. `"x_train"`.

    Returns:
        A C-contiguous uint8 array of shape `(N, H, W, C)`.

    Raises:
        ValueError: for a non-numeric dtype, a wrong rank or channel count, no
            images, NaN or inf values, or values outside [0, 255].

    Example:

    >>> validate_images(np.zeros((2, 8, 8), "float32"), name="x").shape
    (2, 8, 8, 1)
    """
    shown = _display(name)
    x = _as_array(x, shown)
    if x.dtype.kind not in "uif":
        raise ValueError(f"Expected {shown} to be a numeric image array (uint8 or float). "
                         f"Received: dtype={x.dtype}")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise ValueError(f"Expected {shown} to be images of shape (N, H, W) or (N, H, W, C) "
                         f"with C in {{1, 3}}. Received: shape={x.shape}")
    if x.size == 0:
        raise ValueError(f"Expected {shown} to hold at least one non-empty image. "
                         f"Received: shape={x.shape}")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f":
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"Expected finite pixel values in {shown}. "
                             f"Received: {bad} NaN or inf values")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise ValueError(f"Expected pixel values in [0, 255] (or [0, 1] for floats) in "
                         f"{shown}. Received: min={low}, max={high}")
    if x.dtype.kind == "f":
        x = np.rint(x.astype(np.float32) * np.float32(255.0 if high <= 1.0 else 1.0))
    return np.ascontiguousarray(x.astype(np.uint8))


def validate_labels(y, *, num_images: int, name: str) -> np.ndarray:
    """Checks class labels and converts them to int32.

    Args:
        y: integer labels of shape `(N,)` or `(N, 1)`; integral floats are
            accepted.
        num_images: the number of images the labels belong to.
        name: the argument name used in error messages, e.g. `"y_train"`.

    Returns:
        An int32 array of shape `(N,)`.

    Raises:
        ValueError: for non-numeric or non-integer labels, a wrong shape, a
            length different from `num_images`, or negative labels.

    Example:

    >>> validate_labels([0, 2, 1], num_images=3, name="y").dtype
    dtype('int32')
    """
    shown = _display(name)
    y = _as_array(y, shown)
    if y.dtype.kind not in "uif":
        raise ValueError(f"Expected integer class labels in {shown}. Received: dtype={y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"Expected {shown} to be labels of shape (N,). Received: shape={y.shape}")
    if len(y) != num_images:
        raise ValueError(f"Expected {shown} to hold one label per image ({num_images}). "
                         f"Received: {len(y)} labels")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise ValueError(f"Expected integer class labels in {shown}. Received: "
                             f"{int(bad.sum())} non-integer values such as {y[bad][0]}")
    if y.size and y.min() < 0:
        raise ValueError(f"Expected non-negative class labels in {shown}. "
                         f"Received: labels containing {y.min()}")
    if y.size and y.max() > np.iinfo(np.int32).max:
        raise ValueError(f"Expected class labels below 2**31 in {shown}. "
                         f"Received: labels containing {y.max()}")
    return y.astype(np.int32)


def stratified_indices(y: np.ndarray, test_fraction: float, seed) -> tuple:
    """Seeded stratified split of `range(len(y))` into shuffled train/test indices."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = min(int(round(len(idx) * test_fraction)), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
