"""The embedded offline default: real digits as source, font letters as target.

The source is the 1,797 handwritten digits that scikit-learn bundles (8x8,
upscaled MNIST-style into a centred box). The target is letters A-J rendered
from the TrueType fonts that matplotlib ships, with seeded affine jitter, like
notMNIST. Both are generated in seconds, cached as `.npz` and identical for a
given seed.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import numpy as np

from tfinfo.data.image_splits import ImageSplits
from tfinfo.data.image_splits import check_seed
from tfinfo.data.image_splits import stratified_indices

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1
_LETTERS = "ABCDEFGHIJ"
# Fonts whose A-J are real, distinct letter glyphs (checked visually). The
# *Display fonts, the STIX symbol fonts and cmex10 have no A-J; cmsy10 holds
# calligraphic capitals.
_FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf",
    "cmti10.ttf", "cmmi10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmsy10.ttf",
)
_GLYPH_SIZE = 96  # font size of the master glyphs
_OVERSAMPLE = 4  # render at 4x the image size, then box-filter down


def _default_cache_dir() -> str:
    return os.environ.get("TFINFO_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tfinfo")


def _digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as uint8 `(1797, S, S, 1)` images and labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    box = max(1, round(image_size * 20 / 28))  # MNIST: a 20x20 box in 28x28
    offset = (image_size - box) // 2
    out = np.zeros((len(digits.images), image_size, image_size, 1), np.uint8)
    for i, img in enumerate(digits.images):
        small = Image.fromarray((img * 255.0 / 16.0).astype(np.float32))
        big = np.asarray(small.resize((box, box), Image.Resampling.BICUBIC))
        out[i, offset:offset + box, offset:offset + box, 0] = np.clip(
            np.rint(big), 0, 255).astype(np.uint8)
    return out, digits.target.astype(np.int32)


@functools.lru_cache(maxsize=None)
def _glyphs() -> tuple:
    """Cropped master glyphs `((font_file, [10 PIL images]), ...)` of usable fonts."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font_dir = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    usable = []
    for font_file in _FONT_FILES:
        try:
            font = ImageFont.truetype(os.path.join(font_dir, font_file), _GLYPH_SIZE)
        except OSError:
            continue
        glyphs = []
        for letter in _LETTERS:
            canvas = Image.new("L", (3 * _GLYPH_SIZE, 3 * _GLYPH_SIZE), 0)
            ImageDraw.Draw(canvas).text(
                (1.5 * _GLYPH_SIZE, 1.5 * _GLYPH_SIZE), letter, fill=255,
                font=font, anchor="mm")
            bbox = canvas.getbbox()
            if bbox is None:
                break
            glyphs.append(canvas.crop(bbox))
        # Keep a font only if every letter has ink and all 10 glyphs differ
        # (a missing-glyph box would be the same image for every letter).
        if len(glyphs) == len(_LETTERS) and len({g.tobytes() for g in glyphs}) == len(_LETTERS):
            usable.append((font_file, glyphs))
    if not usable:
        raise ValueError(
            f"Expected usable TrueType fonts in {font_dir}. Received: none of "
            f"{list(_FONT_FILES)} renders the letters A-J")
    return tuple(usable)


def _render(glyph, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws one glyph with random affine jitter into a uint8 `(S, S)` image."""
    from PIL import Image

    big = image_size * _OVERSAMPLE
    px = image_size / 28.0  # jitter in pixels of a 28x28 image
    scale = rng.uniform(0.7, 1.0) * 0.85 * big / max(glyph.size)
    angle = math.radians(rng.uniform(-10.0, 10.0))
    shear = rng.uniform(-0.15, 0.15)
    shift = rng.uniform(-2.0, 2.0, size=2) * px * _OVERSAMPLE
    cos, sin = math.cos(angle), math.sin(angle)
    # forward: out = centre + shift + scale * R @ [[1, shear], [0, 1]] @ (in - glyph centre)
    forward = scale * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    centre_out = np.array([big / 2.0, big / 2.0]) + shift
    centre_in = np.array(glyph.size, np.float64) / 2.0
    offset = centre_in - inverse @ centre_out
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    out = glyph.transform((big, big), Image.Transform.AFFINE, data,
                          resample=Image.Resampling.BILINEAR)
    return np.asarray(out.reduce(_OVERSAMPLE))


def _generate_digits(*, seed: int, image_size: int, test_fraction: float):
    """Returns `(x_train, y_train, x_test, y_test)` of the embedded digits."""
    x, y = _digits(image_size)
    train, test = stratified_indices(y, test_fraction, [seed, 0])
    return x[train], y[train], x[test], y[test]


def _generate_letters(*, seed: int, image_size: int, letters_per_class: int,
                      test_fraction: float):
    """Returns `(x_train, y_train, x_test, y_test)` of the embedded letters."""
    fonts = _glyphs()
    rng = np.random.default_rng([seed, 1])
    n = letters_per_class * len(_LETTERS)
    y = np.repeat(np.arange(len(_LETTERS), dtype=np.int32), letters_per_class)
    # Every font is used about equally often within each class.
    font_ids = (np.arange(letters_per_class)[None, :] + rng.integers(
        len(fonts), size=(len(_LETTERS), 1))) % len(fonts)
    x = np.empty((n, image_size, image_size, 1), np.uint8)
    for i, (label, font_id) in enumerate(zip(y, font_ids.reshape(-1))):
        x[i, ..., 0] = _render(fonts[font_id][1][label], image_size, rng)
    train, test = stratified_indices(y, test_fraction, [seed, 2])
    return x[train], y[train], x[test], y[test]


def _read_cache(path: str, image_size: int):
    """The cached arrays, or `None` if the file is missing or not what we wrote."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = tuple(data[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        shape = (image_size, image_size, 1)
        for x, y in (arrays[:2], arrays[2:]):
            if x.dtype != np.uint8 or x.shape[1:] != shape:
                raise ValueError(f"images of dtype {x.dtype} and shape {x.shape}")
            if y.dtype.kind not in "iu" or y.shape != (len(x),):
                raise ValueError(f"labels of dtype {y.dtype} and shape {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(_LETTERS)):
                raise ValueError(f"labels in {y.min()}..{y.max()}")
        if len(np.unique(arrays[1])) != len(_LETTERS):
            raise ValueError("training labels missing a class")
        return arrays
    except Exception as e:  # any unreadable or unexpected cache is regenerated
        logger.warning("Regenerating the corrupt cache file %s (%s).", path, e)
        return None


def _write_cache(path: str, arrays) -> None:
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(tmp, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)))
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("Could not write the cache file %s (%s).", path, e)
        if os.path.exists(tmp):
            os.remove(tmp)


def load_embedded(role: str = "source", *, seed: int = 0, cache_dir: str | None = None,
                  image_size: int = 28, letters_per_class: int = 600,
                  test_fraction: float = 0.2) -> ImageSplits:
    """Loads the embedded offline dataset of a role.

    `"source"`: the 1,797 handwritten digits of scikit-learn (8x8, values
    0..16), rescaled to 0..255 and resized bicubically into a centred box of
    20/28 of the image, white on black like MNIST; 10 classes.
    `"target"`: letters A-J (10 classes, like notMNIST) rendered white on
    black from matplotlib's TrueType fonts with seeded random scale
    (0.7-1.0), rotation (+-10 degrees), shear (+-0.15) and translation
    (+-2 pixels at 28x28).
    Both are split stratified and seeded, and cached as `.npz` in `cache_dir`.

    Args:
        role: `"source"` (digits) or `"target"` (letters).
        seed: seed of the jitter and of the train/test split.
        cache_dir: cache folder; defaults to `$TFINFO_CACHE` or
            `~/.cache/tfinfo`.
        image_size: height and width of the images.
        letters_per_class: letters per class (train + test); target only.
        test_fraction: fraction of every class held out for testing.

    Returns:
        An `ImageSplits` of uint8 `(N, image_size, image_size, 1)` images,
        named `"embedded_digits"` or `"embedded_letters"`.

    Raises:
        ValueError: for an unknown role, a negative or non-integer seed, or
            invalid sizes. A cache file that cannot be read or does not hold
            what was written (dtype, shape, labels 0..9 with every class in
            the training split) is regenerated, with a warning.

    Example:

    >>> target = load_embedded("target", seed=1)
    >>> target.x_train.shape
    (4800, 28, 28, 1)
    """
    if role not in ("source", "target"):
        raise ValueError(f"Expected role 'source' or 'target'. Received: role={role!r}")
    seed = check_seed(seed)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or (
            image_size < 8):
        raise ValueError("Expected `image_size` to be an integer >= 8. "
                         f"Received: image_size={image_size!r}")
    if role == "target" and (isinstance(letters_per_class, bool) or not isinstance(
            letters_per_class, (int, np.integer)) or letters_per_class < 2):
        raise ValueError("Expected `letters_per_class` to be an integer >= 2. "
                         f"Received: letters_per_class={letters_per_class!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not (
            0.0 < test_fraction < 1.0):
        raise ValueError("Expected `test_fraction` in (0, 1). "
                         f"Received: test_fraction={test_fraction!r}")
    if role == "source":
        name, key = "embedded_digits", f"digits_seed{seed}_size{image_size}_test{test_fraction}"
        generate = functools.partial(_generate_digits, seed=seed, image_size=image_size,
                                     test_fraction=test_fraction)
    else:
        name = "embedded_letters"
        key = (f"letters_seed{seed}_size{image_size}_n{letters_per_class}"
               f"_test{test_fraction}")
        generate = functools.partial(_generate_letters, seed=seed, image_size=image_size,
                                     letters_per_class=letters_per_class,
                                     test_fraction=test_fraction)
    path = os.path.join(cache_dir or _default_cache_dir(), f"embedded_v{_CACHE_VERSION}_{key}.npz")
    arrays = _read_cache(path, image_size)
    if arrays is None:
        arrays = generate()
        _write_cache(path, arrays)
    x_train, y_train, x_test, y_test = arrays
    if not len(x_test):
        raise ValueError(
            f"Expected test_fraction={test_fraction} to hold out at least one image of a "
            f"class of the embedded {role}. Received: an empty test split of "
            f"{len(x_train)} images")
    return ImageSplits(x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32),
                       num_classes=10, name=name, original_rank=4)
