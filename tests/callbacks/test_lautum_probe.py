import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.regularizers.lautum_reference import numpy_features
from tfinfo.architectures import build_classifier
from tfinfo.callbacks import LautumProbe
from tfinfo.models import LautumTransferModel
from tfinfo.regularizers import LautumRegularizer

SHAPE = (6, 6, 1)


def _reference_estimate(reg, x, w, max_correlation):
    """float64 numpy: normalize and whiten as the layer does, shrink k / (k + N), SVD."""
    n = len(x)
    xt, wn = numpy_features(reg, x, w)
    k = xt.shape[1]
    z = np.concatenate([xt, wn], 1)
    prior = k / (k + n)
    joint = (1 - prior) * z.T @ z / n + prior * np.eye(2 * k)
    lx, lw = np.linalg.cholesky(joint[:k, :k]), np.linalg.cholesky(joint[k:, k:])
    c = np.linalg.solve(lx, joint[:k, k:]) @ np.linalg.inv(lw).T
    lam = np.minimum(np.linalg.svd(c, compute_uv=False) ** 2, max_correlation**2)
    return float(np.sum(0.5 * np.log1p(-lam) + lam / (1 - lam)))


def _model_and_data(seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0, 255, size=(60,) + SHAPE).astype(np.float32)
    ys = rng.integers(0, 10, size=60).astype(np.int32)
    xt = rng.uniform(0, 255, size=(300,) + SHAPE).astype(np.float32)
    classifier = build_classifier("small", input_shape=SHAPE, image_size=12, seed=seed)
    # Inference-mode proxies: deterministic, so the test can recompute them.
    model = LautumTransferModel(classifier, LautumRegularizer(input_shape_hint=SHAPE, seed=seed), lautum_weight=0.05,
                                proxy_training=False)
    model.adapt(xt)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, xs, ys, xt


def test_probe_logs_the_from_scratch_estimate_and_its_null_each_epoch():
    model, xs, ys, xt = _model_and_data()
    probe = LautumProbe(xt[:200], every_epochs=1, batch_size=64, seed=3)
    ds = tf.data.Dataset.from_tensor_slices(((xs, xt[:60]), ys)).batch(20)
    history = model.fit(ds, epochs=2, verbose=0, callbacks=[probe]).history
    assert len(history["lautum_probe"]) == len(history["lautum_probe_null"]) == 2
    assert [h[0] for h in probe.history] == [0, 1]
    # The logged numbers are the estimator's, for the weights after the last epoch.
    _, w = model.jacobian_proxy(tf.constant(xt[:200]), training=False)
    w = w.numpy()
    reg = model.regularizer
    expected = _reference_estimate(reg, xt[:200], w, reg.max_correlation)
    expected_null = _reference_estimate(reg, xt[:200], w[probe.permutation], reg.max_correlation)
    assert history["lautum_probe"][-1] == pytest.approx(expected, rel=1e-3)
    assert history["lautum_probe_null"][-1] == pytest.approx(expected_null, rel=1e-3)
    assert 0.0 < history["lautum_probe_max_correlation"][-1] < 1.0


def test_probe_skips_epochs_between_measurements_and_refuses_bad_arguments():
    model, xs, ys, xt = _model_and_data(seed=1)
    probe = LautumProbe(xt[:100], every_epochs=2)
    ds = tf.data.Dataset.from_tensor_slices(((xs, xt[:60]), ys)).batch(30)
    model.fit(ds, epochs=3, verbose=0, callbacks=[probe])
    assert [h[0] for h in probe.history] == [1]
    with pytest.raises(ValueError, match="Expected at least 2 probe images. Received: x_probe.shape=\\(1, 6, 6, 1\\)"):
        LautumProbe(xt[:1])
    with pytest.raises(ValueError, match="Expected `every_epochs` >= 1. Received: every_epochs=0"):
        LautumProbe(xt, every_epochs=0)
    plain = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(10)])
    probe = LautumProbe(xt[:10])
    probe.set_model(plain)
    with pytest.raises(ValueError, match="Expected a model with a LautumRegularizer"):
        probe.measure()


def test_probe_leaves_the_training_random_streams_as_they_were():
    model, xs, ys, xt = _model_and_data(seed=2)
    model.proxy_training = True  # dropout and noise drawn by the probe's proxies
    seeds = [v for v in model.classifier.variables if "seed_generator_state" in v.path]
    assert seeds
    before = [v.numpy().copy() for v in seeds]
    probe = LautumProbe(xt[:50])
    probe.set_model(model)
    probe.measure()
    for b, v in zip(before, seeds):
        np.testing.assert_array_equal(b, v.numpy())
