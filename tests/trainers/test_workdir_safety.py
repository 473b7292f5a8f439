"""Bad input is never silent and never locks a workdir (`tfinfo-transfer`).

Every case runs the real CLI code (`trainers.transfer.main` after absl parses the
flags), one after another in one fresh process (`_DRIVER`, as in `test_bad_input.py`:
TensorFlow is imported once, and `trainers.transfer`'s flags stay away from
`trainers.compare`'s). A case may patch `numpy.savez` to fail with ENOSPC (a full
disk at the first checkpoint). The outcomes (exit code, stderr, the workdir's files
after the case) are computed once per module.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.trainers.test_transfer_cli import _npz

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

_DRIVER = textwrap.dedent("""
    import contextlib, errno, io, json, logging, os, sys, traceback
    from unittest import mock
    from trainers import transfer

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    cases = json.load(open(sys.argv[1]))
    results = {}
    for case in cases:
        out, err = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(err)
        logging.getLogger("tfinfo").addHandler(handler)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.ExitStack() as stack:
                if case.get("full_disk"):
                    stack.enter_context(mock.patch("numpy.savez", full_disk))
                transfer.FLAGS.unparse_flags()
                transfer.FLAGS(["tfinfo-transfer", *case["argv"]])
                code = transfer.main(["tfinfo-transfer"])
        except BaseException:  # what app.run would turn into exit code 1 and a traceback
            code, err = 1, io.StringIO(err.getvalue() + traceback.format_exc())
        logging.getLogger("tfinfo").removeHandler(handler)
        files = None
        if os.path.isdir(case["workdir"]):
            files = sorted(os.path.relpath(os.path.join(d, n), case["workdir"])
                           for d, _, names in os.walk(case["workdir"]) for n in names)
        results[case["id"]] = {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue(), "files": files}
    json.dump(results, open(sys.argv[2], "w"))
""")

# Stage 1 on 120 source images, stage 2 on 8 labeled: a run trains in a few seconds.
_CONFIG = dict(method="lautum", labeled=8, image_size=12, batch_size=16, pretrain_epochs=1, finetune_epochs=1,
               verbose=0, te_epochs=None, te_unlabeled=None, lautum_probe=0)


def _write_inputs(d, stale_pid):
    src, tgt = _npz(d / "src.npz"), _npz(d / "tgt.npz", seed=1)
    base = {**_CONFIG, "source": src, "target": tgt}
    (d / "base.json").write_text(json.dumps(base))
    for name, change in {"ema": dict(ema_decay=1.5), "noise": dict(noise_stddev=-0.1), "dropout": dict(dropout=1.0),
                         "estimator": dict(method="mi", mi_estimator="nope")}.items():
        (d / f"{name}.json").write_text(json.dumps({**base, **change}))
    (d / "syntax.py").write_text("def get_config(:\n    return {}\n")
    (d / "raises.py").write_text("def get_config():\n    return {'labeled': 8} / 2\n")
    (d / "wrong_type.py").write_text("def get_config():\n    return [8, 16]\n")
    (d / "a_file").write_text("not a folder")
    for name, text in {"run_list": "[1, 2]", "run_truncated": '{"config": {"method": "lau'}.items():
        os.makedirs(d / name)
        (d / name / "run.json").write_text(text)
    os.makedirs(d / "live")
    (d / "live" / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    os.makedirs(d / "stale")
    (d / "stale" / "run.lock").write_text(json.dumps({"pid": stale_pid, "host": os.uname().nodename}))


def _cases(d):
    """(id, workdir name, flags, extras) in run order."""
    base = ["--config", str(d / "base.json")]
    return [
        # 1. validate everything before writing anything; the corrected command then runs there
        ("lautum_mode", "w", base + ["--lautum_mode", "bogus"], {}),
        ("architecture", "w", base + ["--architecture", "big"], {}),
        ("critic_schedule", "w", base + ["--method", "mi", "--critic_schedule", "sometimes"], {}),
        ("mi_estimator", "w", ["--config", str(d / "estimator.json")], {}),
        ("ema_decay", "w", ["--config", str(d / "ema.json")], {}),
        ("noise_stddev", "w", ["--config", str(d / "noise.json")], {}),
        ("dropout", "w", ["--config", str(d / "dropout.json")], {}),
        ("batch_vs_source", "w", base + ["--batch_size", "500"], {}),
        ("corrected", "w", base + ["--lautum_mode", "exact"], {}),
        # 2. verbose is not part of the run's identity
        ("verbose_changed", "w", base + ["--lautum_mode", "exact", "--verbose", "2"], {}),
        ("other_config", "w", base + ["--lautum_mode", "fast"], {}),
        # 3. config files, workdirs and run.json that cannot be used
        ("py_syntax_error", "w_py", ["--config", str(d / "syntax.py")], {}),
        ("py_get_config_raises", "w_py", ["--config", str(d / "raises.py")], {}),
        ("py_wrong_type", "w_py", ["--config", str(d / "wrong_type.py")], {}),
        ("workdir_is_a_file", "a_file", base, {}),
        ("workdir_under_a_file", "a_file/run", base, {}),
        ("run_json_a_list", "run_list", base, {}),
        ("run_json_truncated", "run_truncated", base, {}),
        ("full_disk", "disk", base, {"full_disk": True}),
        ("after_full_disk", "disk", base, {}),
        # 4. the workdir lock
        ("live_lock", "live", base, {}),
        ("stale_lock", "stale", base, {}),
    ]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    d = tmp_path_factory.mktemp("workdir_safety")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names no running process
    _write_inputs(d, dead.pid)
    todo = [{"id": i, "workdir": str(d / w), "argv": [*flags, "--workdir", str(d / w)], **extras}
            for i, w, flags, extras in _cases(d)]
    (d / "cases.json").write_text(json.dumps(todo))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(d / "cases.json"), str(d / "out.json")],
                          cwd=d, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d, json.loads((d / "out.json").read_text())


def _refused(outcome, *facts):
    code, stderr = outcome["code"], outcome["stderr"]
    assert code == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("tfinfo-transfer: error: Expected") and "Received" in last, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    for fact in facts:
        assert fact in last, f"{fact!r} not in {last!r}"
    return last


@pytest.mark.integration
@pytest.mark.parametrize("case, facts", [
    ("lautum_mode", ["`lautum_mode`", "'fast', 'exact'", "lautum_mode='bogus'"]),
    ("architecture", ["`architecture`", "architecture='big'"]),
    ("critic_schedule", ["`critic_schedule`", "critic_schedule='sometimes'"]),
    ("mi_estimator", ["`mi_estimator`", "'infonce'", "mi_estimator='nope'"]),
    ("ema_decay", ["`ema_decay` to be a number in (0, 1)", "ema_decay=1.5"]),
    ("noise_stddev", ["`noise_stddev` to be a finite number >= 0", "noise_stddev=-0.1"]),
    ("dropout", ["`dropout` to be a number in [0, 1)", "dropout=1.0"]),
    ("batch_vs_source", ["`batch_size` <= the 120 source training images", "batch_size=500"]),
])
def test_a_bad_field_is_refused_before_anything_is_written(outcomes, case, facts):
    _, results = outcomes
    _refused(results[case], *facts)
    assert results[case]["files"] is None  # the workdir was never created


@pytest.mark.integration
def test_the_corrected_command_then_runs_in_the_same_workdir_and_verbose_is_not_identity(outcomes):
    _, results = outcomes
    corrected = results["corrected"]
    assert corrected["code"] == 0, corrected["stderr"][-3000:]
    assert "target_test_accuracy=" in corrected["stdout"]
    assert "run.json" in corrected["files"] and "results.json" in corrected["files"]
    assert "run.lock" not in corrected["files"]  # released at the end
    rerun = results["verbose_changed"]  # only --verbose differs: the finished run, not a refusal
    assert rerun["code"] == 0, rerun["stderr"][-3000:]
    assert "already holds the finished run" in rerun["stderr"] and "differs" not in rerun["stderr"]
    # A change that is part of the identity is still refused, naming the field.
    _refused(results["other_config"], "configuration differs in ['lautum_mode']")


@pytest.mark.integration
@pytest.mark.parametrize("case, facts", [
    ("py_syntax_error", ["syntax.py to be a Python config file that runs", "SyntaxError", "line 1"]),
    ("py_get_config_raises", ["get_config() in", "raises.py", "TypeError", "line 2"]),
    ("py_wrong_type", ["get_config() in", "wrong_type.py to return a TransferConfig", "Received: list"]),
])
def test_a_python_config_that_fails_is_a_message(outcomes, case, facts):
    d, results = outcomes
    _refused(results[case], *facts)
    assert results[case]["files"] is None


@pytest.mark.integration
def test_a_workdir_that_is_or_lies_under_a_file_is_refused(outcomes):
    d, results = outcomes
    _refused(results["workdir_is_a_file"], "--workdir to be a folder", str(d / "a_file"), "which is a file")
    _refused(results["workdir_under_a_file"], "--workdir to lie in a folder", f"under the file {d / 'a_file'}")
    assert (d / "a_file").read_text() == "not a folder"


@pytest.mark.integration
@pytest.mark.parametrize("case, folder, received", [("run_json_a_list", "run_list", "Received: list"),
                                                    ("run_json_truncated", "run_truncated", "invalid JSON")])
def test_a_damaged_run_json_is_named(outcomes, case, folder, received):
    d, results = outcomes
    _refused(results[case], str(d / folder / "run.json"), received)
    assert results[case]["files"] == ["run.json"]  # untouched, nothing added


@pytest.mark.integration
def test_a_full_disk_at_the_first_checkpoint_is_a_message_and_leaves_no_temporary_file(outcomes):
    d, results = outcomes
    _refused(results["full_disk"], "free space on the device", "checkpoints", "No space left on device")
    files = results["full_disk"]["files"]
    assert not [f for f in files if ".tmp" in f], files
    assert "run.lock" not in files and "run.json" in files  # the lock is released on an error too
    assert not any(f.startswith("checkpoints") and f.endswith("state.npz") for f in files)
    # With space again, the same command runs to the end in the same workdir.
    after = results["after_full_disk"]
    assert after["code"] == 0 and "results.json" in after["files"], after["stderr"][-3000:]


@pytest.mark.integration
def test_a_live_lock_refuses_the_run_and_a_stale_one_is_taken_over(outcomes):
    d, results = outcomes
    _refused(results["live_lock"], f"--workdir {d / 'live'} to be free", f"locked by process {os.getpid()}")
    assert results["live_lock"]["files"] == ["run.lock"]  # nothing written, the lock kept
    stale = results["stale_lock"]
    assert stale["code"] == 0, stale["stderr"][-3000:]
    assert "taking over the lock" in stale["stderr"] and "which is not running" in stale["stderr"]
    assert "results.json" in stale["files"] and "run.lock" not in stale["files"]
