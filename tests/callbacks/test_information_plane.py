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


# Four 1500-step concat-critic trainings on 2000 x 10 pairs: 2 to 3 minutes per estimator on 2 cores.
@pytest.mark.slow  # AA-MINE's own accuracy test is in the fast set
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


# ---- zero-entropy noise (seed 004, section 7.3), binning ranges, critic settings, labels ----

ZERO_ENTROPY = 1.0 / (2.0 * np.pi * np.e)  # written out: the tests must not trust the layer


def _noisy_bottleneck(kernel, activation=None, seed=0):
    """x -> Dense(kernel, no bias) -> ZeroEntropyNoise 'bottleneck_noise' -> Dense 'logits'."""
    from tfinfo.layers import ZeroEntropyNoise

    inputs = keras.Input((kernel.shape[0],))
    z_hat = keras.layers.Dense(kernel.shape[1], use_bias=False, activation=activation, name="encoder")(inputs)
    z = ZeroEntropyNoise(seed=seed, name="bottleneck_noise")(z_hat)
    logits = keras.layers.Dense(2, name="logits", bias_initializer="glorot_uniform")(z)
    classifier = keras.Model(inputs, logits)
    classifier.get_layer("encoder").set_weights([kernel])
    return classifier


def _surrogate(classifier):
    from tfinfo.models import SurrogateBottleneckModel
    from tfinfo.regularizers import ActivationL2Regularizer

    return SurrogateBottleneckModel(classifier, ActivationL2Regularizer(), layer="bottleneck_noise", weight=0.01)


def test_surrogate_plane_measures_z_hat_plus_zero_entropy_noise_at_the_gaussian_closed_form():
    # x ~ N(0, I_2), Z_hat = x W, Z = Z_hat + N(0, I / (2 pi e)):
    # I(X; Z) = 1/2 logdet(I + W^T W (2 pi e)) = 0.745 nats. KSG (a consistent estimator
    # of the population value, unlike kde, whose X is uniform on the samples) on 20000
    # samples lands within about 2% of it; with the plane's measurement variance 0.5
    # instead, the truth would be 0.129, and with 2.0 (tfinfo-ib's default) 0.04.
    kernel = np.array([[0.3, 0.0], [0.1, 0.2]])
    truth = 0.5 * np.linalg.slogdet(np.eye(2) + kernel.T @ kernel / ZERO_ENTROPY)[1]
    assert truth == pytest.approx(0.7455, abs=1e-3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    classifier = _noisy_bottleneck(kernel)
    plane = InformationPlane(x, y, estimator="ksg", noise_variance=0.5, num_samples=20000, k=5)
    # A surrogate run: the plane measures the wrapped classifier before training (epoch
    # 0) and after an epoch of CE + gamma E||Z||^2 that moves the encoder.
    model = _surrogate(classifier)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(x, y, batch_size=1000, epochs=1, verbose=0, callbacks=[plane])
    trained = classifier.get_layer("encoder").get_weights()[0].astype(np.float64)
    truth_after = 0.5 * np.linalg.slogdet(np.eye(2) + trained.T @ trained / ZERO_ENTROPY)[1]
    assert abs(truth_after - truth) > 0.1  # the epoch moved the closed form
    rows = {row["layer"]: row for row in plane.rows if row["epoch"] == 0}
    assert list(rows) == ["encoder", "bottleneck_noise", "logits"]  # the noise layer is measured by default
    assert rows["bottleneck_noise"]["i_x"] == pytest.approx(truth, rel=0.05)
    after = {row["layer"]: row for row in plane.rows if row["epoch"] == 1}
    assert after["bottleneck_noise"]["i_x"] == pytest.approx(truth_after, rel=0.05)
    assert plane.layer_noise["bottleneck_noise"]["noise_variance"] == pytest.approx(ZERO_ENTROPY, rel=1e-12)
    assert plane.layer_noise["encoder"]["noise_variance"] == 0.5
    # The noise is on again after the measurement (the model's inference keeps it).
    assert classifier.get_layer("bottleneck_noise").training_only is False
    out = classifier.predict(x[:64], verbose=0)
    assert not np.array_equal(out, classifier.predict(x[:64], verbose=0))


def _pairwise_kl_bound(t, variance):
    """Float64 numpy reference of Kolchinsky & Tracey's upper bound (no shared code)."""
    d2 = ((t[:, None, :] - t[None, :, :]) ** 2).sum(-1)
    a = -d2 / (2.0 * variance)
    m = a.max(axis=1, keepdims=True)
    return float(-np.mean(np.log(np.mean(np.exp(a - m), axis=1)) + m[:, 0]))


def test_kde_rows_of_a_noisy_relu_bottleneck_match_a_numpy_reference_and_are_deterministic():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 4)) * 0.5
    x = rng.standard_normal((200, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    classifier = _noisy_bottleneck(kernel, activation="relu")
    plane = InformationPlane(x, y, noise_variance=0.3)
    plane.set_model(_surrogate(classifier))
    first = {row["layer"]: row for row in plane.measure(0)}
    z_hat = np.maximum(x.astype(np.float64) @ kernel, 0.0)
    # Z = Z_hat + eps at the layer's own variance 1 / (2 pi e) (not the plane's 0.3).
    assert first["bottleneck_noise"]["i_x"] == pytest.approx(_pairwise_kl_bound(z_hat, ZERO_ENTROPY), rel=1e-6)
    assert first["bottleneck_noise"]["i_x"] != pytest.approx(_pairwise_kl_bound(z_hat, 0.3), rel=1e-3)
    # The logits after the noise layer: on the noise-free path, with the plane's noise.
    v, b = (w.astype(np.float64) for w in classifier.get_layer("logits").get_weights())
    assert first["logits"]["i_x"] == pytest.approx(_pairwise_kl_bound(z_hat @ v + b, 0.3), rel=1e-6)
    second = {row["layer"]: row for row in plane.measure(1)}
    for layer in first:  # no noise draw reaches the kde rows
        assert (second[layer]["i_x"], second[layer]["i_y"]) == (first[layer]["i_x"], first[layer]["i_y"])


def test_binning_bin_range_is_exposed_and_the_default_range_is_the_layer():
    # Two units, the second rescaled by 100 by the layer's kernel.
    rng = np.random.default_rng(0)
    x = np.tanh(rng.standard_normal((400, 2))).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)

    def plane_value(scale, **bins):
        inputs = keras.Input((2,))
        hidden = keras.layers.Dense(2, use_bias=False, name="hidden")(inputs)
        classifier = keras.Model(inputs, hidden)
        classifier.get_layer("hidden").set_weights([np.diag([1.0, scale])])
        plane = InformationPlane(x, y, layers=["hidden"], estimator="binning", num_bins=10, **bins)
        plane.set_model(classifier)
        (row,) = plane.measure(0)
        return row["i_x"], row["i_y"]

    # Each unit cut at its own [min, max]: blind to the rescaling.
    assert plane_value(1.0, bin_range="unit") == plane_value(100.0, bin_range="unit")
    # One range for the layer (the default), a fixed range, a fixed width: all see it.
    assert plane_value(1.0) == plane_value(1.0, bin_range="layer")
    for bins in ({}, {"bin_range": (-1, 1)}, {"bin_width": 0.2}):
        assert plane_value(1.0, **bins)[0] != pytest.approx(plane_value(100.0, **bins)[0], rel=0.05), bins
    with pytest.raises(ValueError, match=r"Expected `bin_range` to be one of .* Received: bin_range='global'"):
        InformationPlane(x, y, estimator="binning", bin_range="global")
    with pytest.raises(ValueError, match=r"Expected `bin_width` to be None or a finite number > 0"):
        InformationPlane(x, y, estimator="binning", bin_width=0.0)


@pytest.mark.parametrize("estimator,critic", [("mine", "mine"), ("aa_mine", "aa_mine")])
def test_critic_estimators_use_mine_s_concat_network_and_ten_noise_draws(monkeypatch, estimator, critic):
    from tfinfo.information import estimate as estimate_module
    from tfinfo.information import noise_regularized as noise_module

    calls = []

    def fake_noise_regularized(network, x, **kwargs):
        calls.append(("i_x", network.output.shape[-1], kwargs))
        return 0.25

    def fake_estimate(a, b, **kwargs):
        calls.append(("i_y", np.shape(b), kwargs))
        return 0.5

    monkeypatch.setattr(noise_module, "noise_regularized_mutual_information", fake_noise_regularized)
    monkeypatch.setattr(estimate_module, "estimate_mutual_information", fake_estimate)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    plane = InformationPlane(x, y, estimator=estimator, noise_variance=0.5)
    plane.set_model(_surrogate(_noisy_bottleneck(np.eye(2))))
    rows = plane.measure(0)
    assert [(r["layer"], r["i_x"], r["i_y"]) for r in rows] == [
        ("encoder", 0.25, 0.5), ("bottleneck_noise", 0.25, 0.5), ("logits", 0.25, 0.5)]
    i_x = [kwargs for kind, _, kwargs in calls if kind == "i_x"]
    assert [k["critic"] for k in i_x] == [critic] * 3  # "mine": noise_regularized's ConcatCritic
    assert [k["noise_draws"] for k in i_x] == [10] * 3
    assert [k["noise_variance"] for k in i_x] == pytest.approx([0.5, ZERO_ENTROPY, 0.5])
    i_y = [(shape, kwargs) for kind, shape, kwargs in calls if kind == "i_y"]
    assert [kwargs["critic"] for _, kwargs in i_y] == ["concat"] * 3
    # I(Y; Z) of the noise layer on its 10 noise draws per sample; I(Y; L) once per sample.
    assert [shape[0] for shape, _ in i_y] == [100, 1000, 100]


def test_plot_axes_say_what_the_estimator_computes(monkeypatch, tmp_path):
    from matplotlib.figure import Figure

    from tfinfo.callbacks.information_plane_output import describe_estimator

    labels = []
    save = Figure.savefig

    def spy(fig, *args, **kwargs):
        labels.append((fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    for estimator in ("kde", "binning", "mine"):
        rows = [{"epoch": e, "layer": "a", "i_x": e, "i_y": e, "estimator": estimator} for e in range(3)]
        plot_information_plane(rows, str(tmp_path / f"{estimator}.png"))
    assert labels[0] == ("I(X; L + eps) [nats], pairwise-KL upper bound",
                         "I(Y; L + eps) [nats], difference of upper bounds (biased up)")
    assert labels[1] == ("I(X; bin(L)) = H(bin(L)) [nats]", "I(Y; bin(L)) [nats]")
    assert labels[2][1] == "I(Y; L) [nats], MINE (DV bound)"
    kde = describe_estimator("kde")
    assert "not a bound" in kde["i_y"] and "biased upward" in kde["i_y"] and "upper bound" in kde["i_x"]
