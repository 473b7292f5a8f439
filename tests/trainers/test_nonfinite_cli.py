"""An injected NaN (`TFINFO_INJECT_NAN`, which poisons one training call of a
regularizer) is reported with the term and the step under both policies."""

import json
import os
import subprocess
import sys

import pytest

from tests.trainers.test_resume import ENV
from tests.trainers.test_resume import ROOT
from tests.trainers.test_resume import _config


def _run(config, workdir, inject=None, *flags):
    env = dict(ENV, TFINFO_INJECT_NAN=inject) if inject else ENV
    return subprocess.run(
        [sys.executable, "-m", "trainers.transfer", "--config", str(config), "--workdir", str(workdir), *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize("method,term", [
    ("lautum", "lautum"),
    pytest.param("mmd", "mmd", marks=pytest.mark.slow),
    pytest.param("mi", "mi", marks=pytest.mark.slow),
])
@pytest.mark.integration
def test_stop_names_term_and_step_keeps_checkpoints_and_resumes(tmp_path, method, term):
    config = _config(tmp_path, method)
    workdir = tmp_path / "run"
    call = 120 // 16 + 2  # full source batches per epoch, + 2: epoch 1, batch 2 (after a checkpoint)
    stopped = _run(config, workdir, f"{term}:{call}")
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert f"Received: non-finite {term} at step {call + 1} (epoch 1, batch 2)" in stopped.stderr
    assert "Likely cause:" in stopped.stderr and "rerun the same command to resume" in stopped.stderr
    assert not (workdir / "results.json").exists()
    assert (workdir / "checkpoints" / "stage1" / "pretrain" / "epoch-0001" / "state.npz").exists()
    # After the fix (here: no injection) the same command resumes from the checkpoint.
    resumed = _run(config, workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["resumed_from_epoch"]["stage1"] == {"pretrain": 1}
    assert results["nonfinite"]["skipped_steps"] == 0


@pytest.mark.integration
def test_skip_undoes_the_step_and_counts_it_in_results(tmp_path):
    config = _config(tmp_path, "lautum")
    workdir = tmp_path / "run"
    proc = _run(config, workdir, "lautum:3", "--nonfinite_policy", "skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped step 4 (epoch 0, batch 3): non-finite lautum" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    nonfinite = results["nonfinite"]
    assert nonfinite["policy"] == "skip" and nonfinite["skipped_steps"] == 1
    pretrain = nonfinite["fits"]["stage1"]["pretrain"]
    assert pretrain["terms"]["lautum"] == 1
    assert pretrain["events"] == [{"epoch": 0, "batch": 3, "step": 4, "terms": ["lautum", "loss"]}]
    history = results["history"]["pretrain"]
    assert history["skipped_steps"] == [1.0, 0.0, 0.0]
    assert all(v == v for key in ("loss", "lautum", "ce") for v in history[key])  # finite, no NaN


def test_skip_under_a_strategy_is_refused(tmp_path):
    config = _config(tmp_path, "standard")
    proc = _run(config, tmp_path / "run", None, "--nonfinite_policy", "skip", "--strategy", "mirrored",
                "--devices", "2")
    assert proc.returncode == 2
    assert "Expected NonFiniteGuard(policy='stop') under a distribution strategy" in proc.stderr
    assert "Received: policy='skip' with 2 replicas" in proc.stderr
