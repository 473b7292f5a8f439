"""Tests of data specs, `.npz` files, image folders and TFDS loading."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from tfinfo.data import embedded
from tfinfo.data import load_npz
from tfinfo.data import load_spec
from tfinfo.data import validate_images
from tfinfo.data import validate_labels
from tfinfo.data.image_splits import check_seed
from tfinfo.data.sources import load_image_dir


def _arrays(rank=4, dtype=np.uint8, n_train=12, n_test=5, size=8):
    rng = np.random.default_rng(0)
    shape = (size, size) if rank == 3 else (size, size, 3)
    x_train = rng.integers(0, 256, (n_train,) + shape).astype(dtype)
    x_test = rng.integers(0, 256, (n_test,) + shape).astype(dtype)
    y_train = np.arange(n_train) % 4
    y_test = np.arange(n_test) % 3
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def test_npz_round_trip_uint8_rank4(tmp_path):
    arrays = _arrays(rank=4)
    np.savez(tmp_path / "a.npz", **arrays)
    splits = load_spec(f"npz:{tmp_path / 'a.npz'}")
    np.testing.assert_array_equal(splits.x_train, arrays["x_train"])
    np.testing.assert_array_equal(splits.y_test, arrays["y_test"])
    assert splits.y_train.dtype == np.int32 and splits.x_test.dtype == np.uint8
    assert splits.num_classes == 4 and splits.original_rank == 4
    assert splits.image_shape == (8, 8, 3) and splits.name == "a"


def test_npz_round_trip_float_rank3(tmp_path):
    arrays = _arrays(rank=3)
    unit = {**arrays, "x_train": arrays["x_train"] / 255.0, "x_test": arrays["x_test"] / 255.0}
    np.savez(tmp_path / "unit.npz", **unit)
    splits = load_npz(tmp_path / "unit.npz")
    assert splits.original_rank == 3 and splits.x_train.shape == (12, 8, 8, 1)
    np.testing.assert_array_equal(splits.x_train[..., 0], arrays["x_train"])
    # Floats in [0, 255] are kept as they are.
    wide = {**arrays, "x_train": arrays["x_train"].astype(np.float32),
            "x_test": arrays["x_test"].astype(np.float64)}
    np.savez(tmp_path / "wide.npz", **wide)
    np.testing.assert_array_equal(load_npz(tmp_path / "wide.npz").x_test[..., 0], arrays["x_test"])


class _Marker:
    """Unpickling this object would create a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_npz_object_array_is_refused_not_unpickled(tmp_path):
    marker = str(tmp_path / "unpickled")
    arrays = _arrays()
    arrays["x_train"] = np.array([_Marker(marker), 1], dtype=object)
    np.savez(tmp_path / "evil.npz", allow_pickle=True, **arrays)
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "evil.npz")
    message = str(info.value)
    assert message.startswith("Expected `x_train` in ")
    assert "object arrays are refused" in message and "Received: an object" in message
    assert not os.path.exists(marker)


@pytest.mark.parametrize("bad, expected, received", [
    (np.full((2, 4, 4), np.nan), "Expected finite pixel values in `x`", "Received: 32 NaN or inf"),
    (np.zeros((10, 784)), "Expected `x` to be images of shape (N, H, W) or (N, H, W, C)",
     "Received: shape=(10, 784)"),
    (np.zeros((2, 4, 4, 2)), "with C in {1, 3}", "Received: shape=(2, 4, 4, 2)"),
    (np.zeros((0, 4, 4)), "Expected `x` to hold at least one", "Received: shape=(0, 4, 4)"),
    (np.full((1, 4, 4), -1.0), "Expected pixel values in [0, 255]", "Received: min=-1.0"),
    (np.full((1, 4, 4), 300), "Expected pixel values in [0, 255]", "max=300"),
    (np.full((1, 4, 4), "a"), "Expected `x` to be a numeric image array", "Received: dtype=<U1"),
])
def test_validate_images_errors(bad, expected, received):
    with pytest.raises(ValueError) as info:
        validate_images(bad, name="x")
    assert expected in str(info.value) and received in str(info.value)


def test_validate_images_counts_nan_and_inf():
    x = np.zeros((3, 4, 4), np.float32)
    x[0, 0, 0], x[1, 1, 1], x[2, 2, 2] = np.nan, np.inf, -np.inf
    with pytest.raises(ValueError, match=r"Received: 3 NaN or inf values"):
        validate_images(x, name="x_train")


def test_validate_images_scales_and_rounds_floats():
    x = np.array([[[0.0, 0.5], [1.0, 0.2]]])
    np.testing.assert_array_equal(validate_images(x, name="x")[0, ..., 0], [[0, 128], [255, 51]])


def test_npz_error_names_file_and_argument(tmp_path):
    arrays = {**_arrays(), "x_train": np.zeros((10, 784), np.uint8)}
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "a.npz")
    assert f"Expected `x_train` in {tmp_path / 'a.npz'} to be images" in str(info.value)
    assert "Received: shape=(10, 784)" in str(info.value)
    np.savez(tmp_path / "b.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    expected = r"Expected arrays x_train, y_train, x_test, y_test.*Received"
    with pytest.raises(ValueError, match=expected):
        load_npz(tmp_path / "b.npz")
    with pytest.raises(ValueError, match=r"Expected an existing \.npz file\. Received: path="):
        load_npz(tmp_path / "missing.npz")


@pytest.mark.parametrize("labels, expected, received", [
    ([0, 1.5, 2], "Expected integer class labels in `y`",
     "Received: 1 non-integer values such as 1.5"),
    ([0, 1], "Expected `y` to hold one label per image (3)", "Received: 2 labels"),
    ([0, -1, 2], "Expected non-negative class labels in `y`", "Received: labels containing -1"),
    (["a", "b", "c"], "Expected integer class labels in `y`", "Received: dtype=<U1"),
])
def test_validate_labels_errors(labels, expected, received):
    with pytest.raises(ValueError) as info:
        validate_labels(np.array(labels), num_images=3, name="y")
    assert expected in str(info.value) and received in str(info.value)


def test_validate_labels_accepts_integral_floats_and_column():
    y = validate_labels(np.array([[0.0], [2.0], [1.0]]), num_images=3, name="y")
    assert y.dtype == np.int32 and y.tolist() == [0, 2, 1]


def test_unknown_spec_is_refused():
    expected = ("Expected a data spec of the form 'embedded', 'npz:PATH[:scale=1|255]', 'dir:PATH[:scale=1|255]' "
                "or 'tfds:NAME[:classes=...][:scale=1|255]'. Received: spec='csv:/x.csv'")
    with pytest.raises(ValueError) as info:
        load_spec("csv:/x.csv")
    assert str(info.value) == expected
    for spec in ("npz:", "embedded:other", "tfds:mnist:foo=1"):
        with pytest.raises(ValueError, match="Expected a data spec"):
            load_spec(spec)


def test_embedded_specs_pick_the_role(monkeypatch):
    calls = []
    monkeypatch.setattr(embedded, "load_embedded",
                        lambda role, **kwargs: calls.append((role, kwargs)) or role)
    assert load_spec(None, role="target", seed=2, cache_dir="/c") == "target"
    assert load_spec("embedded", role="source") == "source"
    assert load_spec("embedded:target", role="source") == "target"
    assert calls[0] == ("target", {"seed": 2, "cache_dir": "/c"})
    with pytest.raises(ValueError, match=r"Expected role 'source' or 'target'"):
        load_spec(None, role="middle")


def _write_class_dirs(root, classes, per_class, mode="L", size=(10, 12)):
    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode=None).save(
                root / c / f"{i}.png")


def test_dir_spec_with_corrupt_file(tmp_path, caplog):
    root = tmp_path / "letters"
    _write_class_dirs(root, "CAB", per_class=5)
    (root / "B" / "broken.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level(logging.WARNING):
        splits = load_spec(f"dir:{root}", seed=0)
    assert splits.skipped_files == 1 and "Skipped 1 unreadable image files" in caplog.text
    assert splits.num_classes == 3 and splits.name == "letters"
    assert splits.x_train.shape == (12, 12, 10, 1) and splits.x_test.shape == (3, 12, 10, 1)
    np.testing.assert_array_equal(np.bincount(splits.y_train), [4, 4, 4])
    np.testing.assert_array_equal(np.bincount(splits.y_test), [1, 1, 1])
    # Classes are the sorted folder names: label 0 is A.
    first_a = np.asarray(Image.open(root / "A" / "0.png"))
    matches = [i for i in range(12) if np.array_equal(splits.x_train[i, ..., 0], first_a)]
    matches += [-1 - i for i in range(3) if np.array_equal(splits.x_test[i, ..., 0], first_a)]
    assert len(matches) == 1
    label = splits.y_train[matches[0]] if matches[0] >= 0 else splits.y_test[-1 - matches[0]]
    assert label == 0
    again = load_spec(f"dir:{root}", seed=0)
    np.testing.assert_array_equal(again.x_train, splits.x_train)


def test_dir_spec_with_train_and_test_folders_rgb(tmp_path):
    _write_class_dirs(tmp_path / "train", "AB", per_class=3, mode="RGB")
    _write_class_dirs(tmp_path / "test", "AB", per_class=2, mode="RGB")
    splits = load_spec(f"dir:{tmp_path}")
    assert splits.x_train.shape == (6, 12, 10, 3) and splits.x_test.shape == (4, 12, 10, 3)
    assert splits.y_test.tolist() == [0, 0, 1, 1] and splits.skipped_files == 0
    os.makedirs(tmp_path / "test" / "C")
    expected = r"Expected the class folders of .* Received: \['A', 'B', 'C'\]"
    with pytest.raises(ValueError, match=expected):
        load_spec(f"dir:{tmp_path}")


def test_dir_spec_with_train_folder_only_splits_it(tmp_path):
    _write_class_dirs(tmp_path / "train", "AB", per_class=10)
    splits = load_spec(f"dir:{tmp_path}", seed=1)
    assert splits.num_classes == 2 and splits.x_train.shape == (16, 12, 10, 1)
    np.testing.assert_array_equal(np.bincount(splits.y_test), [2, 2])


def test_tfds_spec_with_mock_data_and_class_subset():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=60):
        full = load_spec("tfds:mnist")
        subset = load_spec("tfds:mnist:classes=3,1")
        expected = r"Expected class ids in 0\.\.9 .* Received: classes=\[12\]"
        with pytest.raises(ValueError, match=expected):
            load_spec("tfds:mnist:classes=12")
    assert full.x_train.shape == (60, 28, 28, 1) and full.x_train.dtype == np.uint8
    assert full.num_classes == 10 and full.y_test.dtype == np.int32 and full.name == "mnist"
    keep = np.isin(full.y_train, [3, 1])
    assert subset.num_classes == 2
    np.testing.assert_array_equal(subset.x_train, full.x_train[keep])
    np.testing.assert_array_equal(subset.y_train, np.where(full.y_train[keep] == 3, 0, 1))
    assert len(subset.y_test) == np.isin(full.y_test, [3, 1]).sum()


def _flip_member_byte(path, member, offset):
    """Damages one data byte of an uncompressed `.npz` member (its CRC then fails)."""
    data = bytearray(path.read_bytes())
    data[data.index(member.encode()) + offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_npz_damaged_or_foreign_files_are_refused(tmp_path):
    np.savez(tmp_path / "crc.npz", **_arrays())
    _flip_member_byte(tmp_path / "crc.npz", "x_train.npy", 400)  # inside 2304 bytes of pixels
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "crc.npz")
    assert str(info.value).startswith(f"Expected `x_train` in {tmp_path / 'crc.npz'} to be a "
                                      "readable array. Received: BadZipFile: Bad CRC-32")
    good = tmp_path / "good.npz"
    np.savez(good, **_arrays())
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:1000])
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    for name in ("cut.npz", "text.npz"):
        with pytest.raises(ValueError, match=rf"Expected a readable \.npz file at .*{name}\. Received: "):
            load_npz(tmp_path / name)
    np.save(tmp_path / "one.npy", np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"Expected an \.npz archive of named arrays .* "
                                         r"Received: a single array of type ndarray"):
        load_npz(tmp_path / "one.npy")


def test_npz_member_with_a_broken_header_is_not_called_pickled(tmp_path):
    import zipfile

    path = tmp_path / "fake.npz"
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }".ljust(118) + b"\n"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in _arrays().items():
            if key == "y_test":  # an .npy signature, then a header with an unknown key
                archive.writestr("y_test.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                                 + header.replace(b"shape", b"shap"))
            else:
                with archive.open(f"{key}.npy", "w") as f:
                    np.lib.format.write_array(f, value)
    with pytest.raises(ValueError) as info:
        load_npz(path)
    message = str(info.value)
    assert message.startswith(f"Expected `y_test` in {path} to be a readable array. Received: ")
    assert "pickle" not in message and "header" in message.lower()


def test_pickle_file_named_npz_is_refused_not_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "unpickled"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "evil.npz")
    assert "Expected a readable .npz file at" in str(info.value)
    assert "Received: " in str(info.value) and "pickled" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("bad, expected", [
    ([np.zeros((4, 4)), np.zeros((5, 4))],
     "Expected `x` to be an array of one shape and numeric dtype. Received: list ("),
    (np.zeros((2, 4, 4), bool), "Expected `x` to be a numeric image array (uint8 or float). "
                                "Received: dtype=bool"),
    (np.zeros((2, 4, 4), np.complex64), "Expected `x` to be a numeric image array (uint8 or "
                                        "float). Received: dtype=complex64"),
    (np.full((2, 4, 4), 70000, np.uint32), "Expected pixel values in [0, 255] (or [0, 1] for "
                                           "floats) in `x`. Received: min=70000, max=70000"),
    (np.zeros((2, 0, 4)), "Expected `x` to hold at least one non-empty image. "
                          "Received: shape=(2, 0, 4)"),
])
def test_validate_images_more_errors(bad, expected):
    with pytest.raises(ValueError) as info:
        validate_images(bad, name="x")
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize("labels, expected", [
    (np.array([True, False, True]), "Expected integer class labels in `y`. Received: dtype=bool"),
    (np.array([0.0, np.nan, 1.0]), "Expected integer class labels in `y`. Received: 1 "
                                   "non-integer values such as nan"),
    (np.array([0, 2**31, 1]), "Expected class labels below 2**31 in `y`. Received: labels "
                              "containing 2147483648"),
    ([[0, 1], [1]], "Expected `y` to be an array of one shape and numeric dtype. Received: list"),
])
def test_validate_labels_more_errors(labels, expected):
    with pytest.raises(ValueError) as info:
        validate_labels(labels, num_images=3, name="y")
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize("seed", [-1, 1.0, True, "0", None])
def test_check_seed_errors(seed):
    with pytest.raises(ValueError) as info:
        check_seed(seed)
    assert str(info.value) == f"Expected `seed` to be a non-negative integer. Received: seed={seed!r}"


def test_check_seed_accepts_numpy_integers():
    assert check_seed(np.int64(7)) == 7 and type(check_seed(np.int64(7))) is int


def test_dir_spec_class_without_readable_images_is_an_error(tmp_path):
    root = tmp_path / "letters"
    _write_class_dirs(root, "ABC", per_class=5)
    for f in (root / "B").iterdir():
        f.write_bytes(f.read_bytes()[:20])  # truncated PNGs: a valid signature, no data
    (root / "D").mkdir()
    with pytest.raises(ValueError) as info:
        load_spec(f"dir:{root}")
    assert str(info.value) == (f"Expected at least one readable image in every class folder of "
                               f"{root}. Received: none in 'B' (5 unreadable files), 'D' (no files)")


def test_dir_spec_truncated_and_foreign_files_are_skipped_and_counted(tmp_path):
    root = tmp_path / "letters"
    _write_class_dirs(root, "AB", per_class=5)
    png = (root / "A" / "0.png").read_bytes()
    (root / "A" / "half.png").write_bytes(png[:len(png) // 2])  # truncated in the pixel data
    (root / "B" / "notes.txt").write_text("not an image")
    (root / "B" / "empty.png").write_bytes(b"")
    splits = load_spec(f"dir:{root}")
    assert splits.skipped_files == 3
    assert len(splits.x_train) + len(splits.x_test) == 10


def test_dir_spec_all_corrupt_test_class_is_an_error(tmp_path):
    _write_class_dirs(tmp_path / "train", "AB", per_class=3)
    _write_class_dirs(tmp_path / "test", "AB", per_class=2)
    for f in (tmp_path / "test" / "A").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(ValueError) as info:
        load_spec(f"dir:{tmp_path}")
    assert str(info.value) == (f"Expected at least one readable image in every class folder of "
                               f"{tmp_path / 'test'}. Received: none in 'A' (2 unreadable files)")


def test_dir_spec_size_error_names_both_files(tmp_path):
    _write_class_dirs(tmp_path, "AB", per_class=3)
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "B" / "odd.png")
    with pytest.raises(ValueError) as info:
        load_spec(f"dir:{tmp_path}")
    assert str(info.value) == (
        f"Expected all images in {tmp_path} to have the size (height, width) (12, 10) of "
        f"{tmp_path / 'A' / '0.png'}. Received: (7, 7) in {tmp_path / 'B' / 'odd.png'}")


def test_dir_spec_too_small_to_hold_out_a_test_split(tmp_path):
    _write_class_dirs(tmp_path, "AB", per_class=2)  # round(2 * 0.2) = 0 test images per class
    with pytest.raises(ValueError) as info:
        load_spec(f"dir:{tmp_path}")
    message = str(info.value)
    assert message.startswith(f"Expected enough images in the class folders of {tmp_path} to "
                              "hold out test_fraction=0.2 of a class as the test split")
    assert message.endswith("Received: at most 2 readable images per class, an empty test split")
    for kwargs, expected in ((dict(seed=-2), "Received: seed=-2"),
                             (dict(test_fraction=1.0), "Received: test_fraction=1.0")):
        with pytest.raises(ValueError, match=expected):
            load_image_dir(tmp_path, **kwargs)


def test_dir_spec_pixel_formats(tmp_path):
    for c in "AB":
        (tmp_path / c).mkdir()
    # 16-bit gray maps 0..65535 onto 0..255 (PIL's own conversion would clip it to 255).
    sixteen = (np.arange(12 * 10).reshape(12, 10) * 257 % 65536).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "A" / "a16.png")
    # 32-bit float in [0, 1] is scaled like a float .npz array.
    unit = np.linspace(0, 1, 120, dtype=np.float32).reshape(12, 10)
    Image.fromarray(unit).save(tmp_path / "A" / "unit.tiff")
    for i in range(3):
        Image.fromarray(np.full((12, 10), 9 * i, np.uint8)).save(tmp_path / "B" / f"{i}.png")
    splits = load_image_dir(tmp_path, test_fraction=0.4)
    x = np.concatenate([splits.x_train, splits.x_test])[..., 0]
    assert splits.skipped_files == 0 and x.dtype == np.uint8
    assert any(np.array_equal(img, (sixteen // 257).astype(np.uint8)) for img in x)
    assert any(np.array_equal(img, np.rint(unit * 255).astype(np.uint8)) for img in x)
    # A 32-bit integer image outside 0..255 is refused, naming the file.
    Image.fromarray(np.full((12, 10), 1000, np.int32)).save(tmp_path / "B" / "wide.tiff")
    with pytest.raises(ValueError) as info:
        load_image_dir(tmp_path, test_fraction=0.4)
    assert str(info.value) == (
        f"Expected pixel values in [0, 255] (or [0, 1] for floats) in "
        f"`{tmp_path / 'B' / 'wide.tiff'}`. Received: min=1000, max=1000")


def _custom_tfds(labels, image=None):
    """`as_dataset_fn` for `tfds.testing.mock_data`: 28x28x1 images with these labels."""
    import tensorflow as tf

    def as_dataset(self, split, **kwargs):
        n = len(labels)
        x = np.zeros((n, 28, 28, 1), np.uint8) if image is None else image
        return tf.data.Dataset.from_tensor_slices(
            {"image": x, "label": np.asarray(labels, np.int64)})

    return as_dataset


def test_tfds_errors_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        with pytest.raises(ValueError) as info:
            load_spec("tfds:no_such_dataset_xyz")
    assert str(info.value) == ("Expected the name of a registered TFDS dataset, e.g. 'mnist' or "
                               "'cifar100'. Received: name='no_such_dataset_xyz' (not found)")
    with tfds.testing.mock_data(as_dataset_fn=_custom_tfds([0, 1, 0, 1])):
        with pytest.raises(ValueError) as info:
            load_spec("tfds:mnist:classes=5,7")
        assert str(info.value) == ("Expected examples of classes [5, 7] in the train split of "
                                   "tfds:mnist. Received: none among 4 examples")
        with pytest.raises(ValueError) as info:
            load_spec("tfds:mnist:classes=1,-1,10")
        assert str(info.value) == ("Expected class ids in 0..9 for tfds:mnist. Received: "
                                   "classes=[1, -1, 10] (out of range: [-1, 10])")
    with tfds.testing.mock_data(as_dataset_fn=_custom_tfds([0, 1, 12])):
        with pytest.raises(ValueError) as info:
            load_spec("tfds:mnist")
    assert str(info.value) == ("Expected `train` labels of tfds:mnist in 0..9 (its `num_classes`). "
                               "Received: labels containing 12")
