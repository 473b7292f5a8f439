"""Mutual information `I(x; z)` between inputs and features, estimated by a trained critic."""

import keras
import numpy as np
import tensorflow as tf

from tfinfo.critics.concat_critic import ConcatCritic
from tfinfo.critics.marginals import MARGINALS
from tfinfo.critics.marginals import critic_scores
from tfinfo.information import bounds as bounds_lib


@keras.saving.register_keras_serializable(package="tfinfo")
class MutualInformationRegularizer(keras.layers.Layer):
    """A variational estimate of `I(x; z)` with its critic (seed 000, section 4.2).

    The layer owns the critic `T(x, z)` and the estimator's state. Called on a batch of
    inputs `x` and their features `z` it returns the bound's `value` (nats) and its
    `surrogate` (same value, the estimator's gradient; see `tfinfo.information.bounds`).
    A critic step maximizes the surrogate over `critic.trainable_variables`; a
    classifier step adds `lambda * surrogate` to its loss with the critic held fixed.

    `x` is flattened and standardized per feature with statistics from `adapt` (the
    unlabeled target set), so raw pixels reach the critic at unit scale; features with
    zero variance map to 0. Before `adapt`, `x` is used as is.

    Under a `tf.distribute` strategy with several replicas (and `cross_replica=True`)
    the scores are those of the global batch (`critic_scores(..., cross_replica=True)`:
    the replicas' `x` and `z` are all-gathered, the marginal shuffle is a permutation of
    the global batch, drawn alike on every replica from the mirrored seed generator (and
    alike in graph mode and under XLA: `tfinfo.critics.marginals.random_permutation`),
    and each replica scores its own rows), so every replica holds the global value and
    the same MINE moving average. The gradient a replica receives is that of the global
    value summed over the replicas: a train step divides the term (and the critic's
    loss) by the number of replicas, as Keras divides compiled losses.

    The layer's own dtype policy is float32 unless `dtype` is passed (its statistics
    and the bounds stay float32 under a mixed precision policy); the critic keeps its
    own policy (under `mixed_float16` it computes in half precision and its scores are
    cast to float32 before any bound).

    Args:
        critic: a critic layer (default `ConcatCritic("small")`, the MINE statistics
            network on `[flatten(x), z]`).
        estimator: one of `"smile"` (default; the clipped DV of seed 000's [40]),
            `"mine"`, `"dv"`, `"nwj"`, `"infonce"`, `"js"`.
        tau: SMILE's clipping threshold (seed 000 tunes it; 5 is Song & Ermon's default).
        smile_gradient: `"js"` (as in the SMILE authors' code) or `"dv"`.
        marginal: `"shuffle"` (in-batch shuffle) or `"all_pairs"` (every off-diagonal
            pair; required by InfoNCE).
        decay: MINE's moving-average decay.
        seed: seed of the marginal shuffles.
        cross_replica: score the global batch under a multi-replica strategy.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tuple `(x, z)`: `(N,) + input_shape` inputs and `(N, F)` features,
            `N >= 2` (the global batch under a strategy): a marginal pair needs two
            samples, and with one the shuffle would pair it with itself. A smaller
            batch raises `ValueError` when `N` is static; in a traced step with a
            dynamic `N` a `tf.debugging` assertion fails instead, except under XLA
            (`jit_compile=True`), which compiles assertions as no-ops.
        training: MINE's moving average is updated when `update_state` is True.
        update_state: defaults to `training`; the classifier step passes False so that
            only critic steps move MINE's moving average.

    Returns:
        `Bound(value, surrogate)` (float32 scalars).

    Example:

    >>> reg = MutualInformationRegularizer(estimator="smile", tau=5.0)
    >>> reg.build(((None, 28, 28, 1), (None, 64)))
    >>> reg.adapt(x_unlabeled)
    >>> value, surrogate = reg((x_target, features), training=True)

    Reference:
        Jakubovitz et al., seed 000, eq. (16) and section 4.2; Belghazi et al. 2018;
        Song & Ermon 2020.
    """

    def __init__(
        self,
        critic=None,
        estimator="smile",
        tau=5.0,
        smile_gradient="js",
        marginal="shuffle",
        decay=0.99,
        seed=None,
        cross_replica=True,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        bounds_lib.check_estimator(estimator, tau=tau, smile_gradient=smile_gradient, decay=decay)
        if marginal not in MARGINALS:
            raise ValueError(f"Expected `marginal` to be one of {MARGINALS}. Received: marginal={marginal!r}")
        if estimator == "infonce" and marginal != "all_pairs":
            raise ValueError(
                "Expected marginal='all_pairs' with estimator='infonce' (InfoNCE needs the score matrix). "
                f"Received: marginal={marginal!r}"
            )
        if critic is None:
            critic = ConcatCritic("small")
        if not isinstance(critic, keras.layers.Layer):
            raise ValueError(f"Expected `critic` to be a Keras layer. Received: critic={critic!r}")
        self.critic = critic
        self.estimator = estimator
        self.tau = None if tau is None else float(tau)
        self.smile_gradient = smile_gradient
        self.marginal = marginal
        self.decay = float(decay)
        self.seed = seed
        self.cross_replica = bool(cross_replica)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        x_shape, z_shape = input_shape
        self.input_dim = int(np.prod(x_shape[1:]))
        self.x_mean = self.add_weight(
            name="x_mean", shape=(self.input_dim,), initializer="zeros", trainable=False
        )
        self.x_scale = self.add_weight(
            name="x_scale", shape=(self.input_dim,), initializer="ones", trainable=False
        )
        self.log_moving_average = self.add_weight(
            name="log_moving_average", shape=(), initializer="zeros", trainable=False
        )
        self.moving_average_started = self.add_weight(
            name="moving_average_started", shape=(), initializer="zeros", trainable=False
        )
        if not self.critic.built:
            self.critic.build(((None, self.input_dim), tuple(z_shape)))

    def adapt(self, x_unlabeled, chunk_size=4096):
        """Sets the per-feature mean and scale of `x` from the unlabeled target inputs."""
        x = np.asarray(x_unlabeled)
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(
                f"Expected at least 2 unlabeled inputs with a sample axis. Received: x_unlabeled.shape={x.shape}"
            )
        x = x.reshape(x.shape[0], -1)
        if self.built and x.shape[1] != self.input_dim:
            raise ValueError(
                f"Expected unlabeled inputs with {self.input_dim} features per sample. Received: {x.shape[1]}"
            )
        total = np.zeros(x.shape[1])
        squares = np.zeros(x.shape[1])
        for i in range(0, x.shape[0], chunk_size):
            c = x[i : i + chunk_size].astype(np.float64)
            if not np.all(np.isfinite(c)):
                raise ValueError("Expected finite unlabeled target inputs. Received: NaN or inf values")
            total += c.sum(0)
            squares += (c * c).sum(0)
        mean = total / x.shape[0]
        var = np.maximum(squares / x.shape[0] - mean * mean, 0.0)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var))):
            raise ValueError("Expected finite unlabeled target inputs. Received: NaN or inf values")
        constant = var <= 1e-12 * max(var.max(), 1e-300)
        scale = np.where(constant, 0.0, 1.0 / np.sqrt(np.where(constant, 1.0, var)))
        self.x_mean.assign(mean.astype(np.float32))
        self.x_scale.assign(scale.astype(np.float32))

    def normalize(self, x):
        """Flattened, standardized inputs as the critic sees them."""
        x = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], self.input_dim])
        return (x - self.x_mean) * self.x_scale

    def call(self, inputs, training=None, update_state=None):
        x, z = inputs
        if update_state is None:
            update_state = bool(training)
        x = self.normalize(x)
        z = tf.cast(z, tf.float32)
        scores = critic_scores(
            self.critic, x, z, marginal=self.marginal, seed=self.seed_generator, cross_replica=self.cross_replica
        )
        if self.estimator != "mine":
            return bounds_lib.evaluate_bound(
                self.estimator,
                scores.joint,
                scores.marginal,
                matrix=scores.matrix,
                tau=self.tau,
                smile_gradient=self.smile_gradient,
            )
        batch_log_mean = tf.stop_gradient(bounds_lib.log_mean_exp(tf.cast(scores.marginal, tf.float32)))
        previous = tf.where(self.moving_average_started > 0, self.log_moving_average, batch_log_mean)
        bound = bounds_lib.mine_bound(scores.joint, scores.marginal, log_moving_average=previous, decay=self.decay)
        if update_state:
            self.log_moving_average.assign(bound.log_moving_average)
            self.moving_average_started.assign(1.0)
        return bounds_lib.Bound(bound.value, bound.surrogate)

    def get_config(self):
        config = {
            "critic": keras.saving.serialize_keras_object(self.critic),
            "estimator": self.estimator,
            "tau": self.tau,
            "smile_gradient": self.smile_gradient,
            "marginal": self.marginal,
            "decay": self.decay,
            "seed": self.seed,
            "cross_replica": self.cross_replica,
        }
        base_config = super().get_config()
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["critic"] = keras.saving.deserialize_keras_object(config["critic"])
        return cls(**config)
