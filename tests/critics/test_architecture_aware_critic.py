"""ArchitectureAwareCritic: the copy of F_i tracks the network, scores, configs, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.critics import ArchitectureAwareCritic
from tfinfo.critics import critic_scores


def _network(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(4),
            keras.layers.Dense(2),
        ]
    )


def _numpy_f2(network, x):
    """Layers 1..2 of `_network` in float64 numpy: relu(x W1 + b1) W2 + b2."""
    (w1, b1), (w2, b2) = network.layers[0].get_weights(), network.layers[1].get_weights()
    x = np.asarray(x, np.float64)
    return np.maximum(x @ w1 + b1, 0.0) @ w2.astype(np.float64) + b2


def _data(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.normal(size=(n, 4)).astype("float32")


def _copy_weights(critic):
    return [np.asarray(w) for w in critic.feature_network.weights]


def _perturb(network, seed):
    rng = np.random.default_rng(seed)
    for w in network.weights:
        w.assign(rng.normal(size=tuple(w.shape)).astype("float32"))


def test_copy_equals_the_network_after_sync_and_after_resync():
    net = _network()
    critic = ArchitectureAwareCritic.from_network(net, layer_index=2, hidden_units=(16,))
    x, z = _data()
    critic((x, z))
    source = [w for layer in net.layers[:2] for w in layer.get_weights()]
    assert len(_copy_weights(critic)) == 4
    for copied, original in zip(_copy_weights(critic), source):
        np.testing.assert_array_equal(copied, original)
    np.testing.assert_allclose(critic.features(x).numpy(), _numpy_f2(net, x), rtol=1e-5, atol=1e-5)

    # The network moves on; the copy does not until it is synced again.
    before = _copy_weights(critic)
    _perturb(net, seed=3)
    for copied, old in zip(_copy_weights(critic), before):
        np.testing.assert_array_equal(copied, old)
    assert not np.allclose(critic.features(x).numpy(), _numpy_f2(net, x), atol=1e-3)

    critic.sync_from(ArchitectureAwareCritic.sub_network(net, 2))
    for copied, layer_weight in zip(_copy_weights(critic), [w for l in net.layers[:2] for w in l.get_weights()]):
        np.testing.assert_array_equal(copied, layer_weight)
    np.testing.assert_allclose(critic.features(x).numpy(), _numpy_f2(net, x), rtol=1e-5, atol=1e-5)

    # A list of layers works as a source too.
    _perturb(net, seed=4)
    critic.sync_from(net.layers[:2])
    np.testing.assert_allclose(critic.features(x).numpy(), _numpy_f2(net, x), rtol=1e-5, atol=1e-5)


def test_copy_shares_no_variable_with_the_network():
    net = _network()
    critic = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(8,))
    critic(_data())
    network_ids = {id(v) for v in net.weights}
    assert not network_ids & {id(v) for v in critic.weights}
    original = net.layers[0].kernel.numpy().copy()
    critic.feature_network.weights[0].assign(np.zeros_like(original))
    np.testing.assert_array_equal(net.layers[0].kernel.numpy(), original)


def test_unbuilt_source_is_copied_when_synced():
    layers = [keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(3)]
    critic = ArchitectureAwareCritic(layers, hidden_units=(8,))
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    critic((x, np.zeros((5, 3), "float32")))
    out = x
    for layer in layers:
        out = layer(out)
    critic.sync_from(layers)
    np.testing.assert_allclose(critic.features(x).numpy(), np.asarray(out), rtol=1e-5, atol=1e-6)


def _one_step(critic, x, z):
    optimizer = keras.optimizers.SGD(0.5)
    with tf.GradientTape() as tape:
        scores = critic_scores(critic, x, z, marginal="all_pairs")
        loss = -(tf.reduce_mean(scores.joint) - tf.math.log(tf.reduce_mean(tf.exp(scores.marginal))))
    grads = tape.gradient(loss, critic.trainable_variables)
    optimizer.apply_gradients(zip(grads, critic.trainable_variables))


def test_frozen_copy_is_not_trained_and_train_copy_is():
    net = _network()
    x, z = _data(n=16)
    frozen = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(8,))
    frozen((x, z))
    head_ids = {id(v) for v in frozen.head.weights}
    assert {id(v) for v in frozen.trainable_variables} == head_ids
    frozen.trainable = False
    frozen.trainable = True  # toggling the critic must not unfreeze the copy
    assert {id(v) for v in frozen.trainable_variables} == head_ids
    before = _copy_weights(frozen)
    _one_step(frozen, x, z)
    for now, then in zip(_copy_weights(frozen), before):
        np.testing.assert_array_equal(now, then)

    trained = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(8,), train_copy=True)
    trained((x, z))
    assert len(trained.trainable_variables) == len(head_ids) + 4
    before = _copy_weights(trained)
    _one_step(trained, x, z)
    assert any(not np.array_equal(now, then) for now, then in zip(_copy_weights(trained), before))
    # Re-sync puts the network's weights back.
    trained.sync_from(net.layers[:2])
    np.testing.assert_allclose(trained.features(x).numpy(), _numpy_f2(net, x), rtol=1e-5, atol=1e-5)


def test_scores_are_the_head_on_copied_features():
    net = _network()
    critic = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(7,))
    x, z = _data()
    matrix = critic.score_matrix(x, z).numpy()
    assert matrix.shape == (7, 7)
    np.testing.assert_allclose(np.diag(matrix), critic((x, z)).numpy(), rtol=1e-5, atol=1e-5)
    # float64 reference: head(relu([f, z] W + b) w + c) with the default identity normalization.
    f = _numpy_f2(net, x)
    (w, b), (v, c) = critic.head.hidden_layers[0].get_weights(), critic.head.output_layer.get_weights()
    for i, j in [(0, 6), (3, 1), (5, 5)]:
        joint = np.concatenate([f[i], z[j].astype(np.float64)])
        expected = (np.maximum(joint @ w + b, 0.0) @ v + c)[0]
        assert matrix[i, j] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    shuffled = critic_scores(critic, x, z, marginal="shuffle", seed=0)
    assert shuffled.joint.shape == (7,) and shuffled.marginal.shape == (7,)


def test_adapt_normalizes_both_inputs_alike():
    net = _network()
    critic = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(5,))
    x, _ = _data(n=50)
    z = _numpy_f2(net, x) + np.random.default_rng(2).normal(size=(50, 4))
    critic.build(((None, 6), (None, 4)))
    critic.adapt(x, z)
    np.testing.assert_allclose(critic.feature_mean.numpy(), z.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(critic.feature_std.numpy(), z.std(0), rtol=1e-5)
    features, zn = critic._normalized(tf.constant(x), tf.constant(z, tf.float32))
    np.testing.assert_allclose(zn.numpy(), (z - z.mean(0)) / z.std(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features.numpy(), (_numpy_f2(net, x) - z.mean(0)) / z.std(0), rtol=1e-4, atol=1e-4)


def test_flattened_inputs_reach_a_conv_copy_in_their_shape():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    hidden = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(hidden))
    net = keras.Model(inputs, outputs)
    critic = ArchitectureAwareCritic.from_network(net, 3, hidden_units=(8,))
    x = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype("float32")
    flat = critic.features(x.reshape(5, 16)).numpy()
    np.testing.assert_allclose(flat, net(x).numpy(), rtol=1e-5, atol=1e-6)
    assert critic.score_matrix(x.reshape(5, 16), np.zeros((5, 3), "float32")).shape == (5, 5)


def test_config_round_trip_and_save_load(tmp_path):
    net = _network()
    critic = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(16, 8), activation="leaky_relu", train_copy=True)
    x, z = _data()
    critic((x, z))
    config = critic.get_config()
    assert config["feature_network"]["class_name"] in ("Functional", "Sequential")
    assert config["train_copy"] is True and config["hidden_units"] == [16, 8]
    clone = ArchitectureAwareCritic.from_config(config)
    clone((x, z))
    assert clone.get_config() == config
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in critic.weights]
    clone.set_weights(critic.get_weights())
    np.testing.assert_allclose(clone((x, z)).numpy(), critic((x, z)).numpy(), rtol=1e-6)

    # Through keras's own serialization and a .keras file.
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(critic))
    assert isinstance(again, ArchitectureAwareCritic) and again.get_config() == config
    inputs = (keras.Input((6,)), keras.Input((4,)))
    model = keras.Model(inputs, critic(inputs))
    path = tmp_path / "aa_critic.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded((x, z)).numpy(), critic((x, z)).numpy(), rtol=1e-6)
    loaded_critic = [layer for layer in loaded.layers if isinstance(layer, ArchitectureAwareCritic)][0]
    for a, b in zip(loaded_critic.feature_network.weights, critic.feature_network.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda net: ArchitectureAwareCritic.from_network(net, 0), r"Expected `layer_index` to be an int in \[1, 3\].*Received: layer_index=0"),
        (lambda net: ArchitectureAwareCritic.from_network(net, 4), r"Expected `layer_index`.*Received: layer_index=4"),
        (lambda net: ArchitectureAwareCritic.from_network(net, 1.5), r"Expected `layer_index`.*Received: layer_index=1.5"),
        (lambda net: ArchitectureAwareCritic.sub_network("net", 1), r"Expected `network` to be a Keras model.*Received: network='net'"),
        (lambda net: ArchitectureAwareCritic("dense"), r"Expected `feature_network` to be a Keras model.*Received: feature_network='dense'"),
        (lambda net: ArchitectureAwareCritic([]), r"Expected `feature_network`.*Received: feature_network=\[\]"),
        (lambda net: ArchitectureAwareCritic(net, train_copy="yes"), r"Expected `train_copy` to be a bool. Received: train_copy='yes'"),
        (lambda net: ArchitectureAwareCritic(net, hidden_units="huge"), r"Expected `hidden_units`.*Received: hidden_units='huge'"),
    ],
)
def test_bad_arguments_raise_expected_received(make, match):
    with pytest.raises(ValueError, match=match):
        make(_network())


def test_mismatched_sync_and_z_size_raise_expected_received():
    net = _network()
    critic = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(4,))
    x, z = _data()
    critic((x, z))
    with pytest.raises(ValueError, match=r"Expected `network` to have the weights of the copied sub-network .*Received: 6 arrays"):
        critic.sync_from(net)
    with pytest.raises(ValueError, match=r"Expected `network` to be a model, a layer or a list of layers. Received: 3"):
        critic.sync_from(3)
    fresh = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(4,))
    with pytest.raises(ValueError, match=r"Expected `z` to have the size of the copied sub-network's output \(4 .*Received: z shape=\(7, 3\)"):
        fresh((x, z[:, :3]))
    with pytest.raises(ValueError, match=r"Expected a built critic"):
        ArchitectureAwareCritic.from_network(net, 2).adapt(x)


def test_head_follows_the_critic_dtype_and_the_copy_keeps_the_network_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        network = _network()
        critic = ArchitectureAwareCritic.from_network(network, 2, dtype="float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x, z = _data()
    critic((x, z))
    assert critic.head.dtype_policy.name == "float32"
    # The copy computes F_2 as the network does, in its layers' own precision.
    dense = [layer for layer in critic.feature_network.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.compute_dtype for layer in dense] == ["float16"] * 2
    expected = ArchitectureAwareCritic.sub_network(network, 2)(x)
    assert expected.dtype == tf.float16
    np.testing.assert_array_equal(critic.features(x).numpy(), np.asarray(expected, np.float32))
