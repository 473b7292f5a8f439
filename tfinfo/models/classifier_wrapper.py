"""The part every transfer model shares: it wraps a classifier and serves it alone."""

import copy

import keras
import tensorflow as tf


def features_and_logits_model(classifier, feature_layer):
    """`keras.Model(inputs, [features, logits])` sharing the classifier's own layers.

    A single input is passed as a tensor, not a one-element list, so that calls on a
    batch of images match the model's input structure.
    """
    try:
        features = classifier.get_layer(feature_layer).output
    except (ValueError, AttributeError):
        names = [layer.name for layer in getattr(classifier, "layers", [])]
        raise ValueError(
            f"Expected `classifier` to be a functional model with a layer named {feature_layer!r} "
            f"(`feature_layer`). Received: feature_layer={feature_layer!r}, layers {names}"
        ) from None
    if len(features.shape) != 2:
        raise ValueError(
            f"Expected the output of layer {feature_layer!r} to be of rank 2 (samples, features). "
            f"Received: shape={tuple(features.shape)}"
        )
    inputs = classifier.inputs[0] if len(classifier.inputs) == 1 else classifier.inputs
    return keras.Model(inputs, [features, classifier.outputs[0]], name="features_and_logits")


def representation_and_logits_model(classifier, layer=None):
    """`keras.Model(inputs, [output of layer, logits])` sharing the classifier's layers;
    `layer=None` takes the logits themselves as the representation."""
    if layer is None:
        representation = classifier.outputs[0]
    else:
        try:
            representation = classifier.get_layer(layer).output
        except ValueError:
            names = [lay.name for lay in classifier.layers]
            raise ValueError(
                f"Expected `layer` to name one of the classifier's layers {names}. Received: layer={layer!r}"
            ) from None
    inputs = classifier.inputs[0] if len(classifier.inputs) == 1 else classifier.inputs
    return keras.Model(inputs, [representation, classifier.outputs[0]], name="representation_and_logits")


def _single_input(model):
    """Whether `model` is a built Keras model with exactly one input."""
    try:
        return len(model.inputs) == 1
    except (AttributeError, TypeError, ValueError):
        return False


class ClassifierWrapper(keras.Model):
    """Base of the transfer models: `call`, `export`, `test_step` and CE are the classifier's.

    Subclasses set `self.classifier` and the trackers `total_tracker`, `ce_tracker` and
    `accuracy_tracker`, and implement `train_step`. `evaluate` on `(x, y)` reports CE
    (as `loss` and `ce`) and accuracy of the classifier; `predict` and `export` serve
    the classifier alone (the regularizers and critics are training-only).

    `replica_cross_entropy` gives the CE divided for the cross-replica gradient sum of a
    `tf.distribute` strategy (as Keras divides compiled losses) and undivided for logs;
    `call` on a training pair `(x_source, x_target)` answers with the source logits
    (Keras builds compiled losses so under a strategy).

    `from_config` deserializes the constructor arguments named in `nested_config_keys`
    (Keras objects serialized by the subclass's `get_config`) before calling the class.
    """

    nested_config_keys = ("classifier",)

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Keras's deserialization edits nested configs in place
        for key in cls.nested_config_keys:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def call(self, inputs, training=None):
        # Under a distribution strategy Keras builds compiled losses by calling the model
        # symbolically on the `x` of a training batch, which for the transfer models is
        # the pair `(x_source, x_target)`: a single-input classifier answers with the
        # logits of the first element.
        if isinstance(inputs, (tuple, list)) and len(inputs) == 2 and _single_input(self.classifier):
            inputs = inputs[0]
        return self.classifier(inputs, training=training)

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """Exports the classifier alone."""
        return self.classifier.export(filepath, format=format, verbose=verbose, **kwargs)

    def cross_entropy(self, y, logits, sample_weight=None):
        """The compiled loss if any, else sparse categorical CE on logits.

        With `sample_weight`, the mean over the batch of the weighted per-sample CE
        (Keras's "sum_over_batch_size" reduction, as compiled losses reduce).
        """
        if getattr(self, "loss", None) is not None:
            return self.compute_loss(y=y, y_pred=logits, sample_weight=sample_weight)
        per_sample = tf.cast(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True), tf.float32)
        if sample_weight is not None:
            per_sample = per_sample * tf.reshape(tf.cast(sample_weight, tf.float32), tf.shape(per_sample))
        return tf.reduce_mean(per_sample)

    def replica_cross_entropy(self, y, logits, sample_weight=None):
        """This replica's CE as `(for_gradient, value)`, both float32.

        Under a `tf.distribute` strategy the replicas' gradients are summed, so Keras
        divides compiled losses by the number of replicas in sync: `for_gradient` is
        divided so (the compiled loss already is, the plain CE is divided here), and
        `value` is the undivided CE for logging. A penalty added by hand in a train step
        must be divided the same way. Without a strategy both are the CE.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        ce = tf.cast(self.cross_entropy(y, logits, sample_weight), tf.float32)
        if getattr(self, "loss", None) is not None:
            return ce, ce * replicas
        return ce / replicas, ce

    def compiled_metrics(self):
        """The metrics given to `compile(metrics=..., weighted_metrics=...)`, as Keras
        holds them (one container named "compile_metrics"), or `[]`.

        A model that lists its own trackers in `metrics` adds these, so that they are
        reset each epoch and logged; `compute_metrics(x, y, logits, sample_weight)`
        updates them and returns every metric's result.
        """
        return [m for m in super().metrics if m.name == "compile_metrics"]

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = self.classifier(x, training=False)
        _, ce = self.replica_cross_entropy(y, logits, sample_weight)
        self.total_tracker.update_state(ce)
        self.ce_tracker.update_state(ce)
        self.accuracy_tracker.update_state(y, logits, sample_weight=sample_weight)
        results = self.compute_metrics(x, y, logits, sample_weight)  # the compiled metrics
        compiled = {k: v for m in self.compiled_metrics() for k, v in m.result().items()}
        own = {m.name: m.result() for m in (self.total_tracker, self.ce_tracker, self.accuracy_tracker)}
        return {k: v for k, v in results.items() if k in own or k in compiled}


class OptimizerBuiltAtCompileMixin:
    """`compile` also builds the optimizer on `self._trained_variables()` (the variables
    `train_step` updates), in the model's strategy scope and outside the traced step:
    a `tf.function` that creates variables on its first trace is traced again."""

    def compile(self, optimizer="adam", **kwargs):
        """`Model.compile`; also builds the optimizer on the variables `train_step` updates."""
        super().compile(optimizer=optimizer, **kwargs)
        with self.distribute_strategy.scope():
            if not self.optimizer.built:
                self.optimizer.build(self._trained_variables())

    def compile_from_config(self, config):
        # `compile` is overridden, so Keras leaves compiling a loaded model to us; the
        # optimizer is built by `compile` and its saved state is loaded next.
        self.compile(**keras.saving.deserialize_keras_object(config))


class CriticOptimizerMixin:
    """`compile(critic_optimizer=...)` for models that train a critic with its own optimizer.

    The subclass implements `_critic_variables()`. Each optimizer is built on its own
    variables at compile time (the classifier's optimizer never holds slots for the
    critic), before any traced step could create variables, inside the model's
    distribution strategy scope (so that under `tf.distribute` their slots are mirrored
    like the model's variables); the critic optimizer is saved in the compile config so
    that `.keras` files restore both.

    Mixed precision: Keras wraps `optimizer` in a `LossScaleOptimizer` when the model's
    dtype policy is `mixed_float16`. A subclass whose critic updates scale their loss with
    `critic_optimizer.scale_loss(loss)` sets `scale_critic_loss = True`, and `compile`
    then wraps the critic optimizer the same way (the compile config keeps the unwrapped
    optimizer, as Keras's does). The default (False) leaves it as given.
    """

    default_critic_learning_rate = 1e-4
    scale_critic_loss = False

    def has_critic(self):
        """Whether the model trains a critic (a subclass may have none, e.g. for some terms)."""
        return True

    def compile(self, optimizer="adam", critic_optimizer=None, **kwargs):
        """`Model.compile` plus `critic_optimizer` (default `Adam(1e-4)`) for the critic(s)."""
        if not self.has_critic():
            if critic_optimizer is not None:
                raise ValueError(
                    "Expected no `critic_optimizer` for a model without a critic. "
                    f"Received: critic_optimizer={critic_optimizer!r}"
                )
            super().compile(optimizer=optimizer, **kwargs)
            with self.distribute_strategy.scope():
                if not self.optimizer.built:
                    self.optimizer.build(self.classifier.trainable_variables)
            return
        super().compile(optimizer=optimizer, **kwargs)
        if critic_optimizer is None:
            critic_optimizer = keras.optimizers.Adam(self.default_critic_learning_rate)
        critic_optimizer = keras.optimizers.get(critic_optimizer)
        self._critic_optimizer_config = keras.saving.serialize_keras_object(critic_optimizer)
        if (
            self.scale_critic_loss
            and self.dtype_policy.name == "mixed_float16"
            and not isinstance(critic_optimizer, keras.optimizers.LossScaleOptimizer)
        ):
            critic_optimizer = keras.optimizers.LossScaleOptimizer(critic_optimizer, name="critic_loss_scale_optimizer")
        self.critic_optimizer = critic_optimizer
        with self.distribute_strategy.scope():
            if not self.optimizer.built:
                self.optimizer.build(self.classifier.trainable_variables)
            if not self.critic_optimizer.built:
                self.critic_optimizer.build(self._critic_variables())

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and getattr(self, "critic_optimizer", None) is not None:
            config["critic_optimizer"] = self._critic_optimizer_config
        return config

    def compile_from_config(self, config):
        config = dict(config)
        critic_optimizer = config.pop("critic_optimizer", None)
        config = keras.saving.deserialize_keras_object(config)
        if critic_optimizer is not None:
            critic_optimizer = keras.saving.deserialize_keras_object(critic_optimizer)
        # `compile` builds both optimizers, so their saved state can be loaded next.
        self.compile(critic_optimizer=critic_optimizer, **config)

    def _check_compiled(self):
        if getattr(self, "critic_optimizer", None) is None:
            raise ValueError(
                "Expected the model to be compiled with `compile(...)` before training. Received: no critic_optimizer"
            )
