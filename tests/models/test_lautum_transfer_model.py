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
    for name in ("cross_ema", "w_ema", "adjoint_cross", "projection", "x_whitener", "step"):
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
