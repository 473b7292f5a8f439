import keras
import numpy as np
import pytest

from tfinfo.models.layer_by_layer import train_layer_by_layer


def _mlp():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu", name="h1")(inputs)
    h = keras.layers.Dense(6, activation="relu", name="h2")(h)
    out = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inputs, out)


def _blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = 3.0 * np.eye(3, 4)
    return (centers[y] + 0.5 * rng.standard_normal((n, 4))).astype(np.float32), y


class _Snapshots(keras.callbacks.Callback):
    def __init__(self, net):
        super().__init__()
        self.net, self.after_stage = net, []

    def on_train_end(self, logs=None):
        self.after_stage.append({l.name: [w.numpy().copy() for w in l.weights] for l in self.net.layers if l.weights})


def test_each_stage_trains_its_layer_and_earlier_layers_stay_frozen():
    net = _mlp()
    initial = {l.name: [w.numpy().copy() for w in l.weights] for l in net.layers if l.weights}
    x, y = _blobs()
    snapshots = _Snapshots(net)
    result = train_layer_by_layer(net, x, y, beta=1e-3, critic_steps=2, epochs_per_layer=2, readout_epochs=60,
                                  readout_learning_rate=1e-2, critic_warmup=4,
                                  batch_size=50, callbacks=[snapshots], seed=0)
    assert result.layers == ["h1", "h2", "out"]
    stages = snapshots.after_stage[:3]  # the readout's fit does not use the callbacks

    def same(a, b):
        return all(np.array_equal(u, v) for u, v in zip(a, b))

    previous = initial
    for i, name in enumerate(result.layers):
        assert not same(stages[i][name], previous[name]), f"{name} did not train in its stage"
        for earlier in result.layers[:i]:
            assert same(stages[i][earlier], previous[earlier]), f"{earlier} changed in stage {name}"
        for later in result.layers[i + 1:]:
            assert same(stages[i][later], previous[later]), f"{later} changed before its stage"
        previous = stages[i]
    assert all(not layer.trainable for layer in net.layers)
    assert set(result.histories) == {"h1", "h2", "out"} and len(result.histories["h2"]["i_y"]) == 2
    # Every stage's fresh critics were warmed up alone first (4 critic-only steps each).
    assert {name: [e["step"] for e in w] for name, w in result.warmups.items()} == {
        name: [1, 2, 3, 4] for name in ("h1", "h2", "out")}
    # The post-trained readout classifies the easy blobs; the IB stages kept label information.
    x_test, y_test = _blobs(300, seed=1)
    accuracy = np.mean(np.argmax(result.model.predict(x_test, verbose=0), -1) == y_test)
    assert accuracy > 0.9
    assert result.model.layers[-1].name == "readout"


def test_bad_arguments_are_refused():
    x, y = _blobs(20)
    with pytest.raises(ValueError, match=r"Expected `layers` among the classifier's layers"):
        train_layer_by_layer(_mlp(), x, y, layers=["h9"])
    with pytest.raises(ValueError, match="Expected `epochs_per_layer` >= 1"):
        train_layer_by_layer(_mlp(), x, y, epochs_per_layer=0)
    with pytest.raises(ValueError, match="Expected `y` to be 20 integer labels"):
        train_layer_by_layer(_mlp(), x, y.astype(np.float32))


def test_build_layer_stage_freezes_the_other_layers_and_compiles_both_optimizers():
    from tfinfo.models.layer_by_layer import build_layer_stage

    net = _mlp()
    x, _ = _blobs(64)
    optimizer, critic_optimizer = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.2, momentum=0.9)
    model = build_layer_stage(net, "h2", x, beta=0.01, critic_steps=3, x_critic="aa_mine", seed=2,
                              optimizer=optimizer, critic_optimizer=critic_optimizer)
    assert [layer.name for layer in net.layers if layer.trainable and layer.weights] == ["h2"]
    assert (model.layer, model.alpha, model.beta, model.gamma, model.critic_steps) == ("h2", 0.0, 1.0, 0.01, 3)
    assert model.optimizer is optimizer and model.critic_optimizer is critic_optimizer
    # Built at compile time (in the caller's strategy scope), on their own variables.
    assert optimizer.built and critic_optimizer.built
    assert len(critic_optimizer.variables) > len(model._critic_variables())  # momenta of the critics
    # The critic's copy is layers 1..2 of the network, synced by `adapt`.
    copy = model.x_regularizer.critic.feature_network.weights
    np.testing.assert_array_equal(copy[2].numpy(), net.get_layer("h2").kernel.numpy())
