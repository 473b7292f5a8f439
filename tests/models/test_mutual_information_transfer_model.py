import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.architectures import build_classifier
from tfinfo.callbacks import CriticSchedule
from tfinfo.critics import ConcatCritic
from tfinfo.information import estimate_mutual_information
from tfinfo.models import MutualInformationTransferModel
from tfinfo.regularizers import LautumRegularizer
from tfinfo.regularizers import MutualInformationRegularizer

SHAPE = (12, 12, 1)


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    # Source: the class is the brighter quadrant pattern, learnable in a few epochs.
    ys = rng.integers(0, 4, size=n).astype(np.int32)
    xs = rng.uniform(0, 120, size=(n,) + SHAPE).astype(np.float32)
    for i, y in enumerate(ys):
        r, c = divmod(int(y), 2)
        xs[i, 6 * r : 6 * r + 6, 6 * c : 6 * c + 6] += 120.0
    # Target: four random quadrant intensities (a 4-dimensional latent) plus pixel noise,
    # so that the source-trained features carry information about the target images.
    levels = rng.uniform(0, 200, size=(n, 2, 2))
    xt = np.kron(levels, np.ones((6, 6)))[..., None] + rng.uniform(0, 40, size=(n,) + SHAPE)
    return xs, ys, xt.astype(np.float32)


def _model(xt, mi_weight=0.1, critic_steps=1, estimator="smile", lautum=False, seed=0, units=32):
    classifier = build_classifier("small", input_shape=SHAPE, num_classes=4, image_size=12, seed=seed)
    reg = MutualInformationRegularizer(ConcatCritic((units, units)), estimator=estimator, seed=seed)
    lautum_reg = LautumRegularizer(num_outputs=4, input_shape_hint=SHAPE, seed=seed) if lautum else None
    model = MutualInformationTransferModel(
        classifier, reg, mi_weight=mi_weight, critic_steps=critic_steps,
        lautum_regularizer=lautum_reg, lautum_weight=0.05 if lautum else 0.0,
    )
    model.adapt(xt)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        critic_optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _dataset(xs, ys, xt, batch=20):
    return tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(batch)


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_fit_logs_ce_mi_critic_loss_and_the_total_is_their_combination():
    xs, ys, xt = _data()
    model = _model(xt, mi_weight=0.3)
    history = model.fit(_dataset(xs, ys, xt), epochs=2, verbose=0).history
    for key in ("loss", "ce", "mi", "critic_loss", "accuracy"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    np.testing.assert_allclose(
        history["loss"], np.array(history["ce"]) + 0.3 * np.array(history["mi"]), rtol=1e-5, atol=1e-6
    )


def test_each_optimizer_owns_only_its_variables_and_steps_per_schedule():
    xs, ys, xt = _data()
    model = _model(xt, critic_steps=3)
    critic_vars = model.regularizer.critic.trainable_variables
    classifier_vars = model.classifier.trainable_variables
    model.fit(_dataset(xs, ys, xt), epochs=1, verbose=0)
    steps = len(xs) // 20
    assert int(model.optimizer.iterations) == steps
    assert int(model.critic_optimizer.iterations) == 3 * steps
    critic_paths = {v.path for v in critic_vars}
    classifier_paths = {v.path for v in classifier_vars}
    assert not critic_paths & classifier_paths
    # Adam holds two slots per variable, plus iterations and learning rate.
    assert len(model.optimizer.variables) == 2 * len(classifier_vars) + 2
    assert len(model.critic_optimizer.variables) == 2 * len(critic_vars) + 2


def test_phases_hold_the_other_network_fixed():
    xs, ys, xt = _data()
    model = _model(xt)
    data = _dataset(xs, ys, xt)
    critic_vars = model.regularizer.critic.trainable_variables
    classifier_vars = model.classifier.trainable_variables

    model.set_phase("critic")
    c0, k0 = _snapshot(critic_vars), _snapshot(classifier_vars)
    model.fit(data, epochs=1, verbose=0)
    assert all(_changed(c0, critic_vars))
    assert not any(_changed(k0, classifier_vars))

    model.set_phase("classifier")
    c0, k0 = _snapshot(critic_vars), _snapshot(classifier_vars)
    model.fit(data, epochs=1, verbose=0)
    assert not any(_changed(c0, critic_vars))
    assert all(_changed(k0, classifier_vars))

    with pytest.raises(ValueError, match="phase"):
        model.set_phase("both")


def test_critic_schedule_alternates_whole_epochs():
    schedule = CriticSchedule(critic_epochs=1, classifier_epochs=2, warmup_critic_epochs=1)
    assert [schedule.phase_for_epoch(e) for e in range(7)] == [
        "critic", "critic", "classifier", "classifier", "critic", "classifier", "classifier",
    ]
    xs, ys, xt = _data()
    model = _model(xt)
    history = model.fit(
        _dataset(xs, ys, xt), epochs=3, verbose=0, callbacks=[CriticSchedule(1, 2)]
    ).history
    assert history["phase_critic"] == [1.0, 0.0, 0.0]
    steps = len(xs) // 20
    assert int(model.critic_optimizer.iterations) == steps  # only in the critic epoch
    assert int(model.optimizer.iterations) == 2 * steps
    assert int(model.phase.numpy()) == 0  # back to "alternate" after fit
    with pytest.raises(ValueError, match="critic_epochs"):
        CriticSchedule(critic_epochs=0)


def test_keras_round_trip_keeps_the_critic_and_both_optimizers(tmp_path):
    xs, ys, xt = _data()
    model = _model(xt, estimator="mine")
    model.fit(_dataset(xs, ys, xt), epochs=1, verbose=0)
    path = tmp_path / "mi.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MutualInformationTransferModel)
    assert loaded.regularizer.estimator == "mine" and loaded.mi_weight == model.mi_weight
    np.testing.assert_array_equal(loaded.predict(xt[:8], verbose=0), model.predict(xt[:8], verbose=0))
    for a, b in zip(loaded.regularizer.critic.weights, model.regularizer.critic.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(loaded.critic_optimizer.variables, model.critic_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(loaded.regularizer.log_moving_average.numpy()) == float(model.regularizer.log_moving_average.numpy())
    assert loaded.critic_optimizer.learning_rate.numpy() == pytest.approx(1e-3)
    # Training resumes on the loaded model.
    loaded.fit(_dataset(xs, ys, xt), epochs=1, verbose=0)
    assert int(loaded.critic_optimizer.iterations) == 2 * int(model.critic_optimizer.iterations)


def test_export_serves_the_classifier_alone(tmp_path):
    xs, ys, xt = _data()
    model = _model(xt)
    model.fit(_dataset(xs, ys, xt), epochs=1, verbose=0)
    model.export(str(tmp_path / "export"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    out = reloaded.serve(tf.constant(xt[:5]))
    np.testing.assert_allclose(out.numpy(), model.classifier(xt[:5], training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_lautum_and_mi_together_log_both_and_train():
    xs, ys, xt = _data()
    model = _model(xt, lautum=True)
    history = model.fit(_dataset(xs, ys, xt), epochs=1, verbose=0).history
    for key in ("lautum", "bound_active", "shrinkage", "mi", "critic_loss"):
        assert key in history and np.isfinite(history[key][0]), key
    assert history["lautum"][0] > 0
    np.testing.assert_allclose(
        history["loss"][0], history["ce"][0] + 0.1 * history["mi"][0] - 0.05 * history["lautum"][0], rtol=1e-5
    )


@pytest.mark.parametrize("proxy_training", [True, False])
def test_lautum_proxy_mode_is_the_classifiers_mode_for_the_jacobian(proxy_training):
    _, _, xt = _data(40)
    classifier = build_classifier("small", input_shape=SHAPE, num_classes=4, image_size=12, seed=0,
                                  dropout=0.5, noise_stddev=0.2)
    model = MutualInformationTransferModel(
        classifier, MutualInformationRegularizer(ConcatCritic((8,)), seed=0),
        lautum_regularizer=LautumRegularizer(num_outputs=4, input_shape_hint=SHAPE, seed=0),
        lautum_weight=0.05, proxy_training=proxy_training,
    )
    x = tf.constant(xt[:8])
    with tf.GradientTape() as tape:  # the inference-mode proxy, computed directly
        tape.watch(x)
        projected = tf.reduce_sum(classifier(x, training=False) * model.lautum_regularizer.projection)
    expected = tape.gradient(projected, x).numpy()
    _, w1 = model.target_forward(x)
    _, w2 = model.target_forward(x)
    if proxy_training:  # dropout and input noise: two draws differ from each other
        assert not np.allclose(w1.numpy(), w2.numpy())
    else:
        np.testing.assert_allclose(w1.numpy(), expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(w2.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert MutualInformationTransferModel.from_config(model.get_config()).proxy_training is proxy_training


def test_bad_arguments_name_themselves():
    classifier = build_classifier("small", input_shape=SHAPE, num_classes=4, image_size=12, seed=0)
    with pytest.raises(ValueError, match="features_x"):
        MutualInformationTransferModel(classifier, feature_layer="features_x")
    with pytest.raises(ValueError, match="critic_steps"):
        MutualInformationTransferModel(classifier, critic_steps=-1)
    with pytest.raises(ValueError, match="regularizer"):
        MutualInformationTransferModel(classifier, regularizer=LautumRegularizer(num_outputs=4))
    with pytest.raises(ValueError, match="all_pairs"):
        MutualInformationRegularizer(estimator="infonce", marginal="shuffle")
    xs, ys, xt = _data(n=40)
    model = MutualInformationTransferModel(classifier)
    with pytest.raises(ValueError, match="compile"):
        model.train_step(((tf.constant(xs[:4]), tf.constant(xt[:4])), tf.constant(ys[:4])))


def _target_feature_mi(model, xt):
    """An independent estimate: a fresh separable critic on held-out (x_t, z_t) pairs."""
    features = model.features(xt, training=False).numpy()
    x = xt.reshape(len(xt), -1)
    return estimate_mutual_information(x, features, estimator="smile", steps=400, batch_size=64, seed=0)


def test_mi_regularization_lowers_the_information_target_features_carry():
    xs, ys, xt = _data(n=400, seed=1)
    independent, logged = {}, {}
    for weight in (0.0, 5.0):
        keras.utils.set_random_seed(0)
        model = _model(xt, mi_weight=weight, critic_steps=5, units=128)
        history = model.fit(_dataset(xs, ys, xt, batch=40), epochs=6, verbose=0).history
        independent[weight] = _target_feature_mi(model, xt)
        logged[weight] = history["mi"][-1]
    # Measured: about 5.5 -> 3.4 nats (independent) and 2.2 -> 0.0 (the training critic).
    assert independent[5.0] < independent[0.0] - 1.0, independent
    assert logged[5.0] < logged[0.0] - 1.0, logged


def test_mixed_float16_wraps_both_optimizers_in_loss_scaling_and_saves_them_unwrapped():
    _, _, xt = _data(n=16)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model(xt)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.critic_optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.critic_optimizer.built
    config = model.get_compile_config()["critic_optimizer"]
    assert config["class_name"] == "Adam"
    # Under float32 nothing is wrapped.
    assert not isinstance(_model(xt).critic_optimizer, keras.optimizers.LossScaleOptimizer)


def test_set_phase_retraces_the_step_for_the_new_phase():
    xs, ys, xt = _data(n=40)
    model = _model(xt)
    model.fit(_dataset(xs, ys, xt), epochs=1, verbose=0)
    first = model.train_function
    model.set_phase("critic")
    assert model.train_function is not first  # rebuilt: the next step is traced anew
    before = _snapshot(model.classifier.trainable_variables)
    model.fit(_dataset(xs, ys, xt), epochs=1, verbose=0)
    assert not any(_changed(before, model.classifier.trainable_variables))
    # A phase restored into the variable (as from a checkpoint) is picked up by `fit`.
    model.phase.assign(0)
    model.fit(_dataset(xs, ys, xt), epochs=1, verbose=0)
    assert all(_changed(before, model.classifier.trainable_variables))
