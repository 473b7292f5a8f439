"""Pre-transfer training on source labels with any sum of penalty terms on the target data."""

import keras
import tensorflow as tf

from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import CriticOptimizerMixin
from tfinfo.models.classifier_wrapper import features_and_logits_model
from tfinfo.penalties.penalty_term import PenaltyTerm

PHASES = {"alternate": 0, "critic": 1, "classifier": 2}
FEATURE_INPUTS = ("source_features", "target_features")


@keras.saving.register_keras_serializable(package="tfinfo")
class RegularizedTransferModel(CriticOptimizerMixin, ClassifierWrapper):
    """Wraps a classifier; `fit` trains it on source labels plus weighted penalty terms.

    Each training batch is `((x_source, x_target), y_source)` (optionally with a
    `sample_weight` for the source images): labeled source images and as many unlabeled
    target images. The loss is `CE(y_source, f(x_source)) + sum_k sign_k * weight_k *
    surrogate_k`, one term per `PenaltyTerm` (`LautumPenalty` with sign -1, since Lautum
    information is maximized; `MutualInformationPenalty` and `MMDPenalty` with +1). Each
    term declares the inputs it needs (source/target features, the Jacobian proxy), and
    the model computes each of them once per step. `call` is the classifier's, so
    `predict`, `evaluate` on `(x, y)` and `export` serve the classifier alone.

    A term with a trained critic (MI) gets the critic optimizer
    `compile(critic_optimizer=...)` (default `Adam(1e-4)`): `critic_steps` critic updates
    inside every step before the classifier's, or whole epochs of one or the other
    switched by the `CriticSchedule` callback through `set_phase` ("alternate", "critic",
    "classifier"; kept in the variable `phase`; a change rebuilds the train function,
    because under a distribution strategy optimizer updates cannot sit inside a graph
    conditional). At most one term has a critic and at most one needs the Jacobian proxy.

    Logged per epoch (means): `loss` (= `ce + sum sign * weight * value`), `ce`,
    `accuracy` (source batch), each term's value under its name and the term's extra
    scalars, `critic_loss` with a critic, plus the metrics given to `compile(metrics=...)`.
    The source CE, accuracy and compiled metrics honour `sample_weight`; the penalties
    are on the unlabeled target (and source) images and are not weighted.

    Under a `tf.distribute` strategy the terms see the global batch (their regularizers
    all-gather the replicas' inputs), and the CE (when not a compiled loss, which Keras
    already divides) and every surrogate are divided by the number of replicas, so a
    step applies the single-device gradient of the global batch. Under a mixed precision
    policy the classifier runs in half precision, the regularizers' statistics in float32
    or float64, and both losses are scaled by their optimizers. A train step compiles
    with XLA (`compile(jit_compile=True)`).

    Args:
        classifier: a Keras model from images to logits (functional, with a layer named
            `feature_layer`, when a term needs features).
        terms: a list of `PenaltyTerm`s with distinct names.
        feature_layer: name of the classifier's layer whose output is `z`.
        **kwargs: base `keras.Model` arguments.

    Call arguments:
        inputs: images for the classifier, or a training pair `(x_source, x_target)`,
            for which the source logits are returned (Keras builds compiled losses
            this way under a distribution strategy).
        training: passed to the classifier.

    Example:

    >>> model = RegularizedTransferModel(
    ...     classifier, terms=[LautumPenalty(weight=0.01), MutualInformationPenalty(weight=0.1)])
    >>> model.adapt(x_unlabeled)
    >>> model.compile(optimizer="adam", metrics=["sparse_top_k_categorical_accuracy"])
    >>> model.fit(transfer_dataset(...), epochs=5, callbacks=[ProjectionResampler()])

    Reference:
        Jakubovitz et al., seed 000, eq. (13), (15) and section 5.1.
    """

    nested_config_keys = ("classifier",)
    scale_critic_loss = True  # the critic optimizer is loss-scaled under mixed_float16

    def __init__(self, classifier, terms=(), feature_layer="features", **kwargs):
        super().__init__(**kwargs)
        terms = list(terms)
        for term in terms:
            if not isinstance(term, PenaltyTerm):
                raise ValueError(f"Expected `terms` to be PenaltyTerm instances. Received: {type(term).__name__}")
        proxies = [term for term in terms if "jacobian_proxy" in term.needs]
        if len(proxies) > 1:
            raise ValueError(f"Expected at most one term needing the Jacobian proxy. Received: {len(proxies)}")
        names = [name for term in terms for name in term.log_names]
        if len(set(names)) != len(names) or {"loss", "ce", "accuracy", "critic_loss"} & set(names):
            raise ValueError(
                "Expected `terms` to log distinct names, none of loss/ce/accuracy/critic_loss. "
                f"Received: {names}"
            )
        self.classifier = classifier
        self.feature_layer = feature_layer
        self._needs = frozenset(need for term in terms for need in term.needs)
        self._features_and_logits = None
        self.feature_dim = None
        if self._needs & set(FEATURE_INPUTS):
            self._features_and_logits = features_and_logits_model(classifier, feature_layer)
            self.feature_dim = int(self._features_and_logits.outputs[0].shape[-1])
        for term in terms:
            term.build(self)
        critics = [term for term in terms if term.critic_variables()]
        if len(critics) > 1:
            raise ValueError(f"Expected at most one term with a critic. Received: {[t.name for t in critics]}")
        self._terms = terms
        self._proxy_term = proxies[0] if proxies else None
        self._critic_term = critics[0] if critics else None
        # Tracked (and saved) as the model's layers, under their names.
        self._term_regularizers = [term.regularizer for term in terms if term.regularizer is not None]
        self.critic_optimizer = None
        if self._critic_term is not None:
            self.phase = self.add_weight(name="phase", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self._traced_phase = PHASES["alternate"]
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self._term_trackers = [keras.metrics.Mean(name=name) for name in names]
        self.critic_loss_tracker = keras.metrics.Mean(name="critic_loss") if self._critic_term else None
        # Every component is built; nothing is created on first call.
        self.built = True

    @property
    def terms(self):
        """The penalty terms, in the order they were given."""
        return list(self._terms)

    @property
    def critic_steps(self):
        """Critic updates per step in the "alternate" phase (0 without a critic)."""
        return getattr(self._critic_term, "critic_steps", 0) if self._critic_term is not None else 0

    @property
    def metrics(self):
        own = [self.total_tracker, self.ce_tracker] + self._term_trackers
        if self.critic_loss_tracker is not None:
            own.append(self.critic_loss_tracker)
        return own + [self.accuracy_tracker] + self.compiled_metrics()

    # -- the critic and its schedule --------------------------------------------------
    def has_critic(self):
        """Whether a term trains a critic (then `compile` takes a `critic_optimizer`)."""
        return self._critic_term is not None

    def _critic_variables(self):
        return self._critic_term.critic_variables()

    def set_phase(self, phase):
        """Selects what `train_step` updates: "alternate" (critic then classifier),
        "critic" (critic only) or "classifier" (classifier only, critic fixed).

        The phase is kept in the variable `phase` (saved with the model); a change
        rebuilds the train function, so the next step is traced for the new phase.
        Call it eagerly (e.g. from a callback, as `CriticSchedule` does).
        """
        if self._critic_term is None:
            raise ValueError(f"Expected a model with a critic term for `set_phase`. Received: terms {self.log_names()}")
        if phase not in PHASES:
            raise ValueError(f"Expected `phase` to be one of {sorted(PHASES)}. Received: phase={phase!r}")
        self.phase.assign(PHASES[phase])
        if PHASES[phase] != self._traced_phase and getattr(self, "train_function", None) is not None:
            self.make_train_function(force=True)

    def log_names(self):
        """The names of the terms' logged values."""
        return [tracker.name for tracker in self._term_trackers]

    def make_train_function(self, force=False):
        # Refused before the first step (and before anything is written), rather than a
        # term that silently trains on default statistics.
        for term in self._terms:
            reason = term.ready()
            if reason is not None:
                raise ValueError(
                    f"Expected `adapt(x_unlabeled)` before `fit` ({reason}). "
                    f"Received: a {type(self).__name__} whose {term.name} regularizer was never adapted"
                )
        if self._critic_term is not None:
            # `train_step` branches on the phase in Python: trace it for the current value
            # of the variable (which `set_phase` or a restored checkpoint may have changed).
            phase = int(self.phase.numpy())
            if phase != self._traced_phase:
                self._traced_phase = phase
                force = True
        return super().make_train_function(force=force)

    def adapt(self, x_unlabeled, **kwargs):
        """Target statistics of every term (e.g. Lautum's `Sigma_x`, the critic's scaling)."""
        for term in self._terms:
            term.adapt(x_unlabeled, **kwargs)

    # -- inputs of the terms ----------------------------------------------------------
    def features(self, x, training=False):
        """The classifier's `feature_layer` output on images `x`."""
        if self._features_and_logits is None:
            raise ValueError(
                f"Expected a model with a term that needs features. Received: terms {self.log_names()}"
            )
        return self._features_and_logits(x, training=training)[0]

    def jacobian_proxy(self, x, training=True):
        """Returns `(logits, w)`: `w_i = d(r . f(x_i)) / d x_i` for each sample, `r` the
        projection of the term that needs the proxy.

        The samples are independent through the network (no batch statistics), so the
        gradient of the batch sum gives every per-sample gradient in one backward pass.
        Call inside an outer `GradientTape` for the double backprop.
        """
        _, logits, w = self._proxy_pass(x, training, with_features=False)
        return logits, w

    def _proxy_pass(self, x, training, with_features):
        if self._proxy_term is None:
            raise ValueError(f"Expected a term that needs the Jacobian proxy. Received: terms {self.log_names()}")
        x = tf.cast(x, tf.float32)
        features = None
        with tf.GradientTape() as inner:
            inner.watch(x)
            if with_features:
                features, logits = self._features_and_logits(x, training=training)
            else:
                logits = self.classifier(x, training=training)
            projected = tf.reduce_sum(tf.cast(logits, tf.float32) * self._proxy_term.projection)
        return features, logits, inner.gradient(projected, x)

    def target_forward(self, x_target, needs=None):
        """`(features, w)` on the target batch for the terms' needs (None where unneeded):
        the training-mode features and the Jacobian proxy, from one forward pass when the
        proxy is in training mode too."""
        needs = self._needs if needs is None else needs
        want_features = "target_features" in needs
        if "jacobian_proxy" not in needs:
            features = self._features_and_logits(x_target, training=True)[0] if want_features else None
            return features, None
        training = self._proxy_term.proxy_training
        features, _, w = self._proxy_pass(x_target, training, with_features=want_features and training)
        if want_features and not training:  # the features keep the training mode
            features = self._features_and_logits(x_target, training=True)[0]
        return features, w

    def _inputs(self, x_source, x_target, needs):
        inputs = {"x_source": x_source, "x_target": x_target}
        if "source_features" in needs:
            inputs["source_features"], logits = self._features_and_logits(x_source, training=True)
        else:
            logits = self.classifier(x_source, training=True)
        inputs["source_logits"] = logits
        inputs["target_features"], inputs["jacobian_proxy"] = self.target_forward(x_target, needs)
        return inputs

    # -- training ---------------------------------------------------------------------
    def _critic_update(self, inputs, steps):
        variables = self._critic_term.critic_variables()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = tf.constant(0.0)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = tf.cast(self._critic_term.critic_loss(inputs), tf.float32)
                # The critic's objective is the global batch's, and its gradient is summed
                # over the replicas (through the all-gather and by the optimizer).
                scaled_loss = self.critic_optimizer.scale_loss(loss / replicas)
            grads = tape.gradient(scaled_loss, variables)
            self.critic_optimizer.apply_gradients(zip(grads, variables))
        return loss

    def _classifier_update(self, x_source, y_source, x_target, sample_weight, critic_steps):
        variables = self.classifier.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        critic_loss, values = None, {}
        with tf.GradientTape() as tape:
            inputs = self._inputs(x_source, x_target, self._needs)
            logits = inputs["source_logits"]
            # `ce` is divided by the number of replicas (as Keras divides compiled losses),
            # `ce_value` is not; the terms return global values, divided likewise.
            ce, ce_value = self.replica_cross_entropy(y_source, logits, sample_weight)
            if self._critic_term is not None:
                with tape.stop_recording():
                    critic_loss = self._critic_update(inputs, critic_steps)
            loss = ce
            for term in self._terms:
                penalty = term.penalty(inputs)
                loss = loss + term.sign * term.weight * tf.cast(penalty.surrogate, tf.float32) / replicas
                values[term.name] = tf.stop_gradient(tf.cast(penalty.value, tf.float32))
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed precision
        grads = tape.gradient(scaled_loss, variables)
        # Double backprop leaves some variables (e.g. the last bias) without a gradient
        # from a regularizer; they still get the CE gradient. Drop true Nones only.
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        if self._critic_term is not None and critic_steps == 0:
            critic_loss = -values[self._critic_term.name]
        return ce_value, logits, values, critic_loss

    def _critic_phase(self, x_source, y_source, x_target, sample_weight):
        inputs = self._inputs(x_source, x_target, frozenset(self._critic_term.needs))
        logits = inputs["source_logits"]
        _, ce_value = self.replica_cross_entropy(y_source, logits, sample_weight)
        critic_loss = self._critic_update(inputs, max(self.critic_steps, 1))
        values = {term.name: tf.constant(0.0) for term in self._terms}
        values[self._critic_term.name] = -critic_loss
        return ce_value, logits, values, critic_loss

    def train_step(self, data):
        if getattr(self, "optimizer", None) is None or (self._critic_term is not None and self.critic_optimizer is None):
            raise ValueError(
                "Expected the model to be compiled with `compile(...)` before training. Received: no optimizer"
            )
        x, y_source, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(
                "Expected training batches `((x_source, x_target), y_source)` or with a sample weight. "
                f"Received: x of type {type(x).__name__}"
            )
        x_source, x_target = x
        for term in self._terms:
            term.before_step()
        # The phase is chosen when the step is traced (`make_train_function` retraces when
        # `set_phase` changes it): optimizer updates under a distribution strategy
        # synchronize the replicas, which they cannot do inside a graph conditional.
        if self._traced_phase == PHASES["critic"]:
            ce, logits, values, critic_loss = self._critic_phase(x_source, y_source, x_target, sample_weight)
        else:
            steps = self.critic_steps if self._traced_phase == PHASES["alternate"] else 0
            ce, logits, values, critic_loss = self._classifier_update(x_source, y_source, x_target, sample_weight, steps)
        trackers = {tracker.name: tracker for tracker in self._term_trackers}
        total = ce
        for term in self._terms:
            total = total + term.sign * term.weight * values[term.name]
            trackers[term.name].update_state(values[term.name])
            for name, value in term.logs().items():
                trackers[name].update_state(value)
        self.total_tracker.update_state(total)
        self.ce_tracker.update_state(ce)
        if critic_loss is not None:
            self.critic_loss_tracker.update_state(critic_loss)
        self.accuracy_tracker.update_state(y_source, logits, sample_weight=sample_weight)
        return self.compute_metrics(x_source, y_source, logits, sample_weight)

    def base_config(self):
        """The base `keras.Model` config (name, trainable, dtype) that subclasses extend."""
        return super().get_config()

    def get_config(self):
        return {
            **self.base_config(),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "terms": [keras.saving.serialize_keras_object(term) for term in self._terms],
            "feature_layer": self.feature_layer,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "terms" in config:
            config["terms"] = [keras.saving.deserialize_keras_object(term) for term in config["terms"]]
        return super().from_config(config)
