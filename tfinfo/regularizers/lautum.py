"""Lautum regularization between unlabeled target inputs and a Jacobian proxy of the weights."""

import keras
import numpy as np
import tensorflow as tf

from tfinfo.critics.marginals import random_bits

_MODES = ("exact", "fast")
_PRECISIONS = ("float64", "float32")


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

    Misuse is refused: `adapt` on a constant or degenerate target set (Expected ...
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
        if mode not in _MODES:
            raise ValueError(f"Expected `mode` to be one of {_MODES}. Received: mode={mode!r}")
        if precision not in _PRECISIONS:
            raise ValueError(f"Expected `precision` to be one of {_PRECISIONS}. Received: precision={precision!r}")
        if not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(f"Expected `ema_decay` in (0, 1). Received: ema_decay={ema_decay}")
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
        self.precision = precision
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
        self.projection.assign(std * _standard_normal(self.num_outputs, self._seed_generator))

    def reset_state(self):
        """Resets the moving covariance to the identity prior (keeps the target statistics)."""
        k = self.feature_dim
        eye = tf.eye(k, dtype=self.x_ema.dtype)
        self.x_ema.assign(eye)
        self.w_ema.assign(eye)
        self.cross_ema.assign(tf.zeros_like(self.cross_ema))
        if self.mode == "fast":
            self.joint_inverse.assign(tf.eye(2 * k, dtype=self.x_ema.dtype))
            self.x_inverse.assign(eye)
            self.w_inverse.assign(eye)
            self.logdets.assign(tf.zeros_like(self.logdets))
        self.top_vectors.assign(tf.zeros_like(self.top_vectors))
        self.prior_weight.assign(1.0)
        for v in (self.bound_active, self.shrinkage, self.max_canonical_correlation):
            v.assign(0.0)
        for v in (self.step, self.nonfinite_count, self.exact_steps):
            v.assign(0)

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
        if constant.all():
            raise ValueError(
                "Expected unlabeled target inputs that vary (Sigma_x needs at least one "
                f"feature with non-zero variance). Received: {n} inputs, all identical"
            )
        gamma = _ledoit_wolf_coefficient(x, mean, scale, corr, chunk_size)
        target = np.trace(corr) / d
        sigma_x = (1.0 - gamma) * corr + gamma * target * np.eye(d)
        eigval, eigvec = np.linalg.eigh(sigma_x)
        # The rank of the sample correlation over the features that vary. Fewer samples
        # than features (rank N - 1), or a few degenerate directions, are what the
        # Ledoit-Wolf shrinkage is for (whitened x is then ~0 there and adds nothing).
        # A set spanning less than half of what its size allows (repeated or collinear
        # images) is degenerate, and so is a projection onto more directions than the
        # set spans, or a shrunk Sigma_x that is numerically singular.
        corr_eig = np.linalg.eigvalsh(corr)
        rank = int(np.sum(corr_eig > 1e-9 * corr_eig.max()))
        varying = int(d - constant.sum())
        if self.projection_dim is None:
            expected = min(n - 1, varying)
            degenerate = 2 * rank < expected or eigval.min() <= 1e-10 * eigval.max()
        else:
            expected = self.projection_dim
            degenerate = rank < expected
        if degenerate:
            raise ValueError(
                f"Expected unlabeled target inputs spanning {expected} dimensions ({n} inputs, "
                f"{varying} varying features"
                + ("" if self.projection_dim is None else f", projection_dim={self.projection_dim}")
                + f"). Received: {n} inputs of {d} features spanning rank {rank}; pass more "
                f"(and more varied) unlabeled inputs, or set projection_dim <= {rank}"
            )
        top = np.argsort(eigval)[::-1][: self.projection_dim or d]
        self.x_mean.assign(mean.astype(np.float32))
        self.x_scale.assign(scale.astype(np.float32))
        if self.projection_dim is None:
            self.x_whitener.assign(np.linalg.cholesky(sigma_x).astype(np.float32))
        else:
            self.x_whitener.assign(eigvec[:, top].astype(np.float32))
            self.pca_scale.assign((1.0 / np.sqrt(eigval[top])).astype(np.float32))
        self.x_shrinkage = float(gamma)
        self.num_constant_features = int(constant.sum())
        self.x_rank = rank
        self.adapted.assign(True)
        self.reset_state()

    # ------------------------------------------------------------------ features
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

    # ------------------------------------------------------------------ maths
    @property
    def _pdtype(self):
        return tf.float64 if self.precision == "float64" else tf.float32

    def omega(self, step, batch_size):
        """Weight of step `step`'s batch covariance: `max(1 / (t + k / n), 1 - a)`."""
        dtype = self._pdtype
        t = tf.cast(step, dtype)
        nu = tf.constant(float(self.feature_dim), dtype) / tf.cast(batch_size, dtype)
        return tf.maximum(1.0 / (t + nu), tf.constant(1.0 - self.ema_decay, dtype))

    def closed_form(self, cx, c, s):
        """Clamped Lautum value and its exact gradient at joint covariance blocks.

        With `X = Lx Lx^T` and `S = Lw Lw^T`, the squared canonical correlations
        `l_i` are the eigenvalues of `Lw^-1 C^T X^-1 C Lw^-T`, and
        `value = sum f(min(l_i, b))`, `f(l) = 1/2 log(1 - l) + l / (1 - l)`,
        `b = max_correlation**2`. Its gradient (generalized eigenvectors `U`,
        `U^T S U = I`): `dF/dR = U diag(phi) U^T` for `R = C^T X^-1 C`,
        `dF/dS = -U diag(phi l) U^T`, `phi_i = f'(l_i)` below the bound and 0 above it,
        and `dF/dC = 2 X^-1 C dF/dR` (x carries no gradient).

        Args:
            cx: (k, k) covariance of whitened x (positive definite).
            c: (k, k) cross-covariance of whitened x (rows) and w (columns).
            s: (k, k) covariance of w (positive definite).

        Returns:
            `(value, grad_c, grad_s, eigenvalues, vectors)`: the value in nats, its
            gradients with respect to `c` and `s`, every `l_i` (ascending) and the
            generalized eigenvectors (columns of `U`).
        """
        lx = tf.linalg.cholesky(cx)
        lw = tf.linalg.cholesky(s)
        b = tf.linalg.triangular_solve(lx, c, lower=True)  # Lx^-1 C
        bt = tf.linalg.triangular_solve(lw, tf.transpose(b), lower=True)  # Lw^-1 C^T Lx^-T
        gram = tf.matmul(bt, bt, transpose_b=True)
        lam, v = tf.linalg.eigh(0.5 * (gram + tf.transpose(gram)))
        lam = tf.maximum(lam, 0.0)
        bound = self.max_correlation**2
        lc = tf.minimum(lam, bound)
        value = tf.reduce_sum(0.5 * tf.math.log1p(-lc) + lc / (1.0 - lc))
        phi = tf.where(lam < bound, (1.0 + lc) / (2.0 * tf.square(1.0 - lc)), tf.zeros_like(lc))
        u = tf.linalg.triangular_solve(lw, v, lower=True, adjoint=True)  # Lw^-T V
        grad_r = tf.matmul(u * phi, u, transpose_b=True)
        grad_s = -tf.matmul(u * (phi * lc), u, transpose_b=True)
        grad_c = 2.0 * tf.linalg.triangular_solve(lx, tf.matmul(b, grad_r), lower=True, adjoint=True)
        return value, grad_c, grad_s, lam, u

    def _record_spectrum(self, lam, u):
        m = self.tracked_directions
        u = _canonical_signs(u[:, -m:])
        finite = tf.reduce_all(tf.math.is_finite(u)) & tf.reduce_all(tf.math.is_finite(lam))
        self.top_vectors.assign(tf.where(finite, u, tf.zeros_like(self.top_vectors)))
        lam_max = tf.cast(lam[-1], tf.float32)
        self.max_canonical_correlation.assign(tf.where(tf.math.is_finite(lam_max), tf.sqrt(lam_max), 0.0))
        self.bound_active.assign(tf.cast(lam_max >= self.max_correlation**2, tf.float32))

    def _tracked_correlations(self, update):
        """Squared canonical correlations of the tracked top directions at the current `J`.

        With `update`, one subspace iteration on `M = J_ww^-1 C^T J_xx^-1 C` (with the
        maintained inverses, O(k^2 m)) and a Rayleigh-Ritz step follow the top `m`
        directions as `J` moves, and the state keeps the result; the Ritz values are
        lower bounds of the top eigenvalues that the iteration tightens step by step.
        """
        if update is not False:
            # Only after an accepted batch, and once an eigendecomposition seeded `U`.
            seeded = tf.reduce_any(tf.not_equal(self.top_vectors, 0.0))
            tf.cond(tf.logical_and(update, seeded), self._subspace_step, lambda: tf.constant(False))
        u = self.top_vectors
        cu = tf.matmul(self.cross_ema, u)
        num = tf.reduce_sum(cu * tf.matmul(self.x_inverse, cu), axis=0)
        den = tf.reduce_sum(u * tf.matmul(self.w_ema, u), axis=0)
        return num / tf.maximum(den, 1e-30)

    def _subspace_step(self):
        u = self.top_vectors
        m = self.tracked_directions
        if m:

            def apply_r(v):  # C^T J_xx^-1 C v
                return tf.matmul(self.cross_ema, tf.matmul(self.x_inverse, tf.matmul(self.cross_ema, v)), transpose_a=True)

            v = tf.matmul(self.w_inverse, apply_r(u))
            a = tf.matmul(v, apply_r(v), transpose_a=True)
            b = tf.matmul(v, tf.matmul(self.w_ema, v), transpose_a=True)
            eye = tf.eye(m, dtype=b.dtype)
            chol = tf.linalg.cholesky(0.5 * (b + tf.transpose(b)) + (1e-10 * tf.linalg.trace(b) + 1e-30) * eye)
            small = tf.linalg.triangular_solve(chol, tf.transpose(tf.linalg.triangular_solve(chol, a, lower=True)), lower=True)
            theta, q = tf.linalg.eigh(0.5 * (small + tf.transpose(small)))
            new_u = _canonical_signs(tf.matmul(v, tf.linalg.triangular_solve(chol, q, lower=True, adjoint=True)))
            good = tf.reduce_all(tf.math.is_finite(new_u)) & tf.reduce_all(tf.math.is_finite(theta))
            self.top_vectors.assign(tf.where(good, new_u, u))
        return tf.constant(True)

    @staticmethod
    def _rank_update(inverse, logdet, z, omega):
        """`(1 - omega) A + omega / n Z^T Z` from `A^-1` and `logdet A` (Woodbury, determinant lemma)."""
        n = tf.cast(tf.shape(z)[0], z.dtype)
        m = tf.cast(tf.shape(z)[1], z.dtype)
        c = (1.0 - omega) * n / omega
        y = tf.matmul(z, inverse)
        kernel = tf.matmul(y, z, transpose_b=True) + c * tf.eye(tf.shape(z)[0], dtype=z.dtype)
        chol = tf.linalg.cholesky(0.5 * (kernel + tf.transpose(kernel)))
        w = tf.linalg.cholesky_solve(chol, y)
        new_inverse = (inverse - tf.matmul(y, w, transpose_a=True)) / (1.0 - omega)
        new_logdet = (
            m * tf.math.log(1.0 - omega)
            + logdet
            + 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)))
            - n * tf.math.log(c)
        )
        # Z A_new^-1 = (Y - (K - cI) K^-1 Y) / (1 - omega) = c K^-1 Y / (1 - omega): no product.
        z_new_inverse = (c / (1.0 - omega)) * w
        return 0.5 * (new_inverse + tf.transpose(new_inverse)), new_logdet, z_new_inverse

    def _refactorize(self):
        """Recomputes the fast mode's inverses and log-dets from `J` (Cholesky)."""
        joint = tf.concat(
            [tf.concat([self.x_ema, self.cross_ema], 1), tf.concat([tf.transpose(self.cross_ema), self.w_ema], 1)], 0
        )
        values = []
        for matrix, inverse in ((joint, self.joint_inverse), (self.x_ema, self.x_inverse), (self.w_ema, self.w_inverse)):
            chol = tf.linalg.cholesky(matrix)
            eye = tf.eye(tf.shape(matrix)[0], dtype=matrix.dtype)
            inverse.assign(tf.linalg.cholesky_solve(chol, eye))
            values.append(2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol))))
        self.logdets.assign(tf.stack(values))
        return tf.constant(True)

    def _fast_value(self):
        """`1/2 [tr(J^-1 D) - 2k + logdet J - logdet D]` from the maintained inverses."""
        k = self.feature_dim
        # tr(J^-1 D) - 2k = -2 sum((J^-1)_xw * C), from J^-1 J = I: no cancellation of 2k.
        trace = -2.0 * tf.reduce_sum(self.joint_inverse[:k, k:] * self.cross_ema)
        ld = self.logdets
        return 0.5 * (trace + ld[0] - ld[1] - ld[2])

    def _fast_carrier(self, zx, zw, y=None, zw_w_inverse=None):
        """A function of `zw` whose gradient is that of `sum_i z_i^T G z_i`,
        `G = dL/dJ = 1/2 [J^-1 - J^-1 D J^-1 + bd(J^-1) - D^-1]` held fixed (x has no
        gradient): `sum_i <2 (G z_i)_w, zw_i>` with `2 (G z)_w` under `stop_gradient`.

        `y = Z J^-1` and `zw J_ww^-1` come from the rank-n updates when given.
        """
        k = self.feature_dim
        inv = self.joint_inverse
        sx, sw = tf.stop_gradient(zx), tf.stop_gradient(zw)
        if y is None:
            y = tf.matmul(tf.concat([sx, sw], axis=1), inv)
        if zw_w_inverse is None:
            zw_w_inverse = tf.matmul(sw, self.w_inverse)
        yx, yw = y[:, :k], y[:, k:]
        ydj = tf.matmul(tf.matmul(yx, self.x_ema), inv[:k, k:]) + tf.matmul(tf.matmul(yw, self.w_ema), inv[k:, k:])
        grad_w = yw - ydj + tf.matmul(sw, inv[k:, k:]) - zw_w_inverse
        return tf.reduce_sum(tf.stop_gradient(grad_w) * zw)

    def _exact(self, record):
        value, g_c, g_s, lam, u = self.closed_form(self.x_ema, self.cross_ema, self.w_ema)
        if record:  # inference calls leave the state as it is
            self._record_spectrum(lam, u)
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
        xt, wt = self._features(tf.cast(x, tf.float32), tf.cast(w, tf.float32))
        dtype = self._pdtype
        z = tf.cast(tf.concat([xt, wt], axis=1), dtype)
        n = tf.cast(tf.shape(z)[0], dtype)
        k = self.feature_dim
        prior = k / (k + n)
        joint = (1.0 - prior) * tf.matmul(z, z, transpose_a=True) / n + prior * tf.eye(2 * k, dtype=dtype)
        value, _, _, lam, _ = self.closed_form(joint[:k, :k], joint[:k, k:], joint[k:, k:])
        return tf.cast(value, tf.float32), tf.cast(tf.sqrt(lam[-1]), tf.float32)

    def prior_floor(self, batch_size):
        """Smallest identity weight kept in `J`: `k / (k + n (1 + a) / (1 - a))`, the
        shrinkage of `k` features against the samples the EMA averages at steady state.
        Without it the prior decays as `a^t` and the directions the target set does not
        span (constant pixels, N < D) become singular after some 10^4 steps."""
        a = self.ema_decay
        k = float(self.feature_dim)
        n_steady = tf.cast(batch_size, self._pdtype) * (1.0 + a) / (1.0 - a)
        return k / (k + n_steady)

    def _update(self, sx, sw, omega, n, step):
        """One step of `J`, its inverses (fast mode), the prior floor and the refresh."""
        fast = self.mode == "fast"
        if fast:
            ld = self.logdets
            j_inv, ld_j, y_new = self._rank_update(self.joint_inverse, ld[0], tf.concat([sx, sw], 1), omega)
            x_inv, ld_x, _ = self._rank_update(self.x_inverse, ld[1], sx, omega)
            w_inv, ld_w, zw_w_new = self._rank_update(self.w_inverse, ld[2], sw, omega)
            self.joint_inverse.assign(j_inv)
            self.x_inverse.assign(x_inv)
            self.w_inverse.assign(w_inv)
            self.logdets.assign(tf.stack([ld_j, ld_x, ld_w]))
        self.x_ema.assign((1.0 - omega) * self.x_ema + omega * tf.matmul(sx, sx, transpose_a=True) / n)
        self.cross_ema.assign((1.0 - omega) * self.cross_ema + omega * tf.matmul(sx, sw, transpose_a=True) / n)
        self.w_ema.assign((1.0 - omega) * self.w_ema + omega * tf.matmul(sw, sw, transpose_a=True) / n)
        self.prior_weight.assign((1.0 - omega) * self.prior_weight)
        period = self.period
        at_period = tf.equal(step % period, 0)
        floor = self.prior_floor(tf.shape(sx)[0])
        top_up = at_period & (self.prior_weight < floor)

        def add_prior():
            delta = floor - self.prior_weight
            eye = tf.eye(self.feature_dim, dtype=self.x_ema.dtype)
            self.x_ema.assign_add(delta * eye)
            self.w_ema.assign_add(delta * eye)
            self.prior_weight.assign(floor)
            return tf.constant(True)

        tf.cond(top_up, add_prior, lambda: tf.constant(False))
        self.shrinkage.assign(tf.cast(self.prior_weight, tf.float32))
        if fast:
            # Refactorized at the first step, every `refresh_every` steps (rounding drift;
            # the prior top-up, which is not a rank-n update, happens on these steps).
            refresh = tf.equal(step, 1) | at_period

            def refresh_fn():
                self._refactorize()
                _, _, _, lam, u = self.closed_form(self.x_ema, self.cross_ema, self.w_ema)
                self._record_spectrum(lam, u)
                # The prior top-up is not a rank-n update: `Z J^-1` and `Z_w J_ww^-1`
                # from the new inverses (else the step's gradient misses the top-up).
                # (The function's automatic control dependencies order these reads after
                # the assignments.)
                return tf.matmul(tf.concat([sx, sw], 1), self.joint_inverse), tf.matmul(sw, self.w_inverse)

            return tf.cond(refresh, refresh_fn, lambda: (y_new, zw_w_new))
        return tf.constant(True)

    def call(self, inputs, training=None):
        x, w = inputs
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
            sx, sw = tf.stop_gradient(zx), tf.stop_gradient(zw)
            # A non-finite batch is counted and leaves every statistic as it was (the
            # moving estimate would never recover from one NaN).
            ok = tf.reduce_all(tf.math.is_finite(sx)) & tf.reduce_all(tf.math.is_finite(sw))
            sx = tf.where(ok, sx, tf.zeros_like(sx))
            sw = tf.where(ok, sw, tf.zeros_like(sw))
            self.step.assign_add(tf.cast(ok, tf.int64))
            self.nonfinite_count.assign_add(tf.cast(tf.logical_not(ok), tf.int64))
            step = tf.maximum(self.step, 1)
            omega = self.omega(step, tf.shape(zx)[0])

            def update():
                return self._update(sx, sw, omega, n, step)

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
            if training:
                carrier = self._fast_carrier(zx, zw, y_new, zw_w_new)
            else:
                carrier = self._fast_carrier(zx, zw)
            return self._fast_value(), carrier, tf.constant(0, tf.int64)

        if fast:
            bound = self.max_correlation**2
            tracked = self._tracked_correlations(update=ok if training else False)
            if training:
                top = tf.reduce_max(tracked)
                self.max_canonical_correlation.assign(tf.sqrt(tf.maximum(tf.cast(top, tf.float32), 0.0)))
                self.bound_active.assign(tf.cast(top >= bound, tf.float32))
            near = tf.reduce_any(tracked >= bound - 0.5 * (1.0 - bound))
            value, carrier, exact_used = tf.cond(near, exact_path, fast_path)
        else:
            value, carrier, exact_used = exact_path()
        carrier = omega * carrier / n
        finite = tf.math.is_finite(value) & tf.math.is_finite(tf.stop_gradient(carrier))
        if training:
            self.exact_steps.assign_add(exact_used)
            # (A non-finite batch was counted above.)
            self.nonfinite_count.assign_add(tf.cast(tf.logical_not(finite) & ok, tf.int64))
        value = tf.cast(tf.where(finite, value, tf.zeros_like(value)), tf.float32)
        carrier = tf.cast(tf.where(finite, carrier, tf.zeros_like(carrier)), tf.float32)
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
            "precision": self.precision,
            "seed": self.seed,
            "input_shape_hint": self.input_shape_hint,
            "cross_replica": self.cross_replica,
        }
        base_config = super().get_config()
        return {**base_config, **config}


def _canonical_signs(u):
    """Eigenvectors are defined up to sign, and LAPACK and XLA pick differently: makes
    each column's largest component positive, so every backend keeps the same state."""
    pivot = tf.gather(tf.transpose(u), tf.argmax(tf.abs(u), axis=0), axis=1, batch_dims=1)
    return u * tf.where(pivot < 0, -tf.ones_like(pivot), tf.ones_like(pivot))


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
