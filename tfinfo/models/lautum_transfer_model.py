"""Pre-transfer training with Lautum regularization: `CE(source) - lambda * L(w; x_target)`."""

import keras
import tensorflow as tf

from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import OptimizerBuiltAtCompileMixin
from tfinfo.regularizers.lautum import LautumRegularizer


@keras.saving.register_keras_serializable(package="tfinfo")
class LautumTransferModel(OptimizerBuiltAtCompileMixin, ClassifierWrapper):
    """Wraps a classifier; `fit` trains it on source labels while maximizing Lautum information.

    Each training batch is `((x_source, x_target), y_source)`: labeled source images and
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
        super().__init__(**kwargs)
        if resample_projection not in ("epoch", "step"):
            raise ValueError(
                "Expected `resample_projection` to be 'epoch' or 'step'. "
                f"Received: resample_projection={resample_projection!r}"
            )
        self.classifier = classifier
        input_shape = tuple(classifier.input_shape[1:])
        num_outputs = int(classifier.output_shape[-1])
        if regularizer is None:
            regularizer = LautumRegularizer(num_outputs=num_outputs, input_shape_hint=input_shape)
        if regularizer.num_outputs != num_outputs:
            raise ValueError(
                f"Expected a regularizer projecting {num_outputs} logits. "
                f"Received: regularizer.num_outputs={regularizer.num_outputs}"
            )
        if not regularizer.built:
            regularizer.build((None,) + input_shape)
        self.regularizer = regularizer
        self.lautum_weight = float(lautum_weight)
        self.resample_projection = resample_projection
        self.proxy_training = bool(proxy_training)
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.lautum_tracker = keras.metrics.Mean(name="lautum")
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.bound_tracker = keras.metrics.Mean(name="bound_active")
        self.shrinkage_tracker = keras.metrics.Mean(name="shrinkage")

    def _trained_variables(self):
        return self.classifier.trainable_variables

    def adapt(self, x_unlabeled, **kwargs):
        """Computes the target statistics (`Sigma_x`) once. See `LautumRegularizer.adapt`."""
        self.regularizer.adapt(x_unlabeled, **kwargs)

    def make_train_function(self, force=False):
        # Refused before the first step (and before anything is written), rather than a
        # regularizer that silently whitens with the identity.
        if not bool(self.regularizer.adapted.numpy()):
            raise ValueError(
                "Expected `adapt(x_unlabeled)` before `fit` (it estimates the target "
                "statistics Sigma_x). Received: a LautumTransferModel whose regularizer "
                "was never adapted"
            )
        return super().make_train_function(force=force)

    @property
    def metrics(self):
        return [
            self.total_tracker,
            self.ce_tracker,
            self.lautum_tracker,
            self.accuracy_tracker,
            self.bound_tracker,
            self.shrinkage_tracker,
        ] + self.compiled_metrics()

    def jacobian_proxy(self, x, training=True):
        """Returns `(logits, w)`: `w_i = d(r . f(x_i)) / d x_i` for each sample.

        The samples are independent through the network (no batch statistics), so the
        gradient of the batch sum gives every per-sample gradient in one backward pass.
        Call inside an outer `GradientTape` for the double backprop.
        """
        x = tf.cast(x, tf.float32)
        with tf.GradientTape() as inner:
            inner.watch(x)
            logits = self.classifier(x, training=training)
            projected = tf.reduce_sum(tf.cast(logits, tf.float32) * self.regularizer.projection)
        return logits, inner.gradient(projected, x)

    def train_step(self, data):
        (x_source, x_target), y_source, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.resample_projection == "step":
            self.regularizer.resample_projection()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.classifier(x_source, training=True)
            # Divided by the number of replicas for the cross-replica gradient sum (as
            # Keras divides compiled losses); `ce_value` is not.
            ce, ce_value = self.replica_cross_entropy(y_source, logits, sample_weight)
            _, w = self.jacobian_proxy(x_target, training=self.proxy_training)
            # The regularizer all-gathers the replicas' batches: every replica holds the
            # global value, and its gradient is summed over the replicas.
            surrogate, lautum = self.regularizer((x_target, w), training=True)
            loss = ce - self.lautum_weight * surrogate / replicas
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed precision
        grads = tape.gradient(scaled_loss, variables)
        # Double backprop leaves some variables (e.g. the last bias) without a gradient
        # from the regularizer; they still get the CE gradient. Drop true Nones only.
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply_gradients(pairs)
        ce = ce_value
        self.total_tracker.update_state(ce - self.lautum_weight * lautum)
        self.ce_tracker.update_state(ce)
        self.lautum_tracker.update_state(lautum)
        self.accuracy_tracker.update_state(y_source, logits, sample_weight=sample_weight)
        self.bound_tracker.update_state(self.regularizer.bound_active)
        self.shrinkage_tracker.update_state(self.regularizer.shrinkage)
        return self.compute_metrics(x_source, y_source, logits, sample_weight)

    def get_config(self):
        config = {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "regularizer": keras.saving.serialize_keras_object(self.regularizer),
            "lautum_weight": self.lautum_weight,
            "resample_projection": self.resample_projection,
            "proxy_training": self.proxy_training,
        }
        base_config = super().get_config()
        return {**base_config, **config}
