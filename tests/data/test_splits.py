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
    (0, "Expected `labeled` to be an integer >= 1.", "Received: labeled=0"),
    ("ten", "Expected `labeled` to be an integer >= 1.", "Received: labeled='ten'"),
    ("20", "Expected `labeled` to be an integer >= 1.", "Received: labeled='20'"),
    (True, "Expected `labeled` to be an integer >= 1.", "Received: labeled=True"),
    (20.5, "Expected `labeled` to be an integer >= 1.", "Received: labeled=20.5"),
    (7, "Expected `labeled` >= the number of classes (10), so that every class has a "
        "labeled image.", "Received: labeled=7"),
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
    with pytest.raises(ValueError, match=r"Expected `batch_size` to be an integer >= 1\. Received: batch_size=0"):
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


def test_split_accepts_an_integral_float_budget_and_uses_every_class():
    x, y = _balanced()
    a = labeled_unlabeled_split(x, y, 20.0, num_classes=10, seed=2)
    b = labeled_unlabeled_split(x, y, 20, num_classes=10, seed=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # labeled == num_classes: exactly one labeled image per class.
    np.testing.assert_array_equal(np.bincount(labeled_unlabeled_split(
        x, y, 10, num_classes=10, seed=3)[1], minlength=10), [1] * 10)


def test_split_error_names_the_classes_without_images():
    x, y = _balanced()
    keep = ~np.isin(y, [2, 7])
    with pytest.raises(ValueError) as info:
        labeled_unlabeled_split(x[keep], y[keep], 50, num_classes=10)
    assert str(info.value) == ("Expected target training images of every class 0..9 "
                               "(num_classes=10). Received: none of classes [2, 7]")
    with pytest.raises(ValueError, match=r"Received: none of class \[9\]$"):
        labeled_unlabeled_split(x[y != 9], y[y != 9], 50, num_classes=10)


def test_split_with_a_huge_label_space_fails_fast_without_allocating_it():
    # One stray label 10**9 makes num_classes 10**9 + 1: the check must not build
    # per-class arrays of that size (8 GB) before failing.
    x, y = _balanced()
    with pytest.raises(ValueError) as info:
        labeled_unlabeled_split(x, y, 50, num_classes=10**9 + 1)
    message = str(info.value)
    assert "Expected target training images of every class 0..1000000000" in message
    assert message.endswith(f"Received: none of classes [10, 11, 12, 13, 14] and {10**9 - 14} more")


@pytest.mark.parametrize("change, expected", [
    (dict(y=np.where(np.arange(600) == 4, 0.5, np.tile(np.arange(10), 60))),
     "Expected integer class labels in `y`. Received: 1 non-integer values such as 0.5"),
    (dict(y=np.tile(np.arange(10), 60) - (np.arange(600) == 0)),
     "Expected non-negative class labels in `y`. Received: labels containing -1"),
    (dict(y=np.arange(599) % 10),
     "Expected one label per target training image (600). Received: 599 labels"),
    (dict(num_classes=0), "Expected `num_classes` to be an integer >= 1. Received: num_classes=0"),
    (dict(seed=-1), "Expected `seed` to be a non-negative integer. Received: seed=-1"),
    (dict(seed=1.5), "Expected `seed` to be a non-negative integer. Received: seed=1.5"),
])
def test_split_argument_errors(change, expected):
    x, y = _balanced()
    kwargs = {"y": y, "num_classes": 10, "seed": 0, **change}
    with pytest.raises(ValueError) as info:
        labeled_unlabeled_split(x, num_labeled=20, **kwargs)
    assert str(info.value) == expected


def _hand_made(**arrays):
    """An `ImageSplits` built by hand (the Python API), from valid 8x8 gray arrays."""
    base = _splits((8, 8, 1), name="hand")
    fields = {"x_train": base.x_train, "y_train": base.y_train, "x_test": base.x_test,
              "y_test": base.y_test, **arrays}
    return ImageSplits(**fields, num_classes=3, name="hand")


@pytest.mark.parametrize("arrays, expected, received", [
    (dict(x_train=np.zeros((6, 8, 8, 4), np.uint8)),
     "Expected `x_train` of the target (hand) to be uint8 images of shape (N, H, W, C) with C in {1, 3}.",
     "Received: ndarray of dtype=uint8, shape=(6, 8, 8, 4)"),
    (dict(x_test=np.zeros((2, 8, 8, 1), np.float32)),
     "Expected `x_test` of the target (hand) to be uint8 images", "dtype=float32"),
    (dict(x_train=np.zeros((6, 8, 8), np.uint8)),
     "Expected `x_train` of the target (hand) to be uint8 images", "shape=(6, 8, 8)"),
    (dict(x_test=np.zeros((2, 6, 8, 1), np.uint8)),
     "Expected the test images of the target (hand) to have the image shape of its training "
     "images (8, 8, 1).", "Received: (6, 8, 1)"),
    (dict(y_train=np.zeros(5, np.int32)),
     "Expected one label per image in `x_train` of the target (hand) (6).",
     "Received: labels of shape (5,)"),
])
def test_check_compatible_and_harmonize_refuse_malformed_splits(arrays, expected, received):
    good = _splits((8, 8, 1), name="good")
    for check in (check_compatible, harmonize):
        with pytest.raises(ValueError) as info:
            check(good, _hand_made(**arrays))
        assert expected in str(info.value) and received in str(info.value)
    with pytest.raises(ValueError, match=r"of the source \(hand\)"):
        check_compatible(_hand_made(**arrays), good)


def test_harmonize_warns_when_aspect_ratios_differ(caplog):
    square, wide = _splits((8, 8, 1), name="square"), _splits((8, 16, 1), name="wide")
    with caplog.at_level("WARNING", logger="tfinfo.data.splits"):
        source, target = harmonize(square, wide)
    assert source.image_shape == (8, 16, 1) and target is wide
    assert "differ in aspect ratio: both are stretched to 8x16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tfinfo.data.splits"):
        harmonize(square, _splits((16, 16, 3)))
    assert "aspect ratio" not in caplog.text


def _bad_float(value, where=(0, 0, 0, 0)):
    x = np.full((30, 4, 4, 1), 100.0, np.float32)
    x[where] = value
    return x


@pytest.mark.parametrize("kwargs, expected", [
    (dict(x_source=_bad_float(np.nan)), "Expected finite pixel values in `x_source`. "
                                        "Received: 1 NaN or inf values"),
    (dict(x_unlabeled=_bad_float(np.inf)), "Expected finite pixel values in `x_unlabeled`. "
                                           "Received: 1 NaN or inf values"),
    (dict(x_source=_bad_float(-3.0)), "Expected pixel values in 0..255 in `x_source`. "
                                      "Received: min=-3.0, max=100.0"),
    (dict(x_unlabeled=np.full((5, 4, 4, 1), 300, np.int32)),
     "Expected pixel values in 0..255 in `x_unlabeled`. Received: min=300, max=300"),
    (dict(x_source=np.zeros((30, 4, 4), np.uint8)),
     "Expected `x_source` to be images of shape (N, H, W, C). Received: shape=(30, 4, 4)"),
    (dict(x_source=np.full((30, 4, 4, 1), "a")),
     "Expected `x_source` to be a numeric image array (uint8 or float). Received: dtype=<U1"),
    (dict(x_unlabeled=np.zeros((0, 4, 4, 1), np.uint8)),
     "Expected `x_unlabeled` to hold at least one image. Received: shape=(0, 4, 4, 1)"),
    (dict(x_unlabeled=np.zeros((5, 8, 8, 1), np.uint8)),
     "Expected `x_unlabeled` to have the image shape (H, W, C) of `x_source` (4, 4, 1). "
     "Received: (8, 8, 1)"),
    (dict(y_source=np.full(30, 1.5)),
     "Expected integer class labels in `y_source`. Received: 30 non-integer values such as 1.5"),
    (dict(y_source=np.full(30, -2)),
     "Expected non-negative class labels in `y_source`. Received: labels containing -2"),
    (dict(batch_size=2.5), "Expected `batch_size` to be an integer >= 1. Received: batch_size=2.5"),
    (dict(batch_size="10"), "Expected `batch_size` to be an integer >= 1. Received: batch_size='10'"),
    (dict(batch_size=True), "Expected `batch_size` to be an integer >= 1. Received: batch_size=True"),
    (dict(seed=None), "Expected `seed` to be an integer. Received: seed=None"),
    (dict(batch_size=31), "Expected at least `batch_size` (31) source images. Received: 30"),
])
def test_transfer_dataset_validates_its_arrays(kwargs, expected):
    args = dict(x_source=np.zeros((30, 4, 4, 1), np.uint8), y_source=np.arange(30) % 3,
                x_unlabeled=np.zeros((5, 4, 4, 1), np.uint8), batch_size=10, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        transfer_dataset(**args)
    assert str(info.value) == expected


@pytest.mark.parametrize("kwargs, expected", [
    (dict(x=_bad_float(np.nan)), "Expected finite pixel values in `x`. Received: 1 NaN or inf values"),
    (dict(x=np.zeros((30, 4, 4, 1), bool)),
     "Expected `x` to be a numeric image array (uint8 or float). Received: dtype=bool"),
    (dict(x=np.zeros((0, 4, 4, 1), np.uint8), y=np.zeros(0)),
     "Expected `x` to hold at least one image. Received: shape=(0, 4, 4, 1)"),
    (dict(x=[np.zeros((4, 4, 1)), np.zeros((5, 4, 1))], y=[0, 1]),
     "Expected `x` to be an array of images of one shape. Received: list"),
    (dict(y=np.arange(29)), "Expected one label per image (30). Received: 29 labels"),
    (dict(y=np.zeros((30, 3))), "Expected `y` to be labels of shape (N,). Received: shape=(30, 3)"),
    (dict(batch_size=0), "Expected `batch_size` to be an integer >= 1. Received: batch_size=0"),
])
def test_labeled_dataset_validates_its_arrays(kwargs, expected):
    args = dict(x=np.zeros((30, 4, 4, 1), np.uint8), y=np.arange(30) % 3, batch_size=8,
                shuffle=False)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        labeled_dataset(**args)
    assert str(info.value).startswith(expected)


def test_labeled_dataset_keeps_float_pixels_and_warns_about_unit_scale(caplog):
    x = np.linspace(0, 255, 6 * 4, dtype=np.float64).reshape(6, 2, 2, 1)
    y = np.array([[0], [1], [2], [0], [1], [2]], np.float32)  # integral floats, a column
    batch = next(iter(labeled_dataset(x, y, batch_size=6, shuffle=False)))
    np.testing.assert_allclose(batch[0].numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(batch[1].numpy(), [0, 1, 2, 0, 1, 2])
    assert batch[1].dtype == tf.int32 and "[0, 1]" not in caplog.text
    with caplog.at_level("WARNING", logger="tfinfo.data.splits"):
        labeled_dataset(x / 255.0, y, batch_size=6, shuffle=False)
    assert "The pixel values of `x` lie in [0, 1]" in caplog.text
