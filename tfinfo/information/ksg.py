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


def mixed_ksg_mutual_information(labels, z, k=3):
    """Estimates `I(y; z)` in nats between a discrete `y` and a continuous `z` (Ross, 2014).

    For sample i with label `y_i`, let `d_i` be the max-norm distance to its k-th nearest
    neighbour among the other samples with the same label, `N_{y_i}` the number of samples
    with that label and `m_i` the number of samples (any label, i itself included) strictly
    closer than `d_i`. Then

        I(y; z) ~= psi(N) - mean_i psi(N_{y_i}) + mean_i psi(k_i) - mean_i psi(m_i)

    with `k_i = min(k, N_{y_i} - 1)`; samples whose label occurs once carry no neighbour
    and are left out (as in scikit-learn's implementation of the same estimator). This is
    the kNN counterpart of KSG for a categorical variable such as a class label, where
    KSG's ties make it undefined.

    Args:
        labels: integer array-like of shape `(N,)`, the discrete variable.
        z: array-like of shape `(N, ...)`, the continuous variable (flattened per sample).
        k: int >= 1, neighbours within a class.

    Returns:
        The estimate as a Python float, in nats (can be slightly negative; not clipped).

    Raises:
        ValueError: for non-integer or non-1-D labels, mismatched lengths, non-finite `z`,
            a bad `k`, fewer than 2 samples in every class, or a zero neighbour distance
            (exact duplicates within a class).

    Example:

    >>> y = np.repeat([0, 1], 1000)
    >>> z = y[:, None] * 2.0 + np.random.default_rng(0).normal(size=(2000, 1))
    >>> mi = mixed_ksg_mutual_information(y, z)  # the truth is 0.337 nats

    Reference:
        B. C. Ross, "Mutual information between discrete and continuous data sets",
        PLoS ONE 9(2): e87357 (2014), Eq. (2).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        raise ValueError(
            f"Expected `labels` to be a 1-D integer array. Received: shape={y.shape}, dtype={y.dtype}"
        )
    z = _as_samples(z, "z")
    if z.shape[0] != len(y):
        raise ValueError(
            "Expected `labels` and `z` to have the same number of samples. "
            f"Received: len(labels)={len(y)}, z.shape[0]={z.shape[0]}"
        )
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"Expected `k` to be an integer >= 1. Received: k={k!r}")
    classes, counts = np.unique(y, return_counts=True)
    keep_classes = classes[counts > 1]
    if len(keep_classes) == 0:
        raise ValueError(
            f"Expected at least one class with 2 or more samples. Received: class counts {counts.tolist()}"
        )
    keep = np.isin(y, keep_classes)
    y, z = y[keep], z[keep]
    n = len(y)
    radius = np.empty(n)
    k_used = np.empty(n)
    label_count = np.empty(n)
    for c in keep_classes:
        idx = np.flatnonzero(y == c)
        k_c = min(int(k), len(idx) - 1)
        distances, _ = spatial.cKDTree(z[idx]).query(z[idx], k=[k_c + 1], p=np.inf)
        radius[idx], k_used[idx], label_count[idx] = distances[:, 0], k_c, len(idx)
    if np.any(radius == 0):
        raise ValueError(
            "Expected fewer than k exact duplicates of each sample within its class. "
            f"Received: {int(np.sum(radius == 0))} sample(s) with a zero k-th neighbour distance; "
            "add small noise to `z` or increase `k`."
        )
    # Strictly closer than d_i, i itself included (distance 0).
    m = spatial.cKDTree(z).query_ball_point(z, np.nextafter(radius, 0), p=np.inf, return_length=True)
    return float(special.digamma(n) - np.mean(special.digamma(label_count))
                 + np.mean(special.digamma(k_used)) - np.mean(special.digamma(m)))
