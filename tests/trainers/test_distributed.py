"""Tests of `trainers.distributed`: strategy selection and `fit` under every strategy.

The multi-worker loop is checked against `model.fit` on one device three ways: in this
process under a one-worker `MultiWorkerMirroredStrategy`, in two worker processes on
127.0.0.1 (the only check that gradients are summed across workers), and the
`mirrored` route in a process with two logical CPUs. Models and data come from
`_distributed_worker.py`, which is also the worker script.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainers import distributed

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "_distributed_worker.py")
TIMEOUT = 180  # seconds, for all the processes of one launch together

_spec = importlib.util.spec_from_file_location("_distributed_worker", WORKER)
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)


def _relative_error(ours, reference):
    """max over variables of max |ours - reference| / max |reference|."""
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        / max(float(np.max(np.abs(np.asarray(b, np.float64)))), 1e-6)
        for a, b in zip(ours, reference)
    )


def _assert_weights_close(ours, reference, rtol=1e-5):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert np.shape(a) == np.shape(b)
    error = _relative_error(ours, reference)
    assert error <= rtol, f"weights differ from the reference by {error:.2e} relative"


def _assert_history_close(ours, reference, rtol=1e-5):
    assert set(ours) == set(reference), (sorted(ours), sorted(reference))
    for key in reference:
        assert len(ours[key]) == len(reference[key]), key
        np.testing.assert_allclose(ours[key], reference[key], rtol=rtol, atol=1e-6, err_msg=key)


def _reference(name, epochs=None, callbacks=()):
    """`model.fit` on one device (the default strategy)."""
    run = W.RUNS[name]
    model = run.build()
    initial = model.get_weights()
    history = model.fit(run.dataset(), epochs=epochs or run.epochs, verbose=0, callbacks=list(callbacks))
    return model, initial, history.history


@pytest.fixture(scope="module")
def one_worker():
    """A `MultiWorkerMirroredStrategy` of this process alone (no TF_CONFIG)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TF_CONFIG", raising=False)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert distributed.is_multi_worker(strategy) and strategy.num_replicas_in_sync == 1
    return strategy


# --------------------------------------------------------------------- make_strategy


@pytest.mark.parametrize("name", ["", "Mirrored", "tpu", None, "multi-worker"])
def test_make_strategy_rejects_unknown_names(name):
    with pytest.raises(ValueError, match=r"Expected strategy to be one of \('none', 'mirrored', 'multi_worker'\)"):
        distributed.make_strategy(name)
    with pytest.raises(ValueError, match=rf"Received: strategy={name!r}"):
        distributed.make_strategy(name)


def test_make_strategy_none_is_the_default_strategy():
    strategy = distributed.make_strategy("none")
    assert strategy is tf.distribute.get_strategy()
    assert not tf.distribute.has_strategy() and strategy.num_replicas_in_sync == 1
    assert distributed.is_chief(strategy) and not distributed.is_multi_worker(strategy)


@pytest.mark.parametrize("devices", [0, -1, 1.5, True, "2"])
def test_make_strategy_rejects_bad_device_counts(devices):
    with pytest.raises((ValueError, TypeError), match="Expected `devices` to be an integer >= 1"):
        distributed.make_strategy("mirrored", devices=devices)


@pytest.mark.parametrize("name", ["none", "multi_worker"])
def test_make_strategy_takes_devices_only_for_mirrored(name):
    with pytest.raises(ValueError, match=rf"Expected devices=None for strategy '{name}'.*Received: devices=2"):
        distributed.make_strategy(name, devices=2)


def test_make_strategy_mirrored_uses_the_local_devices():
    tf.constant(0.0)  # the runtime is initialized: no new logical devices from here on
    cpus = tf.config.list_logical_devices("CPU")
    strategy = distributed.make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == len(cpus)
    one = distributed.make_strategy("mirrored", devices=1)
    assert len(one.extended.worker_devices) == 1 and one.extended.worker_devices[0].endswith(cpus[0].name)


def test_mirrored_over_more_cpus_than_configured_explains_configure_logical_cpus():
    tf.constant(0.0)
    count = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(RuntimeError, match=r"configure_logical_cpus\(%d\)` to run before" % (count + 1)) as info:
        distributed.make_strategy("mirrored", devices=count + 1)
    assert f"Received: a runtime already initialized with {count} logical CPU device(s)" in str(info.value)
    # The current count is accepted (a no-op), bad counts are not.
    assert len(distributed.configure_logical_cpus(count)) == count
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="Expected `n` to be an integer >= 1"):
            distributed.configure_logical_cpus(bad)


@pytest.mark.parametrize(
    "tf_config, problem",
    [
        (None, "TF_CONFIG unset or empty"),
        ("", "TF_CONFIG unset or empty"),
        ("{not json", "invalid JSON"),
        ('["worker"]', 'no "cluster" or "task" object'),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'no "cluster" or "task" object'),
        ('{"cluster": {"ps": ["a:1"], "worker": ["a:2"]}, "task": {"type": "worker", "index": 0}}', "cluster jobs"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', '"host:port" strings'),
        ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', '"host:port" strings'),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task type 'chief' not in"),
        ('{"cluster": {"worker": ["a:1", "a:2"]}, "task": {"type": "worker", "index": 2}}', "task index 2 out of"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "task index '0' out of"),
    ],
)
def test_make_strategy_multi_worker_requires_a_valid_tf_config(monkeypatch, tf_config, problem):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match="Expected the environment variable TF_CONFIG to be a JSON object") as info:
        distributed.make_strategy("multi_worker")
    assert "Received: " in str(info.value) and problem in str(info.value)


# ------------------------------------------------------------ fit, default strategy


def test_fit_under_the_default_strategy_is_model_fit():
    reference, _, expected = _reference("plain")
    model = W.build_plain()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distributed.fit(model, W.dataset_plain(), epochs=W.EPOCHS, strategy=distributed.make_strategy("none"))
    # A healthy fit on a tf.data pipeline (which shuffles itself) warns about nothing.
    assert not [w for w in caught if "shuffle" in str(w.message)]
    assert isinstance(history, keras.callbacks.History) and history is model.history
    assert expected["loss"][0] != expected["loss"][-1]
    assert history.history == expected
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_checks_its_arguments():
    model = W.build_plain()
    with pytest.raises(ValueError, match="Expected `epochs` to be an integer >= 0. Received: epochs=-1"):
        distributed.fit(model, W.dataset_plain(), epochs=-1)
    with pytest.raises(ValueError, match="Expected `initial_epoch` to be an integer >= 0. Received: initial_epoch=1.5"):
        distributed.fit(model, W.dataset_plain(), epochs=2, initial_epoch=1.5)
    with pytest.raises(ValueError, match="Expected `dataset` to be a tf.data.Dataset. Received: tuple"):
        distributed.fit(model, (np.zeros((4, W.FEATURES)), np.zeros(4)), epochs=1)
    with pytest.raises(ValueError, match=r"Expected the model to be created under `strategy.scope\(\)`"):
        distributed.fit(model, W.dataset_plain(), epochs=1, strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))


# ------------------------------------------------------ fit, one-worker multi-worker


def test_multi_worker_fit_rejects_a_model_built_outside_the_scope(one_worker):
    model = W.build_plain()
    with pytest.raises(ValueError, match=r"Expected the model to be created under `strategy.scope\(\)`") as info:
        distributed.fit(model, W.dataset_plain(), epochs=1, strategy=one_worker)
    assert "Received: a model created under no strategy" in str(info.value)
    # A model built in the scope but compiled with an optimizer made outside it.
    optimizer = keras.optimizers.Adam()
    with one_worker.scope():
        model = W._mlp()
        model.compile(optimizer=optimizer, loss=W._loss())
    with pytest.raises(ValueError, match=r"Expected the optimizer 'adam(_\d+)?' to be created under") as info:
        distributed.fit(model, W.dataset_plain(), epochs=1, strategy=one_worker)
    assert "Received: an optimizer created under _DefaultDistributionStrategy" in str(info.value)


@pytest.mark.parametrize("name", ["plain", "plain_adam", "mmd"])
def test_one_worker_loop_equals_model_fit_on_one_device(one_worker, name):
    reference, initial, expected = _reference(name)
    run = W.RUNS[name]
    with one_worker.scope():
        model = run.build()
    for a, b in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(a, b)
    history = distributed.fit(model, run.dataset(), epochs=run.epochs, strategy=one_worker)
    assert isinstance(history, keras.callbacks.History)
    assert all(isinstance(v, float) for values in history.history.values() for v in values)
    _assert_history_close(history.history, expected)
    assert _relative_error(reference.get_weights(), initial) > 1e-3  # training moved the weights
    _assert_weights_close(model.get_weights(), reference.get_weights())
    assert int(model.optimizer.iterations.numpy()) == int(reference.optimizer.iterations.numpy()) == W.EPOCHS * 4


def test_one_worker_loop_follows_the_critic_schedule_of_the_mutual_information_model(one_worker):
    # A critic optimizer of its own, and a phase that `CriticSchedule` switches every
    # epoch: the model retraces its step then (`make_train_function(force=True)`), and
    # so must the loop. Phases: critic, classifier, critic.
    from tfinfo.callbacks import CriticSchedule

    reference, initial, expected = _reference("mi", epochs=3, callbacks=[CriticSchedule(1, 1)])
    assert expected["phase_critic"] == [1.0, 0.0, 1.0]
    with one_worker.scope():
        model = W.build_mi()
    history = distributed.fit(model, W.dataset_mmd(), epochs=3, callbacks=[CriticSchedule(1, 1)], strategy=one_worker)
    _assert_history_close(history.history, expected)
    _assert_weights_close(model.get_weights(), reference.get_weights())
    for name, steps in (("optimizer", 4), ("critic_optimizer", 8)):  # classifier: epoch 1 only
        ours, theirs = getattr(model, name).iterations.numpy(), getattr(reference, name).iterations.numpy()
        assert int(ours) == int(theirs) == steps, name


class _Recorder(keras.callbacks.Callback):
    """Records every callback event with its step or epoch and its logs' keys."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.events = []
        self.stop_at = stop_at

    def set_model(self, model):
        super().set_model(model)
        self.events.append(("set_model",))

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch, tuple(sorted(logs))))
        if self.stop_at is not None and len([e for e in self.events if e[0] == "batch_end"]) == self.stop_at:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, tuple(sorted(logs)), tuple(float(logs[k]) for k in sorted(logs))))

    def on_train_end(self, logs=None):
        self.events.append(("train_end", tuple(sorted(logs or {}))))


def _comparable(events):
    """Events with the epoch-end values rounded to the comparison's tolerance."""
    return [e[:3] + (tuple(round(v, 4) for v in e[3]),) if e[0] == "epoch_end" else e for e in events]


@pytest.mark.parametrize("stop_at", [None, 6])
def test_one_worker_loop_drives_callbacks_as_model_fit_does(one_worker, stop_at):
    expected = _Recorder(stop_at)
    reference, _, _ = _reference("plain", epochs=3, callbacks=[expected])
    got = _Recorder(stop_at)
    with one_worker.scope():
        model = W.build_plain()
    history = distributed.fit(model, W.dataset_plain(), epochs=3, callbacks=[got], strategy=one_worker)
    assert _comparable(got.events) == _comparable(expected.events)
    assert got.events[0] == ("set_model",) and got.events[-1][0] == "train_end"
    epochs = 3 if stop_at is None else 2  # stop at the 6th step: the 2nd step of epoch 2
    assert [e[1] for e in got.events if e[0] == "epoch_begin"] == list(range(epochs))
    assert len(history.history["loss"]) == epochs
    assert int(model.optimizer.iterations.numpy()) == int(reference.optimizer.iterations.numpy()) == (stop_at or 12)
    _assert_weights_close(model.get_weights(), reference.get_weights())


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt  # as if the job were preempted in epoch 2


def _interrupted_then_resumed(train, backup_dir):
    """3 epochs with `BackupAndRestore`, interrupted in epoch 2, then resumed."""
    with pytest.raises(KeyboardInterrupt):
        train([keras.callbacks.BackupAndRestore(backup_dir), _Interrupt()])
    return train([keras.callbacks.BackupAndRestore(backup_dir)])


def test_one_worker_loop_resumes_from_backup_and_restore_as_model_fit_does(one_worker, tmp_path):
    def reference(callbacks):
        model = W.build_plain()
        return model, model.fit(W.dataset_plain(), epochs=3, verbose=0, callbacks=callbacks).history

    def ours(callbacks):
        with one_worker.scope():
            model = W.build_plain()
        history = distributed.fit(model, W.dataset_plain(), epochs=3, callbacks=callbacks, strategy=one_worker)
        return model, history.history

    expected_model, expected = _interrupted_then_resumed(reference, str(tmp_path / "reference"))
    model, history = _interrupted_then_resumed(ours, str(tmp_path / "ours"))
    assert len(expected["loss"]) == 1  # resumed at epoch 2: one epoch left
    _assert_history_close(history, expected)
    _assert_weights_close(model.get_weights(), expected_model.get_weights())
    assert int(model.optimizer.iterations.numpy()) == int(expected_model.optimizer.iterations.numpy()) == 12


# ------------------------------------------------------------- separate processes


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(mode, runs, tmp_path, workers):
    """Runs `workers` worker processes (one TF_CONFIG each) and returns their results.

    All of them are killed if they have not finished within `TIMEOUT` seconds.
    """
    ports = [_free_port() for _ in range(workers)]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("TF_CONFIG", None)
    processes, outputs, logs = [], [], []
    for index in range(workers):
        if mode == "multi_worker":
            cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        outputs.append(tmp_path / f"{mode}_{index}.json")
        logs.append(open(tmp_path / f"{mode}_{index}.log", "w"))
        processes.append(
            subprocess.Popen(
                [sys.executable, WORKER, mode, str(outputs[-1]), ",".join(runs)],
                env=dict(env), cwd=ROOT, stdout=logs[-1], stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + TIMEOUT
    try:
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    failed = [i for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        tails = "\n".join(f"--- worker {i} (exit {processes[i].returncode}):\n"
                          + (tmp_path / f"{mode}_{i}.log").read_text()[-3000:] for i in failed)
        pytest.fail(f"worker(s) {failed} failed or timed out after {TIMEOUT} s:\n{tails}")
    return [json.loads(path.read_text()) for path in outputs]


def _check_against_reference(results, name):
    """Every process ended with the weights and logs of `model.fit` on one device."""
    reference, initial, expected = _reference(name)
    assert _relative_error(reference.get_weights(), initial) > 1e-3  # training moved the weights
    for result in results:
        run = result["runs"][name]
        _assert_weights_close(run["initial"], initial, rtol=0.0)
        assert _relative_error(run["weights"], run["initial"]) > 1e-3
        _assert_weights_close(run["weights"], reference.get_weights())
        _assert_history_close(run["history"], expected)


@pytest.mark.integration
def test_two_workers_on_localhost_sum_gradients_across_workers(tmp_path):
    runs = ["plain", "mmd"]
    results = _launch("multi_worker", runs, tmp_path, workers=2)
    assert [r["num_replicas"] for r in results] == [2, 2]
    assert [r["is_chief"] for r in results] == [True, False]
    for name in runs:
        first, second = (r["runs"][name] for r in results)
        # Mirrored variables updated by the same all-reduced gradients: identical.
        for a, b in zip(first["weights"], second["weights"]):
            np.testing.assert_array_equal(a, b)
        assert first["history"] == second["history"]
        # Each worker trained on its half of every global batch (its own metric sums
        # differ), and the update was the one of the whole global batch.
        local = [r["runs"][name]["local_metrics"]["loss"] for r in results]
        assert local[0] != local[1]
        np.testing.assert_allclose(np.mean(local), first["history"]["loss"][-1], rtol=1e-5)
        _check_against_reference(results, name)


@pytest.mark.slow
def test_two_workers_train_the_mmd_stage1_cnn_on_transfer_batches(tmp_path):
    results = _launch("multi_worker", ["mmd_cnn"], tmp_path, workers=2)
    for a, b in zip(results[0]["runs"]["mmd_cnn"]["weights"], results[1]["runs"]["mmd_cnn"]["weights"]):
        np.testing.assert_array_equal(a, b)
    _check_against_reference(results, "mmd_cnn")


@pytest.mark.integration
def test_mirrored_over_two_logical_cpus_is_model_fit_with_the_global_gradient(tmp_path):
    # Same order every epoch: Keras 3.15's `fit` under a strategy draws one more
    # iterator than on one device, so a reshuffling dataset's epochs would differ.
    runs = ["plain_fixed_order", "mmd_fixed_order"]
    (result,) = _launch("mirrored", runs, tmp_path, workers=1)
    assert result["num_replicas"] == 2 and result["is_chief"]
    for name in runs:
        local = result["runs"][name]["local_metrics"]["loss"]
        assert len(local) == 2 and local[0] != local[1]  # two replicas, two halves of each batch
        _check_against_reference([result], name)
