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

Input checks: when an input is concrete (a numpy array, a Python list, or an eager
tensor or variable), the public functions check it in float64 NumPy before any
TensorFlow work (O(n^3) with `eigvalsh`/`svd`, as cheap as the closed form itself):
finite, symmetric within `1e-6 * max|sigma|`, positive semidefinite within
`1e-6 * largest eigenvalue` and not singular (condition number below 1 / eps of the
computation dtype), consistent shapes, and a cross-covariance
that keeps the joint covariance positive definite (every canonical correlation below 1,
by a margin of `100 * eps` of the computation dtype). A bad input raises a `ValueError`
naming the argument ("Expected `sigma_x` to be symmetric ... Received: ..."). Symbolic
tensors (inside a `tf.function`, where the values are unknown when the function is
traced) are not checked: there a bad input gives NaN, as before. A symmetric matrix's
lower triangle is what the Cholesky factorization reads, so the computation uses the
symmetrized `(S + S^T) / 2` (the same value for a symmetric input, and a symmetric
gradient).
"""

import numpy as np
import tensorflow as tf

_SYMMETRY_TOLERANCE = 1e-6  # relative to max |sigma|
_PSD_TOLERANCE = 1e-6  # smallest eigenvalue >= -tol * largest


def _as_tensor(value, dtype):
    return tf.convert_to_tensor(value, dtype=dtype)


def _check_blocks(sigma_x, sigma_w, sigma_xw):
    for name, s in (("sigma_x", sigma_x), ("sigma_w", sigma_w)):
        if s.shape.rank != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0:
            raise ValueError(
                f"Expected `{name}` to be a square matrix (non-empty). Received: {name}.shape={tuple(s.shape)}"
            )
    expected = (sigma_x.shape[0], sigma_w.shape[0])
    if sigma_xw.shape.rank != 2 or tuple(sigma_xw.shape) != expected:
        raise ValueError(
            f"Expected `sigma_xw` of shape {expected} (D x K). "
            f"Received: sigma_xw.shape={tuple(sigma_xw.shape)}"
        )


def _is_tensor(value):
    return tf.is_tensor(value) or isinstance(value, tf.Variable)


def _concrete(value, name):
    """`value` as a float64 array when it is known now (numpy, list, eager tensor or
    variable, graph constant), else None (a symbolic tensor: not checked)."""
    if _is_tensor(value):
        if tf.executing_eagerly():
            value = value.numpy()
        else:
            try:
                value = tf.get_static_value(value)
            except (TypeError, ValueError, NotImplementedError):
                value = None
            if value is None:
                return None
    try:
        array = np.asarray(value)
        if np.iscomplexobj(array):
            raise TypeError("complex")
        return array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `{name}` to be a real-valued matrix. Received: {name} of type {type(value).__name__}"
        ) from None


def _margin(dtype):
    """The distance to 1 below which a squared canonical correlation is numerically 1."""
    return 100.0 * float(np.finfo(dtype.as_numpy_dtype).eps)


def _check_covariance(name, s, dtype):
    """Raises unless the (n, n) float64 array `s` is a finite, symmetric, positive
    definite covariance (positive semidefinite within `_PSD_TOLERANCE`, and not singular
    in `dtype`). Returns its eigenvalues (ascending)."""
    if not np.all(np.isfinite(s)):
        raise ValueError(
            f"Expected `{name}` to be finite. Received: {int(np.sum(~np.isfinite(s)))} NaN or inf entries"
        )
    scale = float(np.max(np.abs(s)))
    asymmetry = float(np.max(np.abs(s - s.T)))
    if asymmetry > _SYMMETRY_TOLERANCE * scale:
        raise ValueError(
            f"Expected `{name}` to be symmetric (a covariance), within {_SYMMETRY_TOLERANCE:g} * max |{name}|"
            f" = {_SYMMETRY_TOLERANCE * scale:.3g}. Received: max asymmetry |{name} - {name}^T| = {asymmetry:.3g}"
        )
    eigenvalues = np.linalg.eigvalsh(0.5 * (s + s.T))
    smallest, largest = float(eigenvalues[0]), float(eigenvalues[-1])
    if smallest < -_PSD_TOLERANCE * max(largest, 0.0):
        raise ValueError(
            f"Expected `{name}` to be positive semidefinite (a covariance: smallest eigenvalue >= "
            f"-{_PSD_TOLERANCE:g} * largest). Received: smallest eigenvalue {smallest:.6g}, largest {largest:.6g}"
        )
    if smallest <= float(np.finfo(dtype.as_numpy_dtype).eps) * largest:
        raise ValueError(
            f"Expected `{name}` to be positive definite (the closed forms are undefined for a singular "
            f"covariance in {dtype.name}). Received: smallest eigenvalue {smallest:.6g}, largest {largest:.6g}"
        )
    return eigenvalues


def _check_concrete_blocks(sigma_x, sigma_w, sigma_xw, dtype):
    """The value checks of the module docstring, on whichever inputs are concrete."""
    arrays = {name: _concrete(value, name) for name, value in
              (("sigma_x", sigma_x), ("sigma_w", sigma_w), ("sigma_xw", sigma_xw))}
    for name in ("sigma_x", "sigma_w"):
        if arrays[name] is not None:
            _check_covariance(name, arrays[name], dtype)
    sxw = arrays["sigma_xw"]
    if sxw is None:
        return
    if not np.all(np.isfinite(sxw)):
        raise ValueError(
            f"Expected `sigma_xw` to be finite. Received: {int(np.sum(~np.isfinite(sxw)))} NaN or inf entries"
        )
    if arrays["sigma_x"] is None or arrays["sigma_w"] is None:
        return
    # Canonical correlations: singular values of Lx^-1 Sxw Lw^-T (solves, no inverse).
    lx = np.linalg.cholesky(0.5 * (arrays["sigma_x"] + arrays["sigma_x"].T))
    lw = np.linalg.cholesky(0.5 * (arrays["sigma_w"] + arrays["sigma_w"].T))
    c = np.linalg.solve(lw, np.linalg.solve(lx, sxw).T).T
    rho = float(np.linalg.svd(c, compute_uv=False).max())
    if rho**2 >= 1.0 - _margin(dtype):
        raise ValueError(
            "Expected `sigma_xw` to be a cross-covariance consistent with `sigma_x` and `sigma_w` (the joint "
            "covariance [[sigma_x, sigma_xw], [sigma_xw^T, sigma_w]] positive definite: every canonical "
            f"correlation below 1 in {dtype.name}). Received: largest canonical correlation {rho:.6g}"
        )


def _symmetrized(s):
    return 0.5 * (s + tf.transpose(s))


def _floating_dtype(*values):
    """float64 for numpy inputs, else the first tensor's floating dtype (float32 otherwise)."""
    tensors = [v for v in values if _is_tensor(v)]
    if not tensors:
        return tf.float64
    dtype = tensors[0].dtype
    return dtype if dtype.is_floating else tf.float32


def _checked_blocks(sigma_x, sigma_w, sigma_xw):
    """`(sx, sw, sxw, numpy_in)`: the blocks as tensors, checked (shapes, and values when concrete)."""
    dtype = _floating_dtype(sigma_x, sigma_w, sigma_xw)
    # Shapes first (the value checks need consistent shapes).
    named = (("sigma_x", sigma_x), ("sigma_w", sigma_w), ("sigma_xw", sigma_xw))
    sx, sw, sxw = (_as_tensor(s if _is_tensor(s) else _concrete(s, name), dtype) for name, s in named)
    _check_blocks(sx, sw, sxw)
    _check_concrete_blocks(sigma_x, sigma_w, sigma_xw, dtype)
    numpy_in = not any(_is_tensor(s) for s in (sigma_x, sigma_w, sigma_xw))
    return _symmetrized(sx), _symmetrized(sw), sxw, numpy_in


def _canonical_cross(sx, sw, sxw):
    lx = tf.linalg.cholesky(sx)
    lw = tf.linalg.cholesky(sw)
    a = tf.linalg.triangular_solve(lx, sxw, lower=True)  # Lx^-1 Sxw   (D x K)
    ct = tf.linalg.triangular_solve(lw, tf.transpose(a), lower=True)  # Lw^-1 Sxw^T Lx^-T  (K x D)
    return tf.transpose(ct)


def canonical_cross(sigma_x, sigma_w, sigma_xw):
    """Returns `C = Lx^-1 Sxw Lw^-T`, whose singular values are the canonical correlations.

    Args:
        sigma_x: (D, D) positive-definite covariance of x.
        sigma_w: (K, K) positive-definite covariance of w.
        sigma_xw: (D, K) cross-covariance.

    Returns:
        A (D, K) tensor.

    Raises:
        ValueError: for inconsistent shapes, or (concrete inputs) a block that is not a
            finite symmetric positive definite covariance or an impossible `sigma_xw`.
    """
    sx, sw, sxw, _ = _checked_blocks(sigma_x, sigma_w, sigma_xw)
    return _canonical_cross(sx, sw, sxw)


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

    Raises:
        ValueError: (a concrete `gram`) not square, not finite, not symmetric, or an
            eigenvalue outside [0, 1) (beyond the tolerances of the module docstring).
    """
    gram = tf.convert_to_tensor(gram)
    if not gram.dtype.is_floating:
        gram = tf.cast(gram, tf.float32)
    if gram.shape.rank != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"Expected `gram` to be a square matrix. Received: gram.shape={tuple(gram.shape)}")
    array = _concrete(gram, "gram")
    if array is not None and array.size:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Expected `gram` to be finite. Received: {int(np.sum(~np.isfinite(array)))} "
                             "NaN or inf entries")
        asymmetry = float(np.max(np.abs(array - array.T)))
        if asymmetry > _SYMMETRY_TOLERANCE * max(float(np.max(np.abs(array))), 1.0):
            raise ValueError(f"Expected `gram` to be symmetric. Received: max asymmetry {asymmetry:.3g}")
        eigenvalues = np.linalg.eigvalsh(0.5 * (array + array.T))
        if eigenvalues[0] < -_PSD_TOLERANCE or eigenvalues[-1] >= 1.0 - _margin(gram.dtype):
            raise ValueError(
                "Expected `gram` to have eigenvalues (squared canonical correlations) in [0, 1). "
                f"Received: eigenvalues from {eigenvalues[0]:.6g} to {eigenvalues[-1]:.6g}"
            )
    return _lautum_and_mi(gram)


def _lautum_and_mi(gram):
    n = tf.shape(gram)[0]
    eye = tf.eye(n, dtype=gram.dtype)
    chol = tf.linalg.cholesky(eye - gram)
    logdet = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)))
    # tr(S^-1 G) = tr(S^-1) - n = ||Ls^-1||_F^2 - n
    inv_chol = tf.linalg.triangular_solve(chol, eye, lower=True)
    trace = tf.reduce_sum(tf.square(inv_chol)) - tf.cast(n, gram.dtype)
    return 0.5 * logdet + trace, -0.5 * logdet


def _blocks_quantity(sigma_x, sigma_w, sigma_xw, index):
    sx, sw, sxw, numpy_in = _checked_blocks(sigma_x, sigma_w, sigma_xw)
    value = _lautum_and_mi(_gram_small_side(_canonical_cross(sx, sw, sxw)))[index]
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
        scalar tensor in the inputs' floating dtype. (NaN if a canonical correlation is
        1 and the inputs are symbolic tensors, which are not checked.)

    Raises:
        ValueError: for inconsistent shapes, or (concrete inputs) a `sigma_x` or
            `sigma_w` that is not finite, symmetric and positive definite, or a
            `sigma_xw` that is not finite or makes a canonical correlation >= 1 (see
            the module docstring for the tolerances).

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

    Raises:
        ValueError: as `gaussian_lautum_information`.

    Example:

    >>> import numpy as np
    >>> round(gaussian_mutual_information(np.eye(1), np.eye(1), np.array([[0.5]])), 6)
    0.143841
    """
    return _blocks_quantity(sigma_x, sigma_w, sigma_xw, 1)


__all__ = ["gaussian_lautum_information", "gaussian_mutual_information"]
