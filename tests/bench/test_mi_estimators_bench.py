"""bench/mi_estimators.py: the staircase benchmark's JSON contract and SMILE's accuracy."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "mi_estimators.py")
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
LEVEL_FIELDS = {"truth", "estimate", "std", "bias", "rel_error", "finite", "nonfinite_steps", "window_steps",
                "finite_only_mean", "first_nonfinite_step", "median", "max_step_value", "wall_s"}
CONFIG_FIELDS = {"steps_per_level", "batch_size", "critic", "seed", "lr", "smile_default_tau", "levels_nats",
                 "critic_across_levels", "infonce_cap_nats"}


def _bench(*args, timeout=900):
    done = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1])


def _module():
    spec = importlib.util.spec_from_file_location("bench_mi_estimators", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_structure(report, estimators, levels):
    assert CONFIG_FIELDS <= set(report["config"])
    assert isinstance(report["wall_s"], float)
    assert set(report["results"]) == set(estimators)
    for name, result in report["results"].items():
        assert set(result["levels"]) == {f"{lv:g}" for lv in levels}, name
        for key, entry in result["levels"].items():
            assert LEVEL_FIELDS <= set(entry), (name, key)
            assert entry["truth"] == float(key)
            # A non-finite level is an entry with a null estimate and a count, never a gap.
            assert entry["finite"] == (entry["nonfinite_steps"] == 0), (name, key, entry)
            assert (entry["estimate"] is None) == (not entry["finite"]), (name, key, entry)
            if entry["finite"]:
                assert entry["bias"] == pytest.approx(entry["estimate"] - entry["truth"], abs=2e-4)
                assert entry["rel_error"] == pytest.approx(entry["bias"] / entry["truth"], abs=2e-4)
                assert entry["std"] >= 0
            else:
                assert entry["bias"] is None and entry["rel_error"] is None and entry["nonfinite_steps"] > 0
    flagged = {f"{n}@{k}" for n, r in report["results"].items() for k, e in r["levels"].items() if not e["finite"]}
    assert set(report["checks"]["nonfinite_entries"]) == flagged
    assert report["checks"]["all_entries_reported"] is True


@pytest.mark.integration
def test_tiny_run_prints_one_json_object_and_infonce_stays_under_log_batch():
    report = _bench("--levels", "2", "--steps-per-level", "50", "--estimators", "nwj,infonce", timeout=300)
    _check_structure(report, ["nwj", "infonce"], [2.0])
    assert report["config"]["steps_per_level"] == 50 and report["config"]["batch_size"] == 64
    cap = math.log(64)
    entry = report["results"]["infonce"]["levels"]["2"]
    assert entry["cap_nats"] == pytest.approx(cap, abs=1e-6)
    assert entry["estimate"] <= cap + 1e-6
    assert entry["max_step_value"] <= cap + 1e-6
    assert report["checks"]["infonce_never_exceeds_log_batch"] is True
    # smile_tau5 was not run: the SMILE check is reported as not evaluated, not as passed.
    assert report["checks"]["smile_tau5_within_15pct_up_to_6_nats"] is None


def test_nonfinite_steps_are_reported_as_null_with_a_count():
    bench = _module()
    values = np.linspace(1.0, 2.0, 100)
    values[70] = np.nan
    values[90] = -np.inf
    entry = bench.summarize(values, 2.0)
    assert entry["estimate"] is None and entry["std"] is None and entry["bias"] is None
    assert entry["finite"] is False and entry["nonfinite_steps"] == 2 and entry["first_nonfinite_step"] == 70
    assert entry["finite_only_mean"] == pytest.approx(np.mean(np.delete(values[50:], [20, 40])), abs=1e-4)
    json.dumps(entry, allow_nan=False)  # strict JSON: no NaN tokens
    clean = bench.summarize(np.full(10, 1.5), 2.0)
    assert clean["estimate"] == 1.5 and clean["bias"] == -0.5 and clean["rel_error"] == -0.25
    assert clean["finite"] is True and clean["nonfinite_steps"] == 0


@pytest.mark.parametrize(
    "name, key, tau, gradient",
    [("smile", "smile_tau5", 5.0, "js"), ("smile_tau1", "smile_tau1", 1.0, "js"),
     ("smile_tauinf", "smile_tauinf", math.inf, "js"), ("smile_tau5_dv", "smile_tau5_dv", 5.0, "dv"),
     ("mine", "mine", None, None)],
)
def test_estimator_names(name, key, tau, gradient):
    parsed_key, spec = _module().parse_estimator(name, 5.0)
    assert parsed_key == key and spec["tau"] == tau and spec["smile_gradient"] == gradient


def test_rho_gives_the_level():
    bench = _module()
    for mi in (2.0, 4.0, 6.0, 8.0, 10.0):
        assert -10.0 * math.log(1.0 - bench.rho_for(mi) ** 2) == pytest.approx(mi)


@pytest.mark.slow
def test_quick_staircase_smile_tau5_within_15_percent_up_to_6_nats():
    estimators = ["smile_tau5", "mine", "dv", "nwj", "infonce", "js"]
    levels = [2.0, 4.0, 6.0, 8.0, 10.0]
    report = _bench("--quick", "--estimators", "smile,mine,dv,nwj,infonce,js")
    _check_structure(report, estimators, levels)
    smile = report["results"]["smile_tau5"]
    assert smile["tau"] == 5.0 and smile["smile_gradient"] == "js"
    for level in ("2", "4", "6"):
        entry = smile["levels"][level]
        assert entry["finite"], entry
        assert abs(entry["estimate"] - entry["truth"]) <= 0.15 * entry["truth"], (level, entry)
    assert report["checks"]["smile_tau5_within_15pct_up_to_6_nats"] is True
    assert report["checks"]["infonce_never_exceeds_log_batch"] is True
