"""Lautum regularization between unlabeled target inputs and a Jacobian proxy of the weights."""

import keras
import numpy as np
import tensorflow as tf

from tfinfo.regularizers import lautum_checks
from tfinfo.regularizers import lautum_covariance
from tfinfo.regularizers import lautum_statistics

_CONFIG = (  # get_config's keys, in order
    "num_outputs", "ema_decay", "mode", "refresh_every", "projection_dim",
    "max_correlation", "precision", "seed", "input_shape_hint", "cross_replica",
)


@keras.saving.register_keras_serializable(package="tfinfo")
class LautumRegularizer(keras.layers.Layer):
    """Gaussian Lautum information `L(w; x)` with moving covariances (seed 000, section 4.1).

    `x` is a flattened unlabeled target image and `w = d(r . f(x)) / dx` the input
    gradient of the randomly projected logits (one D-vector per sample). x is normalized
    by the target set's per-feature scale and whitened once with the Cholesky factor of
    the Ledoit-Wolf-shrunk target covariance (computed by `adapt`); w is normalized by
    the batch's per-feature standard deviation. The layer keeps a moving estimate `J` of
    the joint covariance of `z = (x, w)` (2k x 2k, k = D or `projection_dim`):

        J_0 = I,    J_t = (1 - omega_t) J_{t-1} + omega_t Z^T Z / n,
        omega_t = max(1 / (t + k / n), 1 - ema_decay).

    Early on this is the running mean of the batch covariances shrunk towards the
    identity with `k / (k + t n)` (the number of features over the number of samples
    seen); from `t = 1 / (1 - a) - k / n` on it is the paper's exponential moving
    average with decay `a`. Every block, `Sigma_x` included, is estimated from the same
    samples, so `J` is a covariance (positive definite) and every canonical correlation
    is below 1. (The paper whitens with a fixed `Sigma_x`; its batch cross-covariances
    then give "correlations" above 1 in the first hundreds of steps.)

    The value is the Lautum information of a Gaussian with covariance `J`,
    `L = KL(N(0, D) || N(0, J)) = 1/2 [tr(J^-1 D) - 2k + logdet J - logdet D]`,
    `D = blockdiag(J_xx, J_ww)`, in true nats (half of the paper's eq. 9); equivalently
    `sum_i 1/2 log(1 - l_i) + l_i / (1 - l_i)` over the squared canonical correlations
    `l_i`. Each `l_i` is clamped at `max_correlation**2`: the penalty is flat along any
    direction that pushes a correlation past `max_correlation`, and its gradient is the
    gradient of that same clamped value.

    The gradient reaches the network through this batch's `omega_t Z^T Z / n` only (x
    has none), as `2 omega_t / n Z G` with `G = dL/dJ_t`, at O(k^2 n) cost.

    - `mode="fast"` (default) keeps `J^-1`, `J_xx^-1`, `J_ww^-1` and the log-determinants
      up to date with the Woodbury identity and the matrix determinant lemma (a rank-n
      update per step, O(k^2 n)), so the value and the gradient are exact at every step
      with no k^3 work; every `refresh_every` steps (default 200) the inverses are
      recomputed from `J` by Cholesky (removing rounding drift) and the canonical
      correlations by an eigendecomposition. The 8 top canonical directions are
      tracked between eigendecompositions by one subspace iteration a step (O(k^2));
      while one of them comes within `(1 - max_correlation**2) / 2` of the bound, the
      step takes the exact path. (The tracked correlations are Ritz values, lower
      bounds that the iteration keeps tight as `J` moves slowly.)
    - `mode="exact"` evaluates the clamped closed form by an eigendecomposition of the
      canonical problem at every step (O(k^3)): the reference.

    Both give the same value and gradient up to rounding while no correlation is at
    the bound. `projection_dim` optionally replaces the D pixels by the top principal
    components of the target set (whitened), which shrinks every matrix to k x k.
    Covariance work runs in `precision` (float32 by default) whatever the dtype
    policy; a non-finite value contributes nothing and is counted in
    `nonfinite_count`.

    Misuse is refused: a bad constructor argument, inputs that are not a pair `(x, w)`
    of one shape with the number of features per sample the layer was built or adapted
    for (a `ValueError` naming the argument, see `lautum_checks`; static shapes only),
    `adapt` on a constant or degenerate target set (Expected ...
    Received), a call before `adapt` and a batch of 1 (a `ValueError` when the batch
    size is static, else a `tf.debugging` assertion; XLA drops assertions, so under
    `jit_compile` only the static check remains). A non-finite batch leaves the state
    as it was and is counted in `nonfinite_count`.

    Under a `tf.distribute` strategy with several replicas (and `cross_replica=True`)
    the replicas' `(x, w)` are all-gathered first, so every statistic is that of the
    global batch and every replica writes the same state. The gradient reaching each
    replica's `w` is that of the global value summed over the replicas, so a train step
    divides the term by the number of replicas, as Keras divides compiled losses.

    Args:
        num_outputs: K, the number of logits projected by `r ~ N(0, 1/sqrt(K))`.
        ema_decay: `a`, the decay of the moving covariance once past the running-mean
            phase (the paper uses 0.999); in (0, 1).
        mode: `"fast"` (exact value and gradient by rank-n updates) or `"exact"` (an
            eigendecomposition every step).
        refresh_every: steps between the fast mode's refactorizations (default 200).
        projection_dim: if set, k principal components of the target set replace the
            D input features (for x and for w).
        max_correlation: bound on the canonical correlations, in (0, 1).
        precision: `"float32"` (default) or `"float64"` for the covariance state and
            the linear algebra. float32 halves the memory and is about 3x faster on
            a CPU; the fast mode's value stayed within 1.2e-4 (relative) of a float64
            reference over 2,000 training steps at D = 784 (the identity prior's
            floor bounds the condition number of `J`, and the refactorization every
            `refresh_every` steps removes the rank-n updates' drift).
        seed: seed of the projection vector draws.
        input_shape_hint: per-sample input shape; builds the layer at construction.
        cross_replica: all-gather `(x, w)` across replicas before any statistic.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tuple `(x, w)` of target images and their Jacobian proxies, both of
            shape `(N,) + input_shape`, N >= 2.
        training: the moving covariance is updated only when True.

    Returns:
        `(surrogate, value)`: `value` is the Lautum estimate in nats (no gradient);
        `surrogate` has the same value and carries the gradient.

    Example:

    >>> reg = LautumRegularizer(num_outputs=10, input_shape_hint=(8, 8, 1))
    >>> reg.adapt(np.random.rand(200, 8, 8, 1))
    >>> x = tf.random.uniform((16, 8, 8, 1)); w = tf.random.normal((16, 8, 8, 1))
    >>> surrogate, value = reg((x, w), training=True)

    Reference:
        Jakubovitz, Uliel, Rodrigues, Giryes, "Lautum Regularization for
        Semi-supervised Transfer Learning", section 4.1; Palomar & Verdu 2008.
    """

    def __init__(
        self,
        num_outputs=10,
        ema_decay=0.999,
        mode="fast",
        refresh_every=None,
        projection_dim=None,
        max_correlation=0.99,
        precision="float32",
        seed=None,
        input_shape_hint=None,
        cross_replica=True,
        **kwargs,
    ):
        # Inputs in float32 whatever the global policy (the statistics are in `precision`).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        checked = lautum_checks.check_constructor(num_outputs, ema_decay, mode, refresh_every, projection_dim,
                                                  max_correlation, precision, seed, input_shape_hint, cross_replica)
        for name, value in checked.items():  # the names of _CONFIG
            setattr(self, name, value)
        self._seed_generator = keras.random.SeedGenerator(self.seed)
        if self.input_shape_hint is not None:
            self.build((None,) + self.input_shape_hint)

    # ------------------------------------------------------------------ state
    @property
    def effective_refresh_every(self):
        if self.mode == "exact":
            return 1
        return self.period

    @property
    def period(self):
        """Steps between refactorizations (fast mode) and prior top-ups (both modes)."""
        return self.refresh_every or 200

    @property
    def tracked_directions(self):
        return min(8, self.feature_dim)

    def build(self, input_shape):
        if self.built:
            return
        d = int(np.prod(lautum_checks.build_sample_shape(input_shape)))
        if self.projection_dim is not None and self.projection_dim > d:
            raise ValueError(
                f"Expected `projection_dim` <= the input dimension {d}. "
                f"Received: projection_dim={self.projection_dim}"
            )
        k = self.projection_dim or d
        self.input_dim, self.feature_dim = d, k
        p = self.precision

        def state(name, shape, init="zeros", dtype="float32"):
            return self.add_weight(name=name, shape=shape, initializer=init, trainable=False, dtype=dtype)

        self.x_mean = state("x_mean", (d,))
        self.x_scale = state("x_scale", (d,), "ones")
        if self.projection_dim is None:
            self.x_whitener = state("x_cholesky", (d, d), "identity")
        else:
            self.x_whitener = state("pca_components", (d, k))
            self.pca_scale = state("pca_scale", (k,), "ones")
        self.projection = state("projection", (self.num_outputs,))
        # The joint covariance J in blocks, and (fast mode) its inverses and log-dets.
        self.x_ema = state("x_ema", (k, k), "identity", p)
        self.cross_ema = state("cross_ema", (k, k), "zeros", p)
        self.w_ema = state("w_ema", (k, k), "identity", p)
        if self.mode == "fast":
            self.joint_inverse = state("joint_inverse", (2 * k, 2 * k), "identity", p)
            self.x_inverse = state("x_inverse", (k, k), "identity", p)
            self.w_inverse = state("w_inverse", (k, k), "identity", p)
            self.logdets = state("logdets", (3,), "zeros", p)  # J, J_xx, J_ww
        m = self.tracked_directions
        self.top_vectors = state("top_vectors", (k, m), "zeros", p)
        self.prior_weight = state("prior_weight", (), "ones", p)
        self.step = state("step", (), dtype="int64")
        self.adapted = state("adapted", (), dtype="bool")
        self.nonfinite_count = state("nonfinite_count", (), dtype="int64")
        self.exact_steps = state("exact_steps", (), dtype="int64")
        self.bound_active = state("bound_active", ())
        self.shrinkage = state("shrinkage", ())
        self.max_canonical_correlation = state("max_canonical_correlation", ())
        super().build(input_shape)
        self.resample_projection()

    def get_build_config(self):
        return {"input_shape": None if not self.built else (None,) + self._sample_shape}

    def build_from_config(self, config):
        if config and config.get("input_shape") is not None:
            self.build(tuple(config["input_shape"]))

    @property
    def _sample_shape(self):
        return self.input_shape_hint or (self.input_dim,)

    def resample_projection(self):
        """Draws a new projection vector `r ~ N(0, 1/sqrt(K))` (variance, as in the paper).

        The draw (Box-Muller on `tfinfo.critics.marginals.random_bits`, advancing the
        layer's seed generator) is the same in graph mode, under XLA and on every replica.
        """
        std = self.num_outputs ** -0.25
        self.projection.assign(std * lautum_statistics.standard_normal(self.num_outputs, self._seed_generator))

    def reset_state(self):
        """Resets the moving covariance to the identity prior (keeps the target statistics)."""
        lautum_covariance.reset_state(self)

    # ------------------------------------------------------------------ adapt
    def adapt(self, x_unlabeled, chunk_size=2048):
        """Computes the target statistics once: mean, scale and whitening of `Sigma_x`.

        Args:
            x_unlabeled: array of unlabeled target inputs, shape `(N,) + input_shape`,
                in the same units the network receives (e.g. raw 0..255 pixels).
            chunk_size: rows processed at once (float64).
        """
        x = lautum_checks.check_unlabeled(x_unlabeled, self.input_dim if self.built else None)
        chunk_size = lautum_checks.check_integer("chunk_size", chunk_size, 1)
        if not self.built:
            self.build((None,) + x.shape[1:])
        x = x.reshape(x.shape[0], -1)
        stats = lautum_statistics.target_statistics(x, self.input_dim, chunk_size, self.projection_dim)
        self.x_mean.assign(stats["mean"])
        self.x_scale.assign(stats["scale"])
        self.x_whitener.assign(stats["whitener"])
        if self.projection_dim is not None:
            self.pca_scale.assign(stats["pca_scale"])
        self.x_shrinkage = stats["shrinkage"]
        self.num_constant_features = stats["num_constant_features"]
        self.x_rank = stats["rank"]
        self.adapted.assign(True)
        self.reset_state()

    # ------------------------------------------------------------------ features
    def _features(self, x, w):
        pca_scale = None if self.projection_dim is None else self.pca_scale
        statistics = (self.input_dim, self.x_mean, self.x_scale, self.x_whitener, pca_scale)
        return lautum_covariance.normalized_features(x, w, *statistics)

    # ------------------------------------------------------------------ maths
    @property
    def _pdtype(self):
        return tf.float64 if self.precision == "float64" else tf.float32

    def omega(self, step, batch_size):
        """Weight of step `step`'s batch covariance: `max(1 / (t + k / n), 1 - a)`."""
        return lautum_covariance.omega(step, batch_size, self.feature_dim, self.ema_decay, self._pdtype)

    def closed_form(self, cx, c, s):
        """Clamped Lautum value and its exact gradient at joint covariance blocks `(J_xx,
        C, J_ww)`: `(value, grad_c, grad_s, eigenvalues, vectors)`, see
        `tfinfo.regularizers.lautum_covariance.closed_form` (bounded at `max_correlation`)."""
        return lautum_covariance.closed_form(cx, c, s, self.max_correlation)

    def _refactorize(self):
        """Recomputes the fast mode's inverses and log-dets from `J` (Cholesky)."""
        return lautum_covariance.refactorize(self)

    def _exact(self, record):
        value, g_c, g_s, lam, u = self.closed_form(self.x_ema, self.cross_ema, self.w_ema)
        if record:  # inference calls leave the state as it is
            lautum_covariance.record_spectrum(self, lam, u)
        return value, g_c, g_s

    def estimate(self, x, w):
        """Lautum information of one sample set, from scratch (no moving state).

        The joint covariance of the N normalized, whitened pairs shrunk towards the
        identity with `k / (k + N)` (what the moving estimate has after N samples),
        and the clamped closed form. Used by `tfinfo.callbacks.LautumProbe`.

        Args:
            x: target inputs, shape `(N,) + input_shape`, N >= 2.
            w: their Jacobian proxies, same shape.

        Returns:
            `(value, max_correlation)`: float32 scalar tensors (nats, and the largest
            canonical correlation).
        """
        x, w = lautum_checks.check_pair((x, w), self.input_dim)
        xt, wt = self._features(tf.cast(x, tf.float32), tf.cast(w, tf.float32))
        dtype = self._pdtype
        z = tf.cast(tf.concat([xt, wt], axis=1), dtype)
        k = self.feature_dim
        joint = lautum_covariance.shrunk_joint_covariance(z, k)
        value, _, _, lam, _ = self.closed_form(joint[:k, :k], joint[:k, k:], joint[k:, k:])
        return tf.cast(value, tf.float32), tf.cast(tf.sqrt(lam[-1]), tf.float32)

    def prior_floor(self, batch_size):
        """Smallest identity weight kept in `J` (see `lautum_covariance.prior_floor`)."""
        return lautum_covariance.prior_floor(batch_size, self.feature_dim, self.ema_decay, self._pdtype)

    def __call__(self, inputs, *args, **kwargs):
        lautum_checks.check_pair(inputs, self.input_dim if self.built else None)  # before Keras builds
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None):
        x, w = lautum_checks.check_pair(inputs, self.input_dim)
        x, w = tf.cast(x, tf.float32), tf.cast(w, tf.float32)
        if x.shape.rank is not None and x.shape[0] is not None and x.shape[0] < 2:
            raise ValueError(
                "Expected a batch of at least 2 target samples for the Lautum statistics "
                f"(one sample has no covariance). Received: batch size {x.shape[0]}"
            )
        context = tf.distribute.get_replica_context()
        if self.cross_replica and context is not None and context.num_replicas_in_sync > 1:
            # `tf.identity` places the tensors on this replica's device: under
            # MultiWorkerMirroredStrategy an all-gather of the raw input batch (a float32
            # dataset element, which the cast returns as it is) fails with
            # "destinations can not be empty".
            x, w = context.all_gather([tf.identity(x), tf.identity(w)], axis=0)
        checks = [
            tf.debugging.assert_equal(
                self.adapted,
                True,
                message="Expected `adapt(x_unlabeled)` before training with a LautumRegularizer "
                "(it estimates the target statistics). Received: a regularizer never adapted",
            ),
            tf.debugging.assert_greater_equal(
                tf.shape(x)[0],
                2,
                message="Expected a batch of at least 2 target samples for the Lautum statistics "
                "(one sample has no covariance). Received: a batch of 1",
            ),
        ]
        with tf.control_dependencies(checks):
            xt, wt = self._features(x, w)
        dtype = self._pdtype
        zx, zw = tf.cast(xt, dtype), tf.cast(wt, dtype)
        n = tf.cast(tf.shape(zx)[0], dtype)
        fast = self.mode == "fast"
        if training:
            # A non-finite batch is counted and leaves every statistic as it was (the
            # moving estimate would never recover from one NaN).
            ok, sx, sw = lautum_covariance.finite_or_zeros(tf.stop_gradient(zx), tf.stop_gradient(zw))
            self.step.assign_add(tf.cast(ok, tf.int64))
            self.nonfinite_count.assign_add(tf.cast(tf.logical_not(ok), tf.int64))
            step = tf.maximum(self.step, 1)
            omega = self.omega(step, tf.shape(zx)[0])

            def update():
                return lautum_covariance.update_state(self, sx, sw, omega, n, step)

            if fast:
                # `Z J^-1` and `Z_w J_ww^-1` after the update, for the gradient carrier.
                y_new, zw_w_new = tf.cond(
                    ok, update, lambda: (tf.zeros_like(tf.concat([sx, sw], 1)), tf.zeros_like(sw))
                )
            else:
                tf.cond(ok, update, lambda: tf.constant(False))
        else:
            omega = self.omega(tf.maximum(self.step, 1), tf.shape(zx)[0])

        def exact_path():
            value, g_c, g_s = self._exact(record=bool(training))
            carrier = tf.reduce_sum(tf.matmul(zx, g_c) * zw) + tf.reduce_sum(tf.matmul(zw, g_s) * zw)
            return value, carrier, tf.constant(1, tf.int64)

        def fast_path():
            k, inv = self.feature_dim, self.joint_inverse
            known = (y_new, zw_w_new) if training else ()  # from the rank-n updates
            carrier = lautum_covariance.fast_carrier(zx, zw, inv, self.x_ema, self.w_ema, self.w_inverse, k, *known)
            value = lautum_covariance.fast_value(inv, self.cross_ema, self.logdets, k)
            return value, carrier, tf.constant(0, tf.int64)

        if fast:
            bound = self.max_correlation**2
            tracked = lautum_covariance.tracked_correlations(self, update=ok if training else False)
            if training:
                top = tf.reduce_max(tracked)
                self.max_canonical_correlation.assign(tf.sqrt(tf.maximum(tf.cast(top, tf.float32), 0.0)))
                self.bound_active.assign(tf.cast(top >= bound, tf.float32))
            near = tf.reduce_any(tracked >= bound - 0.5 * (1.0 - bound))
            value, carrier, exact_used = tf.cond(near, exact_path, fast_path)
        else:
            value, carrier, exact_used = exact_path()
        finite, surrogate, value = lautum_covariance.surrogate_and_value(value, omega * carrier / n)
        if training:
            self.exact_steps.assign_add(exact_used)
            # (A non-finite batch was counted above.)
            self.nonfinite_count.assign_add(tf.cast(tf.logical_not(finite) & ok, tf.int64))
        return surrogate, value

    def compute_output_spec(self, inputs, training=None):
        return (keras.KerasTensor(()), keras.KerasTensor(()))

    def get_config(self):
        config = {name: getattr(self, name) for name in _CONFIG}
        base_config = super().get_config()
        return {**base_config, **config}


__all__ = ["LautumRegularizer"]
