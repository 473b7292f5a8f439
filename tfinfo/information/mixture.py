"""Pairwise-distance bounds on the information of a noisy layer (Kolchinsky & Tracey).

For a deterministic layer `T = f(X)` measured with Gaussian noise, `Z = T + eps`,
`eps ~ N(0, s2 I)`, and `X` uniform on N samples, `Z` is a mixture of N Gaussians of
equal weight centred on the `t_i = f(x_i)`, so `I(X; Z) = H(Z) - H(eps)` is the entropy
of a Gaussian mixture minus that of one component. It has no closed form, but tight
pairwise bounds (Kolchinsky & Tracey, 2017):

    I(X; Z) <= -1/N sum_i log 1/N sum_j exp(-||t_i - t_j||^2 / (2 s2))   (KL, upper)
    I(X; Z) >= -1/N sum_i log 1/N sum_j exp(-||t_i - t_j||^2 / (8 s2))   (Bhattacharyya, lower)

Both lie in `[0, log N]`; both are exact in the two limits (all `t_i` equal: 0; all far
apart: `log N`). `I(Y; Z) = H(Z) - sum_y p(y) H(Z | Y = y)` follows from the same bound
applied to the whole sample and to each class. Saxe et al. (2018) drew information
planes this way; seed 003's `I(X; L + eps)` is the same quantity.
"""

import numpy as np
from scipy import special

MIXTURE_BOUNDS = ("upper", "lower")


def _as_rows(t, name):
    t = np.asarray(t, np.float64)
    if t.ndim < 1 or t.shape[0] < 1:
        raise ValueError(f"Expected `{name}` with a samples axis. Received: shape={t.shape}")
    t = t.reshape(t.shape[0], -1)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"Expected finite `{name}`. Received: {int(np.sum(~np.isfinite(t)))} NaN or inf values")
    return t


def _mixture_information(t, noise_variance, bound):
    """`-1/N sum_i log 1/N sum_j exp(-d_ij^2 / (c s2))`, c = 2 (upper) or 8 (lower)."""
    squared = np.sum(t * t, axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2.0 * t @ t.T, 0.0)
    scale = (2.0 if bound == "upper" else 8.0) * noise_variance
    n = t.shape[0]
    return float(-np.mean(special.logsumexp(-d2 / scale, axis=1) - np.log(n)))


def _check(noise_variance, bound):
    if not float(noise_variance) > 0:
        raise ValueError(f"Expected `noise_variance` > 0. Received: noise_variance={noise_variance}")
    if bound not in MIXTURE_BOUNDS:
        raise ValueError(f"Expected `bound` to be one of {MIXTURE_BOUNDS}. Received: bound={bound!r}")


def mixture_mutual_information(t, noise_variance, bound="upper"):
    """Bounds `I(X; T + eps)` in nats for `X` uniform on the N samples whose layer values are `t`.

    Args:
        t: layer values `f(x_i)`, shape `(N, ...)` (flattened per sample).
        noise_variance: variance `s2 > 0` of the Gaussian measurement noise.
        bound: `"upper"` (pairwise KL) or `"lower"` (pairwise Bhattacharyya).

    Returns:
        The bound as a Python float in `[0, log N]`.

    Example:

    >>> t = np.random.default_rng(0).normal(size=(1000, 8))
    >>> upper = mixture_mutual_information(t, noise_variance=0.5)

    Reference:
        A. Kolchinsky and B. D. Tracey, "Estimating mixture entropy with pairwise
        distances", Entropy 19(7), 361 (2017); A. M. Saxe et al., "On the information
        bottleneck theory of deep learning", ICLR 2018.
    """
    _check(noise_variance, bound)
    return _mixture_information(_as_rows(t, "t"), float(noise_variance), bound)


def mixture_label_information(labels, t, noise_variance, bound="upper"):
    """`I(Y; T + eps) = H(T + eps) - sum_y p(y) H(T + eps | Y = y)` with the pairwise
    estimate of each mixture entropy (the noise entropy cancels), in nats.

    Not a bound itself (a difference of two bounds), but exact in the same limits:
    0 when the layer ignores the label, `H(Y)` when the classes are far apart.

    Args:
        labels: integer labels, shape `(N,)`.
        t: layer values, shape `(N, ...)`.
        noise_variance: variance of the measurement noise.
        bound: which pairwise estimate of the entropies (`"upper"` or `"lower"`).

    Returns:
        The estimate as a Python float.
    """
    _check(noise_variance, bound)
    t = _as_rows(t, "t")
    y = np.asarray(labels)
    if y.shape != (len(t),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Expected `labels` to be {len(t)} integer labels. Received: shape={y.shape}, dtype={y.dtype}")
    total = _mixture_information(t, float(noise_variance), bound)
    conditional = 0.0
    for c in np.unique(y):
        members = t[y == c]
        conditional += len(members) / len(t) * _mixture_information(members, float(noise_variance), bound)
    # H(Z) - H(eps) = total; H(Z | y) - H(eps) = the class term: their difference.
    return float(total - conditional)
