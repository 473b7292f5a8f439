"""`tfinfo-transfer --strategy mirrored --devices 2` trains on one device's global
batches in one device's order (issue 15).

Keras's `fit` under a strategy opens an extra iterator of the dataset before training,
which advanced the shuffle's seed generator: the mirrored run trained on the second
shuffle order (first-epoch Lautum 90.2 against 122.8). Exact equality is not possible:
the replicas' gradient sums round differently, and Adam's first steps turn the sign of
near-zero gradients (e.g. a bias) into a full +-learning-rate step, so single weights
can differ by a few percent (the float32 floor: see the second test). The logged epoch values agree closely.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, name, *flags):
    config = {"method": "lautum", "labeled": 50, "seed": 0, "pretrain_epochs": 1, "finetune_epochs": 1,
              "dropout": 0.0, "noise_stddev": 0.0, "verbose": 0, "cache_dir": str(tmp_path / "cache")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    workdir = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "trainers.transfer", "--config", str(tmp_path / "config.json"),
                           "--deterministic", "--workdir", str(workdir), *flags],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [line for line in proc.stderr.splitlines() if "E0000" in line], proc.stderr[-3000:]
    return json.loads((workdir / "results.json").read_text())


@pytest.mark.integration
def test_mirrored_run_logs_the_one_device_first_epoch(tmp_path):
    one = _run(tmp_path, "one")
    two = _run(tmp_path, "two", "--strategy", "mirrored", "--devices", "2")
    assert one["num_replicas"] == 1 and two["num_replicas"] == 2
    a, b = one["history"]["pretrain"], two["history"]["pretrain"]
    # Measured: CE 1.7e-4 and lautum 4e-4 relative apart (the old, reshuffled order:
    # 9e-4 and 36%). 5e-3 leaves room for other CPUs' rounding and still catches a
    # different data order in the Lautum value.
    for key in ("ce", "lautum", "loss"):
        assert b[key][0] == pytest.approx(a[key][0], rel=5e-3), (key, a[key], b[key])


@pytest.mark.integration
def test_mirrored_weights_sit_at_the_float32_floor_of_one_device(tmp_path):
    """Issue 15 asks for stage-1 weights equal to 1e-4 after one epoch. In float32 no
    implementation can give that: one device against itself, on the same batches with
    only the rows of each batch reordered (the same gradients up to the order of the
    float32 sums), already ends 4-5% apart after 28 Adam steps (measured 0.041, 0.048;
    mirrored 0.047). Adam scales every coordinate's step to about the learning rate, so
    a rounding difference in a near-cancelling bias gradient becomes a step difference,
    and the network's dynamics amplify it. So the test checks what can hold: the
    mirrored run is as close to one device as that floor (a factor 4 for a loaded or
    another CPU), far from a run on another batch order (measured 1.07)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    script = os.path.join(ROOT, "tests", "trainers", "_float32_floor.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "cache")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    distance = json.loads(proc.stdout.strip().splitlines()[-1])
    floor = max(distance["reordered_1"], distance["reordered_2"])
    assert min(distance["reordered_1"], distance["reordered_2"]) > 1e-4, distance
    assert distance["mirrored"] <= 4 * floor, distance
    assert distance["mirrored"] < 0.5, distance  # another batch order: 1.07
