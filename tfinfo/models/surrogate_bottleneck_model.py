"""Cross-entropy plus a surrogate information-bottleneck penalty (seed 004, section 6.3)."""

import keras
import tensorflow as tf

from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import OptimizerBuiltAtCompileMixin
from tfinfo.models.classifier_wrapper import representation_and_logits_model
from tfinfo.regularizers.conditional_log_variance import ConditionalLogVarianceRegularizer


@keras.saving.register_keras_serializable(package="tfinfo")
class SurrogateBottleneckModel(OptimizerBuiltAtCompileMixin, ClassifierWrapper):
    """`CE + weight * R(Z)`, with `Z` the output of a (noisy) bottleneck layer.

    Kirsch et al. (seed 004) replace `I(X; Z)` by cheap upper-bound surrogates of the
    entropy `H[Z]` of a representation made stochastic with zero-entropy noise
    (`Z = Z_hat + eps`, `Var eps = 1/(2 pi e)`, a `tfinfo.layers.ZeroEntropyNoise`
    layer in the classifier): the activation L2 `E||Z||^2`, the log-variance
    `sum_i 1/2 ln(2 pi e Var[Z_i])`, and the conditional log-variance `E_y sum_i 1/2
    ln(2 pi e Var[Z_i | y])`, which estimates `H[Z|Y]` and so leaves the label
    information alone. The regularizer is one of `ActivationL2Regularizer`,
    `LogVarianceRegularizer` or `ConditionalLogVarianceRegularizer` (the last is called
    with the labels).

    Distribution, XLA and mixed precision. The three surrogates compute in float32 and,
    under a `tf.distribute` strategy, return the value of the global batch on every
    replica (they all-gather or all-reduce across replicas; gradients flow through);
    this step divides the penalty by the number of replicas, as Keras divides compiled
    losses, so that the summed replica gradients are the single-device gradient of the
    global batch. A `ZeroEntropyNoise` layer draws each sample's noise at its position in
    the global batch, so one epoch on several replicas equals one epoch on one device.
    Under a mixed-precision policy the loss is scaled by the optimizer
    (`LossScaleOptimizer.scale_loss`) before the gradient. The logs are unscaled
    global-batch values.

    Args:
        classifier: a functional `keras.Model` from inputs to logits.
        regularizer: the surrogate layer (for exact distributed training, one that
            returns the global-batch value on every replica, as the three above do).
        layer: name of the layer whose output is `Z` (typically the `ZeroEntropyNoise`
            layer after the bottleneck).
        weight: the penalty's weight (seed 004's gamma).
        **kwargs: base `keras.Model` arguments.

    Call arguments:
        inputs: a batch of inputs; returns the classifier's logits.
        training: passed to the classifier.

    Example:

    >>> model = SurrogateBottleneckModel(classifier, LogVarianceRegularizer(),
    ...                                  layer="bottleneck_noise", weight=0.01)
    >>> model.compile(optimizer="adam")
    >>> model.fit(x_train, y_train, epochs=10)

    Reference:
        A. Kirsch, C. Lyle and Y. Gal, "Unpacking information bottlenecks: surrogate
        objectives for deep learning" (seed 004), sections 6.1 and 6.3.
    """

    nested_config_keys = ("classifier", "regularizer")

    def __init__(self, classifier, regularizer, layer, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        if not float(weight) >= 0:
            raise ValueError(f"Expected `weight` >= 0. Received: weight={weight}")
        if not isinstance(regularizer, keras.layers.Layer):
            raise ValueError(f"Expected `regularizer` to be a surrogate layer. Received: {regularizer!r}")
        self._representation_and_logits = representation_and_logits_model(classifier, layer)
        self.classifier = classifier
        self.regularizer = regularizer
        self.layer = layer
        self.weight = float(weight)
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.surrogate_tracker = keras.metrics.Mean(name="surrogate")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True

    @property
    def metrics(self):
        return [self.total_tracker, self.ce_tracker, self.surrogate_tracker, self.accuracy_tracker]

    def _trained_variables(self):
        return self.classifier.trainable_variables

    def train_step(self, data):
        x, y = data[0], data[1]
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # A compiled loss is already divided by the number of replicas (Keras); the plain CE is not.
        ce_is_scaled = getattr(self, "loss", None) is not None
        variables = self._trained_variables()
        with tf.GradientTape() as tape:
            z, logits = self._representation_and_logits(x, training=True)
            z = tf.reshape(tf.cast(z, tf.float32), [tf.shape(z)[0], -1])
            ce = tf.cast(self.cross_entropy(y, logits), tf.float32)
            if not ce_is_scaled:
                ce = ce / replicas
            if isinstance(self.regularizer, ConditionalLogVarianceRegularizer):
                penalty = self.regularizer(z, y)
            else:
                penalty = self.regularizer(z)
            penalty = tf.cast(penalty, tf.float32)
            loss = ce + self.weight * penalty / replicas
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed precision
        grads = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        ce_value = ce * replicas
        self.total_tracker.update_state(ce_value + self.weight * penalty)
        self.ce_tracker.update_state(ce_value)
        self.surrogate_tracker.update_state(penalty)
        self.accuracy_tracker.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "regularizer": keras.saving.serialize_keras_object(self.regularizer),
            "layer": self.layer,
            "weight": self.weight,
        }
        base_config = super().get_config()
        return {**base_config, **config}
