import csv
import json
import subprocess
import sys

import pytest

from tests.trainers.test_transfer_cli import ENV
from trainers.ib_pipeline import OBJECTIVES


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "trainers.ib", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.integration
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_runs_on_the_embedded_default_and_draws_each_layer(tmp_path, objective):
    from tfinfo.callbacks.information_plane import plot_information_plane

    workdir = tmp_path / "run"
    proc = _cli(["--objective", objective, "--workdir", str(workdir), "--hidden", "32,16", "--epochs", "2",
                 "--readout_epochs", "2", "--critic_steps", "1", "--plane_samples", "200"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["objective"] == objective and 0.0 <= results["test_accuracy"] <= 1.0
    with open(workdir / "information_plane.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "layer", "i_x", "i_y", "estimator"]
    # surrogate_*: the plane also measures Z = Z_hat + eps of the zero-entropy noise layer.
    noise = ["bottleneck_noise"] if objective.startswith("surrogate") else []
    layers = ["dense_1", "dense_2", *noise, "logits"]
    epochs = 6 if objective == "ib_layerwise" else 2  # 2 epochs per layer, one continuous count
    assert sorted({(int(r["epoch"]), r["layer"]) for r in rows}) == sorted(
        (e, layer) for e in range(epochs + 1) for layer in layers)
    assert set(results["information"]) == set(layers)
    assert list((workdir / "tensorboard" / "train").rglob("events.out.tfevents.*"))  # losses, lr
    png = (workdir / "information_plane.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    parsed = [{**r, "epoch": int(r["epoch"]), "i_x": float(r["i_x"]), "i_y": float(r["i_y"])} for r in rows]
    assert plot_information_plane(parsed, str(tmp_path / "again.png")) == layers
    # The plane's final quantities are the ones reported.
    last = {r["layer"]: float(r["i_y"]) for r in rows if int(r["epoch"]) == epochs}
    assert {k: v["i_y"] for k, v in results["information"].items()} == pytest.approx(last)
    # The output line says what kde computed; results.json says it per estimator and layer.
    assert "I(X;L+eps)=" in proc.stdout and "I(Y;L+eps)=" in proc.stdout and "biased upward" in proc.stdout
    description = results["information_description"]
    assert description["estimator"] == "kde" and "not a bound" in description["i_y"]
    assert list(description["layers"]) == layers
    assert results["evaluation"]["noise_layers"] == noise and results["export_noise"] == "inference"
    if noise:
        from trainers.ib_evaluation import evaluate_workdir

        assert "bottleneck_noise: I(X;Z)=" in proc.stdout and "I(Y;Z)=" in proc.stdout

        assert description["layers"]["bottleneck_noise"]["noise_variance"] == pytest.approx(1 / (2 * 3.141592653589793
                                                                                                   * 2.718281828459045))
        again = evaluate_workdir(str(workdir))  # the saved classifier keeps the noise at inference
        assert evaluate_workdir(str(workdir)) == again
        assert (again["test_accuracy"], again["test_accuracy_noise_free"]) == (
            results["test_accuracy"], results["test_accuracy_noise_free"])
    else:
        assert results["test_accuracy_noise_free"] == results["test_accuracy"]
    # The IB objectives warm their critics up before the network follows (until settled).
    if objective == "ib_end_to_end":
        warmup = results["history"]["warmup"]
        assert warmup and [w["step"] for w in warmup] == list(range(1, len(warmup) + 1))
        assert all(set(w) == {"step", "i_x", "i_y"} for w in warmup)
    if objective == "ib_layerwise":
        assert sorted(results["history"]["warmup"]) == ["dense_1", "dense_2", "logits"][: len(
            results["history"]["warmup"])] and results["history"]["warmup"]
    if objective.startswith("ib_"):
        assert (results["config"]["critic_batches"], results["config"]["critic_warmup"]) == ("fresh", "settle")


@pytest.mark.integration
@pytest.mark.parametrize("objective", ["ib_end_to_end", "surrogate_cond_logvar"])
def test_two_mirrored_cpus(tmp_path, objective):
    workdir = tmp_path / "run"
    proc = _cli(["--objective", objective, "--workdir", str(workdir), "--hidden", "32,16", "--epochs", "1",
                 "--critic_steps", "1", "--plane_samples", "200", "--strategy", "mirrored", "--devices", "2"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["num_replicas"] == 2 and 0.2 < results["test_accuracy"] <= 1.0
    assert all(v == v for vs in results["history"].values() for v in vs)  # no NaN


def test_multi_worker_without_the_environment_is_refused(tmp_path):
    # The other bad flags run in one process in test_ib_cli_validation.py.
    proc = _cli(["--objective", "ib_layerwise", "--strategy", "multi_worker", "--workdir", str(tmp_path / "w")],
                tmp_path)
    assert proc.returncode == 2 and "Expected the environment" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "w" / "results.json").exists()
