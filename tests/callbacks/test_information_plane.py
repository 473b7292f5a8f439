import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate
from scipy import stats

from tfinfo.callbacks.information_plane import InformationPlane
from tfinfo.callbacks.information_plane import plot_information_plane


def _identity_mlp():
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(2, use_bias=False, kernel_initializer="identity", name="hidden")(inputs)
    logits = keras.layers.Dense(2, name="logits")(hidden)
    model = keras.Model(inputs, logits)
    model.compile(optimizer=keras.optimizers.SGD(0.0),  # frozen: the truth stays known
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _binary_entropy(p):
    p = np.clip(p, 1e-300, 1 - 1e-16)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def test_ksg_information_plane_matches_the_closed_forms_of_a_linear_gaussian_layer(tmp_path):
    # x ~ N(0, I_2), L = x (identity layer), y = 1[x_0 > 0], eps ~ N(0, s2 I).
    s2 = 0.5
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    i_x_true = 2 * 0.5 * np.log(1 + 1 / s2)
    # I(Y; x_0 + e) = log 2 - E_z h(Phi(z / sqrt(s2 (1 + s2)))), z ~ N(0, 1 + s2).
    conditional, _ = integrate.quad(
        lambda z: stats.norm.pdf(z, scale=np.sqrt(1 + s2)) * _binary_entropy(stats.norm.cdf(z / np.sqrt(s2 * (1 + s2)))),
        -30, 30)
    i_y_true = np.log(2) - conditional

    plane = InformationPlane(x, y, layers=["hidden"], estimator="ksg", noise_variance=s2, every_epochs=2,
                             num_samples=2000, k=5, csv_path=str(tmp_path / "plane.csv"),
                             log_dir=str(tmp_path / "tb"), png_path=str(tmp_path / "plane.png"))
    model = _identity_mlp()
    history = model.fit(x[:100], y[:100], epochs=4, verbose=0, callbacks=[plane])
    assert [(r["epoch"], r["layer"]) for r in plane.rows] == [(0, "hidden"), (2, "hidden"), (4, "hidden")]
    for row in plane.rows:
        assert row["i_x"] == pytest.approx(i_x_true, rel=0.1)
        assert row["i_y"] == pytest.approx(i_y_true, abs=0.05)
    assert history.history["hidden/i_x"] == [r["i_x"] for r in plane.rows[1:]]

    with open(tmp_path / "plane.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "layer", "i_x", "i_y", "estimator"]
    assert [(int(r["epoch"]), r["estimator"]) for r in rows] == [(0, "ksg"), (2, "ksg"), (4, "ksg")]
    assert float(rows[1]["i_y"]) == pytest.approx(plane.rows[1]["i_y"])
    png = (tmp_path / "plane.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    tags = set()
    for event_file in tf.io.gfile.glob(str(tmp_path / "tb" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags.update(v.tag for v in event.summary.value)
    assert {"information_plane/hidden/i_x", "information_plane/hidden/i_y"} <= tags


def test_default_layers_are_those_with_a_kernel_and_a_callable_estimator_sees_each():
    x = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    y = np.arange(50) % 2
    seen = []

    def estimator(x_in, y_in, activations, index):
        seen.append((index, activations.shape))
        return float(index), float(activations.shape[1])

    plane = InformationPlane(x, y, estimator=estimator)
    plane.set_model(_identity_mlp())
    rows = plane.measure(epoch=7)
    assert [(r["layer"], r["i_x"], r["i_y"], r["epoch"]) for r in rows] == [
        ("hidden", 0.0, 2.0, 7), ("logits", 1.0, 2.0, 7)]
    assert seen == [(0, (50, 2)), (1, (50, 2))]


def test_plot_has_one_trajectory_per_layer(tmp_path):
    rows = [{"epoch": e, "layer": layer, "i_x": e + i, "i_y": 0.1 * e, "estimator": "ksg"}
            for i, layer in enumerate(("a", "b", "c")) for e in range(4)]
    assert plot_information_plane(rows, str(tmp_path / "p.png")) == ["a", "b", "c"]
    from matplotlib import image

    pixels = image.imread(str(tmp_path / "p.png"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400
    # Three trajectories on a white canvas: far from a blank image.
    assert np.mean(pixels[..., :3] < 0.9) > 0.02


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(estimator="histogram"), "Expected `estimator` to be one of"),
        (dict(noise_variance=0.0), "Expected `noise_variance` > 0"),
        (dict(y=np.zeros(4, np.float32)), "Expected `y` to be 4 integer labels"),
        (dict(every_epochs=0), "Expected `every_epochs` >= 1. Received: every_epochs=0"),
        (dict(x=np.zeros(4)), "Expected `x` with a sample axis"),
    ],
)
def test_bad_arguments_are_refused(changes, match):
    args = dict(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    args.update(changes)
    with pytest.raises(ValueError, match=match):
        InformationPlane(**args)


def test_unknown_layer_names_are_listed():
    plane = InformationPlane(np.zeros((4, 2)), np.array([0, 1, 0, 1]), layers=["conv9"])
    plane.set_model(_identity_mlp())
    with pytest.raises(ValueError, match=r"Expected `layers` among the classifier's layers .* Received: \['conv9'\]"):
        plane.measure(0)


def test_binning_estimator_gives_the_entropy_of_the_binned_layer():
    # Four inputs falling in four distinct bins, labels splitting them 2/2 by bin:
    # I(X; T) = H(T) = log 4 and I(Y; T) = H(Y) = log 2.
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], np.float32)
    y = np.array([0, 0, 1, 1])
    plane = InformationPlane(x, y, layers=["hidden"], estimator="binning", num_bins=2)
    plane.set_model(_identity_mlp())
    (row,) = plane.measure(0)
    assert row["i_x"] == pytest.approx(np.log(4)) and row["i_y"] == pytest.approx(np.log(2))


@pytest.mark.slow  # two 1500-step critic trainings; AA-MINE's own accuracy test is in the fast set
@pytest.mark.parametrize("estimator", ["aa_mine", "mine"])
def test_critic_estimators_measure_the_identity_layer(estimator):
    # L = x ~ N(0, I_2), eps ~ N(0, 0.5 I): I(X; L + eps) = log 3; y = 1[x_0 > 0].
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    plane = InformationPlane(x, y, layers=["hidden"], estimator=estimator, noise_variance=0.5, num_samples=2000,
                             mine_steps=1500, seed=0)
    plane.set_model(_identity_mlp())
    (row,) = plane.measure(0)
    assert row["i_x"] == pytest.approx(np.log(3.0), rel=0.15)
    assert 0.4 < row["i_y"] < np.log(2) + 0.05


def test_kde_estimator_is_the_mixture_bound_of_the_layer():
    from tfinfo.information.mixture import mixture_label_information
    from tfinfo.information.mixture import mixture_mutual_information

    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    plane = InformationPlane(x, y, layers=["hidden"], noise_variance=0.5)  # "kde" is the default
    plane.set_model(_identity_mlp())
    (row,) = plane.measure(0)
    assert row["estimator"] == "kde"
    assert row["i_x"] == pytest.approx(mixture_mutual_information(x, 0.5))
    assert row["i_y"] == pytest.approx(mixture_label_information(y, x, 0.5))
    # For X uniform on 300 samples of N(0, I_2), I(X; X + eps) is near the population
    # value log 3 (the sample is dense at this noise level): the two pairwise bounds
    # bracket it (the KL upper bound, the one reported, is loose for overlapping components).
    assert mixture_mutual_information(x, 0.5, "lower") < np.log(3.0) < row["i_x"]
