"""A tiny TFDS dataset built from local numpy arrays, through TFDS's real
`download_and_prepare` (no `tfds.testing.mock_data`).

Importing this module registers `tfinfo_tiny_digits` with TFDS. Its examples come
from the `.npz` file at `TfinfoTinyDigits.source` (write one with `write_source`).
"""

import numpy as np
import tensorflow_datasets as tfds

NAME = "tfinfo_tiny_digits"
NUM_CLASSES = 10
SIZES = {"train": 40, "test": 20}


def make_arrays(seed=0):
    """Class-dependent 28x28x1 uint8 images: class c is bright in row band c."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        y = np.arange(n) % NUM_CLASSES
        x = rng.integers(0, 40, size=(n, 28, 28, 1))
        for i, c in enumerate(y):
            x[i, 2 * c + 4:2 * c + 8] += 200
        arrays[f"x_{split}"] = x.astype(np.uint8)
        arrays[f"y_{split}"] = y.astype(np.int64)
    return arrays


def write_source(path, seed=0):
    """Writes the arrays to `path` (.npz), points the builder at it, returns them."""
    arrays = make_arrays(seed)
    np.savez(path, **arrays)
    TfinfoTinyDigits.source = str(path)
    return arrays



def _tiny_info(builder):
    """The builders' DatasetInfo: 28x28x1 images and NUM_CLASSES labels."""
    return builder.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
    )

class TfinfoTinyDigits(tfds.core.GeneratorBasedBuilder):
    """10 classes of 28x28x1 images, 40 train and 20 test examples."""

    VERSION = tfds.core.Version("1.0.0")
    source = None  # the .npz file the examples are read from

    _info = _tiny_info

    def _split_generators(self, dl_manager):
        del dl_manager  # local data: nothing to download
        if self.source is None:
            raise ValueError("Expected TfinfoTinyDigits.source to be set (write_source). "
                             "Received: None")
        return {split: self._generate_examples(split) for split in SIZES}

    def _generate_examples(self, split):
        with np.load(self.source) as data:
            x, y = data[f"x_{split}"], data[f"y_{split}"]
        for i in range(len(x)):
            yield i, {"image": x[i], "label": int(y[i])}


BROKEN_NAME = "tfinfo_broken_download"


class TfinfoBrokenDownload(tfds.core.GeneratorBasedBuilder):
    """A builder whose download fails as it does without network."""

    VERSION = tfds.core.Version("1.0.0")

    _info = _tiny_info

    def _split_generators(self, dl_manager):
        import requests

        raise requests.exceptions.ConnectionError("simulated: no network")

    def _generate_examples(self):
        yield from ()
