"""Tests of the embedded offline dataset (digits source, font-letter target)."""

import logging
import os

import numpy as np
import pytest

from tfinfo.data import embedded
from tfinfo.data import load_embedded


@pytest.fixture(scope="module")
def letters(tmp_path_factory):
    """The default-size letter target (600 per class), generated once."""
    return load_embedded("target", seed=0, cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_digits_shapes_classes_and_split(tmp_path):
    splits = load_embedded("source", seed=0, cache_dir=str(tmp_path))
    assert splits.name == "embedded_digits"
    assert splits.x_train.shape[1:] == (28, 28, 1) and splits.x_test.shape[1:] == (28, 28, 1)
    assert splits.x_train.dtype == np.uint8 and splits.y_train.dtype == np.int32
    assert len(splits.x_train) + len(splits.x_test) == 1797
    assert 0.18 < len(splits.x_test) / 1797 < 0.22
    assert splits.num_classes == 10
    assert set(np.unique(splits.y_train)) == set(range(10))
    assert set(np.unique(splits.y_test)) == set(range(10))
    # Stratified: every class holds about 20% of its images in the test split.
    train_counts, test_counts = np.bincount(splits.y_train), np.bincount(splits.y_test)
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.01)
    # MNIST-like: white digit centred in a 20x20 box, black 4-pixel border.
    assert splits.x_train[:, :4].max() == 0 and splits.x_train[:, :, -4:].max() == 0
    assert splits.x_train.max() == 255
    assert splits.x_train[:, 8:20, 8:20].mean() > 2 * splits.x_train.mean()


def test_letters_default_shapes_and_balance(letters):
    assert letters.name == "embedded_letters"
    assert letters.x_train.shape == (4800, 28, 28, 1)
    assert letters.x_test.shape == (1200, 28, 28, 1)
    assert letters.x_train.dtype == np.uint8 and letters.y_test.dtype == np.int32
    assert letters.num_classes == 10
    np.testing.assert_array_equal(np.bincount(letters.y_train), [480] * 10)
    np.testing.assert_array_equal(np.bincount(letters.y_test), [120] * 10)
    # White glyphs on black: the border is darker than the centre, no blank image.
    x = letters.x_train.astype(np.float32)
    assert x[:, :2].mean() < 0.2 * x[:, 10:18, 10:18].mean()
    assert (x.reshape(len(x), -1).max(axis=1) > 200).all()


def test_letters_use_many_fonts_without_symbol_fonts():
    names = [name for name, _ in embedded._glyphs()]
    assert len(names) >= 20
    assert "cmex10.ttf" not in names and not any("Display" in n for n in names)


def test_letters_deterministic_for_a_seed(tmp_path):
    kwargs = dict(letters_per_class=20, image_size=28)
    a = load_embedded("target", seed=3, cache_dir=str(tmp_path / "a"), **kwargs)
    b = load_embedded("target", seed=3, cache_dir=str(tmp_path / "b"), **kwargs)
    c = load_embedded("target", seed=4, cache_dir=str(tmp_path / "c"), **kwargs)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_digit_split_depends_on_seed(tmp_path):
    a = load_embedded("source", seed=0, cache_dir=str(tmp_path))
    b = load_embedded("source", seed=1, cache_dir=str(tmp_path))
    assert not np.array_equal(a.y_train, b.y_train)


def test_image_size_and_counts(tmp_path):
    splits = load_embedded("target", seed=0, cache_dir=str(tmp_path), image_size=32,
                           letters_per_class=10, test_fraction=0.3)
    assert splits.x_train.shape == (70, 32, 32, 1) and splits.x_test.shape == (30, 32, 32, 1)


def test_second_call_reads_the_cache(tmp_path, monkeypatch):
    first = load_embedded("target", seed=0, cache_dir=str(tmp_path), letters_per_class=10)
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".npz")]) == 1

    def fail(**kwargs):
        raise AssertionError("the generator ran although a cache file exists")

    monkeypatch.setattr(embedded, "_generate_letters", fail)
    second = load_embedded("target", seed=0, cache_dir=str(tmp_path), letters_per_class=10)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_train, second.y_train)
    # A different key (seed) is not served from that cache file.
    with pytest.raises(AssertionError, match="generator ran"):
        load_embedded("target", seed=1, cache_dir=str(tmp_path), letters_per_class=10)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TFINFO_CACHE", str(tmp_path))
    load_embedded("source", seed=0)
    assert any(f.startswith("embedded_") for f in os.listdir(tmp_path))


def test_corrupt_cache_is_regenerated(tmp_path, caplog):
    first = load_embedded("target", seed=0, cache_dir=str(tmp_path), letters_per_class=10)
    (path,) = [tmp_path / f for f in os.listdir(tmp_path)]
    path.write_bytes(b"not an npz file")
    with caplog.at_level(logging.WARNING):
        second = load_embedded("target", seed=0, cache_dir=str(tmp_path), letters_per_class=10)
    assert "corrupt cache" in caplog.text
    np.testing.assert_array_equal(first.x_train, second.x_train)
    with np.load(path, allow_pickle=False) as data:  # rewritten and valid again
        np.testing.assert_array_equal(data["x_train"], first.x_train)


def test_unknown_role_is_refused(tmp_path):
    expected = r"Expected role 'source' or 'target'\. Received: role='x'"
    with pytest.raises(ValueError, match=expected):
        load_embedded("x", cache_dir=str(tmp_path))


@pytest.mark.parametrize("tamper, reason", [
    (lambda a: {**a, "y_train": a["y_train"] + 7}, "labels in 7..16"),
    (lambda a: {**a, "y_test": a["y_test"].astype(np.float32)}, "labels of dtype float32"),
    (lambda a: {**a, "x_test": a["x_test"][:, :20]}, "images of dtype uint8 and shape"),
    (lambda a: {**a, "y_train": np.zeros_like(a["y_train"])}, "training labels missing a class"),
    (lambda a: {**a, "x_train": a["x_train"].astype(np.float32)}, "images of dtype float32"),
])
def test_cache_with_unexpected_arrays_is_regenerated(tmp_path, caplog, tamper, reason):
    first = load_embedded("target", seed=0, cache_dir=str(tmp_path), letters_per_class=10)
    (path,) = [tmp_path / f for f in os.listdir(tmp_path)]
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(path, **tamper(arrays))
    with caplog.at_level(logging.WARNING):
        second = load_embedded("target", seed=0, cache_dir=str(tmp_path), letters_per_class=10)
    assert "Regenerating the corrupt cache file" in caplog.text and reason in caplog.text
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


@pytest.mark.parametrize("kwargs, expected", [
    (dict(seed=-1), "Expected `seed` to be a non-negative integer. Received: seed=-1"),
    (dict(seed="0"), "Expected `seed` to be a non-negative integer. Received: seed='0'"),
    (dict(image_size=27.5), "Expected `image_size` to be an integer >= 8. Received: image_size=27.5"),
    (dict(image_size=4), "Expected `image_size` to be an integer >= 8. Received: image_size=4"),
    (dict(letters_per_class=1), "Expected `letters_per_class` to be an integer >= 2. Received: letters_per_class=1"),
    (dict(test_fraction=0.0), "Expected `test_fraction` in (0, 1). Received: test_fraction=0.0"),
    (dict(test_fraction="0.2"), "Expected `test_fraction` in (0, 1). Received: test_fraction='0.2'"),
    (dict(letters_per_class=2, test_fraction=0.2),
     "Expected test_fraction=0.2 to hold out at least one image of a class of the embedded "
     "target. Received: an empty test split of 20 images"),
])
def test_argument_errors(tmp_path, kwargs, expected):
    with pytest.raises(ValueError) as info:
        load_embedded("target", cache_dir=str(tmp_path), **kwargs)
    assert str(info.value) == expected
