"""Deterministic reporting of `tfinfo-ib` runs with zero-entropy noise (seed 004): the test
accuracy of the mean softmax over seeded noise draws, the export with or without the
noise at inference, and the re-evaluation of a saved run."""

import json

import keras
import numpy as np
import pytest

from trainers.ib_evaluation import evaluate_classifier
from trainers.ib_evaluation import evaluate_workdir
from trainers.ib_evaluation import export_classifier
from trainers.ib_pipeline import build_mlp
from trainers.ib_pipeline import run_ib

ZERO_ENTROPY = 1.0 / (2.0 * np.pi * np.e)


def _images(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 6, 6)).astype(np.uint8)
    for c in range(3):  # class c brightens rows 2c, 2c + 1
        x[y == c, 2 * c:2 * c + 2, :] += 150
    return x, y


def _trained_noisy_mlp():
    x, y = _images(300, 0)
    classifier = build_mlp((6, 6), 3, [8], zero_entropy_noise=True, seed=0)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(x.astype(np.float32), y, epochs=3, batch_size=50, verbose=0)
    return classifier


def test_accuracy_is_the_same_on_every_evaluation_and_for_both_exports(tmp_path):
    classifier = _trained_noisy_mlp()
    x, y = _images(200, 1)
    x = x.astype(np.float32)
    # A plain predict is one random draw: two calls differ.
    assert not np.array_equal(classifier.predict(x, verbose=0), classifier.predict(x, verbose=0))
    first = evaluate_classifier(classifier, x, y, draws=8, seed=5)
    assert evaluate_classifier(classifier, x, y, draws=8, seed=5) == first
    assert first["noise_layers"] == ["bottleneck_noise"] and first["eval_draws"] == 8
    # The noise-free accuracy against a float64 numpy forward pass with Z = Z_hat.
    (k1, b1), (k2, b2) = (classifier.get_layer(n).get_weights() for n in ("dense_1", "logits"))
    z_hat = np.maximum(x.reshape(len(x), -1) / 255.0 @ k1 + b1, 0.0)
    assert first["test_accuracy_noise_free"] == np.mean(np.argmax(z_hat @ k2 + b2, -1) == y)
    for export_noise in ("inference", "training_only"):
        path = str(tmp_path / f"{export_noise}.keras")
        export_classifier(classifier, path, export_noise)
        loaded = keras.models.load_model(path)
        assert loaded.get_layer("bottleneck_noise").training_only is (export_noise == "training_only")
        # The same numbers from the saved file, whichever way it was exported.
        assert evaluate_classifier(loaded, x, y, draws=8, seed=5) == first
    # The deterministic export predicts Z = Z_hat, with the noise-free accuracy.
    loaded = keras.models.load_model(str(tmp_path / "training_only.keras"))
    logits = loaded.predict(x, verbose=0)
    np.testing.assert_array_equal(logits, loaded.predict(x, verbose=0))
    np.testing.assert_allclose(logits, z_hat @ k2 + b2, rtol=1e-4, atol=1e-4)
    assert classifier.get_layer("bottleneck_noise").training_only is False  # the original is untouched
    # Another seed of the draws is another (deterministic) evaluation of the same model.
    assert evaluate_classifier(classifier, x, y, draws=8, seed=6)["test_accuracy"] == pytest.approx(
        first["test_accuracy"], abs=0.1)
    with pytest.raises(ValueError, match=r"Expected `export_noise` to be one of \['inference', 'training_only'\]\. "
                                         r"Received: export_noise='off'"):
        export_classifier(classifier, str(tmp_path / "x.keras"), "off")


def test_a_saved_surrogate_run_re_evaluates_to_its_results(tmp_path):
    x_train, y_train = _images(150, 0)
    x_test, y_test = _images(100, 1)
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    workdir = tmp_path / "run"
    results = run_ib(str(workdir), "surrogate_l2", data=f"npz:{tmp_path / 'd.npz'}", hidden=[8], epochs=1,
                     batch_size=50, plane_samples=100, eval_draws=4, export_noise="training_only")
    saved = json.loads((workdir / "results.json").read_text())
    again = evaluate_workdir(str(workdir))
    assert evaluate_workdir(str(workdir)) == again
    assert (again["test_accuracy"], again["test_accuracy_noise_free"]) == (
        saved["test_accuracy"], saved["test_accuracy_noise_free"]) == (
        results["test_accuracy"], results["test_accuracy_noise_free"])
    assert saved["export_noise"] == "training_only" and saved["evaluation"]["eval_draws"] == 4
    assert "mean softmax over 4 draws" in saved["evaluation"]["description"]["test_accuracy"]
    assert "predict is deterministic" in saved["evaluation"]["description"]["classifier.keras"]
    # The plane measured Z = Z_hat + eps at the zero-entropy variance, the others at 2.0.
    layers = saved["information_description"]["layers"]
    assert list(saved["information"]) == list(layers) == ["dense_1", "bottleneck_noise", "logits"]
    assert layers["bottleneck_noise"]["noise_variance"] == pytest.approx(ZERO_ENTROPY, rel=1e-12)
    assert layers["dense_1"]["noise_variance"] == layers["logits"]["noise_variance"] == 2.0
    assert saved["information_description"]["estimator"] == "kde"
    assert {"objective", "test_accuracy", "estimator", "final_epoch", "information", "num_train", "num_test",
            "wall_time_s", "num_replicas", "history", "config"} <= set(saved)
