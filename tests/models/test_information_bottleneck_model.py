import keras
import numpy as np
import pytest

from tfinfo.models.information_bottleneck_model import InformationBottleneckModel


def _linear(d, w, trainable=True):
    inputs = keras.Input((d,))
    out = keras.layers.Dense(w.shape[1], use_bias=False, name="linear",
                             kernel_initializer=keras.initializers.Constant(w))(inputs)
    model = keras.Model(inputs, out)
    model.get_layer("linear").trainable = trainable
    return model


def _gaussian_mi(w, noise_variance):
    """I(X; W^T X + eps) for X ~ N(0, I): 1/2 log det(I + W^T W / s2), float64."""
    w = np.asarray(w, np.float64)
    _, logdet = np.linalg.slogdet(np.eye(w.shape[1]) + w.T @ w / noise_variance)
    return 0.5 * logdet


def _data(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def test_critic_estimate_of_i_x_reaches_the_closed_form_of_a_fixed_linear_layer():
    w = np.diag([2.0, 1.0]).astype(np.float32)
    x, y = _data(4096, 2)
    model = InformationBottleneckModel(_linear(2, w, trainable=False), alpha=1.0, noise_variance=0.5,
                                       critic_steps=4, seed=0)
    model.adapt(x)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), critic_optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, batch_size=256, epochs=12, verbose=0)
    truth = _gaussian_mi(w, 0.5)  # 1.647 nats
    assert history.history["i_x"][-1] == pytest.approx(truth, rel=0.2)
    # I(Y; L) <= H(Y) = log 2, and L determines sign(x_0), so it is close to log 2.
    assert 0.45 < history.history["i_y"][-1] < np.log(2) + 0.1


def test_gamma_compresses_and_frozen_layers_stay_unchanged():
    x, y = _data(2048, 3)
    w0 = np.array([[1.5, 0.0], [0.0, 1.5], [0.5, 0.5]], np.float32)
    compressed = InformationBottleneckModel(_linear(3, w0), alpha=0.0, beta=0.0, gamma=1.0, noise_variance=0.5,
                                            critic_steps=2, seed=0)
    compressed.adapt(x)
    compressed.compile(optimizer=keras.optimizers.Adam(1e-2), critic_optimizer=keras.optimizers.Adam(1e-3))
    compressed.fit(x, y, batch_size=256, epochs=8, verbose=0)
    w1 = compressed.classifier.get_layer("linear").kernel.numpy()
    # Minimizing the critic's I(X; L + eps) lowers the true one a lot.
    assert _gaussian_mi(w1, 0.5) < 0.5 * _gaussian_mi(w0, 0.5)

    # Layer-by-layer: L = the first layer with alpha 0; the second layer gets no gradient
    # and the frozen third is never touched.
    inputs = keras.Input((3,))
    h1 = keras.layers.Dense(4, activation="relu", name="h1")(inputs)
    h2 = keras.layers.Dense(4, activation="relu", name="h2")(h1)
    out = keras.layers.Dense(2, name="out")(h2)
    net = keras.Model(inputs, out)
    net.get_layer("out").trainable = False
    before = {n: [v.numpy().copy() for v in net.get_layer(n).weights] for n in ("h1", "h2", "out")}
    model = InformationBottleneckModel(net, layer="h1", alpha=0.0, beta=1.0, gamma=1e-3, critic_steps=1, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    changed = {n: any(not np.array_equal(b, v.numpy()) for b, v in zip(before[n], net.get_layer(n).weights))
               for n in before}
    assert changed == {"h1": True, "h2": False, "out": False}


def test_save_and_load_round_trip_keeps_critics_and_settings(tmp_path):
    x, y = _data(256, 2)
    model = InformationBottleneckModel(_linear(2, np.eye(2, dtype=np.float32)), alpha=1.0, beta=0.5, gamma=0.01,
                                       noise_variance=1.5, critic_steps=2, seed=3)
    model.adapt(x)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    path = str(tmp_path / "ib.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, InformationBottleneckModel)
    for key in ("alpha", "beta", "gamma", "noise_variance", "critic_steps", "seed", "layer"):
        assert getattr(loaded, key) == getattr(model, key), key
    for a, b in zip(model.x_regularizer.weights + model.y_regularizer.weights,
                    loaded.x_regularizer.weights + loaded.y_regularizer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(gamma=-1.0), "Expected `gamma` >= 0. Received: gamma=-1.0"),
        (dict(noise_variance=0.0), "Expected `noise_variance` > 0"),
        (dict(critic_steps=0), "Expected `critic_steps` >= 1"),
        (dict(layer="conv7"), "Expected `layer` to name one of the classifier's layers"),
        (dict(x_regularizer="mine"), "Expected `x_regularizer` to be a MutualInformationRegularizer"),
    ],
)
def test_bad_arguments_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        InformationBottleneckModel(_linear(2, np.eye(2, dtype=np.float32)), **changes)


def test_aa_mine_copy_follows_the_network_and_reaches_the_closed_form():
    from tfinfo.critics import ArchitectureAwareCritic

    w = np.diag([2.0, 1.0]).astype(np.float32)
    x, y = _data(4096, 2)
    model = InformationBottleneckModel(_linear(2, w), x_critic="aa_mine", alpha=1.0, noise_variance=0.5,
                                       critic_steps=4, seed=0)
    critic = model.x_regularizer.critic
    assert isinstance(critic, ArchitectureAwareCritic)
    model.adapt(x)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), critic_optimizer=keras.optimizers.Adam(1e-3))

    seen = []

    class BeforeStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(model.classifier.get_layer("linear").kernel.numpy().copy())

    history = model.fit(x, y, batch_size=256, epochs=12, verbose=0, callbacks=[BeforeStep()])
    kernel = model.classifier.get_layer("linear").kernel.numpy()
    assert not np.array_equal(kernel, w)  # the network trained
    # The copy holds the network's weights as they were at the last critic update.
    np.testing.assert_array_equal(critic.feature_network.weights[0].numpy(), seen[-1])
    # Trained with CE the layer moves a little; the estimate tracks its closed form.
    assert history.history["i_x"][-1] == pytest.approx(_gaussian_mi(seen[-1], 0.5), rel=0.2)


@pytest.mark.parametrize("x_critic", ["mine", "aa_mine"])
def test_mixed_float16_scales_both_losses_and_keeps_the_statistics_in_float32(x_critic):
    x, y = _data(64, 3)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
        net = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        model = InformationBottleneckModel(net, alpha=1.0, beta=0.5, gamma=0.1, critic_steps=2, x_critic=x_critic,
                                           seed=0)
        model.adapt(x)
        model.compile(optimizer=keras.optimizers.SGD(1e-2), critic_optimizer=keras.optimizers.SGD(1e-2))
        critics = [getattr(r.critic, "head", r.critic) for r in (model.x_regularizer, model.y_regularizer)]
        before = [v.numpy().copy() for c in critics for v in c.trainable_variables]
        history = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The network and the critics in half precision, both updated through loss scaling
    # (an unscaled half-precision gradient would be divided by the scale, 2^15).
    assert net.get_layer("hidden").compute_dtype == "float16"
    assert all(c.compute_dtype == "float16" for c in critics)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.critic_optimizer, keras.optimizers.LossScaleOptimizer)
    after = [v.numpy() for c in critics for v in c.trainable_variables]
    assert min(np.abs(a - b).max() for a, b in zip(after, before)) > 1e-5  # every critic variable moved
    # The bounds' state (MINE's moving averages) and the input statistics are float32.
    for regularizer in (model.x_regularizer, model.y_regularizer):
        assert regularizer.compute_dtype == "float32"
        assert regularizer.log_moving_average.dtype == "float32"
    assert all(np.isfinite(v[-1]) for v in history.values())
    assert all(w.dtype == "float32" for w in model.weights if "float" in w.dtype)
