import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from trainers import tune_pipeline
from trainers.config import TransferConfig
from trainers.config import load_config
from trainers.tune_pipeline import default_search_space
from trainers.tune_pipeline import parse_search_space
from trainers.tune_pipeline import resolve_search_space
from trainers.tune_pipeline import run_tune
from trainers.tune_pipeline import validation_split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
# Learning rates only: every trial trains 1 + 1 epochs, so a trial costs the same whatever is drawn.
FAST = "learning_rate=log:1e-4:1e-2,finetune_learning_rate=log:1e-4:1e-2"


def _npz(path, n, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("test", 40)):
        y = np.arange(count) % classes
        arrays[f"x_{split}"] = (rng.uniform(0, 60, size=(count, 10, 10)) + 40 * y[:, None, None]).astype(np.uint8)
        arrays[f"y_{split}"] = y.astype(np.int64)
    np.savez(path, **arrays)
    return f"npz:{path}"


def _config(tmp_path, **changes):
    base = dict(method="standard", source=_npz(tmp_path / "src.npz", 96), target=_npz(tmp_path / "tgt.npz", 60, seed=1),
                labeled=8, image_size=12, batch_size=16, pretrain_epochs=1, finetune_epochs=1, verbose=0,
                cache_dir=str(tmp_path / "cache"), te_epochs=None, te_unlabeled=None)
    base.update(changes)
    return TransferConfig().replace(**base)


def _cli(module, args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)


def _assert_completed(results, count):
    assert results["num_trials"] == count and results["num_completed"] == count
    for trial in results["trials"]:
        assert trial["status"] == "COMPLETED", trial["message"]
        assert math.isfinite(trial["val_accuracy"]) and 0.0 <= trial["val_accuracy"] <= 1.0
        # 4 validation images: the objective is a multiple of 1/4.
        assert trial["val_accuracy"] * 4 == round(trial["val_accuracy"] * 4)
    best = max(results["trials"], key=lambda t: t["val_accuracy"])
    assert results["best"]["val_accuracy"] == best["val_accuracy"]


# --- the validation split -------------------------------------------------------------


def test_validation_split_is_disjoint_class_balanced_and_seeded():
    y = np.repeat(np.arange(5), 20)[np.random.default_rng(0).permutation(100)]
    train, val = validation_split(y, 5, 0.23, seed=3)
    assert len(val) == 23 and len(train) == 77
    assert not set(train) & set(val) and sorted(set(train) | set(val)) == list(range(100))
    counts = np.bincount(y[val], minlength=5)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 23  # 4 or 5 per class
    assert np.all(np.bincount(y[train], minlength=5) >= 15)
    again_train, again_val = validation_split(y, 5, 0.23, seed=3)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert not np.array_equal(val, validation_split(y, 5, 0.23, seed=4)[1])


@pytest.mark.parametrize("y,fraction,match", [
    (np.arange(20) % 4, 0.1, r"Expected validation_fraction \* labeled >= num_classes .*Received: "
                             r"validation_fraction=0.1, labeled=20 \(2 validation images\)"),
    (np.arange(20) % 4, 1.0, r"Expected validation_fraction in \(0, 1\). Received: validation_fraction=1.0"),
    (np.arange(20) % 4, 0.0, r"Expected validation_fraction in \(0, 1\)"),
    (np.array([0, 0, 0, 1, 1, 1, 2, 3, 3, 3]), 0.4, r"Expected more than 1 labeled images of class 2 .*Received: 1"),
])
def test_validation_split_refuses_what_it_cannot_balance(y, fraction, match):
    with pytest.raises(ValueError, match=match):
        validation_split(y, 4, fraction, seed=0)


# --- the search space -----------------------------------------------------------------


def test_default_search_spaces_follow_the_method():
    base = TransferConfig(pretrain_epochs=8, finetune_epochs=40, te_epochs=None)  # TE searches finetune_epochs
    common = {"learning_rate", "finetune_learning_rate", "pretrain_epochs", "finetune_epochs"}
    expected = {
        "standard": set(),
        "lautum": {"lautum_weight", "ema_decay"},
        "mi": {"mi_weight", "mi_tau", "critic_steps", "critic_learning_rate"},
        "lautum_mi": {"lautum_weight", "ema_decay", "mi_weight", "mi_tau", "critic_steps", "critic_learning_rate"},
        "te": {"te_max_weight", "te_rampup_epochs"},
        "mmd": {"mmd_weight"},
        "ctc": {"ctc_alpha", "ctc_beta"},
    }
    for method, extra in expected.items():
        space = resolve_search_space(base.replace(method=method))
        assert set(space) == common | extra, method
    lautum = resolve_search_space(base)
    assert lautum["lautum_weight"].spec() == "log:0.001:0.1" and lautum["pretrain_epochs"].spec() == "int:4:16"
    # TE methods with te_epochs set train stage 2 for te_epochs: that is what is searched.
    te = default_search_space(base.replace(method="lautum_te", te_epochs=20))
    assert te["te_epochs"] == "int:10:40" and "finetune_epochs" not in te
    # mi_tau only matters for SMILE.
    assert "mi_tau" not in default_search_space(base.replace(method="mi", mi_estimator="nwj"))


def test_search_strings_parse_replace_or_extend_the_default_and_declare_keras_tuner_hyperparameters():
    import keras_tuner

    base = TransferConfig(method="lautum")
    space = parse_search_space("lautum_weight=log:1e-3:1e-1, pretrain_epochs=int:1:7:2,ema_decay=choice:0.99|0.999,"
                               "lautum_mode=choice:exact|fast,dropout=float:0:0.5,batch_size=fixed:32", "lautum")
    assert {n: d.spec() for n, d in space.items()} == {
        "lautum_weight": "log:0.001:0.1", "pretrain_epochs": "int:1:7:2", "ema_decay": "choice:0.99|0.999",
        "lautum_mode": "choice:exact|fast", "dropout": "float:0:0.5", "batch_size": "fixed:32"}
    assert parse_search_space({n: d.spec() for n, d in space.items()}) == space  # canonical specs round-trip
    assert set(resolve_search_space(base, "dropout=float:0:0.5")) == {"dropout"}
    extended = resolve_search_space(base, "dropout=float:0:0.5,lautum_weight=log:0.01:1", extend=True)
    assert set(extended) == set(default_search_space(base)) | {"dropout"}
    assert extended["lautum_weight"].spec() == "log:0.01:1"

    hp = keras_tuner.HyperParameters()
    for name, dim in space.items():
        dim.declare(hp, getattr(base.replace(pretrain_epochs=5, dropout=0.7), name))
    assert hp.get("lautum_weight") == pytest.approx(0.01)  # the base value, inside the range
    assert hp.get("pretrain_epochs") == 5 and isinstance(hp.get("pretrain_epochs"), int)
    assert hp.get("dropout") == 0.0  # 0.7 lies outside: Keras Tuner's default, the lower end
    assert hp.get("ema_decay") == 0.999 and hp.get("lautum_mode") == "fast" and hp.get("batch_size") == 32
    assert {type(p).__name__ for p in hp.space} == {"Float", "Int", "Choice", "Fixed"}
    assert [p.sampling for p in hp.space if p.name == "lautum_weight"] == ["log"]


@pytest.mark.parametrize("search,match", [
    ("lautum_weight=log:0:0.1", "LOW > 0 for log:"),
    ("lautum_weight=log:0.1:0.01", "LOW < HIGH"),
    ("lautum_weight=uniform:0.1:1", "KIND:ARGS one of log:LOW:HIGH"),
    ("lautum_weight", "KIND:ARGS one of log:LOW:HIGH"),
    ("lautum_weight=log:0.01", "LOW:HIGH after log:"),
    ("lautum_weight=log:a:b", "numeric values for this field"),
    ("lautum_weight=float:-1:1", "non-negative values"),
    ("pretrain_epochs=float:1:3", "int: or log: for the integer field pretrain_epochs"),
    ("pretrain_epochs=int:1:3.5", "integer values for this field"),
    ("pretrain_epochs=int:1:3:5", "0 < STEP <= HIGH - LOW"),
    ("lautum_weight=int:1:3", "float: or log: for the float field lautum_weight"),
    ("lautum_mode=log:1:2", "choice: or fixed: for the text field lautum_mode"),
    ("ema_decay=choice:0.99", "at least two distinct values after choice:"),
    ("batch_size=fixed:16|32", "one value after fixed:"),
    ("nonsense=log:1:2", "Expected `search` names among the TransferConfig fields"),
    ("labeled=int:10:20", "Expected `search` names other than"),
    ("mi_weight=log:0.01:1", "Expected `search` names that method 'lautum' reads"),
    ("lautum_weight=log:1e-3:1e-1,lautum_weight=log:1e-2:1", "Expected each `search` name once"),
    ("lautum_weight=log:1e-3:1e-1,,", "Expected `search` to be NAME=KIND:ARGS entries separated by commas"),
])
def test_bad_search_strings_are_refused_naming_the_entry(search, match):
    with pytest.raises(ValueError, match="Expected") as info:
        parse_search_space(search, "lautum")
    message = str(info.value)
    assert match in message and "Received: search" in message


def test_cli_refuses_bad_arguments_with_exit_2_before_touching_the_directory(tmp_path):
    from tests.cli_driver import run_cases

    config_file = tmp_path / "base.json"
    config_file.write_text(json.dumps({"method": "lautum", "labeled": 8}))
    expected = {
        "tuner": (["--tuner", "hyperband"], "Expected tuner to be one of ['random', 'bayesian']. Received: tuner='hyperband'"),
        "search_low": (["--search", "lautum_weight=log:0:1"], "Received: search entry 'lautum_weight=log:0:1'"),
        "search_name": (["--search", "mi_weight=log:0.01:1"], "Expected `search` names that method 'lautum' reads"),
        "search_range": (["--search", "lautum_weight=log:1e-3"], "LOW:HIGH after log:"),
        "max_trials": (["--max_trials", "0"], "Expected max_trials to be an integer >= 1. Received: max_trials=0"),
        "validation_fraction": (["--validation_fraction", "1.5"],
                                "Expected validation_fraction in (0, 1). Received: validation_fraction=1.5"),
        "executions": (["--executions_per_trial", "0"], "Expected executions_per_trial to be an integer >= 1"),
    }
    cases = [{"id": case_id, "argv": ["--config", str(config_file), "--directory", str(tmp_path / "d"), *args]}
             for case_id, (args, _) in expected.items()]
    results = run_cases("trainers.tune", "tfinfo-tune", cases, tmp_path)
    for case_id, (args, match) in expected.items():
        result = results[case_id]
        assert result["code"] == 2, (args, result["stderr"][-2000:])
        last = result["stderr"].strip().splitlines()[-1]
        assert last.startswith("tfinfo-tune: error: Expected") and "Received:" in last and match in last, last
    assert not (tmp_path / "d").exists()


# --- searches -------------------------------------------------------------------------


class _Killed(BaseException):
    """Stands for the process being killed mid-trial (Keras Tuner only catches `Exception`)."""


@pytest.mark.integration
def test_random_search_completes_on_a_validation_split_and_resumes_without_redoing_trials(tmp_path, monkeypatch):
    real = tune_pipeline._run_execution
    calls, kill = [], {"at": 2}
    labeled = {}

    def spy(method, data, x_val, y_val, config, *args, **kwargs):
        calls.append(config)
        # Stage 2 trains on the labeled images outside the validation split; the target
        # test images are never used.
        train_rows = {x.tobytes() for x in data.x_labeled}
        val_rows = {x.tobytes() for x in x_val}
        labeled.update(train=train_rows, val=val_rows, y_val=np.bincount(y_val, minlength=4))
        assert not train_rows & val_rows and not {x.tobytes() for x in data.x_target_test} & val_rows
        if len(calls) == kill["at"]:
            raise _Killed()
        return real(method, data, x_val, y_val, config, *args, **kwargs)

    monkeypatch.setattr(tune_pipeline, "_run_execution", spy)
    config = _config(tmp_path)
    directory = tmp_path / "tune"
    search = dict(max_trials=2, validation_fraction=0.5, search_space=FAST)

    with pytest.raises(_Killed):  # killed during the second trial
        run_tune(config, str(directory), **search)
    assert len(calls) == 2 and not (directory / "tune_results.json").exists()
    # The base config's values come first.
    assert calls[0].learning_rate == config.learning_rate and calls[0].finetune_learning_rate == 1e-3
    assert len(labeled["train"]) == 4 and len(labeled["val"]) == 4 and labeled["y_val"].tolist() == [1, 1, 1, 1]
    from trainers.pipeline import prepare_data

    all_labeled = {x.tobytes() for x in prepare_data(config).x_labeled}
    assert labeled["train"] | labeled["val"] == all_labeled

    kill["at"] = None
    results = run_tune(config, str(directory), **search)  # reruns the interrupted trial only
    assert len(calls) == 3 and calls[2] == calls[1]
    _assert_completed(results, 2)
    assert [t["trial_id"] for t in results["trials"]] == ["0", "1"]
    assert results["trials"][0]["hyperparameters"] == {"learning_rate": 1e-3, "finetune_learning_rate": 1e-3}
    assert results["trials"][1]["hyperparameters"]["learning_rate"] == calls[1].learning_rate != 1e-3
    assert results["validation"] == {"fraction": 0.5, "num_validation": 4, "num_train": 4,
                                     "validation_per_class": [1, 1, 1, 1]}
    on_disk = json.loads((directory / "tune_results.json").read_text())
    assert on_disk["trials"] == results["trials"] and on_disk["best"] == results["best"]
    best_config = load_config(str(directory / "best_config.json"))
    assert best_config == config.replace(**results["best"]["hyperparameters"])
    # TensorBoard: both stages' scalars and the trial's objective with its HParams.
    logs = directory / "trial_0" / "logs" / "execution0"
    assert list(logs.glob("events.out.tfevents.*")) and list((logs / "finetune").rglob("events.out.tfevents.*"))
    assert list((logs / "pretrain").rglob("events.out.tfevents.*"))

    again = run_tune(config, str(directory), **search)  # nothing left to do
    assert len(calls) == 3 and again["trials"] == results["trials"]
    more = run_tune(config, str(directory), **{**search, "max_trials": 3})  # exactly one more trial
    assert len(calls) == 4
    _assert_completed(more, 3)
    assert more["trials"][:2] == results["trials"] and more["trials"][2]["trial_id"] == "2"
    assert sorted(p.name for p in directory.glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]

    # Another search in the same directory is refused, not mixed in.
    with pytest.raises(ValueError, match=r"Expected the same search .*Received: differences in "
                                         r"\['base_config.pretrain_epochs'\]"):
        run_tune(config.replace(pretrain_epochs=2), str(directory), **search)
    with pytest.raises(ValueError, match=r"Received: differences in \['search_space'\]"):
        run_tune(config, str(directory), **{**search, "search_space": "learning_rate=log:1e-4:1e-2"})
    assert len(calls) == 4


@pytest.mark.integration
def test_bayesian_search_completes_and_fits_its_gaussian_process(tmp_path, monkeypatch):
    import sklearn.gaussian_process

    fits = []
    real_fit = sklearn.gaussian_process.GaussianProcessRegressor.fit
    monkeypatch.setattr(sklearn.gaussian_process.GaussianProcessRegressor, "fit",
                        lambda self, x, y: fits.append(np.shape(x)) or real_fit(self, x, y))
    results = run_tune(_config(tmp_path), str(tmp_path / "bayes"), tuner="bayesian", max_trials=2,
                       validation_fraction=0.5, search_space=FAST + ",batch_size=choice:8|16",
                       num_initial_points=1, tensorboard=False)
    _assert_completed(results, 2)
    assert results["tuner"] == "bayesian"
    assert fits == [(1, 3)]  # the second trial came from the Gaussian process fitted on the first
    assert not (tmp_path / "bayes" / "trial_0" / "logs").exists()


@pytest.mark.integration
def test_failed_trials_are_recorded_and_reported_never_silent(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("Expected a working trial. Received: boom")

    monkeypatch.setattr(tune_pipeline, "_run_execution", broken)
    directory = tmp_path / "broken"
    with pytest.raises(RuntimeError, match=r"Expected completed trials. Received: 0 of 2 completed.*boom"):
        run_tune(_config(tmp_path), str(directory), max_trials=2, validation_fraction=0.5, search_space=FAST)
    results = json.loads((directory / "tune_results.json").read_text())
    assert [t["status"] for t in results["trials"]] == ["FAILED", "FAILED"]
    assert all("boom" in t["message"] for t in results["trials"])
    assert results["best"] is None and not (directory / "best_config.json").exists()

    # overwrite=True deletes an earlier search, never a folder of other files.
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"Expected `directory` to be empty or an earlier tfinfo-tune directory"):
        run_tune(_config(tmp_path), str(other), max_trials=1, validation_fraction=0.5, search_space=FAST,
                 overwrite=True)
    assert (other / "precious.txt").read_text() == "keep"


def _tune_then_transfer(tmp_path, method, tune_args, searched):
    config = _config(tmp_path, method=method)
    config_file = tmp_path / "base.json"
    config_file.write_text(json.dumps(config.to_dict()))
    directory = tmp_path / "tune"
    proc = _cli("trainers.tune", ["--config", str(config_file), "--directory", str(directory),
                                  "--validation_fraction", "0.5", "--notensorboard", *tune_args], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((directory / "tune_results.json").read_text())
    _assert_completed(results, results["max_trials"])
    lines = proc.stdout.strip().splitlines()
    trial_lines = [line for line in lines if line.startswith("tfinfo-tune: trial ")]
    assert len(trial_lines) == results["num_trials"] and all(" COMPLETED val_accuracy=" in t for t in trial_lines)
    best_path = directory / "best_config.json"
    assert lines[-1].startswith(f"tfinfo-tune: method={method} ")
    assert f"best_val_accuracy={results['best']['val_accuracy']:.4f}" in lines[-1]
    assert lines[-1].endswith(f"best_config={best_path}")
    best = results["best"]["hyperparameters"]
    assert set(best) == searched

    workdir = tmp_path / "best"
    proc = _cli("trainers.transfer", ["--config", str(best_path), "--workdir", str(workdir)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    transfer = json.loads((workdir / "results.json").read_text())
    assert transfer["method"] == method and transfer["labeled"] == 8 and transfer["seed"] == config.seed
    assert {name: transfer["config"][name] for name in best} == best
    assert 0.0 <= transfer["target_test_accuracy"] <= 1.0
    return config, best


@pytest.mark.integration
def test_cli_tunes_and_tfinfo_transfer_reruns_the_best_config(tmp_path):
    # One trial, not the base's values: the best config must carry what the trial drew.
    config, best = _tune_then_transfer(
        tmp_path, "standard",
        ["--max_trials", "1", "--nobase_first", "--search", FAST + ",dropout=float:0:0.5"],
        {"learning_rate", "finetune_learning_rate", "dropout"})
    assert best["learning_rate"] != config.learning_rate and best["dropout"] != config.dropout


@pytest.mark.slow
def test_cli_bayesian_search_of_lautum_over_its_default_space(tmp_path):
    config, best = _tune_then_transfer(
        tmp_path, "lautum", ["--tuner", "bayesian", "--initial_points", "1", "--max_trials", "2"],
        {"lautum_weight", "ema_decay", "learning_rate", "finetune_learning_rate", "pretrain_epochs",
         "finetune_epochs"})
    assert best["pretrain_epochs"] in (1, 2) and best["ema_decay"] in (0.9, 0.99, 0.999)
