"""Training with the noise-regularized information-bottleneck functional (seed 003)."""

import keras
import tensorflow as tf

from tfinfo.critics.architecture_aware_critic import ArchitectureAwareCritic
from tfinfo.critics.concat_critic import ConcatCritic
from tfinfo.layers.measurement_noise import portable_normal
from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import representation_and_logits_model
from tfinfo.models.classifier_wrapper import CriticOptimizerMixin
from tfinfo.regularizers.mutual_information import MutualInformationRegularizer

X_CRITICS = ("mine", "aa_mine")
HEAD_SCALE_MOMENTUM = 0.9


def _layer_index(classifier, layer):
    """1-based position of `layer` among the non-input layers (`None` = the last)."""
    body = [lay.name for lay in classifier.layers if not isinstance(lay, keras.layers.InputLayer)]
    return len(body) if layer is None else body.index(layer) + 1


class _ReplicaBatch:
    """A replica's batch `(x, onehot)` and, under a strategy with several replicas, the
    global batch: all-gathered rows in replica order, this replica's rows among them."""

    def __init__(self, x, onehot, regularizers):
        context = tf.distribute.get_replica_context()
        self.context = context if context is not None and context.num_replicas_in_sync > 1 else None
        self.x, self.onehot = x, onehot
        self.all_x, self.all_onehot = x, onehot
        if self.context is None:
            return
        size = tf.shape(x)[:1]
        sizes = self.context.all_gather(size, axis=0)
        replica = tf.cast(self.context.replica_id_in_sync_group, tf.int32)
        self.start = tf.reduce_sum(tf.where(tf.range(tf.shape(sizes)[0]) < replica, sizes, tf.zeros_like(sizes)))
        self.size = size[0]
        self.total = tf.reduce_sum(sizes)
        if not all(self.gathers(reg) for reg in regularizers):
            self.all_x = self.context.all_gather(x, axis=0)
            self.all_onehot = self.context.all_gather(onehot, axis=0)

    def gathers(self, regularizer):
        """Whether `regularizer` gathers the global batch itself (so it takes local rows)."""
        return self.context is not None and bool(getattr(regularizer, "cross_replica", False))

    def gather(self, t):
        """The global batch's rows of `t` (gradients flow back to this replica's rows)."""
        return t if self.context is None else self.context.all_gather(t, axis=0)

    def global_shape(self, t):
        """The shape of `t` with the global batch size."""
        shape = tf.shape(t)
        return shape if self.context is None else tf.concat([tf.reshape(self.total, [1]), shape[1:]], axis=0)

    def local_rows(self, t):
        """This replica's rows of a global-batch tensor."""
        return t if self.context is None else t[self.start : self.start + self.size]


@keras.saving.register_keras_serializable(package="tfinfo")
class InformationBottleneckModel(CriticOptimizerMixin, ClassifierWrapper):
    """`alpha CE - beta I(Y; L) + gamma I(X; L + eps)` with two MINE critics.

    `L` is the output of `layer` (default: the classifier's output, `Y_hat`), flattened;
    `eps ~ N(0, noise_variance I)` is measurement noise used only inside the estimate of
    `I(X; L + eps)` (seed 003, section 3): the network itself stays deterministic.

    Each `train_step`:

    1. computes `L` and the logits on the batch (training mode);
    2. updates both critics `critic_steps` times on the fixed `L` (fresh noise each
       time), with the critic optimizer; `I(Y; L)` is measured between one-hot labels
       and `L` (both are trained even when a weight is 0, so both are always reported);
    3. updates the classifier's trainable variables on the objective with the critics
       held fixed. Frozen layers (`layer.trainable = False`) are left alone, which is how
       the layer-by-layer scheme of seed 003 section 5 trains one layer at a time.

    Distribution, XLA and mixed precision. Under a `tf.distribute` strategy both bounds
    are those of the global batch: a regularizer with `cross_replica=True` (the
    default) all-gathers its inputs itself and is given this replica's rows; one without
    is given the all-gathered inputs, labels and representations. Gradients flow back
    to each replica's rows through the gathers. The measurement noise of the global
    batch is drawn alike on every replica (`portable_normal`, same seed state) and each
    sample gets the noise of its global position, so MINE's moving averages, the AA-MINE
    head scale (moments of the global batch) and the copy sync are the same on every
    replica and equal one device's. Critic and classifier penalties are divided by the
    number of replicas (as Keras divides compiled losses), so the summed replica
    gradients are the single-device gradients. XLA (`jit_compile=True`) draws the same
    noise as graph mode. Under a mixed precision policy the network and the critics
    compute in the policy's precision; the representation is cast to float32 before any
    statistic, the critics' scores before any bound, and the classifier's and the
    critics' losses are scaled by their optimizers (`scale_loss`; under `mixed_float16`
    both are `LossScaleOptimizer`s). Logs are global-batch values.

    End-to-end training (seed 003, appendix B, eq. 8): `layer=None`, e.g. `alpha=1,
    beta=1, gamma=1e-3`. Layer-by-layer training of layer i (eq. 7): `layer=<L_i>`,
    `alpha=0, beta=1, gamma=<the paper's beta>` with every other layer frozen.

    Args:
        classifier: a functional `keras.Model` from inputs to logits.
        x_regularizer: `MutualInformationRegularizer` estimating `I(X; L + eps)`
            (default: MINE with `ConcatCritic("small")`, 2 x 256 ReLU units; seed 003
            used 2 x 1500 LeakyReLU, `ConcatCritic("seed003")`; pass an
            architecture-aware critic for AA-MINE).
        y_regularizer: `MutualInformationRegularizer` estimating `I(Y; L)` (default: MINE).
        layer: name of the layer whose output is `L`; `None` = the logits.
        alpha: weight of the cross-entropy.
        beta: weight of `-I(Y; L)`.
        gamma: weight of `I(X; L + eps)`.
        noise_variance: variance of the measurement noise `eps` (seed 003: 2).
        critic_steps: updates of each critic per model step (seed 003: 10).
        x_critic: the default `x_regularizer`'s critic: `"mine"` (a concat critic on
            `[x, L + eps]`) or `"aa_mine"` (seed 003's architecture-aware critic: a frozen
            copy of the classifier's layers up to `layer`, re-synced before every critic
            update, then a concat head on `[F(x), L + eps]`; the paper's choice).
        seed: seed of the measurement noise.
        **kwargs: base `keras.Model` arguments.

    Call arguments:
        inputs: a batch of inputs; returns the classifier's logits.
        training: passed to the classifier.

    Example:

    >>> model = InformationBottleneckModel(classifier, alpha=1.0, beta=1.0, gamma=1e-3)
    >>> model.adapt(x_train)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3),
    ...               critic_optimizer=keras.optimizers.Adam(1e-4))
    >>> model.fit(x_train, y_train, batch_size=100, epochs=5)

    Reference:
        Elad, Haviv, Blau and Michaeli, "The effectiveness of layer-by-layer training
        using the information bottleneck principle" (seed 003), eq. (5), (7), (8),
        section 5 and appendices A-C.
    """

    nested_config_keys = ("classifier", "x_regularizer", "y_regularizer")
    scale_critic_loss = True  # the critic optimizer is loss-scaled under mixed_float16

    def __init__(self, classifier, x_regularizer=None, y_regularizer=None, layer=None, alpha=1.0, beta=0.0,
                 gamma=0.0, noise_variance=2.0, critic_steps=10, x_critic="mine", seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not float(value) >= 0:
                raise ValueError(f"Expected `{name}` >= 0. Received: {name}={value}")
        if not float(noise_variance) > 0:
            raise ValueError(f"Expected `noise_variance` > 0. Received: noise_variance={noise_variance}")
        if int(critic_steps) < 1:
            raise ValueError(f"Expected `critic_steps` >= 1. Received: critic_steps={critic_steps}")
        if x_critic not in X_CRITICS:
            raise ValueError(f"Expected `x_critic` to be one of {X_CRITICS}. Received: x_critic={x_critic!r}")
        self.classifier = classifier
        self._representation_and_logits = representation_and_logits_model(classifier, layer)
        representation = self._representation_and_logits.outputs[0]
        input_shape = tuple(classifier.input_shape[1:])
        width = 1
        for d in representation.shape[1:]:
            width *= int(d)
        self.num_classes = int(classifier.output_shape[-1])
        self.representation_dim = width
        # The critics compute in the dtype policy's precision (their loss is scaled under
        # mixed_float16); the regularizers' statistics and bounds are float32.
        if x_regularizer is None:
            if x_critic == "aa_mine":
                critic = ArchitectureAwareCritic.from_network(classifier, _layer_index(classifier, layer))
            else:
                critic = ConcatCritic("small")
            x_regularizer = MutualInformationRegularizer(critic, estimator="mine", seed=seed, dtype="float32")
        y_regularizer = y_regularizer or MutualInformationRegularizer(
            ConcatCritic("small"), estimator="mine", seed=None if seed is None else seed + 1, dtype="float32")
        for name, reg in (("x_regularizer", x_regularizer), ("y_regularizer", y_regularizer)):
            if not isinstance(reg, MutualInformationRegularizer):
                raise ValueError(
                    f"Expected `{name}` to be a MutualInformationRegularizer. Received: {type(reg).__name__}")
        if not x_regularizer.built:
            x_regularizer.build(((None,) + input_shape, (None, width)))
        if not y_regularizer.built:
            y_regularizer.build(((None, self.num_classes), (None, width)))
        self.x_regularizer, self.y_regularizer = x_regularizer, y_regularizer
        # AA-MINE: the critic's copy of layers 1..i follows the network; the pairs are
        # (copy variable, network variable), assigned before every critic update.
        self._copy_pairs = []
        if isinstance(x_regularizer.critic, ArchitectureAwareCritic):
            source = ArchitectureAwareCritic.sub_network(classifier, _layer_index(classifier, layer))
            copy_weights = x_regularizer.critic.feature_network.weights
            if [tuple(w.shape) for w in copy_weights] != [tuple(w.shape) for w in source.weights]:
                raise ValueError(
                    "Expected the architecture-aware critic's copy to have the weights of the classifier's layers "
                    f"up to `layer`. Received: copy shapes {[tuple(w.shape) for w in copy_weights]}, network "
                    f"shapes {[tuple(w.shape) for w in source.weights]}")
            self._copy_pairs = list(zip(copy_weights, source.weights))
        self.x_critic = x_critic
        self.layer = layer
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.noise_variance = float(noise_variance)
        self.critic_steps = int(critic_steps)
        self.seed = seed
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.critic_optimizer = None
        self.total_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.i_x_tracker = keras.metrics.Mean(name="i_x")
        self.i_y_tracker = keras.metrics.Mean(name="i_y")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True

    def adapt(self, x):
        """Input statistics for the `I(X; L + eps)` critic: per-pixel standardization for
        a concat critic; for AA-MINE the copy reads raw inputs and only the head's inputs
        are normalized (from `F_i(x)`)."""
        if self._copy_pairs:
            self._sync_copy()
            self.x_regularizer.critic.adapt(x)
        else:
            self.x_regularizer.adapt(x)

    def _track_head_scale(self, representation):
        """AA-MINE's head sees `(t - m) / s` for `t` in {F_i(x), L_i + eps}; as the layer
        trains its activations can grow by orders of magnitude, and a normalization fixed
        at `adapt` time then lets the critic's scores (and the DV bound) explode. `m` and
        `s` follow the current (global) batch's `L_i + eps` statistics by a moving average."""
        if not self._copy_pairs:
            return
        critic = self.x_regularizer.critic
        mean, variance = tf.nn.moments(representation, axes=[0])
        scale = tf.sqrt(variance + self.noise_variance)
        critic.feature_mean.assign(HEAD_SCALE_MOMENTUM * critic.feature_mean + (1 - HEAD_SCALE_MOMENTUM) * mean)
        critic.feature_std.assign(HEAD_SCALE_MOMENTUM * critic.feature_std + (1 - HEAD_SCALE_MOMENTUM) * scale)

    def _sync_copy(self):
        for copy, source in self._copy_pairs:
            copy.assign(source)

    def _critic_variables(self):
        return self.x_regularizer.critic.trainable_variables + self.y_regularizer.critic.trainable_variables

    @property
    def metrics(self):
        return [self.total_tracker, self.ce_tracker, self.i_x_tracker, self.i_y_tracker, self.accuracy_tracker]

    def _terms(self, batch, representation, update_state):
        """The two bounds on the current representation (fresh measurement noise).

        `representation` is this replica's rows; `batch` (a `_ReplicaBatch`) gives the
        global batch's rows where a regularizer does not gather them itself.
        """
        noise = portable_normal(batch.global_shape(representation), self.noise_seed, stddev=self.noise_variance**0.5)
        if batch.gathers(self.x_regularizer):
            x_inputs = (batch.x, representation + batch.local_rows(noise))
        else:
            x_inputs = (batch.all_x, batch.gather(representation) + noise)
        if batch.gathers(self.y_regularizer):
            y_inputs = (batch.onehot, representation)
        else:
            y_inputs = (batch.all_onehot, batch.gather(representation))
        i_x = self.x_regularizer(x_inputs, training=True, update_state=update_state)
        i_y = self.y_regularizer(y_inputs, training=True, update_state=update_state)
        return i_x, i_y

    def train_step(self, data):
        self._check_compiled()
        x, y = data[0], data[1]
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # A compiled loss is already divided by the number of replicas (Keras); the plain CE is not.
        ce_is_scaled = getattr(self, "loss", None) is not None
        batch = _ReplicaBatch(x, tf.one_hot(y, self.num_classes), (self.x_regularizer, self.y_regularizer))
        variables = self.classifier.trainable_variables
        critic_variables = self._critic_variables()
        with tf.GradientTape() as tape:
            representation, logits = self._representation_and_logits(x, training=True)
            representation = tf.reshape(tf.cast(representation, tf.float32), [tf.shape(x)[0], self.representation_dim])
            fixed = tf.stop_gradient(representation)
            with tape.stop_recording():
                self._sync_copy()  # AA-MINE's copy of layers 1..i equals the network now
                if self._copy_pairs:
                    self._track_head_scale(batch.gather(fixed))
                for _ in range(self.critic_steps):
                    with tf.GradientTape() as critic_tape:
                        i_x, i_y = self._terms(batch, fixed, update_state=True)
                        critic_loss = -(i_x.surrogate + i_y.surrogate) / replicas
                        scaled_critic_loss = self.critic_optimizer.scale_loss(critic_loss)
                    grads = critic_tape.gradient(scaled_critic_loss, critic_variables)
                    self.critic_optimizer.apply_gradients(
                        [(g, v) for g, v in zip(grads, critic_variables) if g is not None])
            ce = tf.cast(self.cross_entropy(y, logits), tf.float32)
            if not ce_is_scaled:
                ce = ce / replicas
            i_x, i_y = self._terms(batch, representation, update_state=False)
            loss = self.alpha * ce + (self.gamma * i_x.surrogate - self.beta * i_y.surrogate) / replicas
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed precision
        # Layers after `layer` get no gradient when alpha is 0: leave them as they are.
        updates = [(g, v) for g, v in zip(tape.gradient(scaled_loss, variables), variables) if g is not None]
        if updates:  # a fully frozen classifier only trains the critics (measurement)
            self.optimizer.apply_gradients(updates)
        ce = ce * replicas
        self.total_tracker.update_state(self.alpha * ce - self.beta * i_y.value + self.gamma * i_x.value)
        self.ce_tracker.update_state(ce)
        self.i_x_tracker.update_state(i_x.value)
        self.i_y_tracker.update_state(i_y.value)
        self.accuracy_tracker.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "x_regularizer": keras.saving.serialize_keras_object(self.x_regularizer),
            "y_regularizer": keras.saving.serialize_keras_object(self.y_regularizer),
            "layer": self.layer,
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "noise_variance": self.noise_variance,
            "critic_steps": self.critic_steps,
            "x_critic": self.x_critic,
            "seed": self.seed,
        }
        base_config = super().get_config()
        return {**base_config, **config}
