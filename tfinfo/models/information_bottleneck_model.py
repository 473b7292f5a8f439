"""Training with the noise-regularized information-bottleneck functional (seed 003)."""

import keras
import tensorflow as tf

from tfinfo.callbacks.critic_warmup import check_warmup
from tfinfo.critics.architecture_aware_critic import ArchitectureAwareCritic
from tfinfo.critics.concat_critic import ConcatCritic
from tfinfo.layers.measurement_noise import portable_normal
from tfinfo.models.classifier_wrapper import ClassifierWrapper
from tfinfo.models.classifier_wrapper import representation_and_logits_model
from tfinfo.models.classifier_wrapper import CriticOptimizerMixin
from tfinfo.models.critic_schedule_mixin import CriticScheduleMixin
from tfinfo.models.replica_batch import ReplicaBatch
from tfinfo.models.training_modes import mode_dependent_layers
from tfinfo.regularizers.mutual_information import MutualInformationRegularizer

X_CRITICS = ("mine", "aa_mine")
CRITIC_BATCHES = ("fresh", "reuse")
REPRESENTATION_MODES = ("inference", "training")
HEAD_SCALE_MOMENTUM = 0.9


def _layer_index(classifier, layer):
    """1-based position of `layer` among the non-input layers (`None` = the last)."""
    body = [lay.name for lay in classifier.layers if not isinstance(lay, keras.layers.InputLayer)]
    return len(body) if layer is None else body.index(layer) + 1


@keras.saving.register_keras_serializable(package="tfinfo")
class InformationBottleneckModel(CriticScheduleMixin, CriticOptimizerMixin, ClassifierWrapper):
    """`alpha CE - beta I(Y; L) + gamma I(X; L + eps)` with two MINE critics.

    `L` is the output of `layer` (default: the classifier's output, `Y_hat`), flattened;
    `eps ~ N(0, noise_variance I)` is measurement noise used only inside the estimate of
    `I(X; L + eps)` (seed 003, section 3): the network itself stays deterministic.

    Each `train_step` (phase "alternate"), with `K = critic_steps`:

    1. computes `L` on the batch, in the critics' mode (below), and the logits;
    2. updates both critics `K` times (fresh noise each time) with the critic optimizer;
       `I(Y; L)` is measured between one-hot labels and `L` (both critics are trained
       even when a weight is 0, so both are always reported);
    3. updates the classifier's trainable variables on the objective with the critics
       held fixed. Frozen layers (`layer.trainable = False`) are left alone, which is how
       the layer-by-layer scheme of seed 003 section 5 trains one layer at a time.

    Critic batches (Algorithm 1). With `critic_batches="fresh"` (the default) the batch
    a step receives is split into `K + 1` interleaved parts (global rows `j, j + K + 1,
    ...`): critic update `j` uses part `j` only, and the network step the last part, so
    every critic update draws a minibatch of its own, as Algorithm 1 does (steps 1-6),
    and the network step one the critics never trained on. Give `fit` batches of
    `batch_size_for(b)` = `(K + 1) * b` rows for minibatches of `b` rows; a plain batch of
    `b` rows still trains, with minibatches of about `b / (K + 1)` rows (at least 2 each
    are required; a smaller batch whose size is known when traced raises ValueError).
    `L` of every part is computed once per step, with the network as it is during the
    `K` updates (it does not change between them). `critic_batches="reuse"` is the
    former schedule: the `K` updates and the network step all use the whole batch (only
    the noise and the marginal shuffle are new). Departures from Algorithm 1 either way:
    the marginal sample is a shuffle of the same minibatch (as in MINE) rather than a
    second draw, and the gradient is MINE's bias-corrected one (moving average).

    Logged `i_x` and `i_y` are measured on data the critics did not just train on:
    "fresh", the network's part, with the critics after their `K` updates (the values
    the network step uses); "reuse", the step's batch before the critics' updates (with
    the critics of the previous step). They are estimates of the bounds, not training
    objectives, so they do not run high by having just been fitted to the same rows.

    Warm-up (seed 003, appendix C: the critics trained "until convergence" before the
    network). `critic_warmup=N` (or `"settle"`) makes `fit` first run a warm-up `fit` on
    the same data in which only the critics learn (`set_phase("critic")`: steps 1-2,
    plus the held-out estimate, no network update) for `N` steps (or until the logged
    estimates settle; `CriticWarmup`), once per model object; `warm_up(...)` runs one
    explicitly, and `warmup_history` holds its per-step estimates. A custom loop that
    does not call `fit` (e.g. `trainers.distributed.fit` under `MirroredStrategy`) gives
    a warm-up run the `CriticWarmup` callback itself.

    Mode consistency. The AA-MINE copy of layers `1..i` runs in inference mode, so with
    `representation_mode="inference"` (the default) the critics see `L` computed in
    inference mode, the joint pairs are exactly `(x, F_i(x) + eps)`, and both `I` terms
    of the network step are taken on that inference-mode `L` (their gradient flows
    through it). When the classifier has layers that compute differently in training
    (dropout, batch normalization, noise: `mode_dependent_layers`), the CE and the
    accuracy come from a second, training-mode forward pass of the network's part (so
    dropout still regularizes the CE, as in seed 003's CIFAR network); otherwise one
    forward pass serves both. `representation_mode="training"` measures the
    training-mode `L` of one forward pass over the whole batch (the former behaviour);
    it is refused with an architecture-aware critic when layers `1..i` depend on the
    mode (its copy could not reproduce their masks or batch statistics).

    AA-MINE copy. With `train_copy=False` (default) the copy is re-synced to the network
    before every step's critic updates. With `train_copy=True` the copy is part of the
    critic's parameters (Algorithm 1's `theta`, literally): it starts at the network's
    weights (at construction and `adapt`) and is then trained with the head, never
    re-synced.

    Distribution, XLA and mixed precision. Under a `tf.distribute` strategy both bounds
    are those of the global batch (or of the global part): a regularizer with
    `cross_replica=True` (the default) all-gathers its inputs itself and is given this
    replica's rows; one without is given the all-gathered inputs, labels and
    representations (`ReplicaBatch`). Gradients flow back to each replica's rows through
    the gathers. The parts are interleaved over the global batch, so they are the same
    on one device and on several replicas. The measurement noise is drawn alike on every
    replica (`portable_normal`, same seed state) and each sample gets the noise of its
    global position, so MINE's moving averages, the AA-MINE head scale (moments of the
    global batch) and the copy sync are the same on every replica and equal one
    device's. Critic and classifier penalties are divided by the number of replicas (as
    Keras divides compiled losses), and the CE is each replica's sum over its rows of the
    network's part divided by the part's global row count, so the summed replica
    gradients are the single-device gradients also when the replicas hold unequal
    shares of the part (a compiled loss is Keras's per-replica mean: exact for equal
    shares). XLA (`jit_compile=True`) draws
    the same noise as graph mode. Under a mixed precision policy the network and the
    critics compute in the policy's precision; the representation is cast to float32
    before any statistic, the critics' scores before any bound, and both losses are
    scaled by their optimizers (`scale_loss`). Logs are global-batch values.

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
            copy of the classifier's layers up to `layer`, then a concat head on
            `[F(x), L + eps]`; the paper's choice).
        seed: seed of the measurement noise.
        critic_batches: `"fresh"` (default, Algorithm 1) or `"reuse"` (see above).
        critic_warmup: critic-only steps before the network's first update (an int >= 0,
            default 0: none) or `"settle"` (see above and `CriticWarmup`).
        representation_mode: `"inference"` (default) or `"training"`: the mode in which
            `L` is computed for the critics and the `I` terms (see above).
        **kwargs: base `keras.Model` arguments.

    Call arguments:
        inputs: a batch of inputs; returns the classifier's logits.
        training: passed to the classifier.

    Example:

    >>> model = InformationBottleneckModel(classifier, alpha=1.0, beta=1.0, gamma=1e-3,
    ...                                    critic_steps=10, critic_warmup="settle")
    >>> model.adapt(x_train)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3),
    ...               critic_optimizer=keras.optimizers.Adam(1e-4))
    >>> model.fit(x_train, y_train, batch_size=model.batch_size_for(100), epochs=5)

    Reference:
        Elad, Haviv, Blau and Michaeli, "The effectiveness of layer-by-layer training
        using the information bottleneck principle" (seed 003), eq. (5), (7), (8),
        section 5, Algorithm 1 and appendices A-C.
    """

    nested_config_keys = ("classifier", "x_regularizer", "y_regularizer")
    scale_critic_loss = True  # the critic optimizer is loss-scaled under mixed_float16

    def __init__(self, classifier, x_regularizer=None, y_regularizer=None, layer=None, alpha=1.0, beta=0.0,
                 gamma=0.0, noise_variance=2.0, critic_steps=10, x_critic="mine", seed=None, critic_batches="fresh",
                 critic_warmup=0, representation_mode="inference", **kwargs):
        super().__init__(**kwargs)
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not float(value) >= 0:
                raise ValueError(f"Expected `{name}` >= 0. Received: {name}={value}")
        if not float(noise_variance) > 0:
            raise ValueError(f"Expected `noise_variance` > 0. Received: noise_variance={noise_variance}")
        if int(critic_steps) < 1:
            raise ValueError(f"Expected `critic_steps` >= 1. Received: critic_steps={critic_steps}")
        for name, value, allowed in (("x_critic", x_critic, X_CRITICS), ("critic_batches", critic_batches,
                                     CRITIC_BATCHES), ("representation_mode", representation_mode,
                                                       REPRESENTATION_MODES)):
            if value not in allowed:
                raise ValueError(f"Expected `{name}` to be one of {allowed}. Received: {name}={value!r}")
        self.critic_warmup = check_warmup(critic_warmup)
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
        # Layers that compute differently in training: anywhere (for the CE's forward
        # pass) and in layers 1..i (what an AA-MINE copy reproduces in inference mode).
        sub_network = ArchitectureAwareCritic.sub_network(classifier, _layer_index(classifier, layer))
        self._mode_dependent = mode_dependent_layers(classifier)
        up_to_layer = mode_dependent_layers(sub_network)
        # AA-MINE: the critic's copy of layers 1..i follows the network; the pairs are
        # (copy variable, network variable), assigned before every step's critic updates
        # (not with `train_copy=True`: the copy is then trained as part of the critic).
        self._copy_pairs, self._sync_each_step = [], False
        if isinstance(x_regularizer.critic, ArchitectureAwareCritic):
            if representation_mode == "training" and up_to_layer:
                raise ValueError(
                    "Expected representation_mode='inference' with an architecture-aware critic when layers 1..i "
                    "compute differently in training: its copy runs them in inference mode, so training-mode "
                    "representations would not be F_i(x) + eps. Received: representation_mode='training' with "
                    f"mode-dependent layers {up_to_layer}")
            source = sub_network
            copy_weights = x_regularizer.critic.feature_network.weights
            if [tuple(w.shape) for w in copy_weights] != [tuple(w.shape) for w in source.weights]:
                raise ValueError(
                    "Expected the architecture-aware critic's copy to have the weights of the classifier's layers "
                    f"up to `layer`. Received: copy shapes {[tuple(w.shape) for w in copy_weights]}, network "
                    f"shapes {[tuple(w.shape) for w in source.weights]}")
            self._copy_pairs = list(zip(copy_weights, source.weights))
            self._sync_each_step = not x_regularizer.critic.train_copy
        self.x_critic = x_critic
        self.critic_batches, self.representation_mode = critic_batches, representation_mode
        self._phase = "alternate"
        self.critics_warmed_up = False
        self.warmup_history = []
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

    # -- the step -----------------------------------------------------------------------

    def _terms(self, batch, representation, update_state):
        """The two bounds on the current representation (fresh measurement noise).

        `representation` is this replica's rows; `batch` (a `ReplicaBatch`) gives the
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

    def _forward(self, whole, parts, follow):
        """`(L of every row, in the critics' mode, flattened float32; logits of the
        network's part)`; see "Mode consistency" in the class docstring."""
        x = whole.x
        if self.representation_mode == "training" or not self._mode_dependent:
            # Training mode, or a network that computes the same in both modes.
            representation, logits = self._representation_and_logits(
                x, training=self.representation_mode == "training" or follow)
            logits = whole.part(logits, parts - 1, parts)
        else:
            representation, logits = self._representation_and_logits(x, training=False)
            if follow:  # the CE of the network step, with dropout (or batch statistics)
                logits = self._representation_and_logits(whole.part(x, parts - 1, parts), training=True)[1]
            else:
                logits = whole.part(logits, parts - 1, parts)
        representation = tf.reshape(tf.cast(representation, tf.float32), [tf.shape(x)[0], self.representation_dim])
        return representation, logits

    def _check_batch(self, x, parts, whole):
        """Each part needs 2 rows: refused when traced if the size is known, else at run time."""
        if parts == 1:
            return
        expected = (f"Expected batches of at least 2 * (critic_steps + 1) = {2 * parts} rows with "
                    "critic_batches='fresh' (each critic update and the network step take their own part of >= 2 "
                    "rows; `batch_size_for(b)` gives the batch for parts of b rows, and a dataset can drop its "
                    "last incomplete batch). Received: a batch of ")
        rows = x.shape[0]  # one replica's rows; checked on one device only
        if rows is not None and whole.context is None:
            if rows < 2 * parts:
                raise ValueError(f"{expected}{rows} rows")
            return
        total = tf.shape(x)[0] if whole.context is None else whole.total
        tf.debugging.assert_greater_equal(total, 2 * parts, message=f"{expected}fewer rows")

    def _network_cross_entropy(self, whole, y, logits, parts, replicas, ce_is_scaled):
        """This replica's CE of the network's part, divided for the replicas' gradient sum.

        Replicas can hold unequal shares of the interleaved network part (e.g. 2 replicas,
        10 rows, 3 parts: global rows 2 | 5, 8). Without a compiled loss each replica sums
        its rows' CE and divides by the global row count, so the replicas' sum is one
        device's mean; a compiled loss is Keras's per-replica mean divided by the number
        of replicas (equal to it when the shares are equal)."""
        if whole.context is None or parts == 1 or ce_is_scaled:
            ce = tf.cast(self.cross_entropy(y, logits), tf.float32)
            return ce if ce_is_scaled else ce / replicas
        per_sample = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        rows = tf.cast(tf.maximum(tf.math.floordiv(whole.total, parts), 1), tf.float32)
        return tf.reduce_sum(tf.cast(per_sample, tf.float32)) / rows

    def train_step(self, data):
        self._check_compiled()
        x, y = data[0], data[1]
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # A compiled loss is already divided by the number of replicas (Keras); the plain CE is not.
        ce_is_scaled = getattr(self, "loss", None) is not None
        parts = self.critic_steps + 1 if self.critic_batches == "fresh" else 1
        follow = self._phase == "alternate"  # the network follows the critics
        whole = ReplicaBatch(x, tf.one_hot(y, self.num_classes))
        self._check_batch(x, parts, whole)
        batches = whole.split(parts, (self.x_regularizer, self.y_regularizer))
        network = batches[-1]
        critic_parts = list(range(parts - 1)) if parts > 1 else [0] * self.critic_steps
        y_network = whole.part(y, parts - 1, parts)
        variables = self.classifier.trainable_variables
        critic_variables = self._critic_variables()
        with tf.GradientTape() as tape:
            representation, logits = self._forward(whole, parts, follow)
            fixed = tf.stop_gradient(representation)
            with tape.stop_recording():
                if self._sync_each_step:
                    self._sync_copy()  # AA-MINE's copy of layers 1..i equals the network now
                if self._copy_pairs:
                    self._track_head_scale(whole.gather(fixed))
                if parts == 1:  # "reuse": the estimate before the critics train on this batch
                    held_out = self._terms(network, fixed, update_state=False)
                for j in critic_parts:
                    with tf.GradientTape() as critic_tape:
                        i_x, i_y = self._terms(batches[j], whole.part(fixed, j, parts), update_state=True)
                        critic_loss = -(i_x.surrogate + i_y.surrogate) / replicas
                        scaled_critic_loss = self.critic_optimizer.scale_loss(critic_loss)
                    grads = critic_tape.gradient(scaled_critic_loss, critic_variables)
                    self.critic_optimizer.apply_gradients(
                        [(g, v) for g, v in zip(grads, critic_variables) if g is not None])
            ce = self._network_cross_entropy(whole, y_network, logits, parts, replicas, ce_is_scaled)
            if parts > 1 or follow:
                i_x, i_y = self._terms(network, whole.part(representation, parts - 1, parts), update_state=False)
                loss = self.alpha * ce + (self.gamma * i_x.surrogate - self.beta * i_y.surrogate) / replicas
                scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed precision
        if follow:
            # Layers after `layer` get no gradient when alpha is 0: leave them as they are.
            updates = [(g, v) for g, v in zip(tape.gradient(scaled_loss, variables), variables) if g is not None]
            if updates:  # a fully frozen classifier only trains the critics (measurement)
                self.optimizer.apply_gradients(updates)
        if parts == 1:
            i_x, i_y = held_out
        ce = ce * replicas
        self.total_tracker.update_state(self.alpha * ce - self.beta * i_y.value + self.gamma * i_x.value)
        self.ce_tracker.update_state(ce)
        self.i_x_tracker.update_state(i_x.value)
        self.i_y_tracker.update_state(i_y.value)
        self.accuracy_tracker.update_state(y_network, logits)
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
            "critic_batches": self.critic_batches,
            "critic_warmup": self.critic_warmup,
            "representation_mode": self.representation_mode,
        }
        base_config = super().get_config()
        return {**base_config, **config}
