"""One pixel scale per dataset, and datasets of a single class refused."""

import numpy as np
import pytest
from PIL import Image

from tfinfo.data import float_scale
from tfinfo.data import labeled_unlabeled_split
from tfinfo.data import load_spec
from tfinfo.data import validate_images


def _unit_arrays(seed=0, n_train=30, n_test=10, classes=3):
    """Float images in [0, 1] (float64), labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.uniform(0.0, 1.0, (n_train, 6, 6)),
                y_train=np.arange(n_train) % classes,
                x_test=rng.uniform(0.0, 1.0, (n_test, 6, 6)),
                y_test=np.arange(n_test) % classes)


def _expected_uint8(x, factor):
    """The float64 reference of the conversion: round(x * factor), as uint8."""
    return np.rint(np.asarray(x, np.float64) * factor).astype(np.uint8)[..., np.newaxis]


def _save(path, arrays):
    np.savez(path, **arrays)
    return path


def test_one_pixel_above_1_makes_the_whole_dataset_ambiguous_not_binary(tmp_path):
    # The issue: x_train (max 1.02) used to be kept as 0..255 (so nearly all 0 or 1)
    # while x_test (max <= 1) was multiplied by 255.
    arrays = _unit_arrays()
    arrays["x_train"][0, 0, 0] = 1.02
    path = _save(tmp_path / "overshoot.npz", arrays)
    with pytest.raises(ValueError) as info:
        load_spec(f"npz:{path}")
    message = str(info.value)
    assert message.startswith(f"Expected the float pixel values of npz:{path} to be all in "
                              "[0, 1] (scaled by 255) or all in 0..255 with a maximum of at "
                              "least 32 (kept): one scale for all its arrays.")
    low_train, high_test = arrays["x_train"].min(), arrays["x_test"].max()
    assert message.endswith(f"Received: `x_train` in {path} in [{low_train:g}, 1.02], "
                            f"`x_test` in {path} in [{arrays['x_test'].min():g}, "
                            f"{high_test:g}]")
    assert "':scale=255'" in message and "docs/datasets.md" in message


def test_arrays_on_different_scales_are_refused_naming_both(tmp_path):
    arrays = _unit_arrays()
    arrays["x_train"] = arrays["x_train"] * 255.0  # train in 0..255, test in [0, 1]
    path = _save(tmp_path / "mixed.npz", arrays)
    with pytest.raises(ValueError) as info:
        load_spec(f"npz:{path}")
    message = str(info.value)
    assert f"`x_train` in {path} in [" in message and f"`x_test` in {path} in [" in message
    assert message.index("Expected") < message.index("Received:")


def test_consistent_scaling_across_train_and_test(tmp_path):
    arrays = _unit_arrays()
    splits = load_spec(f"npz:{_save(tmp_path / 'unit.npz', arrays)}")
    np.testing.assert_array_equal(splits.x_train, _expected_uint8(arrays["x_train"], 255.0))
    np.testing.assert_array_equal(splits.x_test, _expected_uint8(arrays["x_test"], 255.0))
    # The same data in 0..255: both kept, even a test split whose maximum is only 10
    # (the dataset's maximum decides, not each array's).
    wide = dict(arrays, x_train=arrays["x_train"] * 255.0, x_test=arrays["x_test"] * 10.0)
    splits = load_spec(f"npz:{_save(tmp_path / 'wide.npz', wide)}")
    np.testing.assert_array_equal(splits.x_train, _expected_uint8(wide["x_train"], 1.0))
    np.testing.assert_array_equal(splits.x_test, _expected_uint8(wide["x_test"], 1.0))


def test_an_explicit_scale_is_honoured(tmp_path):
    arrays = _unit_arrays()
    dim = dict(arrays, x_train=arrays["x_train"] * 20.0, x_test=arrays["x_test"] * 20.0)
    path = _save(tmp_path / "dim.npz", dim)
    with pytest.raises(ValueError, match="Expected the float pixel values"):
        load_spec(f"npz:{path}")  # max 20: ambiguous without a stated scale
    kept = load_spec(f"npz:{path}:scale=1")
    np.testing.assert_array_equal(kept.x_train, _expected_uint8(dim["x_train"], 1.0))
    np.testing.assert_array_equal(kept.x_test, _expected_uint8(dim["x_test"], 1.0))
    # scale=1 on [0, 1] data keeps it (dark, as stated), instead of the inferred x255.
    unit_path = _save(tmp_path / "unit.npz", arrays)
    assert load_spec(f"npz:{unit_path}:scale=1").x_train.max() <= 1
    scaled = load_spec(f"npz:{unit_path}:scale=255")
    np.testing.assert_array_equal(scaled.x_test, _expected_uint8(arrays["x_test"], 255.0))
    with pytest.raises(ValueError) as info:
        load_spec(f"npz:{path}:scale=255")
    assert str(info.value).startswith(f"Expected float pixel values in [0, 1] in npz:{path}, "
                                      "as its scale=255 states. Received: `x_train` in ")
    with pytest.raises(ValueError) as info:
        load_spec(f"npz:{path}:scale=100")
    assert str(info.value) == ("Expected ':scale=255' (float pixel values in [0, 1]) or "
                               "':scale=1' (float pixel values in 0..255) in a data spec. "
                               f"Received: spec='npz:{path}:scale=100'")
    assert validate_images(dim["x_test"], name="x", scale=1).max() == np.rint(
        dim["x_test"].max())


def test_integer_arrays_keep_their_values_beside_float_arrays(tmp_path):
    arrays = _unit_arrays()
    arrays["x_test"] = np.rint(arrays["x_test"] * 255).astype(np.uint8)
    splits = load_spec(f"npz:{_save(tmp_path / 'a.npz', arrays)}")
    np.testing.assert_array_equal(splits.x_test[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(splits.x_train, _expected_uint8(arrays["x_train"], 255.0))


def test_float_image_files_of_a_folder_share_one_scale(tmp_path):
    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        for c in "AB":
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                img = rng.uniform(0.0, 1.0, (6, 5)).astype(np.float32)
                Image.fromarray(img).save(tmp_path / split / c / f"{i}.tiff")
    splits = load_spec(f"dir:{tmp_path}")
    assert splits.x_train.max() > 200  # [0, 1] files scaled by 255
    # One test file a little above 1: the folder's scale is ambiguous, and named.
    Image.fromarray(np.full((6, 5), 1.05, np.float32)).save(tmp_path / "test" / "B" / "x.tiff")
    with pytest.raises(ValueError) as info:
        load_spec(f"dir:{tmp_path}")
    message = str(info.value)
    assert f"the float image files of {tmp_path / 'train'} in [" in message
    assert f"the float image files of {tmp_path / 'test'} in [" in message and ", 1.05]" in message
    kept = load_spec(f"dir:{tmp_path}:scale=1")
    assert kept.x_train.max() <= 1 and 1 in kept.x_test


def test_float_scale_rules():
    assert float_scale({}, dataset="d") == 1.0
    assert float_scale({"a": (0, 1.0), "b": (0, 0.5)}, dataset="d") == 255.0
    assert float_scale({"a": (0, 255.0), "b": (0, 3.0)}, dataset="d") == 1.0
    assert float_scale({"a": (0, 0.0), "b": (0, 200.0)}, dataset="d") == 1.0  # zeros fit both
    assert float_scale({"a": (0, 31.0)}, dataset="d", scale="1") == 1.0
    for ambiguous in ({"a": (0, 31.9)}, {"a": (0, 1.0001)}, {"a": (0, 0.9), "b": (0, 40.0)}):
        with pytest.raises(ValueError, match=r"^Expected the float pixel values of d "):
            float_scale(ambiguous, dataset="d")


def _one_class(tmp_path, name="one.npz", label=3):
    arrays = {k: (np.full(len(v), label) if k.startswith("y") else v)
              for k, v in _unit_arrays().items()}
    return _save(tmp_path / name, arrays)


@pytest.mark.parametrize("role", ["source", "target"])
def test_a_single_class_dataset_is_refused_at_loading(tmp_path, role):
    path = _one_class(tmp_path)
    with pytest.raises(ValueError) as info:
        load_spec(f"npz:{path}", role=role)
    assert str(info.value) == (f"Expected at least 2 classes in the {role} (npz:{path}) to "
                               "train a classifier. Received: 1 class (label 3) among its 30 "
                               "training labels, num_classes=4")


def test_a_single_class_tfds_subset_is_refused():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        with pytest.raises(ValueError) as info:
            load_spec("tfds:mnist:classes=3", role="target")
    assert str(info.value).startswith("Expected at least 2 classes in the target "
                                      "(tfds:mnist:classes=3) to train a classifier. Received: "
                                      "1 class (label 0) among its ")


def test_a_single_class_folder_is_refused(tmp_path):
    (tmp_path / "A").mkdir()
    for i in range(5):
        Image.fromarray(np.full((4, 4), 10 * i, np.uint8)).save(tmp_path / "A" / f"{i}.png")
    with pytest.raises(ValueError, match=r"^Expected at least 2 classes in the target \(dir:"):
        load_spec(f"dir:{tmp_path}", role="target")


def test_splitting_a_single_class_is_refused():
    x, y = np.zeros((20, 4, 4, 1), np.uint8), np.zeros(20, np.int64)
    with pytest.raises(ValueError) as info:
        labeled_unlabeled_split(x, y, 5, num_classes=1)
    assert str(info.value) == ("Expected at least 2 classes in the target training labels to "
                               "train a classifier. Received: num_classes=1")


def test_the_notmnist_config_names_the_missing_folder_and_the_docs(tmp_path, monkeypatch, caplog):
    from configs import mnist_notmnist

    missing = tmp_path / "nowhere"
    monkeypatch.setenv("TFINFO_NOTMNIST_DIR", str(missing))
    with caplog.at_level("WARNING", logger="tfinfo"):
        config = mnist_notmnist.get_config()
    assert config.target == f"dir:{missing}"
    expected = (f"Expected the notMNIST letters in {missing}/A .. {missing}/J (one folder of "
                "images per letter; set $TFINFO_NOTMNIST_DIR to use another folder; "
                f"docs/datasets.md says how to get them). Received: {missing} does not exist")
    assert expected in caplog.text
    with pytest.raises(ValueError) as info:
        mnist_notmnist.check_notmnist_dir(str(missing))
    assert str(info.value) == expected
    # The run refuses the missing folder when it loads the target, naming it and the docs.
    with pytest.raises(ValueError) as info:
        load_spec(config.target, role="target")
    assert str(info.value) == ("Expected an existing image folder (one subfolder of images per "
                               f"class; see docs/datasets.md). Received: path='{missing}' "
                               "does not exist")
    for c in "ABCDE":
        (missing / c).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"lacks the folders \['F', 'G', 'H', 'I', 'J'\]$"):
        mnist_notmnist.check_notmnist_dir(str(missing))
    for c in "FGHIJ":
        (missing / c).mkdir()
    mnist_notmnist.check_notmnist_dir(str(missing))  # complete: no error
