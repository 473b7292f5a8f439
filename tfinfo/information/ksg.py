"""Kraskov-Stoegbauer-Grassberger k-nearest-neighbour estimator of mutual information.

Estimator 1 of Kraskov et al. (2004). For N paired samples `(x_i, z_i)`, let `eps_i` be
the max-norm distance from `(x_i, z_i)` to its k-th nearest neighbour in the joint space,
where the joint distance is `max(||x_i - x_j||_inf, ||z_i - z_j||_inf)`, and let
`n_x(i)` (`n_z(i)`) count the samples `j != i` with `||x_i - x_j||_inf < eps_i`
(`||z_i - z_j||_inf < eps_i`), strictly. Then

    I(x; z) ~= psi(k) + psi(N) - mean_i[psi(n_x(i) + 1) + psi(n_z(i) + 1)]

in nats, with `psi` the digamma function. Neighbours come from `scipy.spatial.cKDTree`
with `p=inf`; the strict inequality is a closed ball of radius `nextafter(eps_i, 0)`, the
largest double below `eps_i`. Max-norm distances are exact in floating point (a
subtraction, an absolute value and a maximum), so the counts agree exactly with a
brute-force evaluation.
"""

import numbers

import numpy as np
from scipy import spatial
from scipy import special


def _as_samples(value, name):
    """`value` as a float64 (N, D) array: axis 0 indexes samples, the rest is flattened."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Expected `{name}` to be a numeric array. Received: {type(value).__name__} ({error})"
        ) from None
    if array.ndim == 0:
        raise ValueError(
            f"Expected `{name}` to have a samples axis (axis 0). Received: {name}.shape=()"
        )
    array = array.reshape(array.shape[0], -1)
    if array.shape[1] == 0:
        raise ValueError(
            f"Expected `{name}` to have at least one value per sample. "
            f"Received: {name}.shape={np.shape(value)}"
        )
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"Expected `{name}` to contain only finite values. "
            f"Received: {name} with {bad} NaN or infinite value(s)"
        )
    return array


def ksg_mutual_information(x, z, k=3):
    """Estimates the mutual information `I(x; z)` in nats with the KSG estimator.

    Estimator 1 of Kraskov, Stoegbauer and Grassberger (2004): a k-nearest-neighbour
    estimate in the joint max-norm space, corrected with marginal neighbour counts. It is
    consistent, nearly unbiased for independent variables, and needs no density model or
    training; it degrades when the true mutual information is large compared with
    `log(N)` or the dimension is high.

    The data are used as given. The estimator's finite-sample error depends on the
    relative scales of the coordinates (the joint distance is a maximum over all of them),
    so standardize each coordinate first when they are on very different scales, e.g.
    `x = (x - x.mean(0)) / x.std(0)`; the mutual information itself is unchanged by such
    rescaling. Estimates can be slightly negative; they are not clipped.

    Duplicates: ties are allowed as long as every joint sample `(x_i, z_i)` has fewer than
    `k` exact copies among the other samples. Otherwise its k-th neighbour distance is 0,
    the estimator is undefined, and a `ValueError` is raised; add small noise to
    discrete-valued data (e.g. `1e-10` times the data scale) before calling. Nothing is
    jittered silently.

    Args:
        x: array-like of shape `(N, ...)`: N samples of the first variable, each flattened
            to a vector. Numpy arrays, lists and tensors (anything `np.asarray` accepts).
        z: array-like of shape `(N, ...)`: the paired samples of the second variable.
        k: int, number of nearest neighbours, `1 <= k < N`. Small `k` (3 to 10) lowers
            the bias and raises the variance.

    Returns:
        The estimate as a Python float, in nats.

    Raises:
        ValueError: if `x` or `z` is not numeric, they have different numbers of samples,
            N < 2, `k` is not an integer in `[1, N)`, a value is not finite, or a joint
            sample has `k` or more exact duplicates.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 1))
    >>> z = 0.8 * x + 0.6 * rng.normal(size=(2000, 1))
    >>> mi = ksg_mutual_information(x, z, k=3)  # true value -0.5 log(1 - 0.64) = 0.51

    Reference:
        A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual information",
        Phys. Rev. E 69, 066138 (2004), Eq. (8).
    """
    x = _as_samples(x, "x")
    z = _as_samples(z, "z")
    n = x.shape[0]
    if z.shape[0] != n:
        raise ValueError(
            "Expected `x` and `z` to have the same number of samples (axis 0). "
            f"Received: x.shape[0]={n}, z.shape[0]={z.shape[0]}"
        )
    if n < 2:
        raise ValueError(f"Expected at least 2 samples in `x` and `z`. Received: N={n}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < n:
        raise ValueError(
            f"Expected `k` to be an integer with 1 <= k < N={n}. Received: k={k!r}"
        )
    k = int(k)

    joint = np.concatenate([x, z], axis=1)
    # k + 1 neighbours: sample i is at distance 0 from itself, so the (k + 1)-th smallest
    # distance over all j is the k-th smallest over j != i, even with duplicates.
    distances, _ = spatial.cKDTree(joint).query(joint, k=[k + 1], p=np.inf)
    eps = distances[:, 0]
    if np.any(eps == 0):
        first = int(np.flatnonzero(eps == 0)[0])
        raise ValueError(
            f"Expected every joint sample (x, z) to have fewer than k={k} exact "
            "duplicates; the k-th neighbour distance is 0 and the estimator is undefined. "
            f"Received: sample {first} has at least {k} duplicates in `x` and `z`. "
            "Add small noise to the data or increase `k`."
        )
    # Strict `< eps`: the closed ball of the largest radius below eps. The count includes
    # sample i itself (distance 0 < eps), hence n_x + 1 = count.
    radius = np.nextafter(eps, 0)
    count_x = spatial.cKDTree(x).query_ball_point(x, radius, p=np.inf, return_length=True)
    count_z = spatial.cKDTree(z).query_ball_point(z, radius, p=np.inf, return_length=True)
    marginal = special.digamma(count_x) + special.digamma(count_z)
    return float(special.digamma(k) + special.digamma(n) - np.mean(marginal))
