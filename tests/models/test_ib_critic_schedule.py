"""InformationBottleneckModel's critic schedule: a fresh minibatch per critic update
(Algorithm 1 of seed 003), same-batch reuse as an option, held-out logged estimates,
the critic warm-up (appendix C), `train_copy`, and the new arguments' configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.callbacks.critic_warmup import CriticWarmup
from tfinfo.callbacks.critic_warmup import estimate_settled
from tfinfo.critics import ArchitectureAwareCritic
from tfinfo.critics import ConcatCritic
from tfinfo.models.information_bottleneck_model import InformationBottleneckModel
from tfinfo.regularizers import MutualInformationRegularizer

CALLS = []  # (update_state, row ids, bound value) of every x-regularizer call, eager steps only


class _RecordingRegularizer(MutualInformationRegularizer):
    """Records the rows (column 0 holds the row id) each call of the critic sees."""

    def call(self, inputs, training=None, update_state=None):
        bound = super().call(inputs, training=training, update_state=update_state)
        if tf.executing_eagerly():
            CALLS.append((bool(update_state), sorted(np.asarray(inputs[0])[:, 0].astype(int).tolist()),
                          float(bound.value)))
        return bound


def _data(n, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[:, 0] = np.arange(n)  # the row id
    return x, (x[:, 1] > 0).astype(np.int64)


def _net(d=3, trainable=True):
    inputs = keras.Input((d,))
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    net = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    for layer in net.layers:
        layer.trainable = trainable
    return net


def _recording_model(critic_batches, critic_steps=3, **kwargs):
    regularizer = _RecordingRegularizer(ConcatCritic((8,)), estimator="mine", seed=0)
    model = InformationBottleneckModel(_net(), x_regularizer=regularizer, alpha=1.0, beta=0.5, gamma=0.1,
                                       noise_variance=0.5, critic_steps=critic_steps, critic_batches=critic_batches,
                                       seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01), critic_optimizer=keras.optimizers.SGD(0.01),
                  run_eagerly=True)
    return model


def test_fresh_batches_give_every_critic_update_and_the_network_step_rows_of_their_own():
    x, y = _data(32)
    model = _recording_model("fresh")
    assert model.batch_size_for(4) == 16
    CALLS.clear()
    history = model.fit(x, y, batch_size=model.batch_size_for(4), epochs=1, shuffle=False, verbose=0).history
    assert len(CALLS) == 2 * 4  # 2 steps x (3 critic updates + the network step's estimate)
    for step in range(2):
        calls = CALLS[4 * step : 4 * step + 4]
        assert [update for update, _, _ in calls] == [True, True, True, False]
        rows = [set(r) for _, r, _ in calls]
        assert all(len(r) == 4 for r in rows)
        # The interleaved parts of the step's batch: disjoint, together the whole batch.
        assert set().union(*rows) == set(range(16 * step, 16 * step + 16))
        assert sum(len(r) for r in rows) == 16
        assert rows[0] == {16 * step + i for i in (0, 4, 8, 12)}
    # The logged estimate is the network step's, on rows no critic trained on this step.
    assert history["i_x"][-1] == pytest.approx(np.mean([CALLS[3][2], CALLS[7][2]]), rel=1e-5)


def test_reuse_trains_every_update_on_the_whole_batch_and_logs_the_estimate_taken_before():
    x, y = _data(32)
    model = _recording_model("reuse")
    assert model.batch_size_for(4) == 4
    CALLS.clear()
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    # Per step: the held-out estimate first (critics of the previous step), then the 3
    # critic updates, then the network step's term (not logged).
    assert len(CALLS) == 2 * 5
    for step in range(2):
        calls = CALLS[5 * step : 5 * step + 5]
        assert [update for update, _, _ in calls] == [False, True, True, True, False]
        assert all(set(r) == set(range(16 * step, 16 * step + 16)) for _, r, _ in calls)
    assert history["i_x"][-1] == pytest.approx(np.mean([CALLS[0][2], CALLS[5][2]]), rel=1e-5)


def test_a_batch_too_small_for_its_parts_is_refused():
    x, y = _data(8)
    model = _recording_model("fresh")
    with pytest.raises(ValueError, match=r"Expected batches of at least 2 \* \(critic_steps \+ 1\) = 8 rows"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_warm_up_trains_only_the_critics_and_logs_the_estimate_per_step():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1200, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    inputs = keras.Input((2,))
    net = keras.Model(inputs, keras.layers.Dense(2, name="linear",
                                                 kernel_initializer=keras.initializers.Constant(np.diag([2.0, 1.0])))(
        inputs))
    model = InformationBottleneckModel(net, alpha=1.0, beta=1.0, gamma=0.1, noise_variance=0.5, critic_steps=2,
                                       critic_warmup=30, seed=0)
    model.adapt(x)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), critic_optimizer=keras.optimizers.Adam(3e-3))
    before = [w.numpy().copy() for w in net.weights]
    warmup = model.warm_up(x, y, batch_size=model.batch_size_for(40))
    # The network is held fixed during the warm-up; the critics made 30 x 2 updates.
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, net.weights))
    assert int(model.optimizer.iterations.numpy()) == 0
    assert int(model.critic_optimizer.iterations.numpy()) == 60
    assert model.phase == "alternate" and model.critics_warmed_up
    # One held-out estimate per warm-up step; the critics learn (true I(X; L + eps) = 1.65 nats).
    assert [e["step"] for e in model.warmup_history] == list(range(1, 31)) == [e["step"] for e in warmup.estimates]
    first = np.mean([e["i_x"] for e in model.warmup_history[:5]])
    last = np.mean([e["i_x"] for e in model.warmup_history[-5:]])
    assert last > first + 0.3 and all(np.isfinite(e["i_y"]) for e in model.warmup_history)
    # `fit` then trains the network from its first step, and does not warm up again.
    model.fit(x, y, batch_size=model.batch_size_for(40), epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 10
    assert not np.array_equal(before[0], net.weights[0].numpy())
    assert len(model.warmup_history) == 30


def test_critic_warmup_makes_fit_warm_up_first_once_per_model():
    x, y = _data(120)
    model = InformationBottleneckModel(_net(), alpha=1.0, critic_steps=1, critic_warmup=4, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=20, epochs=2, verbose=0).history
    steps = 2 * 6
    assert len(history["loss"]) == 2  # the warm-up does not count in `epochs`
    assert len(model.warmup_history) == 4
    assert int(model.optimizer.iterations.numpy()) == steps
    assert int(model.critic_optimizer.iterations.numpy()) == 4 + steps
    model.fit(x, y, batch_size=20, epochs=1, verbose=0)
    assert int(model.critic_optimizer.iterations.numpy()) == 4 + steps + 6


def test_settle_stops_when_the_window_means_agree():
    assert not estimate_settled([1.0] * 9, window=5, rtol=0.05, atol=0.0)
    assert estimate_settled([1.0] * 10, window=5, rtol=0.05, atol=0.0)
    rising = list(np.linspace(0.0, 2.0, 10))
    assert not estimate_settled(rising, window=5, rtol=0.05, atol=0.02)
    assert estimate_settled([0.0] * 5 + [1.0, 1.02, 0.98, 1.0, 1.0] * 2, window=5, rtol=0.05, atol=0.02)

    x, y = _data(400)
    model = InformationBottleneckModel(_net(trainable=False), critic_steps=1, seed=0)
    model.adapt(x)
    model.compile(optimizer="sgd", critic_optimizer=keras.optimizers.Adam(1e-3))
    warmup = model.warm_up(x, y, batch_size=40, steps="settle", window=5, rtol=0.1, atol=0.05, max_steps=300)
    assert warmup.settled and 10 <= warmup.steps_done < 300


@pytest.mark.parametrize("train_copy", [False, True])
def test_train_copy_is_honoured(train_copy):
    x, y = _data(64)
    net = _net(trainable=False)  # measurement: only the critics learn
    critic = ArchitectureAwareCritic.from_network(net, 2, hidden_units=(8,), train_copy=train_copy)
    model = InformationBottleneckModel(net, x_regularizer=MutualInformationRegularizer(critic, estimator="mine"),
                                       critic_steps=2, critic_batches="reuse", seed=0)
    model.adapt(x)
    model.compile(optimizer="sgd", critic_optimizer=keras.optimizers.SGD(0.02))
    copy = critic.feature_network.weights
    assert (set(map(id, copy)) <= set(map(id, model._critic_variables()))) == train_copy
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    trained = [w.numpy().copy() for w in copy]
    # The network moves (by hand) before the next step.
    new = [w.numpy() + 1.0 for w in net.weights]
    for w, value in zip(net.weights, new):
        w.assign(value)
    model.fit(x[32:], y[32:], batch_size=32, epochs=1, verbose=0)
    if train_copy:
        # Part of the critic (Algorithm 1's theta): trained, never re-synced to the network.
        distance_to_trained = max(np.abs(c.numpy() - t).max() for c, t in zip(copy, trained))
        distance_to_network = min(np.abs(c.numpy() - n).max() for c, n in zip(copy, new))
        assert distance_to_trained < 0.2 and distance_to_network > 0.8
        assert max(np.abs(t - (n - 1.0)).max() for t, n in zip(trained, new)) > 1e-4  # it did train
    else:
        for c, n in zip(copy, new):  # re-synced before the step's critic updates, not trained
            np.testing.assert_array_equal(c.numpy(), n)


def test_new_arguments_round_trip_and_old_configs_load_with_defaults():
    model = InformationBottleneckModel(_net(), critic_steps=2, critic_batches="reuse", critic_warmup="settle",
                                       representation_mode="training", seed=1)
    config = model.get_config()
    assert (config["critic_batches"], config["critic_warmup"], config["representation_mode"]) == (
        "reuse", "settle", "training")
    loaded = InformationBottleneckModel.from_config(config)
    assert (loaded.critic_batches, loaded.critic_warmup, loaded.representation_mode) == ("reuse", "settle", "training")
    old = {k: v for k, v in config.items() if k not in ("critic_batches", "critic_warmup", "representation_mode")}
    loaded = InformationBottleneckModel.from_config(old)
    assert (loaded.critic_batches, loaded.critic_warmup, loaded.representation_mode) == ("fresh", 0, "inference")


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(critic_batches="same"), r"Expected `critic_batches` to be one of \('fresh', 'reuse'\)"),
        (dict(critic_warmup=-1), "Expected `critic_warmup` to be an integer >= 0 or 'settle'. Received: critic_warm"),
        (dict(critic_warmup="auto"), "Expected `critic_warmup` to be an integer >= 0 or 'settle'"),
        (dict(representation_mode="eval"), r"Expected `representation_mode` to be one of \('inference', 'training'\)"),
    ],
)
def test_bad_schedule_arguments_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        InformationBottleneckModel(_net(), **changes)


def test_bad_warmup_callback_arguments_and_models_are_refused():
    with pytest.raises(ValueError, match="Expected `steps` >= 1 or 'settle'"):
        CriticWarmup(0)
    with pytest.raises(ValueError, match="Expected `window` to be an integer >= 1. Received: window=0"):
        CriticWarmup(window=0)
    plain = _net()
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = _data(8)
    with pytest.raises(ValueError, match="Expected a model with a critic phase"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[CriticWarmup(2)])
