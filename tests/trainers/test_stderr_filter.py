"""The CLIs drop TensorFlow's known harmless start-up lines from stderr, and only those."""

import os
import subprocess
import sys

from trainers import stderr_filter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONEDNN = ("I0000 00:00:1796525553.799734   16286 port.cc:153] oneDNN custom operations are on. You may see "
          "slightly different numerical results due to floating-point round-off errors from different "
          "computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.")
DT_BOOL = ("E0000 00:00:1796525288.274735   15694 util.cc:131] oneDNN supports DT_BOOL only on platforms with "
           "AVX-512. Falling back to the default Eigen-based implementation if present.")
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
REMAPPER = ("E0000 00:00:1796525237.793005   15447 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: "
            "Mutation::Apply error: fanout 'Greater_20' exist for missing node 'conv2d_5_1/BiasAdd'.")


def test_only_the_known_lines_are_dropped():
    assert all(stderr_filter.is_known(line) for line in (ONEDNN, DT_BOOL, ABSL))
    for line in (REMAPPER, "tfinfo-transfer: error: Expected `labeled` to be an integer >= 1.",
                 "Traceback (most recent call last):", "WARNING: something else", "E0000 ... OOM"):
        assert not stderr_filter.is_known(line), line


_CHILD = """
import os, sys
from trainers import stderr_filter
stderr_filter.install()
os.write(2, (sys.argv[1] + "\\nkept 1\\n").encode())       # C++-style writes to fd 2
print("kept 2", file=sys.stderr)                             # Python's stderr
os.write(2, (sys.argv[2] + "\\n" + sys.argv[3] + "\\nkept 3").encode())  # no final newline
raise SystemExit(5)
"""


def test_the_rest_passes_through_in_order_and_the_exit_code_is_kept():
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop(stderr_filter.RAW_ENV, None)
    proc = subprocess.run([sys.executable, "-c", _CHILD, ONEDNN, DT_BOOL, REMAPPER], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5
    assert proc.stderr == f"kept 1\nkept 2\n{REMAPPER}\nkept 3"
    env[stderr_filter.RAW_ENV] = "1"  # off: everything as written
    raw = subprocess.run([sys.executable, "-c", _CHILD, ONEDNN, DT_BOOL, REMAPPER], env=env,
                         capture_output=True, text=True, timeout=60)
    assert raw.stderr == f"{ONEDNN}\nkept 1\nkept 2\n{DT_BOOL}\n{REMAPPER}\nkept 3"


def test_a_healthy_run_on_the_embedded_default_prints_no_error_looking_line(tmp_path):
    """The issue's check: no line with "error" or "E0000" on a healthy Lautum run (the
    default method), which used to print the remapper failure and the DT_BOOL notice."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", stderr_filter.RAW_ENV)}
    env.update(PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "trainers.transfer", "--workdir", str(tmp_path / "run"),
                           "--pretrain_epochs", "1", "--finetune_epochs", "1", "--verbose", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "E0000" in line]
    assert not bad, bad
    assert (tmp_path / "run" / "results.json").exists()
