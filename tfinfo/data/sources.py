"""Image data sources: data specs, `.npz` files, image folders and TFDS.

Every loader returns an `ImageSplits`: uint8 NHWC images and int32 labels. The
float images of one dataset share one scale, stated (`:scale=255` / `:scale=1`
in a spec) or inferred from all of them together (`float_scale`).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import re
import zipfile

import numpy as np

from tfinfo.data.image_splits import ImageSplits
from tfinfo.data.image_splits import check_class_count
from tfinfo.data.image_splits import check_scale
from tfinfo.data.image_splits import check_seed
from tfinfo.data.image_splits import float_scale
from tfinfo.data.image_splits import stratified_indices
from tfinfo.data.image_splits import validate_image_arrays
from tfinfo.data.image_splits import validate_images
from tfinfo.data.image_splits import validate_labels
from tfinfo.data.tfds_loader import load_tfds

logger = logging.getLogger(__name__)

_SPEC_ERROR = (
    "Expected a data spec of the form 'embedded', 'npz:PATH[:scale=1|255]', 'dir:PATH[:scale=1|255]' or "
    "'tfds:NAME[:classes=...][:scale=1|255]'. Received: spec={spec!r}"
)
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# A trailing `:scale=...` of an `npz:` or `dir:` spec (a path may hold colons).
_PATH_OPTION = re.compile(r"^(?P<path>.+):scale=(?P<scale>[^:/\\]*)$")


def load_npz(path, *, scale=None) -> ImageSplits:
    """Loads `x_train, y_train, x_test, y_test` from an `.npz` file.

    The file is read with `allow_pickle=False`: object arrays are refused and
    never unpickled.

    Args:
        path: path of the `.npz` file. Images are `(N, H, W)` or
            `(N, H, W, C)`, uint8 or float (in [0, 1] or [0, 255]).
        scale: `None` (infer one scale from `x_train` and `x_test`
            together), 255 (float images in [0, 1]) or 1 (floats in 0..255).

    Returns:
        An `ImageSplits` with `num_classes = max label + 1`.

    Raises:
        ValueError: if the file is missing or unreadable, lacks an array,
            holds an object array, any array fails validation, or the float
            images have an ambiguous range (e.g. a maximum of 1.02).

    Example:

    >>> splits = load_npz("/data/mnist.npz")
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Expected an existing .npz file. Received: path={path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"Expected a readable .npz file at {path}. Received: {e}") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"Expected an .npz archive of named arrays at {path}. "
                         f"Received: a single array of type {type(data).__name__}")
    arrays = {}
    with data:
        missing = [k for k in _NPZ_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"Expected arrays {', '.join(_NPZ_KEYS)} in {path}. "
                             f"Received: arrays {sorted(data.files)} (missing {missing})")
        for key in _NPZ_KEYS:
            try:
                arrays[key] = data[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise ValueError(f"Expected `{key}` in {path} to be a readable array. "
                                     f"Received: {e}") from e
                raise ValueError(f"Expected `{key}` in {path} to be a numeric array; object "
                                 "arrays are refused because loading them would unpickle "
                                 "(and could run) arbitrary code. Received: an object "
                                 f"(pickled) array ({e})") from e
            except (OSError, zipfile.BadZipFile, EOFError) as e:
                # A damaged archive member: bad CRC, truncated data, unreadable header.
                raise ValueError(f"Expected `{key}` in {path} to be a readable array. "
                                 f"Received: {type(e).__name__}: {e}") from e
    ranks = {k: arrays[k].ndim for k in ("x_train", "x_test")}
    x_train, x_test = validate_image_arrays(
        {f"`x_train` in {path}": arrays["x_train"], f"`x_test` in {path}": arrays["x_test"]},
        dataset=f"npz:{path}", scale=scale).values()
    if ranks["x_train"] != ranks["x_test"] or x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"Expected `x_test` in {path} to have the image shape of `x_train` "
                         f"{arrays['x_train'].shape[1:]}. Received: {arrays['x_test'].shape[1:]}")
    y_train = validate_labels(
        arrays["y_train"], num_images=len(x_train), name=f"`y_train` in {path}"
    )
    y_test = validate_labels(
        arrays["y_test"], num_images=len(x_test), name=f"`y_test` in {path}"
    )
    num_classes = int(max(y_train.max(), y_test.max(initial=0))) + 1
    name = os.path.splitext(os.path.basename(path))[0]
    return ImageSplits(x_train, y_train, x_test, y_test, num_classes, name,
                       original_rank=ranks["x_train"])


@dataclasses.dataclass
class _Folder:
    """The readable images of `root/CLASS/*` and what was skipped."""

    images: list
    labels: list
    files: list
    readable: dict  # class name -> readable files
    unreadable: dict  # class name -> skipped files

    @property
    def skipped(self) -> int:
        return sum(self.unreadable.values())


def _decode(img) -> np.ndarray:
    """Pixels of an opened PIL image: uint8 `(H, W)` or `(H, W, 3)`, or the raw
    array of a 32-bit integer ("I"), float ("F") or signed 16-bit image, whose
    range the caller checks."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit gray: 0..65535 onto 0..255
        return np.rint(np.asarray(img).astype(np.float64) / 257.0).astype(np.uint8)
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        return np.asarray(img)
    gray = img.mode in ("1", "L", "LA", "La")
    return np.asarray(img.convert("L" if gray else "RGB"))


def _read_image_folder(folder: str, class_names: list[str]) -> _Folder:
    """Reads `folder/CLASS/*` images; unreadable files are counted per class."""
    from PIL import Image

    out = _Folder([], [], [], {c: 0 for c in class_names}, {c: 0 for c in class_names})
    for label, cls in enumerate(class_names):
        for fname in sorted(os.listdir(os.path.join(folder, cls))):
            fpath = os.path.join(folder, cls, fname)
            if fname.startswith(".") or not os.path.isfile(fpath):
                continue
            try:
                with Image.open(fpath) as img:
                    img.load()
                    pixels = _decode(img)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                out.unreadable[cls] += 1
                continue
            if pixels.dtype.kind in "iu" and pixels.dtype != np.uint8:  # 32-bit integers
                pixels = validate_images(pixels[np.newaxis], name=f"`{fpath}`")[0, ..., 0]
            elif pixels.dtype.kind == "f":  # scaled later, with all float files together
                validate_images(pixels[np.newaxis], name=f"`{fpath}`", scale=1)
            out.images.append(pixels)
            out.labels.append(label)
            out.files.append(fpath)
            out.readable[cls] += 1
    empty = [c for c in class_names if not out.readable[c]]
    if empty:
        found = ", ".join(f"{c!r} ({out.unreadable[c]} unreadable files)" if out.unreadable[c]
                          else f"{c!r} (no files)" for c in empty)
        raise ValueError(f"Expected at least one readable image in every class folder of "
                         f"{folder}. Received: none in {found}")
    return out


def _scale_float_images(folders: dict, scale, path: str) -> None:
    """Converts the float images of `{folder: _Folder}` to uint8 in place, with one
    scale for all of them."""
    ranges = {}
    for folder, read in folders.items():
        floats = [a for a in read.images if a.dtype.kind == "f"]
        if floats:
            ranges[f"the float image files of {folder}"] = (
                min(float(a.min()) for a in floats), max(float(a.max()) for a in floats))
    factor = float_scale(ranges, scale=scale, dataset=f"dir:{path}")
    for read in folders.values():
        read.images = [np.rint(a.astype(np.float32) * np.float32(factor)).clip(0, 255).astype(
            np.uint8) if a.dtype.kind == "f" else a for a in read.images]


def _stack_images(images: list, files: list, path: str) -> np.ndarray:
    """Stacks 2-D (gray) and 3-D (RGB) arrays of one size into uint8 NHWC."""
    if not images:
        raise ValueError(f"Expected readable image files in the class folders of {path}. "
                         "Received: none")
    size, channels = images[0].shape[:2], 3 if any(a.ndim == 3 for a in images) else 1
    out = np.empty((len(images),) + size + (channels,), np.uint8)
    for i, a in enumerate(images):
        if a.shape[:2] != size:
            raise ValueError(f"Expected all images in {path} to have the size (height, width) "
                             f"{size} of {files[0]}. Received: {a.shape[:2]} in {files[i]}")
        out[i] = a[..., np.newaxis] if a.ndim == 2 else a
    return out


def _class_dirs(folder: str) -> list[str]:
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def load_image_dir(path, *, seed: int = 0, test_fraction: float = 0.2,
                   scale=None) -> ImageSplits:
    """Loads a folder with one subfolder of image files per class.

    Classes are the sorted subfolder names (e.g. `A`..`J`). If `path/train`
    exists, it holds the class folders, and `path/test` (if present) the test
    split; without a test folder a seeded stratified split holds out
    `test_fraction` of every class. Unreadable image files (the public
    notMNIST archive has some: empty, truncated or not images at all) are
    skipped, counted and logged as a warning; a class folder without any
    readable image is an error. 16-bit gray images are mapped onto 0..255;
    32-bit integer images must hold values in 0..255; 32-bit float images share
    one scale, [0, 1] or 0..255, decided over all of them (`float_scale`).

    Args:
        path: the folder.
        seed: seed of the train/test split.
        test_fraction: held-out fraction when there is no `test` folder.
        scale: `None` (infer), 255 (float files in [0, 1]) or 1 (0..255).

    Returns:
        An `ImageSplits` (gray images get one channel, color images three)
        whose `skipped_files` counts the unreadable files.

    Raises:
        ValueError: if the folder has no class subfolders, a class folder
            (of `train` or `test`) has no readable image, the class folders
            of `train` and `test` differ, sizes differ, pixel values are out
            of range, or the held-out test split would be empty.

    Example:

    >>> splits = load_image_dir("/data/notMNIST_small")
    """
    path = os.fspath(path)
    seed = check_seed(seed)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not (
            0.0 < test_fraction < 1.0):
        raise ValueError("Expected `test_fraction` in (0, 1). "
                         f"Received: test_fraction={test_fraction!r}")
    if not os.path.isdir(path):
        where = "" if os.path.isabs(path) else f", {os.path.abspath(path)}"
        raise ValueError(f"Expected an existing image folder (one subfolder of images per "
                         f"class; see docs/datasets.md). Received: path={path!r}{where} "
                         "does not exist")
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    root = train_dir if os.path.isdir(train_dir) else path
    classes = _class_dirs(root)
    if not classes:
        raise ValueError(f"Expected one subfolder per class in {root}. Received: no subfolders")
    if root == train_dir and os.path.isdir(test_dir) and _class_dirs(test_dir) != classes:
        raise ValueError(f"Expected the class folders of {test_dir} to be {classes}. "
                         f"Received: {_class_dirs(test_dir)}")
    train = _read_image_folder(root, classes)
    skipped = train.skipped
    if root == train_dir and os.path.isdir(test_dir):
        test = _read_image_folder(test_dir, classes)
        skipped += test.skipped
        _scale_float_images({root: train, test_dir: test}, scale, path)
        x = _stack_images(train.images + test.images, train.files + test.files, path)
        x_train, x_test = x[:len(train.images)], x[len(train.images):]
        y_train = np.asarray(train.labels, np.int32)
        y_test = np.asarray(test.labels, np.int32)
    else:
        _scale_float_images({root: train}, scale, path)
        x, y = _stack_images(train.images, train.files, path), np.asarray(train.labels, np.int32)
        train_idx, test_idx = stratified_indices(y, test_fraction, seed)
        if not len(test_idx):
            raise ValueError(
                f"Expected enough images in the class folders of {root} to hold out "
                f"test_fraction={test_fraction} of a class as the test split (or a "
                f"{test_dir} folder). Received: at most {int(np.bincount(y).max())} "
                "readable images per class, an empty test split")
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    if skipped:
        logger.warning("Skipped %d unreadable image files in %s.", skipped, path)
    return ImageSplits(x_train, y_train, x_test, y_test, len(classes),
                       os.path.basename(os.path.normpath(path)), original_rank=4,
                       skipped_files=skipped)


def _parse_classes(value: str, spec: str) -> list[int]:
    try:
        classes = [int(c) for c in value.split(",") if c.strip()]
    except ValueError:
        classes = []
    if not classes or len(set(classes)) != len(classes):
        raise ValueError("Expected distinct integer class ids as in 'classes=0,10,20'. "
                         f"Received: spec={spec!r}")
    return classes


def _split_path_option(rest: str, spec) -> tuple[str, int | None]:
    """`PATH` and the stated scale of `PATH[:scale=1|255]`."""
    match = _PATH_OPTION.match(rest)
    if not match:
        return rest, None
    return match["path"], _spec_scale(match["scale"], spec)


def _spec_scale(value: str, spec) -> int:
    try:
        return check_scale(value)
    except ValueError:
        raise ValueError("Expected ':scale=255' (float pixel values in [0, 1]) or ':scale=1' "
                         f"(float pixel values in 0..255) in a data spec. Received: spec={spec!r}"
                         ) from None


def _load(spec, text: str, role: str, seed: int, cache_dir) -> ImageSplits:
    from tfinfo.data.embedded import load_embedded

    prefix, _, rest = text.partition(":")
    if prefix == "embedded":
        chosen = rest or role
        if chosen not in ("source", "target"):
            raise ValueError(_SPEC_ERROR.format(spec=spec))
        return load_embedded(chosen, seed=seed, cache_dir=cache_dir)
    if prefix in ("npz", "dir", "tfds") and not rest:
        raise ValueError(_SPEC_ERROR.format(spec=spec))
    if prefix in ("npz", "dir"):
        path, scale = _split_path_option(rest, spec)
        if prefix == "npz":
            return load_npz(os.path.expanduser(path), scale=scale)
        return load_image_dir(os.path.expanduser(path), seed=seed, scale=scale)
    if prefix == "tfds":
        parts = rest.split(":")
        options = dict(p.split("=", 1) for p in parts if "=" in p)
        if set(options) - {"classes", "scale"}:
            raise ValueError(_SPEC_ERROR.format(spec=spec))
        classes = _parse_classes(options["classes"], spec) if "classes" in options else None
        scale = _spec_scale(options["scale"], spec) if "scale" in options else None
        return load_tfds(":".join(p for p in parts if "=" not in p), classes=classes,
                         scale=scale)
    raise ValueError(_SPEC_ERROR.format(spec=spec))


def load_spec(spec: str | None, *, role: str = "source", seed: int = 0,
              cache_dir: str | None = None) -> ImageSplits:
    """Loads the dataset a data spec names.

    Args:
        spec: `None` or `"embedded"` (the embedded default of `role`),
            `"embedded:source"`, `"embedded:target"`, `"npz:PATH"`,
            `"dir:PATH"` or `"tfds:NAME[:classes=0,10,20]"`. `npz:`, `dir:`
            and `tfds:` specs take a trailing `:scale=255` (float images in
            [0, 1]) or `:scale=1` (float images in 0..255); without it one
            scale is inferred from all float images of the dataset. `tfds:`
            reads `$TFDS_DATA_DIR` (default `~/tensorflow_datasets`).
        role: `"source"` (embedded digits) or `"target"` (embedded letters).
        seed: seed of generated data and of train/test splits.
        cache_dir: cache folder of the embedded data.

    Returns:
        An `ImageSplits` with at least 2 classes in its training labels.

    Raises:
        ValueError: for an unknown spec or role, invalid data, a TFDS
            dataset neither prepared nor downloadable, or training labels of
            fewer than 2 classes.

    Example:

    >>> source = load_spec("tfds:mnist")
    >>> target = load_spec("dir:/data/notMNIST_small", role="target")
    """
    if role not in ("source", "target"):
        raise ValueError(f"Expected role 'source' or 'target'. Received: role={role!r}")
    text = "embedded" if spec is None else str(spec).strip()
    splits = _load(spec, text, role, seed, cache_dir)
    if text.partition(":")[0] != "embedded":  # the embedded sets have 10 classes by making
        check_class_count(splits.y_train, num_classes=splits.num_classes,
                          what=f"the {role} ({text})")
    return splits
