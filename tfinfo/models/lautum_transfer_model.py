"""Pre-transfer training with Lautum regularization: `CE(source) - lambda * L(w; x_target)`."""

import keras

from tfinfo.models.regularized_transfer_model import RegularizedTransferModel
from tfinfo.penalties.lautum_penalty import LautumPenalty


@keras.saving.register_keras_serializable(package="tfinfo")
class LautumTransferModel(RegularizedTransferModel):
    """Wraps a classifier; `fit` trains it on source labels while maximizing Lautum information.

    A `RegularizedTransferModel` with one `LautumPenalty`. Each training batch is `((x_source, x_target), y_source)`: labeled source images and
    as many unlabeled target images. The loss is
    `CE(y_source, f(x_source)) - lautum_weight * L(w; x_target)` where `w` is the input
    gradient of the randomly projected logits (double backprop) and `L` comes from a
    `LautumRegularizer`. `call` is the classifier's, so `predict`, `evaluate` on
    `(x, y)` and `export` serve the classifier alone.

    Logged per epoch (means): `loss`, `ce`, `lautum` (nats), `accuracy` (on the source
    batch), plus `bound_active` (share of steps where a canonical correlation was at the
    bound) and `shrinkage` (the identity prior's weight in the moving covariance). Add
    `tfinfo.callbacks.LautumProbe` for an estimate of L from scratch on fixed images.

    Under a `tf.distribute` strategy the regularizer all-gathers the replicas' target
    batches and Jacobian proxies, so the moving covariance, its inverses and the
    value are the global batch's and every replica writes the same state; the Lautum
    term and a plain CE are divided by the number of replicas (a compiled loss already
    is), so a step applies the single-device gradient of the global batch. Under a mixed
    precision policy the classifier (and the double backprop) runs in half precision,
    the regularizer's inputs in float32 and its statistics in float64, and the loss is scaled by the optimizer
    (`LossScaleOptimizer.scale_loss`) before the gradient. A train step compiles with
    XLA (`compile(jit_compile=True)`).

    Args:
        classifier: a Keras model from images to logits.
        regularizer: a `LautumRegularizer` (default: one with `num_outputs` taken from the
            classifier and the paper's EMA decay 0.999, fast mode).
        lautum_weight: lambda in true nats for a mean CE: the paper's lambda (eq. 9 in
            doubled nats, eq. 13 with the CE summed over N images) is `ours * N / 2`.
        resample_projection: `"epoch"` (via the `ProjectionResampler` callback, which
            `fit` users add) or `"step"` (a fresh `r` at every step, inside `train_step`).
        proxy_training: run the classifier in training mode (dropout, input noise) for
            the Jacobian proxy `w` (True), or in inference mode (False), so that `w`
            depends on the weights and `x` only. See docs/results.md for the ablation.

    Call arguments:
        inputs: images for the classifier, or a training pair `(x_source, x_target)`,
            for which the source logits are returned (Keras builds compiled losses
            this way under a distribution strategy).
        training: passed to the classifier.

    Example:

    >>> classifier = build_classifier("small", input_shape=(28, 28, 1))
    >>> model = LautumTransferModel(classifier, lautum_weight=0.01)
    >>> model.adapt(x_unlabeled)
    >>> model.compile(optimizer="adam",
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model.fit(transfer_dataset(...), epochs=5, callbacks=[ProjectionResampler()])

    Reference:
        Jakubovitz et al., seed 000, eq. (13).
    """

    nested_config_keys = ("classifier", "regularizer")

    def __init__(
        self,
        classifier,
        regularizer=None,
        lautum_weight=1.0,
        resample_projection="epoch",
        proxy_training=True,
        **kwargs,
    ):
        term = LautumPenalty(regularizer, lautum_weight, resample_projection, proxy_training)
        super().__init__(classifier, terms=[term], **kwargs)
        self.regularizer = term.regularizer

    @property
    def lautum_weight(self):
        return self.terms[0].weight

    @lautum_weight.setter
    def lautum_weight(self, value):
        self.terms[0].weight = float(value)

    @property
    def resample_projection(self):
        return self.terms[0].resample_projection

    @property
    def proxy_training(self):
        return self.terms[0].proxy_training

    @proxy_training.setter
    def proxy_training(self, value):
        self.terms[0].proxy_training = bool(value)

    def get_config(self):
        return {
            **self.base_config(),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "regularizer": keras.saving.serialize_keras_object(self.regularizer),
            "lautum_weight": self.lautum_weight,
            "resample_projection": self.resample_projection,
            "proxy_training": self.proxy_training,
        }
