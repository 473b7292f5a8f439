import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.architectures import build_classifier
from tfinfo.information.mmd import mmd2
from tfinfo.models.mmd_transfer_model import MMDTransferModel
from tfinfo.regularizers.lautum import LautumRegularizer
from tfinfo.regularizers.mmd import MMDRegularizer

SHAPE = (12, 12, 1)
WEIGHT = 1.0
EPOCHS = 4
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _quadrant_images(labels, rng):
    x = rng.uniform(0, 120, size=(len(labels),) + SHAPE)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        x[i, 6 * r : 6 * r + 6, 6 * c : 6 * c + 6] += 120.0
    return x


def _data(n=120, seed=0):
    """Source: the class is the brighter quadrant. Target: such images, inverted and dimmed."""
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, 4, size=n).astype(np.int32)
    xs = _quadrant_images(ys, rng)
    xt = 255.0 - 0.6 * _quadrant_images(rng.integers(0, 4, size=n), rng)
    return xs.astype(np.float32), ys, xt.astype(np.float32)


def _dataset(xs, ys, xt, batch=20):
    return tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(batch)


def _model(mmd_weight, regularizer=None):
    classifier = build_classifier("small", input_shape=SHAPE, num_classes=4, image_size=12, seed=0)
    model = MMDTransferModel(classifier, regularizer or MMDRegularizer(), mmd_weight=mmd_weight)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


@pytest.fixture(scope="module")
def trained():
    """The same seeded run with and without the MMD term (trained once for this module)."""
    xs, ys, xt = _data()
    runs = {}
    for weight in (0.0, WEIGHT):
        keras.utils.set_random_seed(0)
        model = _model(weight)
        history = model.fit(_dataset(xs, ys, xt), epochs=EPOCHS, verbose=0).history
        runs[weight] = (model, history)
    return runs, (xs, ys, xt)


def test_fit_logs_loss_ce_mmd_accuracy_and_loss_is_ce_plus_weighted_mmd(trained):
    runs, _ = trained
    for weight, (_, history) in runs.items():
        assert set(history) == {"loss", "ce", "mmd", "accuracy"}
        for key, values in history.items():
            assert len(values) == EPOCHS and np.all(np.isfinite(values)), key
        np.testing.assert_allclose(
            history["loss"], np.array(history["ce"]) + weight * np.array(history["mmd"]), rtol=1e-5, atol=1e-6
        )
    assert runs[0.0][1]["accuracy"][-1] > 0.8  # the source task is learned


def test_mmd_term_lowers_the_discrepancy_between_source_and_target_features(trained):
    runs, (xs, _, xt) = trained
    logged = {w: h["mmd"][-1] for w, (_, h) in runs.items()}
    independent, deterministic = {}, {}
    for weight, (model, _) in runs.items():
        # Independent estimate on all 120 + 120 samples with fresh noise and dropout
        # (the features the term sees in training), and one without them.
        keras.utils.set_random_seed(5)
        zs, zt = model.features(xs, training=True), model.features(xt, training=True)
        independent[weight] = float(mmd2(zs, zt, scale="fixed", estimator="biased"))
        deterministic[weight] = float(mmd2(model.features(xs), model.features(xt)))
    # Measured: logged 0.59 -> 0.05, independent 0.55 -> 0.23, deterministic (no dropout or
    # noise) 3.64 -> 3.08: the term matches the features the training step sees.
    assert logged[WEIGHT] < 0.3 * logged[0.0], logged
    assert independent[WEIGHT] < 0.7 * independent[0.0], independent
    assert deterministic[WEIGHT] < 0.95 * deterministic[0.0], deterministic


def test_keras_round_trip_keeps_predictions_and_regularizer(trained, tmp_path):
    runs, (xs, _, xt) = trained
    model = runs[WEIGHT][0]
    path = tmp_path / "mmd.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MMDTransferModel)
    assert loaded.mmd_weight == WEIGHT and loaded.feature_layer == "features"
    assert loaded.regularizer.get_config() == model.regularizer.get_config()
    np.testing.assert_array_equal(loaded.predict(xt[:8], verbose=0), model.predict(xt[:8], verbose=0))
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Called on a training pair, the model answers with the source logits.
    pair = loaded((xs[:4], xt[:4]), training=False)
    np.testing.assert_array_equal(pair.numpy(), loaded.classifier(xs[:4], training=False).numpy())


def test_export_serves_the_classifier_alone(trained, tmp_path):
    runs, (_, _, xt) = trained
    model = runs[WEIGHT][0]
    model.export(str(tmp_path / "export"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    out = reloaded.serve(tf.constant(xt[:5]))
    np.testing.assert_allclose(out.numpy(), model.classifier(xt[:5], training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_config_round_trip_and_bad_arguments_name_themselves():
    classifier = build_classifier("small", input_shape=SHAPE, num_classes=4, image_size=12, seed=0)
    regularizer = MMDRegularizer(bandwidth="variance", scale="fixed", estimator="linear")
    model = MMDTransferModel(classifier, regularizer, mmd_weight=0.5)
    clone = MMDTransferModel.from_config(model.get_config())
    assert clone.mmd_weight == 0.5 and clone.regularizer.get_config() == regularizer.get_config()
    default = MMDTransferModel(classifier).regularizer.get_config()
    default.pop("name")
    assert default == {k: v for k, v in MMDRegularizer().get_config().items() if k != "name"}
    with pytest.raises(ValueError, match="named 'penultimate'.*feature_layer='penultimate'"):
        MMDTransferModel(classifier, feature_layer="penultimate")
    with pytest.raises(ValueError, match="Expected `mmd_weight`.*Received: mmd_weight=-1"):
        MMDTransferModel(classifier, mmd_weight=-1)
    with pytest.raises(ValueError, match="Expected `regularizer` to be an MMDRegularizer.*LautumRegularizer"):
        MMDTransferModel(classifier, regularizer=LautumRegularizer(num_outputs=4))
    with pytest.raises(ValueError, match="rank 2"):
        MMDTransferModel(classifier, feature_layer="preprocess")
    xs, ys, xt = _data(n=4)
    with pytest.raises(ValueError, match="compile"):
        model.train_step(((tf.constant(xs), tf.constant(xt)), tf.constant(ys)))


_DISTRIBUTED = textwrap.dedent(
    """
    import json, os, sys
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tfinfo.architectures import build_classifier
    from tfinfo.information.mmd import mmd2
    from tfinfo.models.mmd_transfer_model import MMDTransferModel
    from tfinfo.regularizers.mmd import MMDRegularizer

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    rng = np.random.default_rng(0)
    zs = rng.normal(size=(8, 5)).astype("float32")
    zt = (rng.normal(size=(8, 5)) + 0.5).astype("float32")
    reg = MMDRegularizer()

    def shard(a):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(a[4 * ctx.replica_id_in_sync_group : 4 * ctx.replica_id_in_sync_group + 4]))

    @tf.function
    def step(a, b):
        def replica(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                value = reg((a, b))
                loss = value / strategy.num_replicas_in_sync
            return (value,) + tuple(tape.gradient(loss, [a, b]))
        return strategy.run(replica, args=(a, b))

    value, ga, gb = step(shard(zs), shard(zt))
    a, b = tf.constant(zs), tf.constant(zt)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        single = mmd2(a, b)
    sa, sb = tape.gradient(single, [a, b])
    out["values"] = [float(v) for v in strategy.experimental_local_results(value)] + [float(single)]
    out["grad_error"] = max(
        float(np.abs(np.concatenate(strategy.experimental_local_results(g)) - s.numpy()).max())
        for g, s in ((ga, sa), (gb, sb)))

    shape = (12, 12, 1)
    xs = rng.uniform(0, 255, size=(16,) + shape).astype("float32")
    xt = rng.uniform(0, 128, size=(16,) + shape).astype("float32")
    ys = rng.integers(0, 4, size=16).astype("int32")
    data = tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(8)

    def train(compiled_loss):
        keras.utils.set_random_seed(0)
        clf = build_classifier("small", input_shape=shape, num_classes=4, image_size=12,
                               dropout=0.0, noise_stddev=0.0, seed=0)
        model = MMDTransferModel(clf, MMDRegularizer(), mmd_weight=3.0)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if compiled_loss else None
        model.compile(optimizer=keras.optimizers.SGD(0.002), loss=loss)
        history = model.fit(data, epochs=1, verbose=0).history
        return [w.numpy() for w in model.classifier.weights], {k: float(v[-1]) for k, v in history.items()}

    initial = [w.numpy() for w in build_classifier(
        "small", input_shape=shape, num_classes=4, image_size=12, dropout=0.0, noise_stddev=0.0, seed=0).weights]
    # One device: a compiled CE and a plain one are the same loss, so one run serves both.
    single_weights, single_logs = train(compiled_loss=True)
    out["weight_step"] = max(float(np.abs(a - b).max()) for a, b in zip(single_weights, initial))
    out["single"] = single_logs
    with strategy.scope():
        mirrored_weights, mirrored_logs = train(compiled_loss=sys.argv[1] == "compiled")
    out["weight_error"] = max(float(np.abs(a - b).max()) for a, b in zip(single_weights, mirrored_weights))
    out["mirrored"] = mirrored_logs
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("loss", ["compiled", pytest.param("plain", marks=pytest.mark.slow)])
def test_two_replicas_match_one_device_on_the_global_batch(loss):
    """MirroredStrategy on two logical CPUs (a fresh process: devices are set before any op).

    `loss="compiled"`: Keras divides the CE by the replicas and the model the MMD term;
    `"plain"` (no compiled loss): the model divides both.
    """
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED, loss], capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # Each replica computes the MMD^2 of the all-gathered global batch, and the
    # gradients reaching the shards are those of the single-device value.
    np.testing.assert_allclose(out["values"], out["values"][-1], rtol=1e-6)
    assert out["grad_error"] < 1e-6
    # One fit epoch (two steps of SGD) on two replicas equals one device.
    assert out["weight_step"] > 1e-3, out  # the steps moved the weights
    assert out["weight_error"] < 1e-3 * out["weight_step"], out
    for name in ("loss", "ce", "mmd", "accuracy"):
        assert out["mirrored"][name] == pytest.approx(out["single"][name], rel=1e-4, abs=1e-6), (name, out)
