"""Closed-form information quantities of jointly Gaussian variables.

For jointly Gaussian `x` (dimension D) and `w` (dimension K) with covariance blocks
`sigma_x` (D x D), `sigma_w` (K x K) and `sigma_xw` (D x K), let `C = Lx^-1 Sxw Lw^-T`
with `Lx`, `Lw` the Cholesky factors. The singular values `rho_i` of `C` are the
canonical correlations, and

    I(x; w) = KL(P_xw || P_x P_w) = -1/2 sum log(1 - rho_i^2)
    L(x; w) = KL(P_x P_w || P_xw) = sum 1/2 log(1 - rho_i^2) + rho_i^2 / (1 - rho_i^2)

in nats. In matrix form, with `M = Sx^-1 Sxw Sw^-1 Swx`,
`L = 1/2 logdet(I - M) + tr((I - M)^-1 - I)`. Eq. (9) of Jakubovitz et al. omits the
1/2 on the log-det and doubles the trace, so it equals exactly `2 L`: the paper's
lambda corresponds to ours divided by 2.

Nothing is inverted: both quantities are evaluated through Cholesky factors of
`sigma_w`, `sigma_x` and of the Schur complement `I - C^T C` (or `I - C C^T`,
whichever side is smaller).
"""

import tensorflow as tf


def _as_tensor(value, dtype):
    return tf.convert_to_tensor(value, dtype=dtype)


def _check_blocks(sigma_x, sigma_w, sigma_xw):
    for name, s in (("sigma_x", sigma_x), ("sigma_w", sigma_w)):
        if s.shape.rank != 2 or s.shape[0] != s.shape[1]:
            raise ValueError(
                f"Expected `{name}` to be a square matrix. Received: {name}.shape={tuple(s.shape)}"
            )
    expected = (sigma_x.shape[0], sigma_w.shape[0])
    if sigma_xw.shape.rank != 2 or tuple(sigma_xw.shape) != expected:
        raise ValueError(
            f"Expected `sigma_xw` of shape {expected} (D x K). "
            f"Received: sigma_xw.shape={tuple(sigma_xw.shape)}"
        )


def canonical_cross(sigma_x, sigma_w, sigma_xw):
    """Returns `C = Lx^-1 Sxw Lw^-T`, whose singular values are the canonical correlations.

    Args:
        sigma_x: (D, D) positive-definite covariance of x.
        sigma_w: (K, K) positive-definite covariance of w.
        sigma_xw: (D, K) cross-covariance.

    Returns:
        A (D, K) tensor.
    """
    lx = tf.linalg.cholesky(sigma_x)
    lw = tf.linalg.cholesky(sigma_w)
    a = tf.linalg.triangular_solve(lx, sigma_xw, lower=True)  # Lx^-1 Sxw   (D x K)
    ct = tf.linalg.triangular_solve(lw, tf.transpose(a), lower=True)  # Lw^-1 Sxw^T Lx^-T  (K x D)
    return tf.transpose(ct)


def _gram_small_side(c):
    """Gram matrix of `c` on its smaller side: C^T C (K x K) or C C^T (D x D)."""
    d, k = c.shape[0], c.shape[1]
    if d is not None and k is not None and d < k:
        return tf.matmul(c, c, transpose_b=True)
    return tf.matmul(c, c, transpose_a=True)


def lautum_and_mi_from_gram(gram):
    """Lautum and mutual information from `G = C^T C` (eigenvalues rho_i^2 < 1).

    Uses the Schur complement `S = I - G`:
    `L = 1/2 logdet S + tr(S^-1 G)`, `I = -1/2 logdet S`.

    Args:
        gram: (n, n) symmetric matrix with eigenvalues in [0, 1).

    Returns:
        `(lautum, mutual_information)`: scalar tensors in nats; NaN when an
        eigenvalue of `gram` reaches 1 (the Cholesky factorization fails).
    """
    n = tf.shape(gram)[0]
    eye = tf.eye(n, dtype=gram.dtype)
    chol = tf.linalg.cholesky(eye - gram)
    logdet = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)))
    # tr(S^-1 G) = tr(S^-1) - n = ||Ls^-1||_F^2 - n
    inv_chol = tf.linalg.triangular_solve(chol, eye, lower=True)
    trace = tf.reduce_sum(tf.square(inv_chol)) - tf.cast(n, gram.dtype)
    return 0.5 * logdet + trace, -0.5 * logdet


def _blocks_quantity(sigma_x, sigma_w, sigma_xw, index):
    numpy_in = not any(tf.is_tensor(s) for s in (sigma_x, sigma_w, sigma_xw))
    dtype = tf.float64 if numpy_in else None
    if dtype is None:
        dtype = next(s.dtype for s in (sigma_x, sigma_w, sigma_xw) if tf.is_tensor(s))
        if not dtype.is_floating:
            dtype = tf.float32
    sx, sw, sxw = (_as_tensor(s, dtype) for s in (sigma_x, sigma_w, sigma_xw))
    _check_blocks(sx, sw, sxw)
    value = lautum_and_mi_from_gram(_gram_small_side(canonical_cross(sx, sw, sxw)))[index]
    return float(value.numpy()) if numpy_in and tf.executing_eagerly() else value


def gaussian_lautum_information(sigma_x, sigma_w, sigma_xw):
    """Lautum information `L(x; w) = KL(P_x P_w || P_xw)` of jointly Gaussian x, w, in nats.

    `L = 1/2 logdet(I - M) + tr((I - M)^-1 - I)` with `M = Sx^-1 Sxw Sw^-1 Swx`.
    This is half of eq. (9) of Jakubovitz et al., which omits the 1/2 on the log-det
    and doubles the trace; a lambda tuned for eq. (9) corresponds to ours / 2.

    Args:
        sigma_x: (D, D) covariance of x, positive definite.
        sigma_w: (K, K) covariance of w, positive definite.
        sigma_xw: (D, K) cross-covariance.

    Returns:
        A Python float when all inputs are numpy arrays (computed in float64), else a
        scalar tensor in the inputs' floating dtype. NaN if a canonical correlation is 1.

    Example:

    >>> import numpy as np
    >>> rho = 0.5
    >>> round(gaussian_lautum_information(np.eye(1), np.eye(1), np.array([[rho]])), 6)
    0.189492

    Reference:
        Palomar & Verdu, "Lautum information", IEEE Trans. Inf. Theory 54(3), 2008;
        Jakubovitz et al., seed 000, section 4.1.
    """
    return _blocks_quantity(sigma_x, sigma_w, sigma_xw, 0)


def gaussian_mutual_information(sigma_x, sigma_w, sigma_xw):
    """Mutual information `I(x; w) = KL(P_xw || P_x P_w)` of jointly Gaussian x, w, in nats.

    `I = -1/2 logdet(I - Sx^-1 Sxw Sw^-1 Swx) = -1/2 sum log(1 - rho_i^2)`.

    Args:
        sigma_x: (D, D) covariance of x, positive definite.
        sigma_w: (K, K) covariance of w, positive definite.
        sigma_xw: (D, K) cross-covariance.

    Returns:
        A Python float for numpy inputs (float64), else a scalar tensor.

    Example:

    >>> import numpy as np
    >>> round(gaussian_mutual_information(np.eye(1), np.eye(1), np.array([[0.5]])), 6)
    0.143841
    """
    return _blocks_quantity(sigma_x, sigma_w, sigma_xw, 1)


__all__ = ["gaussian_lautum_information", "gaussian_mutual_information"]
