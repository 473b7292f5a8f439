"""Post-transfer Temporal Ensembling: `CE(labeled) + w(t) * MSE(softmax f(x), z_tilde[index])`."""

import math
import warnings

import keras
import tensorflow as tf

from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.model_arguments import check_integer
from tfinfo.models.model_arguments import check_number

CE_NORMALIZATIONS = ("labeled", "batch")


@keras.saving.register_keras_serializable(package="tfinfo")
class TemporalEnsemblingModel(ClassifierWrapper):
    """Wraps a classifier; `fit` fine-tunes it with Temporal Ensembling (Laine & Aila, 2017).

    Each training batch is `((x, index), (y, mask))` as built by
    `tfinfo.data.temporal_ensembling.temporal_ensembling_dataset`: images, their
    positions `0..N-1` in the labeled + unlabeled target set, labels, and a mask that
    is 1 for labeled and 0 for unlabeled examples. With `z = softmax(f(x))` (training
    mode: noise and dropout on), the loss of a batch `B` is

        CE(y, f(x)) over the labeled examples of B
        + w(t) * mean over B and the K classes of (z - z_tilde[index])^2

    and `z` is written into row `index` of `z_epoch` (each example's own slot, whatever
    the order of the batches). At the end of epoch `t` (1-based) the ensemble and the
    bias-corrected targets become

        Z <- alpha * Z + (1 - alpha) * z_epoch,    z_tilde <- Z / (1 - alpha^t)

    (`update_ensemble`), and at the beginning of epoch `e` (0-based, `e` = number of
    completed updates `t`) the unsupervised weight becomes
    `w(e) = max_unsupervised_weight * num_labeled / num_examples * exp(-5 (1 - e / rampup_epochs)^2)`
    for `0 < e < rampup_epochs`, its maximum from `rampup_epochs` on, and 0 in epoch 0,
    where the targets are still zero (`set_unsupervised_weight`). Both are done by the
    `TemporalEnsemblingUpdate` callback, which `fit` users add. Every epoch must visit
    every example once (the dataset keeps its last partial batch); a row of `z_epoch`
    that is not visited keeps its previous value.

    The state (`ensemble` = Z, `z_epoch`, `z_tilde`, all `(N, K)` float32, the counter
    `t` and `unsupervised_weight`) lives in non-trainable variables, so it is saved with
    the model. `call` is the classifier's, so `predict` and `export` serve the classifier
    alone; `evaluate` takes `(x, y)` batches (CE and accuracy of the classifier) or this
    model's training batches (CE and accuracy over the labeled examples).

    Logged per epoch (means over steps): `loss` (the objective), `ce` (the supervised
    term), `consistency` (the MSE term, before weighting), `unsupervised_weight` (w of
    the epoch) and `accuracy` (on the labeled examples).

    `compile(loss=...)` takes the per-example CE (default: sparse CE on logits); it is
    kept as `self.loss` and not handed to Keras's compiled-loss container, which under a
    distribution strategy would be built from the training batch, whose `(y, mask)`
    targets do not match the logits. Under a `tf.distribute` strategy the CE and the
    consistency of each replica are its sums divided by the global batch's counts
    (all-reduced), so the replicas' summed gradients are the single-device gradient of
    the global batch, also when the last, partial batch splits unevenly; every replica
    all-gathers the batch's outputs and writes the global rows of `z_epoch`, and the
    logs are the global batch's. (Under a strategy Keras's `fit` opens one iterator of
    the dataset before the first epoch, to build the model symbolically: a dataset that
    reshuffles every iteration then starts from its second order.) Under a mixed
    precision policy the classifier runs in half precision, the state stays float32 and
    the loss is scaled by the optimizer before the gradient.

    Args:
        classifier: a Keras model from images to `K` logits (`K` is read from its
            `output_shape`).
        num_examples: `N`, the number of labeled + unlabeled examples (the size of the
            state).
        num_labeled: the number of labeled examples among them (scales the weight).
        ensemble_momentum: `alpha` of the ensemble, in [0, 1).
        max_unsupervised_weight: `w_max` before the `num_labeled / num_examples` scaling.
        rampup_epochs: epochs of the Gaussian ramp-up (0: no ramp-up).
        ce_normalization: `"batch"` (default: the labeled examples' CE summed and divided
            by the batch size, as in the paper's Algorithm 2 and code, which `w_max *
            labeled / N` is balanced against) or `"labeled"` (the mean CE over the
            labeled examples of the batch: with few labels, up to batch-size times
            stronger). A batch without labeled
            examples has a supervised term of 0 either way.

    Call arguments:
        inputs: images for the classifier.
        training: passed to the classifier.

    Example:

    >>> ds, n = temporal_ensembling_dataset(x_l, y_l, x_u, batch_size=50, seed=0)
    >>> model = TemporalEnsemblingModel(classifier, num_examples=n, num_labeled=len(x_l))
    >>> model.compile(optimizer="adam",
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model.fit(ds, epochs=300, callbacks=[TemporalEnsemblingUpdate()])

    Reference:
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017,
        Algorithm 2 and Appendix A; seed 000, section 5.1 (post-transfer baseline).
    """

    nested_config_keys = ("classifier",)

    def __init__(
        self,
        classifier,
        num_examples,
        num_labeled,
        ensemble_momentum=0.6,
        max_unsupervised_weight=30.0,
        rampup_epochs=80,
        ce_normalization="batch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_examples = check_integer("num_examples", num_examples, 1)
        num_labeled = check_integer("num_labeled", num_labeled, 1)
        if num_labeled > num_examples:
            raise ValueError(
                f"Expected `num_labeled` <= `num_examples` ({num_examples}). Received: num_labeled={num_labeled}"
            )
        ensemble_momentum = check_number("ensemble_momentum", ensemble_momentum, 0.0, 1.0, high_inclusive=False)
        max_unsupervised_weight = check_number("max_unsupervised_weight", max_unsupervised_weight, 0.0)
        rampup_epochs = check_integer("rampup_epochs", rampup_epochs, 0)
        if ce_normalization not in CE_NORMALIZATIONS:
            raise ValueError(
                f"Expected `ce_normalization` to be one of {CE_NORMALIZATIONS}. "
                f"Received: ce_normalization={ce_normalization!r}"
            )
        try:
            num_classes = int(classifier.output_shape[-1])
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                "Expected `classifier` to be a built Keras model with logits of shape (None, K). "
                f"Received: {type(classifier).__name__}"
            ) from None
        self.classifier = classifier
        self.num_examples = num_examples
        self.num_labeled = num_labeled
        self.ensemble_momentum = ensemble_momentum
        self.max_unsupervised_weight = max_unsupervised_weight
        self.rampup_epochs = rampup_epochs
        self.ce_normalization = ce_normalization
        self.num_classes = num_classes
        state = dict(shape=(num_examples, num_classes), dtype="float32", initializer="zeros", trainable=False)
        self.ensemble = self.add_weight(name="ensemble", **state)
        # Written from `train_step`; under a distribution strategy every replica writes the
        # same full update (see `_write_epoch_outputs`), and the first replica's is kept.
        self.z_epoch = self.add_weight(name="z_epoch", aggregation="only_first_replica", **state)
        self.z_tilde = self.add_weight(name="z_tilde", **state)
        self.t = self.add_weight(name="t", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.unsupervised_weight = self.add_weight(
            name="unsupervised_weight", shape=(), dtype="float32", initializer="zeros", trainable=False
        )
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.consistency_tracker = keras.metrics.Mean(name="consistency")
        self.weight_tracker = keras.metrics.Mean(name="unsupervised_weight")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Set by `TemporalEnsemblingUpdate` while `fit` runs; only used for a warning.
        self._ensemble_update_attached = False
        # Every component is built; nothing is created on first call.
        self.built = True

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """`Model.compile`; `loss` is the per-example CE (default: sparse CE on logits).

        The loss is kept as `self.loss` and evaluated unreduced on the labeled examples
        (`per_example_cross_entropy`); it is not handed to Keras's compiled-loss
        container, which under a distribution strategy would be built symbolically from
        the training batch, whose `(y, mask)` targets do not match the logits. It is
        saved in the compile config as usual.
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.loss = loss

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self.loss)
        return config

    def compile_from_config(self, config):
        # `compile` is overridden, so Keras leaves compiling a loaded model to us.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return [
            self.total_tracker,
            self.ce_tracker,
            self.consistency_tracker,
            self.weight_tracker,
            self.accuracy_tracker,
        ]

    # -- schedule and ensemble ------------------------------------------------------
    def unsupervised_weight_schedule(self, epoch):
        """`w(epoch)` for a 0-based epoch: 0 in epoch 0, then the Gaussian ramp-up
        `exp(-5 (1 - epoch / rampup_epochs)^2)` times `max_unsupervised_weight *
        num_labeled / num_examples`, reached in full at `rampup_epochs`."""
        epoch = check_integer("epoch", epoch, 0)
        if epoch == 0:
            return 0.0
        scaled_max = self.max_unsupervised_weight * self.num_labeled / self.num_examples
        if epoch >= self.rampup_epochs:
            return scaled_max
        p = 1.0 - epoch / self.rampup_epochs
        return scaled_max * math.exp(-5.0 * p * p)

    def set_unsupervised_weight(self, epoch=None):
        """Sets `unsupervised_weight` to `w(epoch)` (default: the current epoch, `t`) and returns it."""
        if epoch is None:
            epoch = int(self.t.numpy())
        weight = self.unsupervised_weight_schedule(epoch)
        self.unsupervised_weight.assign(weight)
        return weight

    def update_ensemble(self):
        """End of an epoch: `t += 1`, `Z <- alpha Z + (1 - alpha) z_epoch`, `z_tilde <- Z / (1 - alpha^t)`."""
        alpha = self.ensemble_momentum
        self.t.assign_add(1)
        ensemble = alpha * tf.convert_to_tensor(self.ensemble) + (1.0 - alpha) * tf.convert_to_tensor(self.z_epoch)
        self.ensemble.assign(ensemble)
        correction = 1.0 - tf.pow(tf.constant(alpha, tf.float64), tf.cast(tf.convert_to_tensor(self.t), tf.float64))
        self.z_tilde.assign(ensemble / tf.cast(correction, ensemble.dtype))

    # -- training ---------------------------------------------------------------------
    def _unpack(self, data, what):
        inputs, targets = data[0], data[1]
        if not (
            isinstance(inputs, (tuple, list))
            and len(inputs) == 2
            and isinstance(targets, (tuple, list))
            and len(targets) == 2
        ):
            raise ValueError(
                f"Expected {what} batches `((x, index), (y, mask))` as built by "
                "`temporal_ensembling_dataset`. Received: "
                f"x={type(inputs).__name__}, y={type(targets).__name__}"
            )
        (x, index), (y, mask) = inputs, targets
        index = tf.cast(tf.reshape(index, [-1]), tf.int32)
        mask = tf.cast(tf.reshape(mask, [-1]) > 0, tf.float32)
        return x, index, y, mask

    def per_example_cross_entropy(self, y, logits):
        """Unreduced CE per example: the compiled `loss`'s values if any, else sparse CE on logits."""
        loss = getattr(self, "loss", None)
        if loss is None:
            return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        loss = keras.losses.get(loss)
        return loss.call(y, logits) if isinstance(loss, keras.losses.Loss) else loss(y, logits)

    def cross_entropy(self, y, logits, sample_weight=None):
        """Mean CE of `(x, y)` batches (`evaluate` on plain batches): `loss`'s per-example
        values, weighted by `sample_weight` (mean over the batch, as Keras reduces)."""
        per_example = tf.reshape(tf.cast(self.per_example_cross_entropy(y, logits), tf.float32), [-1])
        if sample_weight is not None:
            per_example = per_example * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        return tf.reduce_mean(per_example)

    def replica_cross_entropy(self, y, logits, sample_weight=None):
        # `loss` is not a compiled loss here, so nothing divided it by the replicas.
        ce = self.cross_entropy(y, logits, sample_weight)
        return ce / tf.distribute.get_strategy().num_replicas_in_sync, ce

    def supervised_loss(self, y, logits, mask):
        """The supervised term: CE over the labeled examples (`mask` 1, others 0), normalized
        per `ce_normalization`; 0 for a batch without labeled examples."""
        total = self._supervised_sum(y, logits, mask)
        if self.ce_normalization == "labeled":
            return tf.math.divide_no_nan(total, tf.reduce_sum(mask))
        return tf.math.divide_no_nan(total, tf.cast(tf.shape(mask)[0], tf.float32))

    def _supervised_sum(self, y, logits, mask):
        per_example = tf.cast(tf.reshape(self.per_example_cross_entropy(y, logits), [-1]), tf.float32)
        # `where`, not a product: the CE of an unlabeled example (label 0) never enters.
        return tf.reduce_sum(tf.where(mask > 0, per_example, 0.0))

    @staticmethod
    def _sum_over_replicas(values):
        """Sums (no gradient) over the replicas of a strategy; the values themselves without one."""
        values = [tf.stop_gradient(v) for v in values]
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return values
        return context.all_reduce(tf.distribute.ReduceOp.SUM, values)

    def _write_epoch_outputs(self, index, probabilities):
        """`z_epoch[index] = probabilities`: each example's output goes to its own row."""
        if not tf.distribute.has_strategy():
            self.z_epoch.value.scatter_nd_update(index[:, None], probabilities)
            return
        # A distributed variable has no in-place scatter from a replica: gather all the
        # replicas' rows and write the same full update from each.
        context = tf.distribute.get_replica_context()
        index = context.all_gather(index, axis=0)
        probabilities = context.all_gather(probabilities, axis=0)
        z_epoch = tf.convert_to_tensor(self.z_epoch)
        self.z_epoch.assign(tf.tensor_scatter_nd_update(z_epoch, index[:, None], probabilities))

    def train_step(self, data):
        x, index, y, mask = self._unpack(data, "training")
        if not self._ensemble_update_attached:
            # Python side effect: runs once, when `train_step` is traced.
            warnings.warn(
                "TemporalEnsemblingModel is training without the `TemporalEnsemblingUpdate` "
                "callback: unless `update_ensemble()` and `set_unsupervised_weight()` are called "
                "at the epoch boundaries, the targets stay zero and the unsupervised weight stays put.",
                stacklevel=2,
            )
        targets = tf.gather(tf.convert_to_tensor(self.z_tilde), index)
        weight = tf.convert_to_tensor(self.unsupervised_weight)
        variables = self.classifier.trainable_variables
        # The normalizers are the global batch's: under a strategy each replica's terms are
        # its sums over the global counts, so that the replicas' gradients, which the
        # optimizer sums, add up to the gradient one device computes on the global batch
        # (also when the last, partial batch splits unevenly). A replica may get no example.
        batch_size, num_labeled = self._sum_over_replicas(
            [tf.cast(tf.shape(mask)[0], tf.float32), tf.reduce_sum(mask)]
        )
        ce_normalizer = num_labeled if self.ce_normalization == "labeled" else batch_size
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = self.classifier(x, training=True)
            probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
            ce = tf.math.divide_no_nan(self._supervised_sum(y, logits, mask), ce_normalizer)
            squared = tf.reduce_sum(tf.square(probabilities - targets))
            consistency = tf.math.divide_no_nan(squared, batch_size * float(self.num_classes))
            loss = ce + weight * consistency
            if self.losses:
                # Each replica holds the whole penalty: divided as Keras divides its losses.
                loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in self.losses]) / replicas
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed precision
        grads = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        # The replicas' shares add up to the global batch's terms, which every replica logs.
        ce, consistency, loss = self._sum_over_replicas([ce, consistency, loss])
        # Each example's output goes to its own row, whatever the batch order.
        self._write_epoch_outputs(index, tf.stop_gradient(probabilities))
        self.total_tracker.update_state(loss)
        self.ce_tracker.update_state(ce)
        self.consistency_tracker.update_state(consistency)
        self.weight_tracker.update_state(weight)
        self.accuracy_tracker.update_state(y, logits, sample_weight=mask)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        inputs = data[0]
        if not isinstance(inputs, (tuple, list)):
            return super().test_step(data)
        x, _, y, mask = self._unpack(data, "evaluation")
        logits = self.classifier(x, training=False)
        per_example = tf.cast(tf.reshape(self.per_example_cross_entropy(y, logits), [-1]), tf.float32)
        per_example = tf.where(mask > 0, per_example, 0.0)
        # Weighted by the mask: the epoch means are exact means over the labeled examples.
        self.total_tracker.update_state(per_example, sample_weight=mask)
        self.ce_tracker.update_state(per_example, sample_weight=mask)
        self.accuracy_tracker.update_state(y, logits, sample_weight=mask)
        return {m.name: m.result() for m in (self.total_tracker, self.ce_tracker, self.accuracy_tracker)}

    # -- save -------------------------------------------------------------------------
    def get_config(self):
        config = {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "num_examples": self.num_examples,
            "num_labeled": self.num_labeled,
            "ensemble_momentum": self.ensemble_momentum,
            "max_unsupervised_weight": self.max_unsupervised_weight,
            "rampup_epochs": self.rampup_epochs,
            "ce_normalization": self.ce_normalization,
        }
        base_config = super().get_config()
        return {**base_config, **config}
