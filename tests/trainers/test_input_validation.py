"""Checks that run before anything is written: the config's allowed values (read from
the library), Python config files that fail, workdirs that cannot be used, the workdir
lock, stage 1's checksum, and `tfinfo-compare` / `tfinfo-tune` arguments."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.trainers.test_transfer_cli import ENV
from tests.trainers.test_transfer_cli import _tiny_config
from trainers.config import NON_IDENTITY_FIELDS
from trainers.config import TransferConfig
from trainers.config import choices
from trainers.config import load_config
from trainers.workdir import WorkdirError
from trainers.workdir import WorkdirLock
from trainers.workdir import check_writable

ROOT_USER = os.geteuid() == 0  # permissions are not enforced for root


def _cli(module, args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)


# --- the config -----------------------------------------------------------------------


def test_the_allowed_values_are_the_librarys():
    from tfinfo.callbacks.non_finite_guard import POLICIES
    from tfinfo.critics.concat_critic import CRITIC_PRESETS
    from tfinfo.information.bounds import ESTIMATORS
    from tfinfo.information.bounds import SMILE_GRADIENTS

    assert choices("mi_estimator") == tuple(ESTIMATORS)
    assert choices("smile_gradient") == tuple(SMILE_GRADIENTS)
    assert set(choices("critic")) == set(CRITIC_PRESETS) | {"separable"}
    assert choices("nonfinite_policy") == tuple(POLICIES)
    # Every allowed value builds: the first of each set is accepted by the config.
    for name in ("architecture", "lautum_mode", "critic_schedule", "resample_projection", "mi_estimator", "critic"):
        for value in choices(name):
            assert getattr(TransferConfig().replace(**{name: value}), name) == value


@pytest.mark.parametrize("change, message", [
    (dict(lautum_mode="bogus"), "Expected `lautum_mode` to be one of ('fast', 'exact'). Received: lautum_mode='bogus'"),
    (dict(architecture="big"), "Expected `architecture` to be one of ('small', 'paper'). Received: architecture='big'"),
    (dict(mi_estimator="mime"), "Expected `mi_estimator` to be one of ("),
    (dict(critic_schedule="sometimes"), "Received: critic_schedule='sometimes'"),
    (dict(critic="huge"), "Expected `critic` to be one of ("),
    (dict(resample_projection="never"), "Expected `resample_projection` to be one of ('epoch', 'step')"),
    (dict(ema_decay=1.0), "Expected `ema_decay` to be a number in (0, 1). Received: ema_decay=1.0"),
    (dict(max_correlation=0.0), "Expected `max_correlation` to be a number in (0, 1)"),
    (dict(noise_stddev=-0.1), "Expected `noise_stddev` to be a finite number >= 0. Received: noise_stddev=-0.1"),
    (dict(dropout=1.0), "Expected `dropout` to be a number in [0, 1). Received: dropout=1.0"),
    (dict(te_momentum=1.0), "Expected `te_momentum` to be a number in [0, 1)"),
    (dict(mi_tau=0.0), "Expected `mi_tau` to be a finite number > 0"),
    (dict(learning_rate=0.0), "Expected `learning_rate` to be a finite number > 0"),
    (dict(verbose=3), "Expected `verbose` to be an integer in 0..2. Received: verbose=3"),
    (dict(image_size=8), "Expected `image_size` to be an integer >= 12. Received: image_size=8"),
    (dict(channels=2), "Expected `channels` to be one of (1, 3). Received: channels=2"),
    (dict(num_classes=1), "Expected `num_classes` to be None or an integer >= 2. Received: num_classes=1"),
])
def test_bad_values_are_refused_by_the_config_naming_the_field(change, message):
    with pytest.raises(ValueError) as info:
        TransferConfig().replace(**change)
    assert message in str(info.value)
    config = TransferConfig()
    setattr(config, *next(iter(change.items())))  # changed after construction: validate() sees it
    with pytest.raises(ValueError, match="Expected"):
        config.validate()


def test_verbose_and_the_cache_are_not_part_of_a_runs_identity():
    assert NON_IDENTITY_FIELDS == {"verbose", "cache_dir"}
    config = TransferConfig()
    assert config.replace(verbose=0, cache_dir="/elsewhere").identity() == config.identity()
    assert config.replace(lautum_mode="exact").identity() != config.identity()


@pytest.mark.parametrize("text, facts", [
    ("def get_config(:\n    pass\n", ["to be a Python config file that runs", "SyntaxError", "line 1"]),
    ("import no_such_module_xyz\n", ["to be a Python config file that runs", "ModuleNotFoundError", "line 1"]),
    ("def get_config():\n    return 1 / 0\n", ["get_config() in", "ZeroDivisionError", "line 2"]),
    ("def get_config():\n    return 'lautum'\n", ["to return a TransferConfig or a dict of its fields",
                                                  "Received: str"]),
    ("get_config = 3\n", ["to define get_config()"]),
    ("def get_config():\n    return {'lautum_mode': 'bogus'}\n", ["`lautum_mode`", "lautum_mode='bogus'"]),
])
def test_a_python_config_that_fails_is_a_message_naming_the_file(tmp_path, text, facts):
    path = tmp_path / "user_config.py"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_config(str(path))
    message = str(info.value)
    assert message.startswith("Expected") and "Received" in message
    for fact in facts:
        assert fact in message, message
    if "line" in facts[-1]:
        assert str(path) in message


# --- the workdir and its lock ---------------------------------------------------------


def test_a_workdir_that_is_or_lies_under_a_file_is_refused_without_creating_anything(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(WorkdirError, match=r"--workdir to be a folder\. Received: --workdir=.*f, which is a file"):
        check_writable(str(tmp_path / "f"))
    with pytest.raises(WorkdirError, match="--workdir to lie in a folder. Received: .* under the file"):
        check_writable(str(tmp_path / "f" / "a" / "b"))
    check_writable(str(tmp_path / "new" / "run"))  # creatable
    assert sorted(os.listdir(tmp_path)) == ["f"]


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
@pytest.mark.parametrize("inside", [False, True])
def test_a_read_only_workdir_or_parent_is_refused(tmp_path, inside):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        workdir = folder if not inside else folder / "run"
        with pytest.raises(WorkdirError, match="--workdir to be writable. Received: .*read-only folder"):
            check_writable(str(workdir))
    finally:
        folder.chmod(0o755)


def _lock_file(workdir, pid):
    os.makedirs(workdir, exist_ok=True)
    (workdir / "run.lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename}))


def test_a_live_lock_refuses_and_a_stale_lock_is_taken_over_and_released(tmp_path, caplog):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _lock_file(tmp_path / "live", sleeper.pid)
        with pytest.raises(WorkdirError, match=f"to be free. Received: a run in progress there .*process {sleeper.pid}"):
            WorkdirLock(str(tmp_path / "live")).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    _lock_file(tmp_path / "own", os.getpid())
    with pytest.raises(WorkdirError, match=f"locked by process {os.getpid()}"):
        WorkdirLock(str(tmp_path / "own")).acquire()

    # The sleeper is gone now: its lock is stale, taken over with a warning.
    with caplog.at_level(logging.WARNING, logger="tfinfo"):
        with WorkdirLock(str(tmp_path / "live")):
            owner = json.loads((tmp_path / "live" / "run.lock").read_text())
            assert owner["pid"] == os.getpid()
    assert any("taking over the lock" in r.getMessage() and str(sleeper.pid) in r.getMessage()
               for r in caplog.records)
    assert not (tmp_path / "live" / "run.lock").exists()
    assert os.listdir(tmp_path / "live") == []  # no temporary file left

    # Released on an error too.
    os.makedirs(tmp_path / "err")
    with pytest.raises(RuntimeError):
        with WorkdirLock(str(tmp_path / "err")):
            assert (tmp_path / "err" / "run.lock").exists()
            raise RuntimeError("a failed run")
    assert os.listdir(tmp_path / "err") == []


# --- stage 1's checksum ---------------------------------------------------------------


def _zero_half_a_conv_kernel(path):
    import h5py

    with h5py.File(path, "r+") as f:
        kernels = []
        f.visititems(lambda name, obj: kernels.append(obj) if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None)
        kernel = kernels[0]
        values = kernel[...]
        assert np.any(values[..., : values.shape[-1] // 2] != 0)
        values[..., : values.shape[-1] // 2] = 0.0
        kernel[...] = values


@pytest.mark.integration
def test_a_damaged_stage1_is_retrained_with_a_warning_never_reused(tmp_path, caplog):
    import keras

    from trainers.checkpoint import sha256_file
    from trainers.pipeline import run_transfer

    config = _tiny_config(tmp_path, method="standard")
    workdir = tmp_path / "run"
    keras.backend.clear_session()
    assert run_transfer(config, str(workdir))["stage1"]["reused"] is False
    weights, info = workdir / "stage1" / "classifier.weights.h5", workdir / "stage1" / "stage1.json"
    assert json.loads(info.read_text())["sha256"] == sha256_file(weights)

    # Interrupted after stage 1 (no results.json): an intact stage 1 is reused ...
    (workdir / "results.json").unlink()
    keras.backend.clear_session()
    assert run_transfer(config, str(workdir))["stage1"]["reused"] is True

    # ... a damaged one (half a conv kernel zeroed on disk) is not: retrained, with a warning.
    (workdir / "results.json").unlink()
    _zero_half_a_conv_kernel(weights)
    keras.backend.clear_session()
    with caplog.at_level(logging.WARNING, logger="tfinfo"):
        results = run_transfer(config, str(workdir))
    assert results["stage1"]["reused"] is False
    assert any("stage 1" in r.getMessage() and "damaged" in r.getMessage() and "checksum mismatch" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert json.loads(info.read_text())["sha256"] == sha256_file(weights)  # replaced by the retrained one


# --- tfinfo-compare and tfinfo-tune ---------------------------------------------------


@pytest.mark.parametrize("args, facts", [
    (["--labeled", "8,8", "--seeds", "0,0"], ["Expected distinct values in --labeled", "repeating [8]"]),
    (["--labeled", "8", "--seeds", "0,1,0"], ["Expected distinct values in --seeds", "repeating [0]"]),
    (["--methods", "standard,standard"], ["Expected distinct values in --methods", "repeating ['standard']"]),
    (["--labeled", "8", "--seeds", "0,-1"], ["Expected `seed` to be an integer >= 0", "Received: seed=-1",
                                            "run standard_l8_s-1"]),
])
def test_compare_refuses_repeated_or_bad_runs_before_the_first_one(tmp_path, args, facts):
    proc = _cli("trainers.compare", [*args, "--methods", "standard", "--workdir", str(tmp_path / "w")]
                if "--methods" not in args else [*args, "--workdir", str(tmp_path / "w")], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfinfo-compare: error: Expected") and "Received" in last
    for fact in facts:
        assert fact in last, last
    assert not (tmp_path / "w").exists()


def test_compare_checks_every_budget_against_the_data_before_the_first_run(tmp_path, monkeypatch):
    from trainers import pipeline
    from trainers.compare import compare_main
    from trainers.config import CompareConfig

    def no_training(*args, **kwargs):
        raise AssertionError("a run started before every run was checked")

    monkeypatch.setattr(pipeline, "run_transfer", no_training)
    base = _tiny_config(tmp_path)
    workdir = tmp_path / "cmp"
    for compare, message in (
        (CompareConfig(base=base, methods=("standard",), labeled=(8, 500), seeds=(0,)),
         "Expected `labeled` <= the 120 target training images"),
        (CompareConfig(base=base, methods=("standard", "lautum"), labeled=(8,), seeds=(0,),
                       method_overrides={"lautum": {"batch_size": 200}}), "Expected `batch_size` <= the 120 source"),
        (CompareConfig(base=base, methods=("standard",), labeled=(8,), seeds=(0, 1, 0)), "distinct values in `seeds`"),
    ):
        with pytest.raises(ValueError, match="Expected") as info:
            compare_main(compare, str(workdir), log=lambda _: None)
        assert message in str(info.value)
        assert not workdir.exists()


def test_tune_search_values_are_checked_against_the_fields_allowed_values():
    from trainers.tune_space import parse_search_space

    for search, fact in (("lautum_mode=choice:fast|bogus", "`lautum_mode` to be one of ('fast', 'exact')"),
                         ("ema_decay=float:0.9:1.5", "`ema_decay` to be a number in (0, 1)"),
                         ("ema_decay=choice:0.9|1.0", "Received: ema_decay=1.0"),
                         ("lautum_precision=fixed:float16", "`lautum_precision` to be one of")):
        with pytest.raises(ValueError) as info:
            parse_search_space(search, "lautum")
        message = str(info.value)
        assert message.startswith("Expected `search` values that") and fact in message, message
        assert f"Received: search entry {search!r}" in message
    space = parse_search_space("lautum_mode=choice:fast|exact,ema_decay=float:0.9:0.999", "lautum")
    assert space["lautum_mode"].values == ("fast", "exact")


def test_tune_cli_refuses_a_bad_choice_before_writing_anything(tmp_path):
    config_file = tmp_path / "base.json"
    config_file.write_text(json.dumps({"method": "lautum", "labeled": 8}))
    proc = _cli("trainers.tune", ["--config", str(config_file), "--directory", str(tmp_path / "d"),
                                  "--search", "lautum_mode=choice:fast|bogus"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfinfo-tune: error: Expected") and "lautum_mode" in last and "'bogus'" in last
    assert not (tmp_path / "d").exists()
