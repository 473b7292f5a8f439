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


SCALES = (1, 255)
# The brightest float pixel of a dataset stored in 0..255: anything above 1 but below
# this (1/8 of full scale) is neither [0, 1] nor a plausible 0..255 image set.
FULL_RANGE_MIN = 32.0


def check_scale(scale, *, name: str = "scale"):
    """Checks a stated pixel scale: `None` (infer), 1 or 255 (numbers or strings).

    `scale=255`: float pixel values lie in [0, 1] and are multiplied by 255.
    `scale=1`: float pixel values lie in 0..255 and are kept.

    Returns:
        `None`, 1 or 255 (a Python int).

    Raises:
        ValueError: for any other value.
    """
    if scale is None:
        return None
    value = scale
    if isinstance(scale, str):
        try:
            value = float(scale.strip())
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value not in SCALES:
        raise ValueError(f"Expected `{name}` to be 1 (float pixel values in 0..255, kept) or "
                         "255 (float pixel values in [0, 1], multiplied by 255). "
                         f"Received: {name}={scale!r}")
    return int(value)


def _checked_images(x, shown: str) -> np.ndarray:
    """Checks dtype, shape, finiteness and the [0, 255] range; returns NHWC, unscaled."""
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
        return x
    if x.dtype.kind == "f":
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"Expected finite pixel values in {shown}. "
                             f"Received: {bad} NaN or inf values")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise ValueError(f"Expected pixel values in [0, 255] (or [0, 1] for floats) in "
                         f"{shown}. Received: min={low}, max={high}")
    return x


def _ranges_text(ranges: dict) -> str:
    return ", ".join(f"{name} in [{low:g}, {high:g}]" for name, (low, high) in ranges.items())


def float_scale(ranges: dict, *, scale=None, dataset: str) -> float:
    """The one factor that maps all float pixel values of a dataset onto 0..255.

    The scale is decided once for every float array of a dataset (train and test
    images, every image file of a folder), never array by array: all maxima at
    most 1 -> 255; all maxima above 1 and the largest at least `FULL_RANGE_MIN`
    (32) -> 1; anything else (e.g. a maximum of 1.02, or arrays in [0, 1] beside
    arrays in 0..255) is ambiguous and refused. Arrays of zeros fit either scale.

    Args:
        ranges: `{shown name: (min, max)}` of the dataset's float arrays, each
            already checked to lie in [0, 255].
        scale: the stated scale (see `check_scale`), or `None` to infer it.
        dataset: the dataset as named in error messages.

    Returns:
        255.0 or 1.0 (1.0 when there are no float arrays).

    Raises:
        ValueError: for an ambiguous range, or values above 1 with `scale=255`.

    Example:

    >>> float_scale({"`x_train`": (0.0, 1.0), "`x_test`": (0.0, 0.98)}, dataset="d")
    255.0
    """
    scale = check_scale(scale)
    ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()}
    if not ranges:
        return 1.0
    if scale == 255:
        over = {k: r for k, r in ranges.items() if r[1] > 1.0}
        if over:
            raise ValueError(f"Expected float pixel values in [0, 1] in {dataset}, as its "
                             f"scale=255 states. Received: {_ranges_text(over)}")
    if scale is not None:
        return float(scale)
    unit = [k for k, (_, hi) in ranges.items() if 0.0 < hi <= 1.0]
    full = [k for k, (_, hi) in ranges.items() if hi > 1.0]
    if full and (unit or max(ranges[k][1] for k in full) < FULL_RANGE_MIN):
        raise ValueError(
            f"Expected the float pixel values of {dataset} to be all in [0, 1] (scaled by "
            f"255) or all in 0..255 with a maximum of at least {FULL_RANGE_MIN:g} (kept): one "
            "scale for all its arrays. Otherwise state it with the spec option ':scale=255' "
            "or ':scale=1' (the `scale` argument in Python; see docs/datasets.md). "
            f"Received: {_ranges_text(ranges)}")
    return 1.0 if full else 255.0


def _to_uint8(x: np.ndarray, factor: float) -> np.ndarray:
    if x.dtype == np.uint8 and factor == 1.0:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f" or factor != 1.0:  # float32 products, as always (same rounding)
        x = np.clip(np.rint(x.astype(np.float32) * np.float32(factor)), 0, 255)
    return np.ascontiguousarray(x.astype(np.uint8))


def validate_image_arrays(arrays: dict, *, dataset: str, scale=None) -> dict:
    """Checks the image arrays of one dataset and converts them to uint8 NHWC with
    one scale.

    Integer arrays hold 0..255 and are kept. The float arrays share one scale,
    stated (`scale`) or inferred from all of them together (`float_scale`).

    Args:
        arrays: `{name: images}`, names as shown in error messages (e.g.
            "`x_train` in a.npz"); images as in `validate_images`.
        dataset: the dataset as named in error messages about the scale.
        scale: `None` (infer), 1 or 255; it applies to the float arrays.

    Returns:
        `{name: uint8 (N, H, W, C) array}`.

    Raises:
        ValueError: as `validate_images`, and for an ambiguous float range.
    """
    checked = {name: _checked_images(x, _display(name)) for name, x in arrays.items()}
    ranges = {_display(n): (x.min(), x.max()) for n, x in checked.items() if x.dtype.kind == "f"}
    factor = float_scale(ranges, scale=scale, dataset=dataset)
    return {n: _to_uint8(x, factor if x.dtype.kind == "f" else 1.0) for n, x in checked.items()}


def validate_images(x, *, name: str, scale=None) -> np.ndarray:
    """Checks an image array and converts it to uint8 NHWC.

    Float images with a maximum of at most 1.0 are scaled by 255; float images
    with a maximum of at least 32 are kept as 0..255; a maximum in between is
    ambiguous and refused unless `scale` states it. Values are rounded to the
    nearest integer. Several arrays of one dataset: `validate_image_arrays`,
    which decides one scale for all of them.

    Args:
        x: images of shape `(N, H, W)` or `(N, H, W, C)` with C in {1, 3},
            integer or float.
        name: the argument name used in error messages, e.g. `"x_train"`.
        scale: `None` (infer), 255 (floats in [0, 1]) or 1 (floats in 0..255).

    Returns:
        A C-contiguous uint8 array of shape `(N, H, W, C)`.

    Raises:
        ValueError: for a non-numeric dtype, a wrong rank or channel count, no
            images, NaN or inf values, values outside [0, 255], or an
            ambiguous float range.

    Example:

    >>> validate_images(np.zeros((2, 8, 8), "float32"), name="x").shape
    (2, 8, 8, 1)
    """
    return validate_image_arrays({name: x}, dataset=_display(name), scale=scale)[name]


def check_class_count(y_train, *, num_classes: int, what: str) -> None:
    """Refuses a dataset whose training labels hold fewer than 2 classes.

    A classifier trained on one class is 100% accurate on it and learns
    nothing, so such data is an error rather than a silent perfect score.

    Args:
        y_train: the training labels.
        num_classes: the dataset's number of classes.
        what: the dataset as named in the message, e.g. "the target (tfds:mnist)".

    Raises:
        ValueError: if `num_classes < 2` or fewer than 2 distinct labels occur.
    """
    present = np.unique(np.asarray(y_train))
    if num_classes < 2 or len(present) < 2:
        found = (f"1 class (label {int(present[0])})" if len(present) == 1
                 else f"{len(present)} classes")
        raise ValueError(
            f"Expected at least 2 classes in {what} to train a classifier. Received: "
            f"{found} among its {len(np.asarray(y_train))} training labels, "
            f"num_classes={num_classes}")


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
