"""Tests of labeled/unlabeled splits, harmonization and tf.data pipelines."""

import numpy as np
import pytest
import tensorflow as tf

from tfinfo.data import ImageSplits
from tfinfo.data import check_compatible
from tfinfo.data import harmonize
from tfinfo.data import labeled_dataset
from tfinfo.data import labeled_unlabeled_split
from tfinfo.data import transfer_dataset


def _balanced(n_per_class=60, num_classes=10):
    y = np.tile(np.arange(num_classes), n_per_class).astype(np.int32)
    x = np.arange(len(y))[:, None, None, None].astype(np.float32) * np.ones((1, 2, 2, 1))
    return x, y


def _splits(shape, rank=4, n=6, name="s"):
    x = np.random.default_rng(0).integers(0, 256, (n,) + shape).astype(np.uint8)
    y = (np.arange(n) % 3).astype(np.int32)
    return ImageSplits(x, y, x[:2], y[:2], num_classes=3, name=name, original_rank=rank)


def test_split_is_class_balanced_and_partitions():
    x, y = _balanced()
    x_l, y_l, x_u, idx_u = labeled_unlabeled_split(x, y, 25, num_classes=10, seed=0)
    counts = np.bincount(y_l, minlength=10)
    assert sorted(counts.tolist()) == [2] * 5 + [3] * 5
    assert y_l.dtype == np.int32 and len(x_l) == 25 and len(x_u) == 575
    labeled_ids = x_l[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(y[labeled_ids], y_l)
    assert np.array_equal(idx_u, np.sort(idx_u))
    assert set(labeled_ids).isdisjoint(idx_u)
    assert set(labeled_ids) | set(idx_u.tolist()) == set(range(600))
    np.testing.assert_array_equal(x_u, x[idx_u])


def test_split_is_deterministic_for_a_seed():
    x, y = _balanced()
    a = labeled_unlabeled_split(x, y, 100, num_classes=10, seed=5)
    b = labeled_unlabeled_split(x, y, 100, num_classes=10, seed=5)
    c = labeled_unlabeled_split(x, y, 100, num_classes=10, seed=6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[3], c[3])
    np.testing.assert_array_equal(np.bincount(a[1]), [10] * 10)


def test_split_remainder_classes_depend_on_seed():
    x, y = _balanced()
    extra = {tuple(np.flatnonzero(np.bincount(labeled_unlabeled_split(
        x, y, 13, num_classes=10, seed=s)[1]) == 2)) for s in range(6)}
    assert all(len(e) == 3 for e in extra) and len(extra) > 1


@pytest.mark.parametrize("labeled, expected, received", [
    (700, "Expected `labeled` <= the 600 target training images.", "Received: labeled=700"),
    (0, "Expected `labeled` >= 1.", "Received: labeled=0"),
    (600, "Expected at least one unlabeled target image", "Received: labeled=600 of 600"),
])
def test_split_count_errors(labeled, expected, received):
    x, y = _balanced()
    with pytest.raises(ValueError) as info:
        labeled_unlabeled_split(x, y, labeled, num_classes=10)
    assert expected in str(info.value) and received in str(info.value)


def test_split_error_for_small_class():
    x, y = _balanced()
    keep = np.concatenate([np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:7]])
    with pytest.raises(ValueError) as info:
        labeled_unlabeled_split(x[keep], y[keep], 110, num_classes=10)
    assert "Expected at least 11 training images of class 3" in str(info.value)
    assert str(info.value).endswith("Received: 7")


def test_split_error_for_labels_out_of_range():
    x, y = _balanced()
    y = y.copy()
    y[5] = 12
    expected = r"Expected labels in 0\.\.9\. Received: labels containing 12"
    with pytest.raises(ValueError, match=expected):
        labeled_unlabeled_split(x, y, 20, num_classes=10)


def test_check_compatible_rank_error():
    source, target = _splits((8, 8, 1), rank=3), _splits((8, 8, 1), rank=4)
    with pytest.raises(ValueError) as info:
        check_compatible(source, target)
    assert str(info.value) == ("Expected source and target images of the same rank. Received: "
                               "source rank 3 (N, H, W), target rank 4 (N, H, W, C)")
    check_compatible(target, _splits((32, 32, 3), rank=4))


def test_harmonize_to_larger_size_and_channels():
    gray, rgb = _splits((28, 28, 1), name="gray"), _splits((32, 32, 3), name="rgb")
    source, target = harmonize(gray, rgb)
    assert target is rgb
    assert source.x_train.shape == (6, 32, 32, 3) and source.x_test.shape == (2, 32, 32, 3)
    assert source.x_train.dtype == np.uint8
    np.testing.assert_array_equal(source.x_train[..., 0], source.x_train[..., 2])
    np.testing.assert_array_equal(source.y_train, gray.y_train)
    assert source.name == "gray" and source.num_classes == 3
    # The resize is a bilinear interpolation: a constant image stays constant.
    flat = ImageSplits(np.full((2, 28, 28, 1), 77, np.uint8), np.zeros(2, np.int32),
                       np.full((1, 28, 28, 1), 77, np.uint8), np.zeros(1, np.int32), 1, "flat")
    assert (harmonize(flat, rgb)[0].x_train == 77).all()
    same_a, same_b = harmonize(rgb, target)
    assert same_a is rgb and same_b is target


def _transfer_inputs(n_source=130, n_target=45):
    x_source = (np.arange(n_source) % 256).astype(np.uint8)[:, None, None, None] * np.ones(
        (1, 4, 4, 1), np.uint8)
    y_source = (np.arange(n_source) % 10).astype(np.int32)
    x_target = (np.arange(n_target) + 100).astype(np.uint8)[:, None, None, None] * np.ones(
        (1, 4, 4, 1), np.uint8)
    return x_source, y_source, x_target


def _epochs(ds, n=2):
    return [[(xs.numpy(), xt.numpy(), y.numpy()) for (xs, xt), y in ds] for _ in range(n)]


def test_transfer_dataset_shapes_and_epoch_length():
    x_source, y_source, x_target = _transfer_inputs()
    ds = transfer_dataset(x_source, y_source, x_target, batch_size=20, seed=0)
    assert int(ds.cardinality()) == 6
    batches = _epochs(ds, n=1)[0]
    assert len(batches) == 6
    xs, xt, y = batches[0]
    assert xs.shape == (20, 4, 4, 1) and xt.shape == (20, 4, 4, 1) and y.shape == (20,)
    assert xs.dtype == np.float32 and xt.dtype == np.float32 and y.dtype == np.int32
    seen = np.concatenate([b[0][:, 0, 0, 0] for b in batches])
    assert len(np.unique(seen)) == 120  # no source image twice in an epoch
    for xs, xt, y in batches:  # labels stay paired with their images
        np.testing.assert_array_equal(xs[:, 0, 0, 0].astype(int) % 10, y)
        assert ((xt >= 100) & (xt < 145)).all()  # raw 0..255 pixel values of the target
    ragged = _epochs(transfer_dataset(x_source, y_source, x_target, batch_size=20,
                                      drop_remainder=False), n=1)[0]
    assert len(ragged) == 7 and ragged[-1][0].shape[0] == ragged[-1][1].shape[0] == 10


def test_transfer_dataset_is_deterministic_and_reshuffles():
    x_source, y_source, x_target = _transfer_inputs()
    a = _epochs(transfer_dataset(x_source, y_source, x_target, batch_size=20, seed=3))
    b = _epochs(transfer_dataset(x_source, y_source, x_target, batch_size=20, seed=3))
    c = _epochs(transfer_dataset(x_source, y_source, x_target, batch_size=20, seed=4))
    for epoch_a, epoch_b in zip(a, b):
        for batch_a, batch_b in zip(epoch_a, epoch_b):
            for u, v in zip(batch_a, batch_b):
                np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0][0][0], a[1][0][0])  # new order every epoch
    assert not np.array_equal(a[0][0][0], c[0][0][0])
    assert not np.array_equal(a[0][0][1], a[1][0][1])


def test_transfer_dataset_errors():
    x_source, y_source, x_target = _transfer_inputs()
    with pytest.raises(ValueError, match=r"Expected `batch_size` >= 1\. Received: batch_size=0"):
        transfer_dataset(x_source, y_source, x_target, batch_size=0)
    expected = r"Expected one label per source image \(130\)\. Received: 3"
    with pytest.raises(ValueError, match=expected):
        transfer_dataset(x_source, y_source[:3], x_target, batch_size=10)


def test_labeled_dataset_order_and_shuffle():
    x, y, _ = _transfer_inputs(n_source=25)
    plain = list(labeled_dataset(x, y, batch_size=10, shuffle=False))
    assert [len(b[1]) for b in plain] == [10, 10, 5]
    assert plain[0][0].dtype == tf.float32 and plain[0][1].dtype == tf.int32
    np.testing.assert_array_equal(np.concatenate([b[1] for b in plain]), y)

    def order(seed):
        ds = labeled_dataset(x, y, batch_size=10, shuffle=True, seed=seed)
        return [np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in ds]) for _ in range(2)]

    first, again = order(1), order(1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(np.sort(first[0]), np.arange(25))
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[0], np.arange(25))
