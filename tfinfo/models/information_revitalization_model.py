"""CTC stage 2, information revitalization: `CE + beta * L_IRS` against a frozen bank."""

import keras
import tensorflow as tf

from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import OptimizerBuiltAtCompileMixin
from tfinfo.models.classifier_wrapper import features_and_logits_model
from tfinfo.models.information_aggregation_model import InformationAggregationModel
from tfinfo.models.model_arguments import batch_images
from tfinfo.models.model_arguments import check_number
from tfinfo.models.model_arguments import global_batch


def _copy_layer(layer, input_shape):
    """A new layer with `layer`'s config and weights (it owns its variables)."""
    copy = keras.layers.deserialize(keras.layers.serialize(layer))
    if not copy.built:
        copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="tfinfo")
class InformationRevitalizationModel(OptimizerBuiltAtCompileMixin, ClassifierWrapper):
    """CTC stage 2: trains a classifier with `CE + beta * L_IRS` (information revitalization).

    The information bank is a frozen copy of the stage-1 network: it maps images to
    unit-norm representations `t_1_hat` and never trains (`trainable = False`, run with
    `training=False`, outside the gradient tape). The classifier being trained gives
    `t_2`, the L2-normalized `projection_head` output on its `feature_layer`. `L_IRS` is
    the InfoNCE loss of matching each `t_2` to the bank's representation of the same
    image among the batch's, in-batch negatives, positives on the diagonal:

        L_IRS = mean_i [ logsumexp_j (t2_i . t1_hat_j / T) - t2_i . t1_hat_i / T ]

    so `log(B) - L_IRS` is the InfoNCE lower bound on `I(t_2; t_1_hat)` for a batch of `B`
    (at most `log B` nats). Raising it keeps the input information aggregated in stage 1
    while CE keeps compressing (CTC's argument).

    Given the stage-1 `InformationAggregationModel`, the bank is its
    `build_information_bank()` (copies of the classifier up to the features and of the
    head, taken now), and the default `projection_head` is a trainable copy of the
    stage-1 head, so that `t_2` and `t_1_hat` start in the same space (CTC's pseudo code
    extracts both with the same function, `information_bank = net`). The classifier is
    normally the stage-1 classifier itself, which continues training. Given a Keras
    model instead, it is used as the bank (it must share no variable with the
    classifier), and the default head is none: `t_2` is the normalized features.

    Each training batch is `(x, y)` or `((x, index), y)` (the index is ignored). `call`,
    `predict`, `evaluate` and `export` serve the classifier alone.

    Distribution and mixed precision. Under a `tf.distribute` strategy each replica
    all-gathers `t_2` (gradients flow back to its own rows) and `t_1_hat` of the global
    batch, so the in-batch negatives are those of the global batch and `L_IRS` is the
    single-device value; it is divided by the number of replicas in the loss, as Keras
    divides compiled losses. Representations are normalized in float32 whatever the
    dtype policy, and the loss is scaled by the optimizer
    (`LossScaleOptimizer.scale_loss`) under mixed precision.

    Logged per epoch (means over batches): `loss` (`ce + beta * irs`), `ce`, `irs`
    (`L_IRS`, nats), `accuracy`; global-batch values.

    Args:
        classifier: a functional Keras model from images to logits with a layer named
            `feature_layer`.
        information_bank: the stage-1 `InformationAggregationModel`, or a functional Keras
            model from images to representations `t_1_hat`.
        beta: weight of `L_IRS` (1.0 in the paper).
        temperature: T of the softmax (0.07).
        projection_head: a Keras layer from features to `t_2` (trainable), or None for
            the default above.
        feature_layer: name of the classifier layer whose output feeds the head.

    Call arguments:
        inputs: images for the classifier, or a training pair `(x, index)`, for which
            the logits of `x` are returned (Keras calls the model this way to build
            compiled losses under a distribution strategy).
        training: passed to the classifier.

    Example:

    >>> stage_1 = InformationAggregationModel(classifier, num_examples=len(x_source))
    >>> stage_1.compile(optimizer="adam")
    >>> stage_1.fit(indexed_dataset(x_source, y_source, batch_size=64), epochs=200)
    >>> stage_2 = InformationRevitalizationModel(classifier, information_bank=stage_1)
    >>> stage_2.compile(optimizer=keras.optimizers.Adam(1e-4))
    >>> stage_2.fit(labeled_dataset(x_source, y_source, batch_size=64, shuffle=True),
    ...             epochs=100)  # logs loss, ce, irs, accuracy; then fine-tune as usual

    Reference:
        Cui et al., "Discriminability-Transferability Trade-Off: An Information-Theoretic
        Perspective" (ECCV 2022), seed 002, Algorithm 1 (A.5) and section 5;
        van den Oord et al. 2018 (InfoNCE).
    """

    nested_config_keys = ("classifier", "information_bank", "projection_head")

    def __init__(
        self,
        classifier,
        information_bank,
        beta=1.0,
        temperature=0.07,
        projection_head=None,
        feature_layer="features",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.beta = check_number("beta", beta, 0.0)
        self.temperature = check_number("temperature", temperature, 0.0, low_inclusive=False)
        self.feature_layer = feature_layer
        self._features_and_logits = features_and_logits_model(classifier, feature_layer)
        self.classifier = classifier
        features_shape = (None, int(self._features_and_logits.outputs[0].shape[-1]))

        if projection_head is not None and not isinstance(projection_head, keras.layers.Layer):
            raise ValueError(
                "Expected `projection_head` to be a Keras layer or None. "
                f"Received: projection_head of type {type(projection_head).__name__}"
            )
        if isinstance(information_bank, InformationAggregationModel):
            if projection_head is None and information_bank.projection_head is not None:
                projection_head = _copy_layer(information_bank.projection_head, features_shape)
            information_bank = information_bank.build_information_bank()
        elif not isinstance(information_bank, keras.Model):
            raise ValueError(
                "Expected `information_bank` to be an InformationAggregationModel or a Keras model. "
                f"Received: information_bank of type {type(information_bank).__name__}"
            )
        own = {id(v) for v in classifier.weights}
        if projection_head is not None:
            own |= {id(v) for v in projection_head.weights}
        shared = [v.path for v in information_bank.weights if id(v) in own]
        if shared:
            # Freezing such a bank would freeze those layers of the classifier too.
            raise ValueError(
                "Expected `information_bank` to share no variable with `classifier` or "
                "`projection_head` (pass the stage-1 InformationAggregationModel, which is "
                f"copied, or a copy). Received: shared variables {shared[:3]}"
            )
        try:
            bank_shape = tuple(information_bank.output_shape)
            bank_input_shape = tuple(information_bank.input_shape)
        except (AttributeError, ValueError, RuntimeError):
            raise ValueError(
                "Expected `information_bank` to be a built functional model with one input and "
                f"one output. Received: {type(information_bank).__name__} {information_bank.name!r}"
            ) from None
        if bank_input_shape[1:] != tuple(classifier.input_shape[1:]):
            raise ValueError(
                f"Expected `information_bank` to take the classifier's inputs {tuple(classifier.input_shape)}. "
                f"Received: information_bank.input_shape={bank_input_shape}"
            )
        if projection_head is not None:
            if not projection_head.built:
                projection_head.build(features_shape)
            head_shape = tuple(projection_head.compute_output_shape(features_shape))
        else:
            head_shape = features_shape
        if len(bank_shape) != 2 or head_shape[-1] != bank_shape[-1]:
            raise ValueError(
                f"Expected `information_bank` to output (None, {head_shape[-1]}) representations, the size "
                f"of `t_2` ({'projection_head' if projection_head is not None else feature_layer} output). "
                f"Received: information_bank.output_shape={bank_shape}"
            )
        information_bank.trainable = False
        self.information_bank = information_bank
        self.projection_head = projection_head
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.irs_tracker = keras.metrics.Mean(name="irs")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Every component is built; nothing is created on first call.
        self.built = True

    @property
    def metrics(self):
        return [self.total_tracker, self.ce_tracker, self.irs_tracker, self.accuracy_tracker]

    def project(self, features):
        """`t_2`: the L2-normalized head output (float32) on `feature_layer` outputs."""
        if self.projection_head is not None:
            features = self.projection_head(features)
        return tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)

    def revitalization_loss(self, t_2, t_1_hat):
        """`L_IRS`: InfoNCE of `t_2` against `stop_gradient(t_1_hat)`, in-batch negatives.

        Args:
            t_2: `(B, D)` representations of the trained network (normalized here).
            t_1_hat: `(B, D)` the bank's representations of the same images, same order
                (normalized here; no gradient flows into them).

        Returns:
            The mean InfoNCE loss over the batch (nats, float32 scalar).
        """
        t_2 = tf.math.l2_normalize(tf.cast(t_2, tf.float32), axis=-1)
        t_1_hat = tf.math.l2_normalize(tf.cast(tf.stop_gradient(t_1_hat), tf.float32), axis=-1)
        scores = tf.matmul(t_2, t_1_hat, transpose_b=True) / self.temperature
        return tf.reduce_mean(tf.reduce_logsumexp(scores, axis=1) - tf.linalg.diag_part(scores))

    # The classifier's and the projection head's trainable variables, as in stage 1.
    _trained_variables = InformationAggregationModel._trained_variables

    def train_step(self, data):
        x, y = batch_images(data[0]), data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # A compiled loss is already divided by the number of replicas (Keras); the plain CE is not.
        ce_is_scaled = getattr(self, "loss", None) is not None
        t_1_hat = tf.stop_gradient(tf.cast(self.information_bank(x, training=False), tf.float32))
        variables = self._trained_variables()
        with tf.GradientTape() as tape:
            features, logits = self._features_and_logits(x, training=True)
            t_2, t_1_all = global_batch(self.project(features), t_1_hat)
            ce = tf.cast(self.cross_entropy(y, logits), tf.float32)
            if not ce_is_scaled:
                ce = ce / replicas
            irs = self.revitalization_loss(t_2, t_1_all)
            loss = ce + self.beta * irs / replicas
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        ce = ce * replicas
        self.total_tracker.update_state(ce + self.beta * irs)
        self.ce_tracker.update_state(ce)
        self.irs_tracker.update_state(irs)
        self.accuracy_tracker.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        return super().test_step((batch_images(data[0]), data[1]))

    def get_config(self):
        config = {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "information_bank": keras.saving.serialize_keras_object(self.information_bank),
            "beta": self.beta,
            "temperature": self.temperature,
            "projection_head": (
                None if self.projection_head is None else keras.saving.serialize_keras_object(self.projection_head)
            ),
            "feature_layer": self.feature_layer,
        }
        base_config = super().get_config()
        return {**base_config, **config}
