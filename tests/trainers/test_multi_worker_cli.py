"""`tfinfo-transfer --strategy multi_worker`: two worker processes on 127.0.0.1.

Each worker gets its own `TF_CONFIG` task and `--workdir`; both must end with the same
classifier (weights and exported predictions) and the same results, and, since the
global batch is split between them, close to the result of one process on one device.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfinfo.layers  # noqa: F401 - registers the preprocessing layer for load_model

from tests.trainers.test_resume import ROOT
from tests.trainers.test_resume import _config
from tests.trainers.test_resume import _served

TIMEOUT = 420


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _workers(config, tmp_path):
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}))
        log = open(tmp_path / f"worker{index}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "trainers.transfer", "--config", str(config), "--workdir",
             str(tmp_path / f"worker{index}"), "--strategy", "multi_worker", "--deterministic"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ))
    try:
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert codes == [0, 0], logs
    return [tmp_path / f"worker{i}" for i in range(2)]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["lautum", pytest.param("mmd", marks=pytest.mark.slow),
                                    pytest.param("mi", marks=pytest.mark.slow)])
def test_two_workers_end_with_identical_weights_equal_to_one_device(tmp_path, method):
    config = _config(tmp_path, method)
    # Dropout and input noise off: each replica draws masks for its half of the batch,
    # which one device drawing for the whole batch cannot match.
    config.write_text(json.dumps({**json.loads(config.read_text()), "dropout": 0.0, "noise_stddev": 0.0}))
    first, second = _workers(config, tmp_path)
    a = json.loads((first / "results.json").read_text())
    b = json.loads((second / "results.json").read_text())
    assert a["num_replicas"] == b["num_replicas"] == 2
    assert a["target_test_accuracy"] == b["target_test_accuracy"] and a["history"] == b["history"]
    weights = [keras.models.load_model(w / "classifier.keras").get_weights() for w in (first, second)]
    for x, y in zip(*weights):
        np.testing.assert_array_equal(x, y)
    images = np.random.default_rng(5).integers(0, 256, size=(12, 10, 10, 1)).astype(np.uint8)
    np.testing.assert_array_equal(_served(first, images), _served(second, images))
    # The same global batches on one device: the workers' all-reduced steps are its
    # steps up to rounding, which Adam amplifies over the run's ~40 steps (exact
    # equality with SGD is `tests/trainers/test_distributed.py`'s); without the
    # all-reduce each worker would follow its half of every batch instead.
    single = subprocess.run(
        [sys.executable, "-m", "trainers.transfer", "--config", str(config), "--workdir", str(tmp_path / "single"),
         "--deterministic"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    reference = keras.models.load_model(tmp_path / "single" / "classifier.keras").get_weights()
    difference = np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(weights[0], reference)))
    norm = np.sqrt(sum(np.sum(y**2) for y in reference))
    assert difference <= 0.05 * norm, (difference, norm)
