"""Edges of InformationBottleneckModel's critic schedule: a last batch too small for its
parts, a warm-up that fails, and a warm-up in training mode with batch normalization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.models.information_bottleneck_model import InformationBottleneckModel


def _data(n, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 1] > 0).astype(np.int64)


def _model(net=None, **kwargs):
    if net is None:
        inputs = keras.Input((3,))
        net = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4, activation="tanh")(inputs)))
    model = InformationBottleneckModel(net, alpha=1.0, beta=0.5, gamma=0.1, noise_variance=0.5, critic_steps=3,
                                       seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.05), critic_optimizer=keras.optimizers.SGD(0.05))
    return model


def _weights(model):
    return [v.numpy().copy() for v in model.classifier.weights]


def test_arrays_whose_last_batch_cannot_be_split_are_refused_before_training():
    x, y = _data(36)  # batches of 16: the last has 4 rows, 4 parts need 8
    model = _model()
    before = _weights(model)
    with pytest.raises(ValueError, match=r"Expected the last batch to hold 0 or at least 2 \* \(critic_steps \+ 1\) "
                                         r"= 8 rows .* Received: 36 training rows, batch_size=16, a last batch of 4"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))
    model.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0)  # 32 rows: two whole batches
    assert int(model.optimizer.iterations) == 2


def test_a_dataset_batch_of_unknown_size_is_checked_when_it_runs():
    x, y = _data(20)  # batches of 16 and 4, their size unknown when traced
    model = _model()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Expected batches of at least 2 \* \(critic_steps \+ 1\) = 8 rows"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)


def test_a_failed_warm_up_leaves_the_model_able_to_train_its_network():
    x, y = _data(32)
    model = _model()
    with pytest.raises(ValueError, match="Expected the step logs to hold"):
        model.warm_up(x, y, batch_size=16, steps=2, monitor=("no_such_log",))
    assert model.phase == "alternate"
    before = _weights(model)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert not all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))


def test_a_training_mode_warm_up_leaves_batch_normalization_statistics_alone():
    inputs = keras.Input((3,))
    hidden = keras.layers.BatchNormalization(name="norm")(keras.layers.Dense(4, activation="tanh")(inputs))
    net = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model = _model(net, representation_mode="training", x_critic="mine")
    x, y = _data(64)
    x = 3.0 * x + 2.0  # statistics far from the initial moving mean 0 and variance 1
    before = _weights(model)
    model.warm_up(x, y, batch_size=16, steps=4)
    assert int(model.critic_optimizer.iterations) == 4 * 3  # the critics trained
    assert int(model.optimizer.iterations) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))  # moving statistics included
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # then training moves them
    norm = model.classifier.get_layer("norm")
    assert not np.allclose(norm.moving_mean.numpy(), 0.0)
