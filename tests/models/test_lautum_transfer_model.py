import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.architectures import build_classifier
from tfinfo.callbacks import ProjectionResampler
from tfinfo.models import LautumTransferModel
from tfinfo.regularizers import LautumRegularizer

SHAPE = (12, 12, 1)


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0, 255, size=(n,) + SHAPE).astype(np.float32)
    ys = rng.integers(0, 10, size=n).astype(np.int32)
    xt = rng.uniform(0, 255, size=(n,) + SHAPE).astype(np.float32)
    xt[:, :, 0] = 0.0
    return xs, ys, xt


def _model(xt, weight=0.05, image_size=12, **reg_kwargs):
    classifier = build_classifier("small", input_shape=SHAPE, image_size=image_size, seed=0)
    reg = LautumRegularizer(input_shape_hint=SHAPE, seed=0, **reg_kwargs)
    model = LautumTransferModel(classifier, reg, lautum_weight=weight)
    model.adapt(xt)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("image_size", [12, 16])  # 16: through the network's resize
def test_regularizer_gradient_reaches_the_classifier_weights(image_size):
    xs, ys, xt = _data()
    model = _model(xt, image_size=image_size)
    x_t = tf.constant(xt[:20])
    with tf.GradientTape() as tape:
        _, w = model.jacobian_proxy(x_t)
        surrogate, _ = model.regularizer((x_t, w), training=True)
    variables = model.classifier.trainable_variables
    grads = tape.gradient(surrogate, variables)
    kernels = [(v, g) for v, g in zip(variables, grads) if "kernel" in v.path]
    assert kernels
    for v, g in kernels:
        assert g is not None, v.path
        g = g.numpy()
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, v.path


def test_fit_logs_epoch_means_and_changes_the_weights():
    xs, ys, xt = _data()
    model = _model(xt)
    before = [v.numpy().copy() for v in model.classifier.trainable_variables]
    ds = tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20)
    history = model.fit(ds, epochs=2, verbose=0, callbacks=[ProjectionResampler()])
    for key in ("loss", "ce", "lautum", "accuracy", "bound_active", "shrinkage"):
        assert key in history.history and len(history.history[key]) == 2
        assert np.all(np.isfinite(history.history[key]))
    np.testing.assert_allclose(
        history.history["loss"][-1],
        history.history["ce"][-1] - 0.05 * history.history["lautum"][-1], rtol=1e-4, atol=1e-4)
    assert history.history["lautum"][-1] > 0
    after = model.classifier.trainable_variables
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, after))
    assert int(model.regularizer.step.numpy()) == 8


def test_regularizer_changes_the_update_relative_to_plain_ce():
    xs, ys, xt = _data()
    ds = tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20).take(1)
    results = []
    for weight in (0.0, 5.0):
        keras.utils.set_random_seed(0)
        model = _model(xt, weight=weight)
        model.fit(ds, epochs=1, verbose=0)
        results.append(model.classifier.layers[-1].kernel.numpy())
    assert not np.allclose(results[0], results[1])


def test_predict_serves_the_classifier_and_keras_file_round_trips(tmp_path):
    xs, ys, xt = _data()
    model = _model(xt, mode="fast", refresh_every=2)
    ds = tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20)
    model.fit(ds, epochs=1, verbose=0)
    np.testing.assert_allclose(model.predict(xs, verbose=0), model.classifier.predict(xs, verbose=0), rtol=1e-6)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, LautumTransferModel)
    assert loaded.get_config()["regularizer"]["config"]["mode"] == "fast"
    np.testing.assert_allclose(loaded.predict(xs, verbose=0), model.predict(xs, verbose=0), rtol=1e-5, atol=1e-5)
    for name in ("cross_ema", "w_ema", "joint_inverse", "logdets", "projection", "x_whitener", "step"):
        np.testing.assert_array_equal(getattr(loaded.regularizer, name).numpy(),
                                      getattr(model.regularizer, name).numpy())
    # Training resumes from the restored state.
    loaded.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loaded.fit(ds.take(1), epochs=1, verbose=0)
    assert int(loaded.regularizer.step.numpy()) == int(model.regularizer.step.numpy()) + 1


def test_projection_resampler_redraws_each_epoch():
    xs, ys, xt = _data(40)
    model = _model(xt)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(model.regularizer.projection.numpy().copy())

    ds = tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20)
    model.fit(ds, epochs=3, verbose=0, callbacks=[ProjectionResampler(), Record()])
    assert not np.allclose(seen[0], seen[1]) and not np.allclose(seen[1], seen[2])


def test_mismatched_regularizer_is_refused():
    classifier = build_classifier("small", input_shape=SHAPE, image_size=12)
    with pytest.raises(ValueError, match="Expected a regularizer projecting 10 logits. Received: regularizer.num_outputs=3"):
        LautumTransferModel(classifier, LautumRegularizer(num_outputs=3, input_shape_hint=SHAPE))


def test_called_on_a_training_pair_answers_with_the_source_logits():
    # Under a distribution strategy Keras builds the compiled loss by calling the model on
    # the `x` of a training batch, the pair `(x_source, x_target)`.
    xs, _, xt = _data(n=6)
    model = _model(xt)
    np.testing.assert_array_equal(model((xs, xt)).numpy(), model.classifier(xs).numpy())


def test_fit_before_adapt_is_refused_before_any_step():
    xs, ys, xt = _data(20)
    classifier = build_classifier("small", input_shape=SHAPE, image_size=12, seed=0)
    model = LautumTransferModel(classifier, LautumRegularizer(input_shape_hint=SHAPE), lautum_weight=0.05)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy().copy() for v in classifier.trainable_variables]
    ds = tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(10)
    with pytest.raises(ValueError, match=r"Expected `adapt\(x_unlabeled\)` before `fit`.*Received: a "
                       "LautumTransferModel whose lautum regularizer was never adapted"):
        model.fit(ds, epochs=1, verbose=0)
    for b, v in zip(before, classifier.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_proxy_mode_is_configurable_and_round_trips():
    xs, _, xt = _data(20)
    model = _model(xt)
    assert model.proxy_training
    clone = LautumTransferModel.from_config(model.get_config())
    assert clone.proxy_training
    inference = LautumTransferModel(build_classifier("small", input_shape=SHAPE, image_size=12, seed=0),
                                    proxy_training=False)
    assert not LautumTransferModel.from_config(inference.get_config()).proxy_training


@pytest.mark.parametrize("precision", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_fast_mode_tracks_a_float64_reference_in_training(precision):
    # Against the dense float64 numpy reference (no TensorFlow), in the default float32
    # and in float64. a = 0.95, refactorization every 50 steps: the prior (0.95^50 =
    # 0.077) falls below its floor (144 / (144 + 32 * 1.95 / 0.05) = 0.103) by step 50,
    # so the refactorization there also tops it up (not a rank-n update: the step's
    # gradient must come from the new inverses); then 10 EMA steps.
    xs, ys, xt = _data(400, seed=4)
    records, fast = fast_versus_reference(xs, ys, xt, steps=60, batch=32, precision=precision,
                                          ema_decay=0.95, refresh_every=50)
    assert float(fast.prior_weight.numpy()) == pytest.approx(float(fast.prior_floor(32)) * 0.95**10, rel=1e-4)
    v_fast, v_ref, cosine, ce, rho = records.T
    assert rho.max() < fast.max_correlation
    assert np.all(v_fast >= 0.0)
    np.testing.assert_allclose(v_fast, v_ref, rtol=1e-3 if precision == "float32" else 1e-6)
    assert cosine.min() >= (0.999 if precision == "float32" else 0.999999), (int(np.argmin(cosine)), cosine.min())


def fast_versus_reference(xs, ys, xt, steps, batch, seed=0, precision="float64", every=1, ema_decay=0.999,
                          refresh_every=None):
    """Trains a small CNN with the fast-mode regularizer and, on the same batches, follows
    the moving covariance with the float64 numpy reference (dense solves, no rank-n
    updates, no TensorFlow); returns per-step (fast value, reference value, cosine of
    the w-gradients, CE, reference max correlation) on every `every`-th step."""
    from tests.regularizers.lautum_reference import Reference

    shape = xt.shape[1:]
    classifier = build_classifier("small", input_shape=shape, seed=seed, dropout=0.2, noise_stddev=0.05)
    fast = LautumRegularizer(mode="fast", input_shape_hint=shape, seed=seed, precision=precision, ema_decay=ema_decay,
                             refresh_every=refresh_every)
    model = LautumTransferModel(classifier, fast, lautum_weight=0.01)
    model.adapt(xt)
    reference = Reference(fast)
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = classifier.trainable_variables

    @tf.function
    def step(x_source, y_source, x_target):
        with tf.GradientTape() as tape:
            ce = loss_fn(y_source, classifier(x_source, training=True))
            _, w = model.jacobian_proxy(x_target)
            with tf.GradientTape() as w_tape:
                w_tape.watch(w)
                surrogate, value = fast((x_target, w), training=True)
            loss = ce - 0.01 * surrogate
        g_fast = w_tape.gradient(surrogate, w)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return w, g_fast, value, ce

    rng = np.random.default_rng(seed)
    records = []
    for i in range(steps):
        a, b = rng.integers(0, len(xs), batch), rng.integers(0, len(xt), batch)
        x_target = xt[b].astype(np.float32)
        w, g_fast, value, ce = step(tf.constant(xs[a], tf.float32), tf.constant(ys[a]), tf.constant(x_target))
        w = w.numpy()
        if i % every == 0 or i == steps - 1:
            v_ref, rho, g_ref = reference.analytic_after(x_target, w)
            g_fast = g_fast.numpy().astype(np.float64).ravel()
            cosine = g_fast @ g_ref / (np.linalg.norm(g_fast) * np.linalg.norm(g_ref))
            records.append([float(value), v_ref, cosine, float(ce), rho])
        reference.step(x_target, w)
    return np.array(records), fast


@pytest.mark.slow
def test_fast_mode_tracks_a_float64_reference_over_2000_steps_at_d784():
    # The setting: D = 784 (the embedded default's 28 x 28), batch 50, a = 0.999,
    # the first 2,000 steps of a real training, against the dense float64 reference.
    from tfinfo.data.embedded import load_embedded

    source, target = load_embedded("source"), load_embedded("target")
    records, fast = fast_versus_reference(source.x_train, source.y_train, target.x_train, steps=2000, batch=50)
    v_fast, v_ref, cosine, ce, rho = records.T
    assert rho.max() < fast.max_correlation  # the bound never acts: the reference is unbounded
    assert np.all(v_fast >= 0.0)
    np.testing.assert_allclose(v_fast, v_ref, rtol=0.02)
    assert cosine.min() >= 0.99, (int(np.argmin(cosine)), cosine.min())
    assert int(fast.nonfinite_count.numpy()) == 0
    assert ce[-50:].mean() < ce[:50].mean()  # the network learned while regularized
