"""The moving joint covariance of `tfinfo.regularizers.lautum.LautumRegularizer`: its maths.

The pure functions compute from tensors (or variables, read where they are used) and
arrays and assign nothing: the feature normalization (the target statistics of `adapt` are in
`tfinfo.regularizers.lautum_statistics`),
the clamped closed form, the rank-n (Woodbury) updates and the fast mode's value and
gradient carrier. The functions of the last section read and assign the state of a built
layer (passed as `layer`): the joint covariance `J = [[J_xx, C], [C^T, J_ww]]` in blocks,
the fast mode's inverses and log-determinants and the tracked canonical directions. All
of them run in graph mode, under XLA and on every replica as the layer's call does.
"""

import tensorflow as tf


def canonical_signs(u):
    """Eigenvectors are defined up to sign, and LAPACK and XLA pick differently: makes
    each column's largest component positive, so every backend keeps the same state."""
    pivot = tf.gather(tf.transpose(u), tf.argmax(tf.abs(u), axis=0), axis=1, batch_dims=1)
    return u * tf.where(pivot < 0, -tf.ones_like(pivot), tf.ones_like(pivot))


# ---------------------------------------------------------------------- adapt (NumPy)
def normalized_features(x, w, input_dim, x_mean, x_scale, x_whitener, pca_scale=None):
    """`(xt, wt)`: x normalized by the target statistics and whitened (the Cholesky factor
    `x_whitener`, or with `pca_scale` the principal components `x_whitener`), w by the
    batch's per-feature standard deviation (and projected on the same components)."""
    n = tf.shape(x)[0]
    x = tf.reshape(tf.cast(x, tf.float32), (n, input_dim))
    w = tf.reshape(tf.cast(w, tf.float32), (n, input_dim))
    xc = (x - x_mean) * x_scale
    xc = xc - tf.reduce_mean(xc, axis=0, keepdims=True)
    wc = w - tf.reduce_mean(w, axis=0, keepdims=True)
    var = tf.reduce_mean(tf.square(wc), axis=0)
    eps = 1e-6 * tf.stop_gradient(tf.reduce_mean(var)) + 1e-30
    wn = wc * tf.math.rsqrt(var + eps)
    if pca_scale is None:
        xt = tf.transpose(
            tf.linalg.triangular_solve(x_whitener, tf.transpose(xc), lower=True)
        )
        wt = wn
    else:
        xt = tf.matmul(xc, x_whitener) * pca_scale
        wt = tf.matmul(wn, x_whitener)
    return xt, wt


def finite_or_zeros(sx, sw):
    """`(ok, sx, sw)`: whether the batch is finite, and the batch (zeros if it is not)."""
    ok = tf.reduce_all(tf.math.is_finite(sx)) & tf.reduce_all(tf.math.is_finite(sw))
    sx = tf.where(ok, sx, tf.zeros_like(sx))
    sw = tf.where(ok, sw, tf.zeros_like(sw))
    return ok, sx, sw


def shrunk_joint_covariance(z, k):
    """`Z^T Z / N` of N pairs `z = (x, w)` shrunk towards the identity with `k / (k + N)`
    (what the moving estimate has after N samples)."""
    dtype = z.dtype
    n = tf.cast(tf.shape(z)[0], dtype)
    prior = k / (k + n)
    return (1.0 - prior) * tf.matmul(z, z, transpose_a=True) / n + prior * tf.eye(2 * k, dtype=dtype)


# ---------------------------------------------------------------------- moving weights
def omega(step, batch_size, k, ema_decay, dtype):
    """Weight of step `step`'s batch covariance: `max(1 / (t + k / n), 1 - a)`."""
    t = tf.cast(step, dtype)
    nu = tf.constant(float(k), dtype) / tf.cast(batch_size, dtype)
    return tf.maximum(1.0 / (t + nu), tf.constant(1.0 - ema_decay, dtype))


def prior_floor(batch_size, k, ema_decay, dtype):
    """Smallest identity weight kept in `J`: `k / (k + n (1 + a) / (1 - a))`, the
    shrinkage of `k` features against the samples the EMA averages at steady state.
    Without it the prior decays as `a^t` and the directions the target set does not
    span (constant pixels, N < D) become singular after some 10^4 steps."""
    a = ema_decay
    k = float(k)
    n_steady = tf.cast(batch_size, dtype) * (1.0 + a) / (1.0 - a)
    return k / (k + n_steady)


# ---------------------------------------------------------------------- value
def closed_form(cx, c, s, max_correlation):
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
        max_correlation: bound on the canonical correlations, in (0, 1).

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
    bound = max_correlation**2
    lc = tf.minimum(lam, bound)
    value = tf.reduce_sum(0.5 * tf.math.log1p(-lc) + lc / (1.0 - lc))
    phi = tf.where(lam < bound, (1.0 + lc) / (2.0 * tf.square(1.0 - lc)), tf.zeros_like(lc))
    u = tf.linalg.triangular_solve(lw, v, lower=True, adjoint=True)  # Lw^-T V
    grad_r = tf.matmul(u * phi, u, transpose_b=True)
    grad_s = -tf.matmul(u * (phi * lc), u, transpose_b=True)
    grad_c = 2.0 * tf.linalg.triangular_solve(lx, tf.matmul(b, grad_r), lower=True, adjoint=True)
    return value, grad_c, grad_s, lam, u


def surrogate_and_value(value, carrier):
    """`(finite, surrogate, value)` in float32: `surrogate` has the value and the gradient
    of `carrier`; both are 0 unless the value and the carrier are finite."""
    finite = tf.math.is_finite(value) & tf.math.is_finite(tf.stop_gradient(carrier))
    value = tf.cast(tf.where(finite, value, tf.zeros_like(value)), tf.float32)
    carrier = tf.cast(tf.where(finite, carrier, tf.zeros_like(carrier)), tf.float32)
    surrogate = carrier - tf.stop_gradient(carrier) + tf.stop_gradient(value)
    return finite, surrogate, tf.stop_gradient(value)


# ---------------------------------------------------------------------- tracked directions
def ritz_values(u, cross, x_inverse, w_ema):
    """Rayleigh quotients `u^T C^T J_xx^-1 C u / u^T J_ww u` of the columns of `u`: the
    squared canonical correlations along the tracked directions (Ritz values, lower
    bounds of the top eigenvalues)."""
    cu = tf.matmul(cross, u)
    num = tf.reduce_sum(cu * tf.matmul(x_inverse, cu), axis=0)
    den = tf.reduce_sum(u * tf.matmul(w_ema, u), axis=0)
    return num / tf.maximum(den, 1e-30)


def subspace_iteration(u, m, cross, x_inverse, w_inverse, w_ema):
    """One subspace iteration on `M = J_ww^-1 C^T J_xx^-1 C` from the `m` columns of `u`
    and a Rayleigh-Ritz step (O(k^2 m)); `u` itself if the result is not finite."""

    def apply_r(v):  # C^T J_xx^-1 C v
        return tf.matmul(cross, tf.matmul(x_inverse, tf.matmul(cross, v)), transpose_a=True)

    v = tf.matmul(w_inverse, apply_r(u))
    a = tf.matmul(v, apply_r(v), transpose_a=True)
    b = tf.matmul(v, tf.matmul(w_ema, v), transpose_a=True)
    eye = tf.eye(m, dtype=b.dtype)
    chol = tf.linalg.cholesky(0.5 * (b + tf.transpose(b)) + (1e-10 * tf.linalg.trace(b) + 1e-30) * eye)
    small = tf.linalg.triangular_solve(chol, tf.transpose(tf.linalg.triangular_solve(chol, a, lower=True)), lower=True)
    theta, q = tf.linalg.eigh(0.5 * (small + tf.transpose(small)))
    new_u = canonical_signs(tf.matmul(v, tf.linalg.triangular_solve(chol, q, lower=True, adjoint=True)))
    good = tf.reduce_all(tf.math.is_finite(new_u)) & tf.reduce_all(tf.math.is_finite(theta))
    return tf.where(good, new_u, u)


# ---------------------------------------------------------------------- fast mode
def rank_update(inverse, logdet, z, omega):
    """`(1 - omega) A + omega / n Z^T Z` from `A^-1` and `logdet A` (Woodbury, determinant lemma).

    Returns:
        `(new_inverse, new_logdet, z_new_inverse)`, the last `Z A_new^-1`.
    """
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


def joint_matrix(cx, c, s):
    """The joint covariance `[[cx, c], [c^T, s]]` from its blocks."""
    return tf.concat([tf.concat([cx, c], 1), tf.concat([tf.transpose(c), s], 1)], 0)


def inverse_and_logdet(matrix):
    """`(matrix^-1, logdet matrix)` by Cholesky."""
    chol = tf.linalg.cholesky(matrix)
    eye = tf.eye(tf.shape(matrix)[0], dtype=matrix.dtype)
    return tf.linalg.cholesky_solve(chol, eye), 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)))


def fast_value(joint_inverse, cross, logdets, k):
    """`1/2 [tr(J^-1 D) - 2k + logdet J - logdet D]` from the maintained inverses
    (`logdets` holds those of `J`, `J_xx`, `J_ww`)."""
    # tr(J^-1 D) - 2k = -2 sum((J^-1)_xw * C), from J^-1 J = I: no cancellation of 2k.
    trace = -2.0 * tf.reduce_sum(joint_inverse[:k, k:] * cross)
    ld = logdets
    return 0.5 * (trace + ld[0] - ld[1] - ld[2])


def fast_carrier(zx, zw, joint_inverse, x_ema, w_ema, w_inverse, k, y=None, zw_w_inverse=None):
    """A function of `zw` whose gradient is that of `sum_i z_i^T G z_i`,
    `G = dL/dJ = 1/2 [J^-1 - J^-1 D J^-1 + bd(J^-1) - D^-1]` held fixed (x has no
    gradient): `sum_i <2 (G z_i)_w, zw_i>` with `2 (G z)_w` under `stop_gradient`.

    `y = Z J^-1` and `zw J_ww^-1` come from the rank-n updates when given.
    """
    inv = joint_inverse
    sx, sw = tf.stop_gradient(zx), tf.stop_gradient(zw)
    if y is None:
        y = tf.matmul(tf.concat([sx, sw], axis=1), inv)
    if zw_w_inverse is None:
        zw_w_inverse = tf.matmul(sw, w_inverse)
    yx, yw = y[:, :k], y[:, k:]
    ydj = tf.matmul(tf.matmul(yx, x_ema), inv[:k, k:]) + tf.matmul(tf.matmul(yw, w_ema), inv[k:, k:])
    grad_w = yw - ydj + tf.matmul(sw, inv[k:, k:]) - zw_w_inverse
    return tf.reduce_sum(tf.stop_gradient(grad_w) * zw)


# ---------------------------------------------------------------------- the layer's state
def reset_state(layer):
    """Resets the moving covariance to the identity prior (keeps the target statistics)."""
    k = layer.feature_dim
    eye = tf.eye(k, dtype=layer.x_ema.dtype)
    layer.x_ema.assign(eye)
    layer.w_ema.assign(eye)
    layer.cross_ema.assign(tf.zeros_like(layer.cross_ema))
    if layer.mode == "fast":
        layer.joint_inverse.assign(tf.eye(2 * k, dtype=layer.x_ema.dtype))
        layer.x_inverse.assign(eye)
        layer.w_inverse.assign(eye)
        layer.logdets.assign(tf.zeros_like(layer.logdets))
    layer.top_vectors.assign(tf.zeros_like(layer.top_vectors))
    layer.prior_weight.assign(1.0)
    for v in (layer.bound_active, layer.shrinkage, layer.max_canonical_correlation):
        v.assign(0.0)
    for v in (layer.step, layer.nonfinite_count, layer.exact_steps):
        v.assign(0)


def record_spectrum(layer, lam, u):
    """Keeps the top canonical directions of an eigendecomposition and its largest correlation."""
    m = layer.tracked_directions
    u = canonical_signs(u[:, -m:])
    finite = tf.reduce_all(tf.math.is_finite(u)) & tf.reduce_all(tf.math.is_finite(lam))
    layer.top_vectors.assign(tf.where(finite, u, tf.zeros_like(layer.top_vectors)))
    lam_max = tf.cast(lam[-1], tf.float32)
    layer.max_canonical_correlation.assign(tf.where(tf.math.is_finite(lam_max), tf.sqrt(lam_max), 0.0))
    layer.bound_active.assign(tf.cast(lam_max >= layer.max_correlation**2, tf.float32))


def tracked_correlations(layer, update):
    """Squared canonical correlations of the tracked top directions at the current `J`.

    With `update`, one subspace iteration on `M = J_ww^-1 C^T J_xx^-1 C` (with the
    maintained inverses, O(k^2 m)) and a Rayleigh-Ritz step follow the top `m`
    directions as `J` moves, and the state keeps the result; the Ritz values are
    lower bounds of the top eigenvalues that the iteration tightens step by step.
    """
    if update is not False:
        # Only after an accepted batch, and once an eigendecomposition seeded `U`.
        seeded = tf.reduce_any(tf.not_equal(layer.top_vectors, 0.0))
        tf.cond(tf.logical_and(update, seeded), lambda: _subspace_step(layer), lambda: tf.constant(False))
    return ritz_values(layer.top_vectors, layer.cross_ema, layer.x_inverse, layer.w_ema)


def _subspace_step(layer):
    m = layer.tracked_directions
    if m:
        u = layer.top_vectors
        new_u = subspace_iteration(u, m, layer.cross_ema, layer.x_inverse, layer.w_inverse, layer.w_ema)
        layer.top_vectors.assign(new_u)
    return tf.constant(True)


def refactorize(layer):
    """Recomputes the fast mode's inverses and log-dets from `J` (Cholesky)."""
    joint = joint_matrix(layer.x_ema, layer.cross_ema, layer.w_ema)
    values = []
    pairs = ((joint, layer.joint_inverse), (layer.x_ema, layer.x_inverse), (layer.w_ema, layer.w_inverse))
    for matrix, inverse in pairs:
        matrix_inverse, logdet = inverse_and_logdet(matrix)
        inverse.assign(matrix_inverse)
        values.append(logdet)
    layer.logdets.assign(tf.stack(values))
    return tf.constant(True)


def update_state(layer, sx, sw, omega, n, step):
    """One step of `J`, its inverses (fast mode), the prior floor and the refresh.

    Returns:
        In fast mode `(Z J^-1, Z_w J_ww^-1)` after the update, for the gradient
        carrier; else `True`.
    """
    fast = layer.mode == "fast"
    if fast:
        ld = layer.logdets
        j_inv, ld_j, y_new = rank_update(layer.joint_inverse, ld[0], tf.concat([sx, sw], 1), omega)
        x_inv, ld_x, _ = rank_update(layer.x_inverse, ld[1], sx, omega)
        w_inv, ld_w, zw_w_new = rank_update(layer.w_inverse, ld[2], sw, omega)
        layer.joint_inverse.assign(j_inv)
        layer.x_inverse.assign(x_inv)
        layer.w_inverse.assign(w_inv)
        layer.logdets.assign(tf.stack([ld_j, ld_x, ld_w]))
    layer.x_ema.assign((1.0 - omega) * layer.x_ema + omega * tf.matmul(sx, sx, transpose_a=True) / n)
    layer.cross_ema.assign((1.0 - omega) * layer.cross_ema + omega * tf.matmul(sx, sw, transpose_a=True) / n)
    layer.w_ema.assign((1.0 - omega) * layer.w_ema + omega * tf.matmul(sw, sw, transpose_a=True) / n)
    layer.prior_weight.assign((1.0 - omega) * layer.prior_weight)
    period = layer.period
    at_period = tf.equal(step % period, 0)
    floor = layer.prior_floor(tf.shape(sx)[0])
    top_up = at_period & (layer.prior_weight < floor)

    def add_prior():
        delta = floor - layer.prior_weight
        eye = tf.eye(layer.feature_dim, dtype=layer.x_ema.dtype)
        layer.x_ema.assign_add(delta * eye)
        layer.w_ema.assign_add(delta * eye)
        layer.prior_weight.assign(floor)
        return tf.constant(True)

    tf.cond(top_up, add_prior, lambda: tf.constant(False))
    layer.shrinkage.assign(tf.cast(layer.prior_weight, tf.float32))
    if fast:
        # Refactorized at the first step, every `refresh_every` steps (rounding drift;
        # the prior top-up, which is not a rank-n update, happens on these steps).
        refresh = tf.equal(step, 1) | at_period

        def refresh_fn():
            refactorize(layer)
            _, _, _, lam, u = closed_form(layer.x_ema, layer.cross_ema, layer.w_ema, layer.max_correlation)
            record_spectrum(layer, lam, u)
            # The prior top-up is not a rank-n update: `Z J^-1` and `Z_w J_ww^-1`
            # from the new inverses (else the step's gradient misses the top-up).
            # (The function's automatic control dependencies order these reads after
            # the assignments.)
            return tf.matmul(tf.concat([sx, sw], 1), layer.joint_inverse), tf.matmul(sw, layer.w_inverse)

        return tf.cond(refresh, refresh_fn, lambda: (y_new, zw_w_new))
    return tf.constant(True)


__all__ = [
    "canonical_signs",
    "closed_form",
    "fast_carrier",
    "fast_value",
    "finite_or_zeros",
    "inverse_and_logdet",
    "joint_matrix",
    "normalized_features",
    "omega",
    "prior_floor",
    "rank_update",
    "record_spectrum",
    "refactorize",
    "reset_state",
    "ritz_values",
    "shrunk_joint_covariance",
    "subspace_iteration",
    "surrogate_and_value",
    "tracked_correlations",
    "update_state",
]
