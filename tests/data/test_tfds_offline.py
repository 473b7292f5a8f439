"""`tfds:NAME` through TFDS's real `download_and_prepare`, offline.

A tiny `GeneratorBasedBuilder` (tests/data/tfds_tiny.py) is prepared into a tmp data
dir and read back through the `tfds:` spec and the `tfinfo-transfer` CLI; TFDS's own
datasets fail within seconds, with instructions, when the network is down.
"""

import json
import socket
import time

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from tests.data import tfds_tiny  # noqa: E402  (registers the tiny builders)
from tfinfo.data import load_spec  # noqa: E402
from tfinfo.data import tfds_loader  # noqa: E402


def _no_network(monkeypatch):
    """Every name lookup and connection fails at once, as on a machine without network."""
    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable (test)")

    def no_name(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_name)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def _pairs(x, y):
    """The (image bytes, label) pairs of a split, sorted: TFDS stores examples in a
    hashed order, so splits are compared as multisets."""
    x = np.asarray(x)
    return sorted((x[i].tobytes(), int(y[i])) for i in range(len(x)))


def _prepare(tmp_path):
    arrays = tfds_tiny.write_source(tmp_path / "tiny.npz")
    data_dir = tmp_path / "tfds"
    builder = tfds.builder(tfds_tiny.NAME, data_dir=str(data_dir))
    builder.download_and_prepare()
    return arrays, data_dir, builder


def test_a_prepared_builder_is_read_through_the_spec_from_tfds_data_dir(tmp_path, monkeypatch):
    arrays, data_dir, builder = _prepare(tmp_path)
    assert builder.is_prepared()
    # The spec must read the prepared files: preparing again would fail without a source.
    monkeypatch.setattr(tfds_tiny.TfinfoTinyDigits, "source", None)
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))  # read per call, after TFDS's import
    splits = load_spec(f"tfds:{tfds_tiny.NAME}", role="target")
    assert splits.name == tfds_tiny.NAME and splits.num_classes == 10
    assert splits.x_train.shape == (40, 28, 28, 1) and splits.x_test.shape == (20, 28, 28, 1)
    assert splits.x_train.dtype == np.uint8 and splits.y_train.dtype == np.int32
    for split in ("train", "test"):
        loaded = getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")
        assert _pairs(*loaded) == _pairs(arrays[f"x_{split}"], arrays[f"y_{split}"])
    subset = load_spec(f"tfds:{tfds_tiny.NAME}:classes=3,1", role="target")
    keep = np.isin(arrays["y_train"], [3, 1])
    relabeled = np.where(arrays["y_train"][keep] == 3, 0, 1)
    assert subset.num_classes == 2
    assert _pairs(subset.x_train, subset.y_train) == _pairs(arrays["x_train"][keep], relabeled)


def test_the_spec_prepares_a_local_builder_without_network(tmp_path, monkeypatch):
    arrays = tfds_tiny.write_source(tmp_path / "tiny.npz")
    data_dir = tmp_path / "fresh"
    _no_network(monkeypatch)
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
    splits = load_spec(f"tfds:{tfds_tiny.NAME}")
    assert tfds.builder(tfds_tiny.NAME, data_dir=str(data_dir)).is_prepared()
    assert _pairs(splits.x_test, splits.y_test) == _pairs(arrays["x_test"], arrays["y_test"])


def test_a_catalog_dataset_without_network_fails_fast_with_instructions(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        load_spec("tfds:mnist")
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < 30, elapsed
    assert message.startswith("Expected tfds:mnist to be prepared in the TFDS data dir, or its "
                              "download to work. Received: it is not prepared in "
                              f"{tmp_path / 'mnist'}")
    assert "storage.googleapis.com:443 is unreachable" in message
    for hint in ("set TFDS_DATA_DIR to that folder", "dir:PATH", "npz:PATH",
                 "docs/datasets.md"):
        assert hint in message
    assert not (tmp_path / "mnist").exists()  # nothing half-written


def test_an_unanswering_host_is_given_up_after_the_timeout(monkeypatch):
    def black_hole(address, timeout=None):
        time.sleep(5.0)  # a dropped SYN: no answer at all
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", black_hole)
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    reason = tfds_loader.unreachable_reason("example.org", 443, timeout=0.3)
    assert time.perf_counter() - start < 2.0
    assert reason == "example.org:443 did not answer within 0.3 s"


def test_the_check_goes_through_the_https_proxy(monkeypatch):
    calls = []

    def record(address, timeout=None):
        calls.append((address, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", record)
    monkeypatch.setenv("HTTPS_PROXY", "http://10.255.255.1:3128")
    monkeypatch.delenv("https_proxy", raising=False)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    reason = tfds_loader.unreachable_reason(timeout=1.0)
    assert calls == [(("10.255.255.1", 3128), 1.0)]
    assert reason == "10.255.255.1:3128 is unreachable (ConnectionRefusedError: [Errno 111] " \
                     "Connection refused)"


def test_a_failing_download_of_a_local_builder_is_a_value_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError) as info:
        load_spec(f"tfds:{tfds_tiny.BROKEN_NAME}")
    message = str(info.value)
    assert message.startswith(f"Expected tfds:{tfds_tiny.BROKEN_NAME} to be prepared in the "
                              "TFDS data dir, or its download to work. Received: it is not "
                              f"prepared in {tmp_path / tfds_tiny.BROKEN_NAME}")
    assert "download_and_prepare failed (ConnectionError: simulated: no network)" in message


# The CLIs define their absl flags at import, so `trainers.transfer` and `trainers.compare`
# cannot share one test process: the CLI runs in a subprocess. The driver cuts the
# network as `_no_network` does (when asked to) and registers the tiny builders.
_DRIVER = """
import socket, sys
if sys.argv.pop(1) == "offline":
    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable (test)")
    def no_name(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test)")
    socket.getaddrinfo = no_name
    socket.create_connection = refuse
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
from tests.data import tfds_tiny  # registers the tiny builders
from trainers import transfer
sys.argv[0] = "tfinfo-transfer"
transfer.run()
"""


def _cli(args, data_dir, offline=False):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(TFDS_DATA_DIR=str(data_dir), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=root)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _DRIVER, "offline" if offline else "online",
                           *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    return proc, time.perf_counter() - start


def test_the_cli_exits_with_code_2_and_the_message_without_network(tmp_path):
    np.savez(tmp_path / "tgt.npz", **tfds_tiny.make_arrays(seed=1))
    proc, elapsed = _cli(["--source", "tfds:mnist", "--target", f"npz:{tmp_path / 'tgt.npz'}",
                          "--workdir", str(tmp_path / "run"), "--method", "standard",
                          "--labeled", "10"], tmp_path / "empty", offline=True)
    # The whole process, TensorFlow import included, well under the minutes a download
    # attempt with retries takes.
    assert proc.returncode == 2 and elapsed < 60, (proc.returncode, elapsed, proc.stderr[-3000:])
    assert ("tfinfo-transfer: error: Expected tfds:mnist to be prepared in the TFDS data dir"
            in proc.stderr), proc.stderr[-3000:]
    assert "TFDS_DATA_DIR" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_the_cli_trains_on_a_prepared_tfds_dataset(tmp_path):
    """The whole `tfinfo-transfer` run on `tfds:` data (about 12 s: not marked integration)."""
    _, data_dir, _ = _prepare(tmp_path)
    config = {"method": "standard", "labeled": 10, "batch_size": 8, "pretrain_epochs": 1,
              "finetune_epochs": 1, "verbose": 0, "cache_dir": str(tmp_path / "cache")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = f"tfds:{tfds_tiny.NAME}"
    workdir = tmp_path / "run"
    proc, _ = _cli(["--config", str(tmp_path / "config.json"), "--source", spec, "--target",
                    spec, "--workdir", str(workdir)], data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["method"] == "standard" and results["labeled"] == 10
    assert results["num_classes"] == 10
    assert len(results["history"]["pretrain"]["loss"]) == 1
    assert len(results["history"]["finetune"]["loss"]) == 1
    # 20 test images of 10 classes: the accuracy is a multiple of 1/20.
    accuracy = results["target_test_accuracy"]
    assert 0.0 <= accuracy <= 1.0 and abs(accuracy * 20 - round(accuracy * 20)) < 1e-6
    assert f"target_test_accuracy={accuracy:.4f}" in proc.stdout


def test_what_tfds_prepare_imports_is_an_install_requirement():
    """TFDS's `download_and_prepare` imports `importlib_resources` (DatasetBuilder.code_path)
    but declares it only for Python < 3.9; the tiny builder above goes through that path."""
    import configparser
    import importlib.util
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = configparser.ConfigParser()
    parser.read(os.path.join(root, "setup.cfg"))
    requires = [line.split("#")[0].strip()
                for line in parser["options"]["install_requires"].splitlines()]
    spec = [r for r in requires if re.match(r"importlib[_-]resources\b", r)]
    assert spec and "<" in spec[0] and ">=" in spec[0], requires  # a bounded range
    assert importlib.util.find_spec("importlib_resources") is not None
