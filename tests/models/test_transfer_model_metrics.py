"""The transfer models honour `compile(metrics=...)` and `sample_weight`, as a Keras user expects."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.fixtures.make_transfer_fixtures import SHAPE
from tests.models.fixtures.make_transfer_fixtures import data
from tfinfo.critics import ConcatCritic
from tfinfo.models import LautumTransferModel
from tfinfo.models import MMDTransferModel
from tfinfo.models import MutualInformationTransferModel
from tfinfo.regularizers import LautumRegularizer
from tfinfo.regularizers import MMDRegularizer
from tfinfo.regularizers import MutualInformationRegularizer


def _classifier():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    features = keras.layers.Dense(8, activation="relu", name="features")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(features))


def _model(name, xt, penalty=0.0, compiled_loss=True, metrics=None):
    keras.utils.set_random_seed(0)
    classifier = _classifier()
    if name == "lautum":
        model = LautumTransferModel(classifier, LautumRegularizer(num_outputs=4, input_shape_hint=SHAPE, seed=0),
                                    lautum_weight=penalty)
    elif name == "mi":
        model = MutualInformationTransferModel(
            classifier, MutualInformationRegularizer(ConcatCritic((8,)), seed=0), mi_weight=penalty)
    else:
        model = MMDTransferModel(classifier, MMDRegularizer(), mmd_weight=penalty)
    if name != "mmd":
        model.adapt(xt)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if compiled_loss else None
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, metrics=metrics)
    return model


def _weighted_ce(logits, y, w):
    """Keras's reduction: sum of w * CE over the batch, divided by the batch size (float64)."""
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return float(np.sum(w * -log_p[np.arange(len(y)), y]) / len(y))


def _top2(logits, y):
    return float(np.mean([label in np.argsort(row)[-2:] for row, label in zip(logits, y)]))


@pytest.mark.parametrize("name", ["lautum", "mi", "mmd"])
def test_compiled_metrics_are_logged_in_fit_and_evaluate(name):
    xs, ys, xt = data()
    model = _model(name, xt, penalty=0.01, metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    history = model.fit(tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20), epochs=2, verbose=0).history
    assert len(history["top2"]) == 2 and all(0.0 <= v <= 1.0 for v in history["top2"])
    assert {"loss", "ce", "accuracy"} <= set(history)
    # On fixed weights the compiled metric is the top-2 accuracy of the served logits.
    result = model.evaluate(xs, ys, batch_size=20, verbose=0, return_dict=True)
    logits = model.predict(xs, verbose=0)
    assert result["top2"] == pytest.approx(_top2(logits, ys), abs=1e-6)
    assert result["ce"] == pytest.approx(_weighted_ce(logits, ys, np.ones(len(ys))), rel=1e-5)


@pytest.mark.parametrize("name", ["lautum", "mi", "mmd"])
@pytest.mark.parametrize("compiled_loss", [True, False])
def test_sample_weight_weights_the_source_ce_its_gradient_and_the_accuracy(name, compiled_loss):
    xs, ys, xt = data()
    xs, ys, xt = xs[:20], ys[:20], xt[:20]
    weights = np.where(np.arange(20) < 10, 2.0, 0.0).astype(np.float32)
    model = _model(name, xt, compiled_loss=compiled_loss)
    logits = model.predict(xs, verbose=0)  # no dropout or noise: the step's logits
    logs = model.train_on_batch((xs, xt), ys, sample_weight=weights, return_dict=True)
    assert logs["ce"] == pytest.approx(_weighted_ce(logits, ys, weights), rel=1e-5)
    correct = (logits.argmax(1) == ys).astype(np.float64)
    assert logs["accuracy"] == pytest.approx(np.sum(weights * correct) / np.sum(weights), abs=1e-6)
    # Zero weight on every source image (and no penalty): no CE gradient, weights unchanged.
    model = _model(name, xt, compiled_loss=compiled_loss)
    before = [v.numpy() for v in model.classifier.trainable_variables]
    model.train_on_batch((xs, xt), ys, sample_weight=np.zeros(20, np.float32))
    for a, v in zip(before, model.classifier.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())
    # Evaluate weights the same way.
    result = model.evaluate(xs, ys, sample_weight=weights, batch_size=20, verbose=0, return_dict=True)
    assert result["ce"] == pytest.approx(_weighted_ce(model.predict(xs, verbose=0), ys, weights), rel=1e-5)
