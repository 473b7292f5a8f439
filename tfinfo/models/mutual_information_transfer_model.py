"""Pre-transfer training with MI regularization: `CE(source) + lambda * I(x_target; z_target)`."""

import keras
import tensorflow as tf

from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import CriticOptimizerMixin
from tfinfo.models.classifier_wrapper import features_and_logits_model
from tfinfo.regularizers.lautum import LautumRegularizer
from tfinfo.regularizers.mutual_information import MutualInformationRegularizer

PHASES = {"alternate": 0, "critic": 1, "classifier": 2}


@keras.saving.register_keras_serializable(package="tfinfo")
class MutualInformationTransferModel(CriticOptimizerMixin, ClassifierWrapper):
    """Wraps a classifier; `fit` trains it on source labels while lowering `I(x_t; z_t)`.

    Each training batch is `((x_source, x_target), y_source)`. `z_t` is the output of
    the classifier's layer `feature_layer` (the penultimate features) on the unlabeled
    target images, and `I(x_t; z_t)` is estimated by the critic of a
    `MutualInformationRegularizer`. The loss of the classifier step is
    `CE(y_source, f(x_source)) + mi_weight * I(x_t; z_t)` (and, with a
    `lautum_regularizer`, `- lautum_weight * L(w; x_t)` as well: seed 000's Lautum+MI).

    The critic has its own optimizer (`compile(critic_optimizer=...)`) on its own
    variables, and the classifier step holds it fixed. Two alternation schedules:
    `critic_steps` critic updates inside every `train_step` before the classifier update
    (seed 003; each on a fresh marginal shuffle of the batch's features), or whole epochs
    of one or the other (seed 000: "alternately"), switched by the `CriticSchedule`
    callback through `set_phase`. `call` is the classifier's, so `predict`, `evaluate`
    and `export` serve the classifier alone.

    Logged per epoch (means): `loss`, `ce`, `mi` (the bound's value, nats),
    `critic_loss` (minus the critic's training objective), `accuracy` (source batch);
    with Lautum also `lautum`, `bound_active`, `shrinkage`.

    The phase is read when the step is traced: `set_phase` (and `fit`, for a phase
    restored from a checkpoint) rebuilds the train function when it changes, because
    under a distribution strategy optimizer updates synchronize the replicas and cannot
    sit inside a graph conditional.

    Under a `tf.distribute` strategy the regularizers score the global batch (the
    replicas' inputs and features are all-gathered, the critic's marginal shuffle is a
    permutation of the global batch drawn alike on every replica, each replica scores its
    own rows), so the bound, MINE's moving average and the Lautum state are the global
    batch's; the MI and Lautum terms, the critic's loss and a plain CE are divided by the
    number of replicas (a compiled loss already is), so each update, of the classifier
    and of the critic, is the single-device update on the global batch. Under a mixed
    precision policy the classifier and the critic compute in half precision, the
    regularizers' statistics and bounds in float32; under `mixed_float16` both losses
    are scaled (`compile` wraps the critic optimizer in a `LossScaleOptimizer` too, as
    Keras wraps `optimizer`). A train step compiles with XLA
    (`compile(jit_compile=True)`) and draws the same shuffles as in graph mode.

    Args:
        classifier: a functional Keras model from images to logits with a layer named
            `feature_layer`.
        regularizer: a `MutualInformationRegularizer` (default: SMILE, tau 5, concat
            critic "small").
        mi_weight: lambda of the MI term.
        critic_steps: critic updates per `train_step` in the "alternate" phase (>= 0).
        feature_layer: name of the layer whose output is `z`.
        lautum_regularizer: optional `LautumRegularizer` for Lautum+MI.
        lautum_weight: lambda of the Lautum term.
        resample_projection: Lautum's projection resampling, "epoch" or "step".
        proxy_training: the classifier's mode (dropout, input noise) for the Lautum
            Jacobian proxy. True: the proxy comes from the target forward pass the MI
            term uses (training mode); False: from a second, inference-mode pass.

    Call arguments:
        inputs: images for the classifier, or a training pair `(x_source, x_target)`,
            for which the source logits are returned (Keras builds compiled losses
            this way under a distribution strategy).
        training: passed to the classifier.

    Example:

    >>> model = MutualInformationTransferModel(classifier, mi_weight=0.1, critic_steps=1)
    >>> model.adapt(x_unlabeled)
    >>> model.compile(optimizer="adam", critic_optimizer=keras.optimizers.Adam(1e-4),
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model.fit(transfer_dataset(...), epochs=5)

    Reference:
        Jakubovitz et al., seed 000, eq. (15)-(16) and section 5.1.
    """

    nested_config_keys = ("classifier", "regularizer", "lautum_regularizer")
    scale_critic_loss = True  # the critic optimizer is loss-scaled under mixed_float16

    def __init__(
        self,
        classifier,
        regularizer=None,
        mi_weight=1.0,
        critic_steps=1,
        feature_layer="features",
        lautum_regularizer=None,
        lautum_weight=0.0,
        resample_projection="epoch",
        proxy_training=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(critic_steps) < 0:
            raise ValueError(f"Expected `critic_steps` >= 0. Received: critic_steps={critic_steps}")
        if resample_projection not in ("epoch", "step"):
            raise ValueError(
                "Expected `resample_projection` to be 'epoch' or 'step'. "
                f"Received: resample_projection={resample_projection!r}"
            )
        self._features_and_logits = features_and_logits_model(classifier, feature_layer)
        self.classifier = classifier
        input_shape = tuple(classifier.input_shape[1:])
        feature_dim = int(self._features_and_logits.outputs[0].shape[-1])
        if regularizer is None:
            regularizer = MutualInformationRegularizer()
        if not isinstance(regularizer, MutualInformationRegularizer):
            raise ValueError(
                f"Expected `regularizer` to be a MutualInformationRegularizer. Received: {type(regularizer).__name__}"
            )
        if not regularizer.built:
            regularizer.build(((None,) + input_shape, (None, feature_dim)))
        self.regularizer = regularizer
        if lautum_regularizer is not None:
            if not isinstance(lautum_regularizer, LautumRegularizer):
                raise ValueError(
                    "Expected `lautum_regularizer` to be a LautumRegularizer or None. "
                    f"Received: {type(lautum_regularizer).__name__}"
                )
            if not lautum_regularizer.built:
                lautum_regularizer.build((None,) + input_shape)
        self.lautum_regularizer = lautum_regularizer
        self.mi_weight = float(mi_weight)
        self.critic_steps = int(critic_steps)
        self.feature_layer = feature_layer
        self.lautum_weight = float(lautum_weight)
        self.resample_projection = resample_projection
        self.proxy_training = bool(proxy_training)
        self.critic_optimizer = None
        self.phase = self.add_weight(name="phase", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self._traced_phase = PHASES["alternate"]
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.mi_tracker = keras.metrics.Mean(name="mi")
        self.critic_loss_tracker = keras.metrics.Mean(name="critic_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if lautum_regularizer is not None:
            self.lautum_tracker = keras.metrics.Mean(name="lautum")
            self.bound_tracker = keras.metrics.Mean(name="bound_active")
            self.shrinkage_tracker = keras.metrics.Mean(name="shrinkage")
        # Every component is built; nothing is created on first call.
        self.built = True

    def _critic_variables(self):
        return self.regularizer.critic.trainable_variables

    # -- schedule ---------------------------------------------------------------------
    def set_phase(self, phase):
        """Selects what `train_step` updates: "alternate" (critic then classifier),
        "critic" (critic only) or "classifier" (classifier only, critic fixed).

        The phase is kept in the variable `phase` (saved with the model); a change
        rebuilds the train function, so the next step is traced for the new phase.
        Call it eagerly (e.g. from a callback, as `CriticSchedule` does).
        """
        if phase not in PHASES:
            raise ValueError(f"Expected `phase` to be one of {sorted(PHASES)}. Received: phase={phase!r}")
        self.phase.assign(PHASES[phase])
        if PHASES[phase] != self._traced_phase and getattr(self, "train_function", None) is not None:
            self.make_train_function(force=True)

    def make_train_function(self, force=False):
        if self.lautum_regularizer is not None and not bool(self.lautum_regularizer.adapted.numpy()):
            raise ValueError(
                "Expected `adapt(x_unlabeled)` before `fit` (the Lautum term needs the "
                "target statistics). Received: a model whose lautum_regularizer was never adapted"
            )
        # `train_step` branches on the phase in Python: trace it for the current value of
        # the variable (which `set_phase` or a restored checkpoint may have changed).
        phase = int(self.phase.numpy())
        if phase != self._traced_phase:
            self._traced_phase = phase
            force = True
        return super().make_train_function(force=force)

    def adapt(self, x_unlabeled):
        """Target statistics: `x` standardization for the critic (and `Sigma_x` for Lautum)."""
        self.regularizer.adapt(x_unlabeled)
        if self.lautum_regularizer is not None:
            self.lautum_regularizer.adapt(x_unlabeled)

    @property
    def metrics(self):
        metrics = [self.total_tracker, self.ce_tracker, self.mi_tracker, self.critic_loss_tracker, self.accuracy_tracker]
        if self.lautum_regularizer is not None:
            metrics += [self.lautum_tracker, self.bound_tracker, self.shrinkage_tracker]
        return metrics + self.compiled_metrics()

    # -- training -------------------------------------------------------------------
    def _target_forward(self, x_target):
        """Features of the target batch, and the Lautum Jacobian proxy when needed."""
        if self.lautum_regularizer is None:
            features, _ = self._features_and_logits(x_target, training=True)
            return features, None
        x_target = tf.cast(x_target, tf.float32)
        with tf.GradientTape() as inner:
            inner.watch(x_target)
            features, logits = self._features_and_logits(x_target, training=self.proxy_training)
            projected = tf.reduce_sum(tf.cast(logits, tf.float32) * self.lautum_regularizer.projection)
        if not self.proxy_training:  # the MI term keeps the training-mode features
            features, _ = self._features_and_logits(x_target, training=True)
        return features, inner.gradient(projected, x_target)

    def _critic_update(self, x_target, features, steps):
        features = tf.stop_gradient(features)
        variables = self.regularizer.critic.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = tf.constant(0.0)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                bound = self.regularizer((x_target, features), training=True)
                loss = -bound.surrogate
                # The bound is the global batch's and its gradient is summed over the
                # replicas (twice: through the all-gather and by the optimizer).
                scaled_loss = self.critic_optimizer.scale_loss(loss / replicas)
            grads = tape.gradient(scaled_loss, variables)
            self.critic_optimizer.apply_gradients(zip(grads, variables))
        return loss

    def _classifier_update(self, x_source, y_source, x_target, critic_steps, sample_weight=None):
        variables = self.classifier.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = self.classifier(x_source, training=True)
            # `ce` is divided by the number of replicas (as Keras divides compiled losses),
            # `ce_value` is not; the regularizers return global values, divided likewise.
            ce, ce_value = self.replica_cross_entropy(y_source, logits, sample_weight)
            features, w = self._target_forward(x_target)
            with tape.stop_recording():
                critic_loss = self._critic_update(x_target, features, critic_steps)
            bound = self.regularizer((x_target, features), training=True, update_state=False)
            if critic_steps == 0:
                critic_loss = -bound.value
            loss = ce + self.mi_weight * bound.surrogate / replicas
            if self.lautum_regularizer is not None:
                lautum_surrogate, lautum = self.lautum_regularizer((x_target, w), training=True)
                loss = loss - self.lautum_weight * lautum_surrogate / replicas
            else:
                lautum = tf.constant(0.0)
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed precision
        grads = tape.gradient(scaled_loss, variables)
        # Double backprop (Lautum) leaves some variables without a regularizer gradient.
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return ce_value, tf.stop_gradient(bound.value), critic_loss, logits, lautum

    def _critic_phase(self, x_source, y_source, x_target, sample_weight=None):
        logits = self.classifier(x_source, training=True)
        _, ce_value = self.replica_cross_entropy(y_source, logits, sample_weight)
        features, _ = self._features_and_logits(x_target, training=True)
        critic_loss = self._critic_update(x_target, features, max(self.critic_steps, 1))
        return ce_value, -critic_loss, critic_loss, logits, tf.constant(0.0)

    def train_step(self, data):
        self._check_compiled()
        (x_source, x_target), y_source, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.lautum_regularizer is not None and self.resample_projection == "step":
            self.lautum_regularizer.resample_projection()
        # The phase is chosen when the step is traced (`make_train_function` retraces when
        # `set_phase` changes it): optimizer updates under a distribution strategy
        # synchronize the replicas, which they cannot do inside a graph conditional.
        phase = self._traced_phase
        if phase == PHASES["critic"]:
            ce, mi, critic_loss, logits, lautum = self._critic_phase(x_source, y_source, x_target, sample_weight)
        else:
            critic_steps = self.critic_steps if phase == PHASES["alternate"] else 0
            ce, mi, critic_loss, logits, lautum = self._classifier_update(
                x_source, y_source, x_target, critic_steps, sample_weight)
        self.total_tracker.update_state(ce + self.mi_weight * mi - self.lautum_weight * lautum)
        self.ce_tracker.update_state(ce)
        self.mi_tracker.update_state(mi)
        self.critic_loss_tracker.update_state(critic_loss)
        self.accuracy_tracker.update_state(y_source, logits, sample_weight=sample_weight)
        if self.lautum_regularizer is not None:
            self.lautum_tracker.update_state(lautum)
            self.bound_tracker.update_state(self.lautum_regularizer.bound_active)
            self.shrinkage_tracker.update_state(self.lautum_regularizer.shrinkage)
        return self.compute_metrics(x_source, y_source, logits, sample_weight)

    def get_config(self):
        config = {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "regularizer": keras.saving.serialize_keras_object(self.regularizer),
            "mi_weight": self.mi_weight,
            "critic_steps": self.critic_steps,
            "feature_layer": self.feature_layer,
            "lautum_regularizer": (
                None
                if self.lautum_regularizer is None
                else keras.saving.serialize_keras_object(self.lautum_regularizer)
            ),
            "lautum_weight": self.lautum_weight,
            "resample_projection": self.resample_projection,
            "proxy_training": self.proxy_training,
        }
        base_config = super().get_config()
        return {**base_config, **config}
