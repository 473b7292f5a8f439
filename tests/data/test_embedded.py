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
