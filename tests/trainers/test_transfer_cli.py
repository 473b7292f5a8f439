import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from trainers.config import TransferConfig
from trainers.pipeline import prepare_data
from trainers.pipeline import run_transfer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _npz(path, n_train=120, n_test=40, shape=(10, 10), classes=4, seed=0, rank3=True, **overrides):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = (rng.uniform(0, 60, size=(n,) + shape) + 40 * y[:, None, None]).astype(np.uint8)
        arrays[f"x_{split}"] = x if rank3 else x[..., None]
        arrays[f"y_{split}"] = y.astype(np.int64)
    arrays.update(overrides)
    np.savez(path, **arrays)
    return f"npz:{path}"


def _tiny_config(tmp_path, **changes):
    base = dict(source=_npz(tmp_path / "src.npz"), target=_npz(tmp_path / "tgt.npz", seed=1),
                labeled=8, image_size=12, batch_size=16, pretrain_epochs=1, finetune_epochs=2,
                verbose=0, cache_dir=str(tmp_path / "cache"), te_epochs=None, te_unlabeled=None)
    base.update(changes)
    return TransferConfig().replace(**base)


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "trainers.transfer", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["lautum", "standard", "mi", "te", "lautum_te", "ctc", "mmd"])
def test_cli_on_npz_data_writes_results_and_a_servable_export(tmp_path, method):
    config = _tiny_config(tmp_path, method=method)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    workdir = tmp_path / "run"
    proc = _cli(["--config", str(config_file), "--workdir", str(workdir), "--seed", "3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"method={method}" in proc.stdout and "target_test_accuracy=" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["method"] == method and results["labeled"] == 8 and results["seed"] == 3
    assert 0.0 <= results["target_test_accuracy"] <= 1.0
    pretrain = results["history"]["pretrain"]
    if method == "ctc":
        assert len(pretrain["aggregation"]["ias"]) == 1 and len(pretrain["revitalization"]["irs"]) == 1
    else:
        assert len(pretrain["loss"]) == 1
    assert len(results["history"]["finetune"]["loss"]) == 2
    assert set(results["wall_time_s"]) == {"data", "pretrain", "finetune"}
    # Two fine-tune epochs on 8 images: the record says whether the labeled images are fitted.
    stage2 = results["stage2"]
    assert stage2["epochs"] == 2 and stage2["final_train_loss"] == results["history"]["finetune"]["loss"][-1]
    assert stage2["converged"] == (stage2["labeled_accuracy"] >= 0.99)
    assert f"stage2_converged={stage2['converged']}" in proc.stdout
    if method == "lautum":
        assert "lautum" in results["history"]["pretrain"] and results["history"]["pretrain"]["nonfinite_count"] == 0
    if method.endswith("te"):
        finetune = results["history"]["finetune"]
        assert {"consistency", "unsupervised_weight", "ce"} <= set(finetune)
        assert finetune["unsupervised_weight"][0] == 0.0  # the ramp-up starts at 0
    if method == "mi":
        pretrain = results["history"]["pretrain"]
        assert {"mi", "critic_loss", "ce"} <= set(pretrain) and np.isfinite(pretrain["mi"][0])

    # The export takes raw uint8 images; reload it in a fresh process without tfinfo on the path.
    images = np.random.default_rng(0).integers(0, 256, size=(9, 10, 10, 1)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import json, sys

        class NotInstalled:  # the serving process has TensorFlow only
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tfinfo", "trainers", "configs"):
                    raise ImportError(name + " is not installed here")

        sys.meta_path.insert(0, NotInstalled())
        import numpy as np, tensorflow as tf
        model = tf.saved_model.load({str(workdir / "export")!r})
        fn = model.signatures["serving_default"]
        out = list(fn(tf.constant(np.load({str(tmp_path / "images.npy")!r}))).values())[0]
        np.save({str(tmp_path / "served.npy")!r}, out.numpy())
        json.dump(dict(variables=[v.name for v in model.variables],
                       modules=sorted(m for m in sys.modules if m.split(".")[0] == "tfinfo")),
                  open({str(tmp_path / "served.json")!r}, "w"))
    """)
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.load(tmp_path / "served.npy")
    info = json.loads((tmp_path / "served.json").read_text())
    assert info["modules"] == []
    classifier = keras.models.load_model(workdir / "classifier.keras")
    # The classifier's variables only (its dropout/noise seed states included): no critic,
    # regularizer state or optimizer slots.
    assert len(info["variables"]) == len(classifier.variables), info["variables"]  # weights + seed states
    training_only = ("critic", "lautum", "covariance", "ema", "adam", "iteration", "ensemble", "bank")
    assert not [v for v in info["variables"] if any(t in v.lower() for t in training_only)], info["variables"]
    expected = classifier.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(served.argmax(-1), expected.argmax(-1))


def test_bad_input_exits_non_zero_and_keeps_earlier_results(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "results.json").write_text('{"earlier": true}')
    nan_images = np.full((20, 10, 10), np.nan, dtype=np.float32)
    spec = _npz(tmp_path / "bad.npz", x_train=nan_images, y_train=np.arange(20) % 4)
    proc = _cli(["--source", spec, "--target", _npz(tmp_path / "t.npz"), "--workdir", str(workdir)], tmp_path)
    assert proc.returncode == 2
    assert "Expected" in proc.stderr and "Received" in proc.stderr and "NaN" in proc.stderr
    assert json.loads((workdir / "results.json").read_text()) == {"earlier": True}
    proc = _cli(["--method", "magic", "--workdir", str(workdir)], tmp_path)
    assert proc.returncode == 2 and "Expected --method to be one of" in proc.stderr
    assert "Received: method='magic'" in proc.stderr


@pytest.mark.parametrize("changes,match", [
    (lambda p: {"labeled": 500}, r"Expected `labeled` <= the 120 target training images. Received: labeled=500"),
    (lambda p: {"labeled": 120}, r"Expected at least one unlabeled target image"),
    (lambda p: {"labeled": 100, "target": _npz(p / "few.npz", n_train=110, seed=4,
                y_train=np.array([0] * 50 + [1] * 50 + [2] * 5 + [3] * 5))},
     r"Expected at least \d+ training images of class 2.*Received: 5"),
    (lambda p: {"num_classes": 3}, r"Expected source training labels in 0..2. Received: labels containing \[3\]"),
    (lambda p: {"source": _npz(p / "inf.npz", x_train=np.full((8, 10, 10), np.inf))}, r"Expected finite"),
    (lambda p: {"source": _npz(p / "r3.npz"), "target": _npz(p / "r4.npz", rank3=False)},
     r"Expected source and target images of the same rank"),
    (lambda p: {"source": "ftp:somewhere"}, r"Expected a data spec of the form"),
    (lambda p: {"source": _npz(p / "obj.npz", x_train=np.array([object(), object()], dtype=object))},
     r"(?i)object"),
])
def test_bad_inputs_are_refused_before_training(tmp_path, changes, match):
    config = _tiny_config(tmp_path)
    config = config.replace(**changes(tmp_path))
    with pytest.raises(ValueError, match=match):
        prepare_data(config)


@pytest.mark.integration
def test_unreadable_image_files_are_skipped_and_reported_in_results(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "letters"
    for label, name in enumerate("ABCD"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.uniform(0, 60, (10, 10)) + 40 * label, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "C" / "broken.png").write_bytes(b"\x89PNG truncated")
    (root / "A" / "empty.png").write_bytes(b"")
    source = _npz(tmp_path / "src4.npz", rank3=False)  # images from folders are N x H x W x C
    config = _tiny_config(tmp_path, method="standard", source=source, target=f"dir:{root}", labeled=8)
    assert prepare_data(config).skipped_files == {"source": 0, "target": 2}
    results = run_transfer(config, str(tmp_path / "run"))
    assert results["skipped_files"] == {"source": 0, "target": 2}
    assert 0.0 <= results["target_test_accuracy"] <= 1.0


def test_unknown_method_is_refused_before_loading_data(tmp_path):
    with pytest.raises(ValueError, match="Expected --method to be one of"):
        run_transfer(_tiny_config(tmp_path, method="nope", source="npz:/does/not/exist.npz"), str(tmp_path / "w"))


def test_object_array_npz_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    path = tmp_path / "obj.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1),
             x_test=np.zeros((1, 4, 4)), y_test=np.zeros(1))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("a data file was unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("a data file was unpickled"))
    with pytest.raises(ValueError, match="(?i)object"):
        prepare_data(_tiny_config(tmp_path, source=f"npz:{path}"))


@pytest.mark.slow
def test_readme_main_job_on_the_embedded_default(tmp_path):
    proc = _cli(["--workdir", str(tmp_path / "run")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["method"] == "lautum" and results["num_target_test"] == 1200
    assert results["source_test_accuracy_after_pretrain"] > 0.8
    assert results["target_test_accuracy"] > 0.3


@pytest.mark.integration
@pytest.mark.parametrize("method", ["mi", "lautum_mi"])
def test_mi_methods_complete_on_the_embedded_default(tmp_path, method):
    workdir = tmp_path / "run"
    args = ["--method", method, "--workdir", str(workdir), "--pretrain_epochs", "1", "--finetune_epochs", "1",
            "--critic_steps", "2", "--verbose", "0", "--lautum_mode", "fast"]
    proc = _cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["method"] == method and results["num_target_test"] == 1200
    pretrain = results["history"]["pretrain"]
    assert {"ce", "mi", "critic_loss", "loss"} <= set(pretrain)
    assert all(np.isfinite(pretrain[key][0]) for key in ("ce", "mi", "critic_loss", "loss"))
    if method == "lautum_mi":
        assert pretrain["nonfinite_count"] == 0 and np.isfinite(pretrain["lautum"][0])
    assert (workdir / "export" / "saved_model.pb").exists()


@pytest.mark.integration
def test_probe_every_logs_transferability_during_stage_1(tmp_path):
    config = _tiny_config(tmp_path, method="standard", pretrain_epochs=3)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    proc = _cli(["--config", str(config_file), "--workdir", str(tmp_path / "run"), "--probe_every", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    (accuracy,) = results["history"]["pretrain"]["transferability"]  # after epoch 2 only
    n_test = results["num_target_test"]
    assert 0.0 <= accuracy <= 1.0 and abs(accuracy * n_test - round(accuracy * n_test)) < 1e-6
