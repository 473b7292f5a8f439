"""Lautum regularization between unlabeled target inputs and a Jacobian proxy of the weights."""

import keras
import numpy as np
import tensorflow as tf

from tfinfo.critics.marginals import random_bits
from tfinfo.information.gaussian import lautum_and_mi_from_gram

_MODES = ("exact", "fast")


@keras.saving.register_keras_serializable(package="tfinfo")
class LautumRegularizer(keras.layers.Layer):
    """Gaussian Lautum information `L(w; x)` with EMA covariances (seed 000, section 4.1).

    `x` is a flattened unlabeled target image and `w = d(r . f(x)) / dx` the input
    gradient of the randomly projected logits (one D-vector per sample). Both are
    normalized per feature (x by the target set's standard deviation, w by the batch's),
    x is whitened once with the Cholesky factor of the shrunk target covariance
    `Sigma_x`, and `Sigma_w`, `Sigma_xw` are bias-corrected exponential moving averages
    `S_n = a S_{n-1} + (1 - a) S_batch`. The value is the closed form
    `1/2 logdet(I - M) + tr((I - M)^-1 - I)` in true nats (half of the paper's eq. 9).

    The gradient reaches the network only through `(1 - a) S_batch`, so the layer keeps
    the adjoint `dL/dS` at the EMA point in state and applies it to the batch at
    O(D^2 N) cost. In `"exact"` mode the adjoint is recomputed every step, which gives
    the exact gradient of the closed form; in `"fast"` mode it is refreshed every
    `refresh_every` steps (the EMA moves by about `refresh_every * (1 - a)` in between)
    and the logged value is the first-order expansion around the last refresh.
    `projection_dim` optionally replaces the D pixels by the top principal components
    of the target set (whitened), which shrinks every D x D matrix to k x k.

    Numerical safeguards: features with zero variance in the target set (e.g. MNIST
    borders) are mapped to 0 instead of dividing by 0; `Sigma_x` is shrunk with the
    Ledoit-Wolf coefficient; the joint EMA covariance of (x, w) is shrunk towards its
    diagonal (`Sigma_w` towards `(tr S / k) I`, `Sigma_xw` towards 0) with coefficient
    `k / (k + n_eff)`, `n_eff` the number of samples the bias-corrected EMA
    effectively averages (about 0.94 on the first step at k=784, batch 50, and 0.8% at
    steady state); the largest canonical correlation is clamped at `max_correlation`
    (the cross-covariance is scaled down, and `bound_active` reports it), so the
    otherwise unbounded value stays finite; a non-finite closed form contributes
    nothing and is counted in `nonfinite_count`.

    Under a `tf.distribute` strategy with several replicas (and `cross_replica=True`)
    the replicas' `(x, w)` are all-gathered first, so every statistic (the batch means
    and scales, `S_batch`, the shrinkage's sample count) is that of the global batch
    and every replica writes the same moving averages and adjoint into its copy of the
    state (the state variables have no cross-replica aggregation: each replica updates
    its own copy with the same value). The gradient reaching each replica's `w` is that
    of the global value summed over the replicas (the all-gather's gradient), so a train
    step divides the term by the number of replicas, as Keras divides compiled losses.
    The layer's dtype policy is float32 unless `dtype` is passed: under a mixed
    precision global policy the network runs in half precision while the inputs of this
    layer are cast to float32 and every statistic is float32.

    Args:
        num_outputs: K, the number of logits projected by `r ~ N(0, 1/sqrt(K))`.
        ema_decay: `a` of the covariance moving averages (the paper uses 0.999).
        mode: `"exact"` (adjoint every step) or `"fast"` (every `refresh_every` steps).
        refresh_every: steps between adjoint refreshes in fast mode (default 50).
        projection_dim: if set, k principal components of the target set replace the
            D input features (for x and for w).
        max_correlation: bound on the canonical correlations, in (0, 1).
        power_iterations: iterations of the warm-started power method that estimates
            the largest canonical correlation for the bound.
        seed: seed of the projection vector draws.
        input_shape_hint: per-sample input shape; builds the layer at construction.
        cross_replica: all-gather `(x, w)` across replicas before any statistic.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tuple `(x, w)` of target images and their Jacobian proxies, both of
            shape `(N,) + input_shape`.
        training: the moving averages are updated only when True.

    Returns:
        `(surrogate, value)`: `value` is the Lautum estimate in nats (no gradient);
        `surrogate` has the same value and carries the gradient `dL/dS_batch`.

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
        mode="exact",
        refresh_every=None,
        projection_dim=None,
        max_correlation=0.99,
        power_iterations=20,
        seed=None,
        input_shape_hint=None,
        cross_replica=True,
        **kwargs,
    ):
        # Statistics in float32 whatever the global policy: a mixed policy would make the
        # layer read its state (the whitener, moving averages) in half precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"Expected `mode` to be one of {_MODES}. Received: mode={mode!r}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"Expected `ema_decay` in [0, 1). Received: ema_decay={ema_decay}")
        if not 0.0 < float(max_correlation) < 1.0:
            raise ValueError(
                f"Expected `max_correlation` in (0, 1). Received: max_correlation={max_correlation}"
            )
        if int(num_outputs) < 1:
            raise ValueError(f"Expected `num_outputs` >= 1. Received: num_outputs={num_outputs}")
        if refresh_every is not None and int(refresh_every) < 1:
            raise ValueError(f"Expected `refresh_every` >= 1. Received: refresh_every={refresh_every}")
        if projection_dim is not None and int(projection_dim) < 1:
            raise ValueError(f"Expected `projection_dim` >= 1. Received: projection_dim={projection_dim}")
        self.num_outputs = int(num_outputs)
        self.ema_decay = float(ema_decay)
        self.mode = mode
        self.refresh_every = None if refresh_every is None else int(refresh_every)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.max_correlation = float(max_correlation)
        self.power_iterations = int(power_iterations)
        self.seed = seed
        self.input_shape_hint = None if input_shape_hint is None else tuple(input_shape_hint)
        self.cross_replica = bool(cross_replica)
        self._seed_generator = keras.random.SeedGenerator(seed)
        if self.input_shape_hint is not None:
            self.build((None,) + self.input_shape_hint)

    # ------------------------------------------------------------------ state
    @property
    def effective_refresh_every(self):
        if self.mode == "exact":
            return 1
        return self.refresh_every or 50

    def build(self, input_shape):
        if self.built:
            return
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]
        d = int(np.prod(input_shape[1:]))
        if self.projection_dim is not None and self.projection_dim > d:
            raise ValueError(
                f"Expected `projection_dim` <= the input dimension {d}. "
                f"Received: projection_dim={self.projection_dim}"
            )
        k = self.projection_dim or d
        self.input_dim, self.feature_dim = d, k
        zeros, ones = "zeros", "ones"

        def state(name, shape, init=zeros, dtype="float32"):
            return self.add_weight(name=name, shape=shape, initializer=init, trainable=False, dtype=dtype)

        self.x_mean = state("x_mean", (d,))
        self.x_scale = state("x_scale", (d,), ones)
        if self.projection_dim is None:
            self.x_whitener = state("x_cholesky", (d, d), "identity")
        else:
            self.x_whitener = state("pca_components", (d, k))
            self.pca_scale = state("pca_scale", (k,), ones)
        self.projection = state("projection", (self.num_outputs,))
        self.cross_ema = state("cross_ema", (k, k))
        self.w_ema = state("w_ema", (k, k))
        self.adjoint_cross = state("adjoint_cross", (k, k))
        self.adjoint_w = state("adjoint_w", (k, k))
        self.power_vector = state("power_vector", (k,), ones)
        self.value_ref = state("value_ref", ())
        self.anchor = state("anchor", ())
        self.step = state("step", (), dtype="int64")
        self.adapted = state("adapted", (), dtype="bool")
        self.nonfinite_count = state("nonfinite_count", (), dtype="int64")
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
        self.projection.assign(std * _standard_normal(self.num_outputs, self._seed_generator))

    def reset_state(self):
        """Clears the moving averages (keeps the target statistics from `adapt`)."""
        for v in (self.cross_ema, self.w_ema, self.adjoint_cross, self.adjoint_w):
            v.assign(tf.zeros_like(v))
        for v in (self.value_ref, self.anchor, self.bound_active, self.shrinkage):
            v.assign(0.0)
        self.power_vector.assign(tf.ones_like(self.power_vector))
        self.step.assign(0)
        self.nonfinite_count.assign(0)

    # ------------------------------------------------------------------ adapt
    def adapt(self, x_unlabeled, chunk_size=2048):
        """Computes the target statistics once: mean, scale and whitening of `Sigma_x`.

        Args:
            x_unlabeled: array of unlabeled target inputs, shape `(N,) + input_shape`,
                in the same units the network receives (e.g. raw 0..255 pixels).
            chunk_size: rows processed at once (float64).
        """
        x = np.asarray(x_unlabeled)
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(
                "Expected at least 2 unlabeled target inputs to estimate Sigma_x. "
                f"Received: x_unlabeled.shape={x.shape}"
            )
        x = x.reshape(x.shape[0], -1)
        if not self.built:
            self.build((None,) + tuple(np.asarray(x_unlabeled).shape[1:]))
        if x.shape[1] != self.input_dim:
            raise ValueError(
                f"Expected unlabeled inputs with {self.input_dim} features per sample. "
                f"Received: {x.shape[1]}"
            )
        n, d = x.shape
        mean = np.zeros(d)
        for i in range(0, n, chunk_size):
            mean += x[i : i + chunk_size].astype(np.float64).sum(0)
        mean /= n
        gram = np.zeros((d, d))
        for i in range(0, n, chunk_size):
            c = x[i : i + chunk_size].astype(np.float64) - mean
            gram += c.T @ c
        if not np.all(np.isfinite(gram)):
            raise ValueError("Expected finite unlabeled target inputs. Received: NaN or inf values")
        var = np.diag(gram) / n
        constant = var <= 1e-12 * max(var.max(), 1e-300)
        scale = np.where(constant, 0.0, 1.0 / np.sqrt(np.where(constant, 1.0, var)))
        corr = gram / n * scale[:, None] * scale[None, :]
        gamma = _ledoit_wolf_coefficient(x, mean, scale, corr, chunk_size)
        target = np.trace(corr) / d
        sigma_x = (1.0 - gamma) * corr + gamma * target * np.eye(d)
        self.x_mean.assign(mean.astype(np.float32))
        self.x_scale.assign(scale.astype(np.float32))
        if self.projection_dim is None:
            self.x_whitener.assign(np.linalg.cholesky(sigma_x).astype(np.float32))
        else:
            eigval, eigvec = np.linalg.eigh(sigma_x)
            top = np.argsort(eigval)[::-1][: self.projection_dim]
            self.x_whitener.assign(eigvec[:, top].astype(np.float32))
            self.pca_scale.assign((1.0 / np.sqrt(eigval[top])).astype(np.float32))
        self.x_shrinkage = float(gamma)
        self.num_constant_features = int(constant.sum())
        self.adapted.assign(True)
        self.reset_state()

    # ------------------------------------------------------------------ maths
    def _features(self, x, w):
        n = tf.shape(x)[0]
        x = tf.reshape(tf.cast(x, tf.float32), (n, self.input_dim))
        w = tf.reshape(tf.cast(w, tf.float32), (n, self.input_dim))
        xc = (x - self.x_mean) * self.x_scale
        xc = xc - tf.reduce_mean(xc, axis=0, keepdims=True)
        wc = w - tf.reduce_mean(w, axis=0, keepdims=True)
        var = tf.reduce_mean(tf.square(wc), axis=0)
        eps = 1e-6 * tf.stop_gradient(tf.reduce_mean(var)) + 1e-30
        wn = wc * tf.math.rsqrt(var + eps)
        if self.projection_dim is None:
            xt = tf.transpose(
                tf.linalg.triangular_solve(self.x_whitener, tf.transpose(xc), lower=True)
            )
            wt = wn
        else:
            xt = tf.matmul(xc, self.x_whitener) * self.pca_scale
            wt = tf.matmul(wn, self.x_whitener)
        return xt, wt

    def _shrinkage(self, step, batch_size):
        a = self.ema_decay
        t = tf.cast(step, tf.float64)
        if a == 0.0:
            n_steps = tf.constant(1.0, tf.float64)
        else:
            at = tf.pow(tf.constant(a, tf.float64), t)
            n_steps = (1.0 - at) * (1.0 + a) / ((1.0 - a) * (1.0 + at))
        n_eff = n_steps * tf.cast(batch_size, tf.float64)
        k = float(self.feature_dim)
        return tf.cast(k / (k + n_eff), tf.float32)

    def closed_form(self, cross, cov_w, gamma):
        """Lautum value at whitened-x covariances (`Sigma_x = I`), with shrinkage and bound.

        Args:
            cross: (k, k) cross-covariance of whitened x and w.
            cov_w: (k, k) covariance of w.
            gamma: shrinkage of `cov_w` towards `(tr cov_w / k) I`.

        Returns:
            `(lautum, rho_max, bound_active)`.
        """
        k = self.feature_dim
        eye = tf.eye(k)
        target = tf.linalg.trace(cov_w) / k
        # Shrink the joint covariance of (whitened x, w) towards its diagonal: the
        # cross block by (1 - gamma), Sigma_w towards (tr Sigma_w / k) I.
        shrunk = (1.0 - gamma) * cov_w + gamma * tf.maximum(target, 1e-12) * eye
        lw = tf.linalg.cholesky(shrunk)
        ct = tf.linalg.triangular_solve(lw, (1.0 - gamma) * tf.transpose(cross), lower=True)
        gram = tf.matmul(ct, ct, transpose_b=True)
        lam = self._power_iteration(tf.stop_gradient(gram))
        bound = self.max_correlation**2
        active = lam > bound
        factor = tf.where(active, bound / tf.maximum(lam, 1e-30), 1.0)
        lautum, _ = lautum_and_mi_from_gram(tf.stop_gradient(factor) * gram)
        return lautum, tf.sqrt(tf.maximum(lam, 0.0)), active

    def _power_iteration(self, gram):
        v = self.power_vector
        v = v / tf.maximum(tf.norm(v), 1e-30)
        for _ in range(self.power_iterations):
            u = tf.linalg.matvec(gram, v)
            v = u / tf.maximum(tf.norm(u), 1e-30)
        self.power_vector.assign(tf.where(tf.reduce_all(tf.math.is_finite(v)), v, tf.ones_like(v)))
        lam = tf.tensordot(v, tf.linalg.matvec(gram, v), 1)
        # The Rayleigh quotient underestimates the top eigenvalue: add a 1% margin.
        return 1.01 * lam

    def _refresh(self, cross_hat, w_hat, gamma):
        with tf.GradientTape() as tape:
            tape.watch([cross_hat, w_hat])
            value, rho, active = self.closed_form(cross_hat, w_hat, gamma)
        g_cross, g_w = tape.gradient(value, [cross_hat, w_hat])
        finite = tf.math.is_finite(value) & tf.reduce_all(tf.math.is_finite(g_cross))
        finite = finite & tf.reduce_all(tf.math.is_finite(g_w))
        g_cross = tf.where(finite, g_cross, tf.zeros_like(g_cross))
        g_w = tf.where(finite, g_w, tf.zeros_like(g_w))
        value = tf.where(finite, value, 0.0)
        self.adjoint_cross.assign(g_cross)
        self.adjoint_w.assign(g_w)
        self.value_ref.assign(value)
        self.anchor.assign(tf.reduce_sum(g_cross * cross_hat) + tf.reduce_sum(g_w * w_hat))
        self.max_canonical_correlation.assign(tf.where(tf.math.is_finite(rho), rho, 0.0))
        self.bound_active.assign(tf.cast(active, tf.float32))
        self.nonfinite_count.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
        return tf.constant(True)

    def call(self, inputs, training=None):
        x, w = inputs
        x, w = tf.cast(x, tf.float32), tf.cast(w, tf.float32)
        context = tf.distribute.get_replica_context()
        if self.cross_replica and context is not None and context.num_replicas_in_sync > 1:
            # `tf.identity` places the tensors on this replica's device: under
            # MultiWorkerMirroredStrategy an all-gather of the raw input batch (a float32
            # dataset element, which the cast returns as it is) fails with
            # "destinations can not be empty".
            x, w = context.all_gather([tf.identity(x), tf.identity(w)], axis=0)
        xt, wt = self._features(x, w)
        n = tf.cast(tf.shape(xt)[0], tf.float32)
        cross_b = tf.matmul(xt, wt, transpose_a=True) / n
        w_b = tf.matmul(wt, wt, transpose_a=True) / n
        a = self.ema_decay
        if training:
            self.step.assign_add(1)
            self.cross_ema.assign(a * self.cross_ema + (1.0 - a) * tf.stop_gradient(cross_b))
            self.w_ema.assign(a * self.w_ema + (1.0 - a) * tf.stop_gradient(w_b))
        step = tf.maximum(self.step, 1)
        debias = 1.0 - tf.cast(tf.pow(tf.constant(a, tf.float64), tf.cast(step, tf.float64)), tf.float32)
        cross_hat = self.cross_ema / debias
        w_hat = self.w_ema / debias
        gamma = self._shrinkage(step, tf.shape(xt)[0])
        if training:
            self.shrinkage.assign(gamma)
            refresh = tf.equal((step - 1) % self.effective_refresh_every, 0)
            tf.cond(refresh, lambda: self._refresh(cross_hat, w_hat, gamma), lambda: tf.constant(False))
        g_cross = self.adjoint_cross
        g_w = self.adjoint_w
        value = (
            self.value_ref
            + tf.reduce_sum(g_cross * cross_hat)
            + tf.reduce_sum(g_w * w_hat)
            - self.anchor
        )
        coef = (1.0 - a) / debias
        # <G, S_batch> without forming any D x D batch matrix: O(D^2 N).
        carrier = coef * (
            tf.reduce_sum(tf.matmul(xt, g_cross) * wt) + tf.reduce_sum(tf.matmul(wt, g_w) * wt)
        ) / n
        surrogate = carrier - tf.stop_gradient(carrier) + tf.stop_gradient(value)
        return surrogate, tf.stop_gradient(value)

    def compute_output_spec(self, inputs, training=None):
        return (keras.KerasTensor(()), keras.KerasTensor(()))

    def get_config(self):
        config = {
            "num_outputs": self.num_outputs,
            "ema_decay": self.ema_decay,
            "mode": self.mode,
            "refresh_every": self.refresh_every,
            "projection_dim": self.projection_dim,
            "max_correlation": self.max_correlation,
            "power_iterations": self.power_iterations,
            "seed": self.seed,
            "input_shape_hint": self.input_shape_hint,
            "cross_replica": self.cross_replica,
        }
        base_config = super().get_config()
        return {**base_config, **config}


def _standard_normal(n, seed_generator):
    """`n` standard normal draws (Box-Muller on `random_bits`): the same numbers in graph
    mode, under XLA (where TensorFlow's own stateless generators draw others) and on every
    replica of a strategy (their seed generators are mirrored)."""
    bits = random_bits(2 * n, seed_generator)
    uniform = (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) + 0.5) / 2.0**24
    radius = tf.sqrt(-2.0 * tf.math.log(uniform[:n]))
    return radius * tf.cos((2.0 * np.pi) * uniform[n:])


def _ledoit_wolf_coefficient(x, mean, scale, corr, chunk_size):
    """Ledoit-Wolf shrinkage towards `mu I` of the correlation matrix (float64, chunked)."""
    n, d = x.shape
    mu = np.trace(corr) / d
    delta = np.sum((corr - mu * np.eye(d)) ** 2) / d
    beta = 0.0  # sum_ij sum_n z_ni^2 z_nj^2 = sum_n ||z_n||^4
    for i in range(0, n, chunk_size):
        z = (x[i : i + chunk_size].astype(np.float64) - mean) * scale
        beta += np.sum(np.sum(z**2, axis=1) ** 2)
    beta = (beta / n - np.sum(corr**2)) / (d * n)
    if delta <= 0.0:
        return 1.0
    return float(min(max(beta, 0.0), delta) / delta)


__all__ = ["LautumRegularizer"]
