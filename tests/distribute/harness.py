"""One test pattern for every training model: one epoch on one device, on two mirrored
logical CPUs, under XLA and under mixed precision, compared variable by variable.

A case is a function `case(jit_compile) -> (model, dataset[, callbacks])` in an importable module
(see `cases.py`): it builds and compiles the model (passing `jit_compile` to
`compile`) and returns a finite dataset of GLOBAL batches. It is called inside the
mode's strategy scope and dtype policy, after `keras.utils.set_random_seed(0)`, so it
must be deterministic apart from Keras's seeded randomness (no dropout or input noise:
replicas draw different masks than one device).

    result = run_case("tests.distribute.cases:standard", ["single", "mirrored"], tmp_path)
    assert_mirrored_matches_single(result)

A new model adds a case and one parametrized line in `test_models_distributed.py`.
"""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "distribute", "_run_case.py")


def run_case(spec, modes, tmp_path, timeout=600):
    """Runs `spec` ("module:function") in a fresh process for each of `modes`.

    Returns:
        `{mode: {"logs": {...}, "initial": [arrays], "final": [arrays], "names": [...],
        "replica_spread": float, "optimizer": [arrays], "optimizer_names": [...],
        "optimizer_replica_spread": float}}` (`optimizer*`: the final variables of the
        model's `optimizer` and `critic_optimizer`).
    """
    out = os.path.join(str(tmp_path), "case.npz")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # LLVM's optimization level only: halves XLA's compile time here (13 -> 7 s for the
    # standard case); the HLO passes, which decide the numerics, still run.
    env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    proc = subprocess.run(
        [sys.executable, SCRIPT, spec, ",".join(modes), out],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as data:
        meta = json.loads(str(data["meta"]))
        result = {}
        for mode, info in meta.items():
            n = len(info["names"])
            result[mode] = dict(
                info,
                initial=[data[f"{mode}/initial/{i}"] for i in range(n)],
                final=[data[f"{mode}/final/{i}"] for i in range(n)],
                optimizer=[data[f"{mode}/optimizer/{i}"] for i in range(len(info.get("optimizer_names", ())))],
            )
    return result


def _relative_errors(ours, reference):
    """Per variable: max |ours - reference| / max(max |reference|, 1e-6)."""
    errors = []
    for a, b in zip(ours, reference):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        errors.append(float(np.max(np.abs(a - b), initial=0.0) / max(float(np.max(np.abs(b), initial=0.0)), 1e-6)))
    return errors


def assert_same_epoch(result, mode, reference="single", rtol=1e-5, log_atol=1e-7, logs=None):
    """`mode` starts from the same variables as `reference`, logs the same values and
    ends with the same variables, to `rtol` relative (per variable, relative to its
    largest entry); the epoch must have moved some variable."""
    ref, got = result[reference], result[mode]
    assert got["names"] == ref["names"], (got["names"], ref["names"])
    init_err = _relative_errors(got["initial"], ref["initial"])
    assert max(init_err, default=0.0) == 0.0, "the modes must start from identical variables"
    moved = _relative_errors(ref["final"], ref["initial"])
    assert max(moved) > 1e-4, "the epoch did not move any variable: the comparison would be empty"
    errors = _relative_errors(got["final"], ref["final"])
    worst = int(np.argmax(errors))
    assert errors[worst] <= rtol, (
        f"{mode} vs {reference}: variable {ref['names'][worst]} differs by {errors[worst]:.2e} relative "
        f"(it moved by {moved[worst]:.2e})"
    )
    keys = logs if logs is not None else sorted(ref["logs"])
    for key in keys:
        a, b = got["logs"][key], ref["logs"][key]
        assert abs(a - b) <= rtol * abs(b) + log_atol, f"{mode} vs {reference}: log {key}={a} vs {b}"


def assert_same_optimizer_state(result, mode, reference="single", rtol=1e-5):
    """The optimizers (`optimizer`, `critic_optimizer`) of `mode` end with the same
    variables (slots, iterations) as `reference`'s, to `rtol` as `assert_same_epoch`,
    and the replicas' copies are identical."""
    ref, got = result[reference], result[mode]
    assert got["optimizer_names"] == ref["optimizer_names"], (got["optimizer_names"], ref["optimizer_names"])
    assert got["optimizer_replica_spread"] == 0.0, f"{mode}: the replicas' copies of an optimizer variable diverged"
    errors = _relative_errors(got["optimizer"], ref["optimizer"])
    for name, error in zip(ref["optimizer_names"], errors):
        assert error <= rtol, f"{mode} vs {reference}: optimizer variable {name} differs by {error:.2e} relative"


def assert_mirrored_matches_single(result, rtol=1e-5, logs=None, log_atol=1e-7):
    """The two replicas hold identical copies, and equal one device on the global batch."""
    assert result["mirrored"]["replica_spread"] == 0.0, "the replicas' copies of a variable diverged"
    assert_same_epoch(result, "mirrored", rtol=rtol, logs=logs, log_atol=log_atol)


def assert_low_precision_close(result, policy, rtol, logs):
    """Under a mixed policy every log is finite and within `rtol` of float32 for `logs`,
    every variable stays float32 or wider and finite."""
    ref, got = result["single"], result[policy]
    for key, value in got["logs"].items():
        assert np.isfinite(value), f"{policy}: log {key} is {value}"
    for key in logs:
        a, b = got["logs"][key], ref["logs"][key]
        assert abs(a - b) <= rtol * abs(b) + 1e-6, f"{policy} vs float32: log {key}={a} vs {b}"
    for name, value in zip(got["names"], got["final"]):
        assert value.dtype != np.float16, f"{policy}: variable {name} is stored in float16"
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), f"{policy}: variable {name} is not finite"
