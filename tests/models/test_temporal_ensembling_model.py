import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.architectures import build_classifier
from tfinfo.callbacks.temporal_ensembling_update import TemporalEnsemblingUpdate
from tfinfo.data.temporal_ensembling import temporal_ensembling_dataset
from tfinfo.models.temporal_ensembling_model import TemporalEnsemblingModel

SHAPE = (12, 12, 1)


def _vectors(num_labeled=5, num_unlabeled=12, dim=3, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x_l = rng.normal(size=(num_labeled, dim)).astype(np.float32)
    y_l = rng.integers(0, num_classes, size=num_labeled).astype(np.int32)
    x_u = rng.normal(size=(num_unlabeled, dim)).astype(np.float32)
    return x_l, y_l, x_u


def _dense(dim=3, num_classes=3):
    """A deterministic classifier (no noise or dropout): its training outputs are its outputs."""
    return keras.Sequential([keras.Input((dim,)), keras.layers.Dense(num_classes)], name="dense")


def _model(classifier, num_examples, num_labeled, learning_rate=0.0, **kwargs):
    model = TemporalEnsemblingModel(classifier, num_examples=num_examples, num_labeled=num_labeled, **kwargs)
    optimizer = keras.optimizers.SGD(0.0) if learning_rate == 0.0 else keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class _Record(keras.callbacks.Callback):
    """Copies the named state variables of the model at the end of each epoch."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append({name: getattr(self.model, name).numpy().copy() for name in self.names})


# -- data -----------------------------------------------------------------------------


def test_dataset_visits_every_index_once_per_epoch_with_its_own_label_mask_and_image():
    x_l, y_l, x_u = _vectors(num_labeled=7, num_unlabeled=10)
    ds, n = temporal_ensembling_dataset(x_l, y_l, x_u, batch_size=5, seed=3)
    assert n == 17
    x_all = np.concatenate([x_l, x_u])
    orders = []
    for _ in range(2):
        batches = list(ds.as_numpy_iterator())
        assert [len(b[0][1]) for b in batches] == [5, 5, 5, 2]  # the partial batch is kept
        x = np.concatenate([b[0][0] for b in batches])
        index = np.concatenate([b[0][1] for b in batches])
        y = np.concatenate([b[1][0] for b in batches])
        mask = np.concatenate([b[1][1] for b in batches])
        assert sorted(index) == list(range(n))
        np.testing.assert_array_equal(x, x_all[index])
        np.testing.assert_array_equal(mask, (index < 7).astype(np.float32))
        np.testing.assert_array_equal(y, np.where(index < 7, y_l[np.minimum(index, 6)], 0))
        orders.append(index)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
    assert x.dtype == np.float32 and index.dtype == np.int32 and y.dtype == np.int32


def test_dataset_is_seeded_and_unshuffled_batches_follow_the_index():
    x_l, y_l, x_u = _vectors()
    first = [b[0][1] for b in temporal_ensembling_dataset(x_l, y_l, x_u, 4, seed=1)[0].as_numpy_iterator()]
    again = [b[0][1] for b in temporal_ensembling_dataset(x_l, y_l, x_u, 4, seed=1)[0].as_numpy_iterator()]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    ordered, n = temporal_ensembling_dataset(x_l, y_l, x_u, 4, seed=1, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([b[0][1] for b in ordered.as_numpy_iterator()]), np.arange(n))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(seed="a"), "seed"),
        (dict(x_labeled=np.zeros((0, 3), np.float32), y_labeled=np.zeros(0, np.int32)), "labeled image"),
        (dict(y_labeled=np.zeros(4, np.int32)), "y_labeled.shape"),
        (dict(x_unlabeled=np.zeros((4, 2), np.float32)), "x_unlabeled.shape"),
        (dict(y_labeled=np.array([0, 1, -1, 0, 1])), "labels >= 0"),
        (dict(y_labeled=np.array([0, 1, 0.5, 0, 1])), "integer labels"),
        (dict(x_labeled=np.array(["a"] * 5)), "x_labeled"),
    ],
)
def test_dataset_rejects_bad_inputs_naming_them(kwargs, match):
    x_l, y_l, x_u = _vectors()
    args = dict(x_labeled=x_l, y_labeled=y_l, x_unlabeled=x_u, batch_size=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as info:
        temporal_ensembling_dataset(**args)
    assert "Expected" in str(info.value) and "Received" in str(info.value)


# -- ensemble state -------------------------------------------------------------------


def test_update_ensemble_matches_hand_computed_values_over_three_epochs():
    model = TemporalEnsemblingModel(_dense(num_classes=2), num_examples=2, num_labeled=1, ensemble_momentum=0.6)
    epochs = [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]], [[0.5, 0.5], [1.0, 0.0]]]
    # By hand: Z1 = 0.4 z1, Z2 = 0.6 Z1 + 0.4 z2, Z3 = 0.6 Z2 + 0.4 z3;
    # z_tilde_t = Z_t / (1 - 0.6^t) with 1 - 0.6^t = 0.4, 0.64, 0.784.
    expected_z = [[[0.4, 0.0], [0.0, 0.4]], [[0.24, 0.4], [0.4, 0.24]], [[0.344, 0.44], [0.64, 0.144]]]
    expected_targets = [
        [[1.0, 0.0], [0.0, 1.0]],
        [[0.375, 0.625], [0.625, 0.375]],
        [[0.344 / 0.784, 0.44 / 0.784], [0.64 / 0.784, 0.144 / 0.784]],
    ]
    np.testing.assert_array_equal(model.z_tilde.numpy(), 0.0)  # zero before the first epoch ends
    for t, (z, want_z, want_targets) in enumerate(zip(epochs, expected_z, expected_targets), start=1):
        model.z_epoch.assign(np.array(z, np.float32))
        model.update_ensemble()
        assert int(model.t.numpy()) == t
        np.testing.assert_allclose(model.ensemble.numpy(), want_z, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(model.z_tilde.numpy(), want_targets, rtol=1e-6, atol=1e-7)


def test_fit_writes_outputs_and_updates_the_ensemble_like_numpy():
    x_l, y_l, x_u = _vectors()
    ds, n = temporal_ensembling_dataset(x_l, y_l, x_u, batch_size=4, seed=0)
    model = _model(_dense(), n, len(x_l), learning_rate=0.05, rampup_epochs=2)
    before = _Record(["z_epoch"])
    after = _Record(["ensemble", "z_tilde", "t"])
    model.fit(ds, epochs=3, verbose=0, callbacks=[before, TemporalEnsemblingUpdate(), after])
    alpha, z = 0.6, np.zeros((n, 3))
    for t, (outputs, state) in enumerate(zip(before.values, after.values), start=1):
        z = alpha * z + (1 - alpha) * outputs["z_epoch"]
        assert int(state["t"]) == t
        np.testing.assert_allclose(state["ensemble"], z, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state["z_tilde"], z / (1 - alpha**t), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(outputs["z_epoch"].sum(-1), 1.0, rtol=1e-5)  # every row written
    np.testing.assert_allclose(after.values[0]["z_tilde"], before.values[0]["z_epoch"], rtol=1e-5)
    # The classifier learned (Adam), so the epochs' outputs differ: the ensemble is not trivial.
    assert not np.allclose(before.values[0]["z_epoch"], before.values[2]["z_epoch"], atol=1e-4)


def test_shuffled_pipeline_writes_each_example_into_its_own_row():
    x_l, y_l, x_u = _vectors(num_labeled=5, num_unlabeled=14)
    ds, n = temporal_ensembling_dataset(x_l, y_l, x_u, batch_size=4, seed=7)  # 19 = 4 * 4 + 3
    model = _model(_dense(), n, len(x_l), learning_rate=0.0)  # frozen weights
    model.fit(ds, epochs=2, verbose=0, callbacks=[TemporalEnsemblingUpdate()])
    want = _softmax(model.classifier(np.concatenate([x_l, x_u])).numpy())
    assert len(np.unique(want.round(4), axis=0)) == n  # the rows are distinguishable
    np.testing.assert_allclose(model.z_epoch.numpy(), want, rtol=1e-5, atol=1e-6)
    # Constant outputs: the bias-corrected targets equal them after any number of epochs.
    np.testing.assert_allclose(model.z_tilde.numpy(), want, rtol=1e-5, atol=1e-6)


# -- ramp-up ----------------------------------------------------------------------------


def test_unsupervised_weight_follows_the_rampup_formula():
    model = TemporalEnsemblingModel(_dense(), num_examples=1000, num_labeled=100)
    scaled_max = 30.0 * 100 / 1000
    assert model.unsupervised_weight_schedule(0) == 0.0
    for epoch in (1, 20, 40, 79):
        want = scaled_max * math.exp(-5.0 * (1.0 - epoch / 80) ** 2)
        assert model.unsupervised_weight_schedule(epoch) == pytest.approx(want, rel=1e-12)
    assert model.unsupervised_weight_schedule(80) == pytest.approx(scaled_max)
    assert model.unsupervised_weight_schedule(500) == pytest.approx(scaled_max)
    assert model.set_unsupervised_weight(40) == pytest.approx(float(model.unsupervised_weight.numpy()))
    with pytest.raises(ValueError, match="epoch"):
        model.unsupervised_weight_schedule(-1)


def test_fit_logs_the_rampup_weight_of_each_epoch_and_continues_it_on_a_second_fit():
    x_l, y_l, x_u = _vectors()
    ds, n = temporal_ensembling_dataset(x_l, y_l, x_u, batch_size=6, seed=0)
    model = _model(_dense(), n, len(x_l), learning_rate=1e-3, max_unsupervised_weight=10.0, rampup_epochs=2)
    scaled_max = 10.0 * len(x_l) / n
    history = model.fit(ds, epochs=3, verbose=0, callbacks=[TemporalEnsemblingUpdate()]).history
    want = [0.0, scaled_max * math.exp(-5.0 * 0.5**2), scaled_max]
    np.testing.assert_allclose(history["unsupervised_weight"], want, rtol=1e-6)
    history = model.fit(ds, epochs=1, verbose=0, callbacks=[TemporalEnsemblingUpdate()]).history
    np.testing.assert_allclose(history["unsupervised_weight"], [scaled_max], rtol=1e-6)  # epoch t = 3, not 0
    assert int(model.t.numpy()) == 4


# -- the loss ---------------------------------------------------------------------------


def _batch(x, index, y, mask):
    return (tf.constant(x), tf.constant(index, tf.int32)), (tf.constant(y, tf.int32), tf.constant(mask, tf.float32))


@pytest.mark.parametrize("ce_normalization", ["labeled", "batch"])
def test_loss_is_masked_ce_plus_weighted_mse_to_the_targets(ce_normalization):
    x_l, y_l, x_u = _vectors(num_labeled=4, num_unlabeled=6)
    x_all = np.concatenate([x_l, x_u])
    model = _model(_dense(), 10, 4, learning_rate=0.0, ce_normalization=ce_normalization)
    rng = np.random.default_rng(1)
    targets = _softmax(rng.normal(size=(10, 3))).astype(np.float32)
    model.z_tilde.assign(targets)
    model.unsupervised_weight.assign(2.5)
    index = np.array([8, 1, 5, 3, 0, 9], np.int32)  # labeled rows 1, 3, 0
    mask = (index < 4).astype(np.float32)
    y = np.where(index < 4, np.concatenate([y_l, np.zeros(6, np.int32)])[index], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logs = model.train_on_batch(*_batch(x_all[index], index, y, mask), return_dict=True)
    logits = model.classifier(x_all[index]).numpy()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce_sum = -log_p[np.arange(6), y][mask > 0].sum()
    ce = ce_sum / 3 if ce_normalization == "labeled" else ce_sum / 6
    mse = np.mean((_softmax(logits) - targets[index]) ** 2)
    assert logs["ce"] == pytest.approx(ce, rel=1e-5)
    assert logs["consistency"] == pytest.approx(mse, rel=1e-5)
    assert logs["unsupervised_weight"] == pytest.approx(2.5)
    assert logs["loss"] == pytest.approx(ce + 2.5 * mse, rel=1e-5)
    np.testing.assert_allclose(model.z_epoch.numpy()[index], _softmax(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.z_epoch.numpy()[[2, 4, 6, 7]], 0.0)  # other rows untouched


def test_a_batch_without_labeled_examples_has_zero_ce_and_finite_gradients():
    x_l, y_l, x_u = _vectors(num_labeled=2, num_unlabeled=6)
    model = _model(_dense(), 8, 2, learning_rate=0.1)
    model.z_tilde.assign(np.full((8, 3), 1.0 / 3.0, np.float32))
    model.unsupervised_weight.assign(1.0)
    before = [v.numpy().copy() for v in model.classifier.trainable_variables]
    index = np.arange(2, 8, dtype=np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logs = model.train_on_batch(*_batch(x_u, index, np.zeros(6, np.int32), np.zeros(6)), return_dict=True)
    assert logs["ce"] == 0.0 and logs["accuracy"] == 0.0
    assert np.isfinite(logs["loss"]) and logs["loss"] == pytest.approx(logs["consistency"])
    after = [v.numpy() for v in model.classifier.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))  # the consistency term trains


# -- the real network, saving, errors ---------------------------------------------------


def _images(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n).astype(np.int32)
    x = rng.uniform(0, 120, size=(n,) + SHAPE)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 6 * r : 6 * r + 6, 6 * c : 6 * c + 6] += 120.0
    return x.astype(np.uint8), y


def test_fit_small_cnn_three_epochs_then_keras_round_trip_keeps_the_ensemble(tmp_path):
    x_l, y_l = _images(8, seed=0)
    x_u, _ = _images(34, seed=1)
    ds, n = temporal_ensembling_dataset(x_l, y_l, x_u, batch_size=10, seed=0)  # 42: a partial batch
    classifier = build_classifier("small", input_shape=SHAPE, num_classes=4, image_size=12, seed=0)
    model = _model(classifier, n, len(x_l), learning_rate=1e-3, rampup_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "without the callback" warning
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        history = model.fit(ds, epochs=3, verbose=0, callbacks=[TemporalEnsemblingUpdate()]).history
    for key in ("loss", "ce", "consistency", "unsupervised_weight", "accuracy"):
        assert len(history[key]) == 3 and np.all(np.isfinite(history[key])), key
    assert history["unsupervised_weight"][0] == 0.0 and history["unsupervised_weight"][2] > 0.0
    assert int(model.t.numpy()) == 3
    assert np.all(model.z_tilde.numpy() > 0.0)
    metrics = model.evaluate(ds, verbose=0, return_dict=True)  # training batches: labeled only
    assert set(metrics) == {"loss", "ce", "accuracy"} and np.isfinite(metrics["ce"])

    path = tmp_path / "te.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, TemporalEnsemblingModel)
    for name in ("ensemble", "z_epoch", "z_tilde", "t", "unsupervised_weight"):
        np.testing.assert_array_equal(getattr(loaded, name).numpy(), getattr(model, name).numpy(), err_msg=name)
    config = loaded.get_config()
    assert (config["num_examples"], config["num_labeled"], config["ensemble_momentum"]) == (n, 8, 0.6)
    assert (config["max_unsupervised_weight"], config["rampup_epochs"], config["ce_normalization"]) == (
        30.0,
        2,
        "batch",
    )
    x_test, _ = _images(5, seed=2)
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0))
    # The compiled `loss` (kept out of Keras's loss container) is restored with the model.
    assert isinstance(loaded.loss, keras.losses.SparseCategoricalCrossentropy) and loaded.loss.from_logits
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_examples=0), "num_examples"),
        (dict(num_examples=4.5), "num_examples"),
        (dict(num_labeled=0), "num_labeled"),
        (dict(num_labeled=11), "num_labeled"),
        (dict(ensemble_momentum=1.0), "ensemble_momentum"),
        (dict(ensemble_momentum=-0.1), "ensemble_momentum"),
        (dict(max_unsupervised_weight=-1.0), "max_unsupervised_weight"),
        (dict(max_unsupervised_weight=float("nan")), "max_unsupervised_weight"),
        (dict(rampup_epochs=-1), "rampup_epochs"),
        (dict(ce_normalization="sum"), "ce_normalization"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    args = dict(num_examples=10, num_labeled=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name) as info:
        TemporalEnsemblingModel(_dense(), **args)
    assert "Expected" in str(info.value) and "Received" in str(info.value)


def test_plain_batches_the_wrong_model_and_a_missing_callback_are_reported():
    x_l, y_l, x_u = _vectors()
    model = _model(_dense(), 17, 5)
    plain = tf.data.Dataset.from_tensor_slices((x_l, y_l)).batch(5)
    with pytest.raises(ValueError, match=r"\(\(x, index\), \(y, mask\)\)"):
        model.fit(plain, epochs=1, verbose=0)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    other.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="TemporalEnsemblingModel"):
        other.fit(x_l, np.zeros((5, 3)), epochs=1, verbose=0, callbacks=[TemporalEnsemblingUpdate()])
    ds, _ = temporal_ensembling_dataset(x_l, y_l, x_u, 6, seed=0)
    with pytest.warns(UserWarning, match="TemporalEnsemblingUpdate"):
        model.fit(ds, epochs=1, verbose=0)
    # `evaluate` on plain `(x, y)` batches is the classifier's.
    metrics = model.evaluate(plain, verbose=0, return_dict=True)
    assert set(metrics) == {"loss", "ce", "accuracy"}
    logits = model.classifier(x_l).numpy()
    ce = np.mean(np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(y_l)), y_l])
    assert metrics["ce"] == pytest.approx(ce, rel=1e-5) and metrics["loss"] == pytest.approx(ce, rel=1e-5)


_MIRRORED_SCRIPT = """
import json, sys
import numpy as np, keras, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfinfo.callbacks.temporal_ensembling_update import TemporalEnsemblingUpdate
from tfinfo.data.temporal_ensembling import temporal_ensembling_dataset
from tfinfo.models.temporal_ensembling_model import TemporalEnsemblingModel
rng = np.random.default_rng(0)
x_l, y_l, x_u = rng.normal(size=(5, 3)), rng.integers(0, 3, 5), rng.normal(size=(12, 3))
# 17 examples in batches of 4: the last batch (1 example) leaves one replica empty. Not
# reshuffled: under a strategy Keras's `fit` draws one iterator of the dataset before the
# first epoch (to build the model symbolically), so a reshuffling dataset's first epoch
# would come in another order than on one device.
ds, n = temporal_ensembling_dataset(x_l.astype("float32"), y_l, x_u.astype("float32"), 4, seed=0, shuffle=False)
out = {}
for mode, strategy in (("single", tf.distribute.get_strategy()),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        classifier = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
        model = TemporalEnsemblingModel(classifier, n, 5, rampup_epochs=1, ce_normalization="labeled")
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=ce)
    initial = [w.numpy().tolist() for w in classifier.weights]
    history = model.fit(ds, epochs=2, verbose=0, callbacks=[TemporalEnsemblingUpdate()]).history
    out[mode] = {"initial": initial, "weights": [w.numpy().tolist() for w in model.weights], "logs": history,
                 "t": int(model.t.numpy()), "z_epoch": model.z_epoch.numpy().tolist()}
json.dump(out, sys.stdout)
"""


@pytest.mark.slow  # a subprocess: logical devices must be set before any TensorFlow op
def test_two_replicas_equal_one_device_with_an_uneven_last_batch_and_a_compiled_loss():
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    single, mirrored = result["single"], result["mirrored"]
    assert single["t"] == mirrored["t"] == 2
    # The classifier moved, and the two replicas' summed gradients are the global batch's:
    # the CE over the labeled examples and the consistency over all, normalized by the
    # global counts (per-replica means would weight the lone last example double).
    kernel = single["weights"][-2]  # the Dense kernel (the model's own state comes first)
    assert np.abs(np.asarray(kernel) - np.asarray(single["initial"][0])).max() > 1e-2
    for a, b in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # Every example's row of z_epoch was written (by whichever replica held it).
    np.testing.assert_allclose(np.asarray(mirrored["z_epoch"]), np.asarray(single["z_epoch"]), rtol=1e-5, atol=1e-6)
    for key in ("loss", "ce", "consistency", "unsupervised_weight"):
        np.testing.assert_allclose(mirrored["logs"][key], single["logs"][key], rtol=1e-5, atol=1e-7, err_msg=key)
