"""`RegularizedTransferModel`: one train step for any sum of penalty terms.

The step is checked against a hand-written float64 step (plain numpy, linear model), the
logs against their definition, and the composition (Lautum + MMD, a toy term) end to end.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.fixtures.make_transfer_fixtures import SHAPE
from tests.models.fixtures.make_transfer_fixtures import data
from tfinfo.critics import ConcatCritic
from tfinfo.models import LautumTransferModel
from tfinfo.models import RegularizedTransferModel
from tfinfo.penalties import LautumPenalty
from tfinfo.penalties import MMDPenalty
from tfinfo.penalties import MutualInformationPenalty
from tfinfo.penalties import Penalty
from tfinfo.penalties import PenaltyTerm
from tfinfo.regularizers import LautumRegularizer
from tfinfo.regularizers import MMDRegularizer
from tfinfo.regularizers import MutualInformationRegularizer


class MeanSquaredLogits(PenaltyTerm):
    """A toy term, defined here alone: the mean squared source logit."""

    name = "logit_l2"
    needs = ("source_logits",)

    def penalty(self, inputs):
        value = tf.reduce_mean(tf.square(tf.cast(inputs["source_logits"], tf.float32)))
        return Penalty(value, value)


def _classifier(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    features = keras.layers.Dense(8, activation="relu", name="features")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(features))


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def _numpy_step(kernel, bias, xs, ys, lr, weight):
    """One SGD step of CE + weight * mean(logits^2) on a linear model, in float64."""
    x = xs.reshape(len(xs), -1).astype(np.float64) / 255.0
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_logits = p.copy()
    d_logits[np.arange(len(ys)), ys] -= 1.0
    d_logits /= len(ys)
    d_logits += weight * 2.0 * logits / logits.size
    return kernel - lr * x.T @ d_logits, bias - lr * d_logits.sum(0)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_one_step_is_the_gradient_of_ce_plus_the_weighted_term(weight):
    xs, ys, xt = data(n=20)
    classifier = _linear()
    kernel = classifier.get_layer("logits").kernel.numpy().astype(np.float64)
    bias = classifier.get_layer("logits").bias.numpy().astype(np.float64)
    model = RegularizedTransferModel(classifier, terms=[MeanSquaredLogits(weight=weight)])
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    logs = model.train_on_batch((xs, xt), ys, return_dict=True)
    expected_kernel, expected_bias = _numpy_step(kernel, bias, xs, ys, 0.5, weight)
    np.testing.assert_allclose(classifier.get_layer("logits").kernel.numpy(), expected_kernel, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(classifier.get_layer("logits").bias.numpy(), expected_bias, rtol=1e-4, atol=1e-6)
    assert logs["loss"] == pytest.approx(logs["ce"] + weight * logs["logit_l2"], rel=1e-5)


def test_lautum_and_mmd_compose_with_each_logged_and_the_loss_their_signed_sum():
    xs, ys, xt = data()
    lautum = LautumPenalty(LautumRegularizer(num_outputs=4, input_shape_hint=SHAPE, seed=0), weight=0.02)
    mmd = MMDPenalty(MMDRegularizer(), weight=0.3)
    model = RegularizedTransferModel(_classifier(), terms=[lautum, mmd])
    model.adapt(xt)
    model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=[keras.metrics.SparseTopKCategoricalAccuracy(2)])
    history = model.fit(tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20), epochs=2, verbose=0).history
    assert {"loss", "ce", "accuracy", "lautum", "bound_active", "shrinkage", "mmd",
            "sparse_top_k_categorical_accuracy"} <= set(history)
    assert "critic_loss" not in history
    for epoch in range(2):  # means of a linear combination: the combination of the means
        expected = history["ce"][epoch] - 0.02 * history["lautum"][epoch] + 0.3 * history["mmd"][epoch]
        assert history["loss"][epoch] == pytest.approx(expected, rel=1e-4, abs=1e-5)
        assert history["lautum"][epoch] > 0.0 and history["mmd"][epoch] > 0.0
    assert int(lautum.regularizer.step.numpy()) == 2 * -(-len(xs) // 20)  # the Lautum state moved each step


def test_a_model_with_terms_round_trips_its_config_and_a_keras_file(tmp_path):
    xs, ys, xt = data()
    terms = [
        MutualInformationPenalty(MutualInformationRegularizer(ConcatCritic((8,)), seed=0), weight=0.1, critic_steps=2),
        LautumPenalty(LautumRegularizer(num_outputs=4, input_shape_hint=SHAPE, seed=0), weight=0.01,
                      resample_projection="step", proxy_training=False),
    ]
    model = RegularizedTransferModel(_classifier(), terms=terms)
    model.adapt(xt)
    model.compile(optimizer="adam", critic_optimizer=keras.optimizers.Adam(1e-3))
    model.fit(tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20), epochs=1, verbose=0)
    config = model.get_config()
    clone = RegularizedTransferModel.from_config(config)
    assert json.loads(json.dumps(clone.get_config())) == json.loads(json.dumps(config))  # tuples read as lists
    assert [t.name for t in clone.terms] == ["mi", "lautum"] and clone.critic_steps == 2
    assert clone.terms[1].resample_projection == "step" and clone.terms[1].proxy_training is False
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(xs[:8], verbose=0), model.predict(xs[:8], verbose=0), rtol=1e-6)
    for saved, restored in zip(model.terms, loaded.terms):
        for a, b in zip(saved.regularizer.weights, restored.regularizer.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(loaded.critic_optimizer.iterations.numpy()) == 2 * -(-len(xs) // 20)  # 2 critic updates a step


def test_the_thin_constructor_is_the_general_model_with_one_term():
    xs, ys, xt = data(n=20)
    runs = []
    for build in ("thin", "general"):
        regularizer = LautumRegularizer(num_outputs=4, input_shape_hint=SHAPE, seed=0)
        if build == "thin":
            model = LautumTransferModel(_classifier(), regularizer, lautum_weight=0.05)
        else:
            model = RegularizedTransferModel(_classifier(), terms=[LautumPenalty(regularizer, weight=0.05)])
        model.adapt(xt)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        logs = model.train_on_batch((xs, xt), ys, return_dict=True)
        runs.append((logs, [w.numpy() for w in model.classifier.weights]))
    assert isinstance(LautumTransferModel(_classifier()), RegularizedTransferModel)
    for key in ("loss", "ce", "lautum"):
        assert runs[0][0][key] == pytest.approx(runs[1][0][key], rel=1e-6)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bad_terms_and_calls_are_refused_with_the_reason():
    classifier = _classifier()
    with pytest.raises(ValueError, match="PenaltyTerm"):
        RegularizedTransferModel(classifier, terms=[MMDRegularizer()])
    with pytest.raises(ValueError, match="distinct names"):
        RegularizedTransferModel(classifier, terms=[MMDPenalty(), MMDPenalty()])
    with pytest.raises(ValueError, match="at most one term needing the Jacobian proxy"):
        RegularizedTransferModel(classifier, terms=[LautumPenalty(), LautumPenalty()])
    with pytest.raises(ValueError, match="weight"):
        MMDPenalty(weight=-1.0)
    model = RegularizedTransferModel(classifier, terms=[MMDPenalty()])
    with pytest.raises(ValueError, match="critic term"):
        model.set_phase("critic")
    with pytest.raises(ValueError, match="critic_optimizer"):
        model.compile(optimizer="adam", critic_optimizer="adam")
    model.compile(optimizer="adam")
    xs, ys, _ = data(n=20)
    with pytest.raises(ValueError, match=r"\(x_source, x_target\)"):
        model.train_on_batch(xs, ys)
    lautum = RegularizedTransferModel(_classifier(), terms=[LautumPenalty()])
    lautum.compile(optimizer="adam")
    with pytest.raises(ValueError, match="adapt"):
        lautum.fit(tf.data.Dataset.from_tensor_slices(((xs, xs), ys)).batch(10), epochs=1, verbose=0)
