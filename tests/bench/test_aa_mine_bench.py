"""bench/aa_mine.py: the JSON contract of the seed 003 Figure 2 benchmark (a short run;
the full run's numbers are in the README)."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.integration
def test_short_run_prints_both_curves_and_the_papers_checks_as_json():
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "aa_mine.py"), "--steps", "5", "--variances", "0.5,1",
         "--noise-draws", "2"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["curves_nats"]) == {"aa_mine", "mine"}
    for curve in report["curves_nats"].values():
        assert set(curve) == {"0.5", "1"} and all(math.isfinite(v) for v in curve.values())
    assert {"aa_mine_strictly_decreasing", "aa_mine_above_mine_at_smallest_variance", "all_finite"} <= set(
        report["checks"])
    # The closed-form references decrease with the noise.
    refs = report["references_nats"]
    assert refs["0.5"]["gaussian_upper_bound"] > refs["1"]["gaussian_upper_bound"] > 0
