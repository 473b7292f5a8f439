"""CTC stage 1, information aggregation: `CE + alpha * L_IAS` with a memory bank."""

import numbers

import keras
import tensorflow as tf

from tfinfo.layers.measurement_noise import portable_randint
from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import OptimizerBuiltAtCompileMixin
from tfinfo.models.classifier_wrapper import features_and_logits_model
from tfinfo.models.model_arguments import batch_images
from tfinfo.models.model_arguments import check_integer
from tfinfo.models.model_arguments import check_number
from tfinfo.models.model_arguments import global_batch


def _model_inputs(model):
    """The symbolic input of a single-input model (not a one-element list), else the list."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


@keras.saving.register_keras_serializable(package="tfinfo")
class InformationAggregationModel(OptimizerBuiltAtCompileMixin, ClassifierWrapper):
    """CTC stage 1: trains a classifier with `CE + alpha * L_IAS` (information aggregation).

    `L_IAS` is the InfoNCE loss of instance discrimination against a memory bank
    (Wu et al. 2018): each example `i` has a slot `m_i` in an `N x embedding_dim` bank of
    unit vectors; its representation `t_i` (the L2-normalized output of a linear
    projection head on the classifier's `feature_layer`) should pick out its own slot
    among `num_negatives` slots drawn uniformly from the bank:

        L_IAS = mean_i [ log(exp(t_i.m_i / T) + sum_k exp(t_i.m_k / T)) - t_i.m_i / T ]

    Drawn slots equal to the example's own index are masked out, so the positive enters
    the denominator exactly once. With `num_negatives=None` the denominator runs over the
    whole bank (the exact non-parametric softmax of Wu et al. and the CTC authors' code;
    cost `O(batch * N * embedding_dim)` per step). Lowering `L_IAS` raises the InfoNCE lower
    bound `log(K + 1) - L_IAS` on `I(t; example)`, which counteracts the over-compression of
    input information that CE training causes (CTC's argument). After the optimizer step,
    the bank rows of the batch move toward the batch's representations (computed in the
    forward pass of that step): `m_i <- normalize(memory_momentum * m_i + (1 -
    memory_momentum) * t_i)`; other rows are untouched.

    Each training batch is `((x, index), y)` with distinct example indices in
    `0..num_examples-1` (`tfinfo.data.indexed.indexed_dataset`). `call`, `predict`,
    `evaluate` (on `(x, y)` or `((x, index), y)`) and `export` serve the classifier alone.

    Distribution, XLA and mixed precision. Under a `tf.distribute` strategy each replica
    all-gathers the representations and indices of the global batch: `L_IAS` is that of
    the global batch (divided by the number of replicas in the loss, as Keras divides
    compiled losses, so the summed replica gradients are the single-device gradient),
    and every replica writes the same rows into its copy of the bank. The negatives are
    drawn with `portable_randint` from a seed state every replica shares, so they are
    the same on every replica and under XLA as in graph mode. The representation is
    normalized in float32 and the bank is float32 whatever the dtype policy; the loss is
    scaled by the optimizer (`LossScaleOptimizer.scale_loss`) under mixed precision.

    Logged per epoch (means over batches): `loss` (`ce + alpha * ias`), `ce`, `ias`
    (`L_IAS`, nats), `accuracy`; global-batch values.

    Args:
        classifier: a functional Keras model from images to logits with a layer named
            `feature_layer`.
        num_examples: N, the number of examples (rows of the memory bank).
        alpha: weight of `L_IAS` (0.01 on CIFAR-100 and 0.2 on ImageNet in the paper).
        temperature: T of the softmax (0.07, Wu et al.'s value).
        num_negatives: bank slots drawn per step (shared by the batch, with replacement),
            or None for the whole bank.
        memory_momentum: weight of the old bank row in its update, in [0, 1) (0.5, Wu et
            al.'s value).
        embedding_dim: output size of the linear projection head, or None to use the
            L2-normalized features themselves (no head).
        feature_layer: name of the classifier layer whose output feeds the head.
        seed: seed of the head's initializer, the bank's initial unit vectors and the
            negative draws (None: unseeded).

    Call arguments:
        inputs: images for the classifier, or a training pair `(x, index)`, for which
            the logits of `x` are returned (Keras calls the model this way to build
            compiled losses under a distribution strategy).
        training: passed to the classifier.

    Example:

    >>> ds = indexed_dataset(x_source, y_source, batch_size=64, seed=0)
    >>> model = InformationAggregationModel(classifier, num_examples=len(x_source))
    >>> model.compile(optimizer="adam")
    >>> model.fit(ds, epochs=200)  # logs loss, ce, ias, accuracy
    >>> stage_2 = InformationRevitalizationModel(classifier, information_bank=model)

    Reference:
        Cui et al., "Discriminability-Transferability Trade-Off: An Information-Theoretic
        Perspective" (ECCV 2022), seed 002, Algorithm 1 (A.5) and section 5;
        Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
        Discrimination" (CVPR 2018); van den Oord et al. 2018 (InfoNCE).
    """

    nested_config_keys = ("classifier",)

    def __init__(
        self,
        classifier,
        num_examples,
        alpha=0.01,
        temperature=0.07,
        num_negatives=4096,
        memory_momentum=0.5,
        embedding_dim=128,
        feature_layer="features",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_examples = check_integer("num_examples", num_examples)
        self.alpha = check_number("alpha", alpha, 0.0)
        self.temperature = check_number("temperature", temperature, 0.0, low_inclusive=False)
        self.num_negatives = check_integer("num_negatives", num_negatives, allow_none=True)
        self.memory_momentum = check_number("memory_momentum", memory_momentum, 0.0, 1.0, high_inclusive=False)
        self.embedding_dim = check_integer("embedding_dim", embedding_dim, allow_none=True)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"Expected `seed` to be an integer or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.feature_layer = feature_layer
        self._features_and_logits = features_and_logits_model(classifier, feature_layer)
        self.classifier = classifier
        feature_dim = int(self._features_and_logits.outputs[0].shape[-1])

        def seed_at(offset):
            return None if self.seed is None else self.seed + offset

        if self.embedding_dim is None:
            self.projection_head = None
            dim = feature_dim
        else:
            self.projection_head = keras.layers.Dense(
                self.embedding_dim,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed_at(0)),
                name="projection_head",
            )
            self.projection_head.build((None, feature_dim))
            dim = self.embedding_dim
        normal = keras.initializers.RandomNormal(stddev=1.0, seed=seed_at(1))
        self.memory_bank = self.add_weight(
            name="memory_bank",
            shape=(self.num_examples, dim),
            initializer=lambda shape, dtype=None: tf.math.l2_normalize(normal(shape, dtype="float32"), axis=-1),
            dtype="float32",
            trainable=False,
            autocast=False,
        )
        self.seed_generator = keras.random.SeedGenerator(seed_at(2), name="negative_sampler")
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.ias_tracker = keras.metrics.Mean(name="ias")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Every component is built; nothing is created on first call.
        self.built = True

    @property
    def metrics(self):
        return [self.total_tracker, self.ce_tracker, self.ias_tracker, self.accuracy_tracker]

    # -- representation and memory bank ---------------------------------------------
    def project(self, features):
        """`t`: the L2-normalized projection (float32) of `feature_layer` outputs."""
        if self.projection_head is not None:
            features = self.projection_head(features)
        return tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)

    def representation(self, x, training=False):
        """`t` of images `x` (float32, unit norm), e.g. to inspect or refresh the bank."""
        features, _ = self._features_and_logits(x, training=training)
        return self.project(features)

    def sample_negatives(self):
        """`num_negatives` bank indices drawn uniformly with replacement (int32)."""
        if self.num_negatives is None:
            raise ValueError("Expected `num_negatives` to be set to draw negatives. Received: num_negatives=None")
        return portable_randint((self.num_negatives,), 0, self.num_examples, self.seed_generator)

    def aggregation_loss(self, t, indices, negative_indices=None):
        """`L_IAS` of representations `t` (unit rows) of the examples `indices`.

        Args:
            t: `(B, D)` representations (normalized here again, in float32).
            indices: `(B,)` their example indices; the positive of row `i` is
                `memory_bank[indices[i]]`.
            negative_indices: `(K,)` bank indices of the negatives shared by the batch;
                entries equal to a row's own index are masked for that row. Default:
                `sample_negatives()`, or the whole bank when `num_negatives` is None.

        Returns:
            The mean InfoNCE loss over the batch (nats, float32 scalar). Gradients flow
            into `t` only.
        """
        t = tf.math.l2_normalize(tf.cast(t, tf.float32), axis=-1)
        indices = tf.cast(tf.reshape(indices, [-1]), tf.int32)
        bank = tf.stop_gradient(tf.convert_to_tensor(self.memory_bank))
        positive = tf.reduce_sum(t * tf.gather(bank, indices), axis=-1) / self.temperature
        if negative_indices is None and self.num_negatives is None:
            # Whole bank: column `indices[i]` of row i is the positive itself.
            scores = tf.matmul(t, bank, transpose_b=True) / self.temperature
        else:
            if negative_indices is None:
                negative_indices = self.sample_negatives()
            negative_indices = tf.cast(tf.reshape(negative_indices, [-1]), tf.int32)
            negatives = tf.matmul(t, tf.gather(bank, negative_indices), transpose_b=True) / self.temperature
            own = tf.equal(indices[:, None], negative_indices[None, :])
            negatives = tf.where(own, tf.constant(-float("inf"), tf.float32), negatives)
            scores = tf.concat([positive[:, None], negatives], axis=1)
        return tf.reduce_mean(tf.reduce_logsumexp(scores, axis=1) - positive)

    def update_memory_bank(self, t, indices):
        """`m_i <- normalize(momentum * m_i + (1 - momentum) * t_i)` for the rows `indices`.

        The indices of one call must be distinct (a batch of `indexed_dataset` is).
        """
        t = tf.math.l2_normalize(tf.cast(tf.stop_gradient(t), tf.float32), axis=-1)
        indices = tf.cast(tf.reshape(indices, [-1]), tf.int32)
        old = tf.gather(tf.convert_to_tensor(self.memory_bank), indices)
        new = tf.math.l2_normalize(self.memory_momentum * old + (1.0 - self.memory_momentum) * t, axis=-1)
        self.memory_bank.value.scatter_update(tf.IndexedSlices(new, indices))

    def _check_indices(self, indices):
        indices = tf.cast(tf.reshape(indices, [-1]), tf.int32)
        tf.debugging.assert_non_negative(indices, message="Expected example indices >= 0")
        tf.debugging.assert_less(
            indices,
            tf.constant(self.num_examples, tf.int32),
            message=f"Expected example indices < num_examples ({self.num_examples})",
        )
        return indices

    # -- training -------------------------------------------------------------------
    def _trained_variables(self):
        """The classifier's and the projection head's trainable variables."""
        variables = self.classifier.trainable_variables
        if self.projection_head is not None:
            variables = variables + self.projection_head.trainable_variables
        return variables

    def train_step(self, data):
        x, y = data[0], data[1]
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(
                "Expected training batches `((x, index), y)` (see `indexed_dataset`). "
                f"Received: inputs of type {type(x).__name__}"
            )
        x, indices = x
        indices = self._check_indices(indices)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # A compiled loss is already divided by the number of replicas (Keras); the plain CE is not.
        ce_is_scaled = getattr(self, "loss", None) is not None
        variables = self._trained_variables()
        with tf.GradientTape() as tape:
            features, logits = self._features_and_logits(x, training=True)
            t, all_indices = global_batch(self.project(features), indices)
            ce = tf.cast(self.cross_entropy(y, logits), tf.float32)
            if not ce_is_scaled:
                ce = ce / replicas
            ias = self.aggregation_loss(t, all_indices)
            loss = ce + self.alpha * ias / replicas
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        # The bank moves after the step, toward this step's forward-pass representations
        # (all of the global batch's rows, the same on every replica).
        self.update_memory_bank(t, all_indices)
        ce = ce * replicas
        self.total_tracker.update_state(ce + self.alpha * ias)
        self.ce_tracker.update_state(ce)
        self.ias_tracker.update_state(ias)
        self.accuracy_tracker.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        return super().test_step((batch_images(data[0]), data[1]))

    # -- stage 2 and saving -----------------------------------------------------------
    def build_information_bank(self, name="information_bank"):
        """A frozen copy of the classifier up to `feature_layer`, plus the head, giving `t`.

        The copy owns its variables (later training of `classifier` leaves it as it is
        now) and maps images to unit-norm representations. CTC's stage 2
        (`InformationRevitalizationModel`) calls it when given this model.

        Returns:
            A functional `keras.Model` with `trainable = False`.
        """
        classifier = keras.models.clone_model(self.classifier)
        classifier.set_weights(self.classifier.get_weights())
        t = classifier.get_layer(self.feature_layer).output
        if self.projection_head is not None:
            head = keras.layers.deserialize(keras.layers.serialize(self.projection_head))
            t = head(t)
            head.set_weights(self.projection_head.get_weights())
        t = keras.layers.UnitNormalization(name="unit_normalization")(t)
        bank = keras.Model(_model_inputs(classifier), t, name=name)
        bank.trainable = False
        return bank

    def get_config(self):
        config = {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "num_examples": self.num_examples,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "num_negatives": self.num_negatives,
            "memory_momentum": self.memory_momentum,
            "embedding_dim": self.embedding_dim,
            "feature_layer": self.feature_layer,
            "seed": self.seed,
        }
        base_config = super().get_config()
        return {**base_config, **config}
