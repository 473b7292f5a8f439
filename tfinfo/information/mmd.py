"""Squared maximum mean discrepancy with a family of Gaussian kernels (Mk-MMD).

`MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y)` for `x, x' ~ P`, `y, y' ~ Q`
(Gretton et al. 2012). The multi-kernel version of seed 000's baseline (Long et al.'s
DAN, Gretton et al.'s Mk-MMD) uses the **sum** of `K` Gaussian kernels,
`k = sum_u k_u`, so the value is the sum of the per-kernel `MMD^2` (as in the public
DAN and domain-separation code, whose weights `lambda` therefore carry over);
`reduction="mean"` gives Gretton et al.'s convex combination with uniform weights
instead (the sum divided by `K`).

Public code disagrees on what the kernel parameter means; here it is explicit:

- `bandwidth="deviation"`: `sigma` is a standard deviation,
  `k(a, b) = exp(-|a - b|^2 / (2 sigma^2))` (Gretton et al.; seed 000 speaks of
  "19 kernels with different standard deviations").
- `bandwidth="variance"`: `sigma` is a squared length,
  `k(a, b) = exp(-|a - b|^2 / sigma)` (the widely copied PyTorch DAN port's
  `guassian_kernel`: 5 kernels, `sigma` = the mean squared distance times `2^-2..2^2`).
- The domain-separation code (Bousmalis et al., `tensorflow/models`) uses
  `exp(-|a - b|^2 / (2 s))` with 19 values `s` from 1e-6 to 1e6: that is
  `"deviation"` with `sigma = sqrt(s)` (or `"variance"` with `sigma = 2 s`), which is what
  `domain_separation_bandwidths` returns.

and so is the scale of the family:

- `scale="fixed"`: the `sigmas` are used as given (absolute, in feature units).
- `scale="median"`: the `sigmas` are multipliers of the median heuristic. With `m` the
  median squared distance over all distinct pairs of the pooled batch `[x; y]`
  (under `tf.stop_gradient`), a `"variance"` becomes `sigma * m` and a `"deviation"`
  becomes `sigma * sqrt(m)` (a multiple of the median distance), so that in both
  conventions the kernel family follows the features' scale. If `m` is 0 (collapsed
  features) the mean squared distance is used, and 1 if that is 0 too.
- `scale="mean"`: the same with `m` the mean squared distance over the distinct pairs
  (the DAN port's choice; more sensitive to outliers than the median).

Defaults and why: `bandwidth="deviation"` (Gretton's and the paper's wording);
`scale="median"`, because learned features change scale during training and with a
fixed family the network can lower `MMD^2` by shrinking all features into the flat part
of every kernel (or stretching them past every bandwidth), while under a data-driven
scale `MMD^2` is invariant to a common rescaling of the features; the median rather
than the mean because a few distant points do not widen every kernel; and for it
the 19 multipliers `2^-4.5, 2^-4, ..., 2^4.5` (half octaves centred on the median
heuristic), for the fixed scale `2^-8, ..., 2^10` (one octave apart). The default
estimator is the unbiased one: it is not clipped at 0 (clipping biases the mean and
cuts the gradient), so it can be slightly negative when the two samples match.

Estimators for `x` (`n` samples) and `y` (`m` samples):

- `"biased"`: the V-statistic `mean(Kxx) + mean(Kyy) - 2 mean(Kxy)`, diagonals
  included (the public DSN and DAN code); `>= 0`, and on average about
  `(1/n + 1/m) * sum_u (1 - E k_u(x, x'))` above `MMD^2`, even when `P = Q`.
- `"unbiased"`: the U-statistic, diagonals of `Kxx` and `Kyy` excluded
  (`n, m >= 2`); its mean is `MMD^2` exactly.
- `"linear"`: Gretton et al. 2012, Lemma 14: the mean over `i` of
  `k(x_{2i-1}, x_{2i}) + k(y_{2i-1}, y_{2i}) - k(x_{2i-1}, y_{2i}) - k(x_{2i}, y_{2i-1})`,
  `O(n)` time; needs `n = m >= 2` (an odd last sample is dropped). Unbiased, with
  higher variance.

Pairwise squared distances use `|a|^2 + |b|^2 - 2 a.b` on features centred by the
pooled mean (less cancellation), clipped at 0, with exactly-zero self-distances;
nothing is inverted. Work is in float64 if either input is float64, else in float32
(half precision and integer inputs are cast to float32).

Reference:
    Gretton, Borgwardt, Rasch, Schoelkopf & Smola, "A kernel two-sample test", JMLR 2012;
    Gretton et al., "Optimal kernel choice for large-scale two-sample tests", NIPS 2012
    (seed 000's [8]); Long, Cao, Wang & Jordan, "Learning transferable features with
    deep adaptation networks", ICML 2015; Bousmalis et al., "Domain separation
    networks", NIPS 2016.
"""

import math

import tensorflow as tf

# Python-only control flow: skipping AutoGraph's source conversion saves about a second
# on the first trace of a train step.
_no_autograph = tf.autograph.experimental.do_not_convert

MMD_ESTIMATORS = ("unbiased", "biased", "linear")
BANDWIDTHS = ("deviation", "variance")
SCALES = ("fixed", "median", "mean")
REDUCTIONS = ("sum", "mean")

# The 19 values of the domain-separation networks' `mmd_loss`, used there as
# `exp(-d^2 / (2 s))`.
DOMAIN_SEPARATION_SIGMAS = (
    1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 100.0,
    1e3, 1e4, 1e5, 1e6,
)  # fmt: skip


def gaussian_kernel_bandwidths(num_kernels=19, base=2.0, min_exponent=-8.0):
    """A geometric family of kernel parameters: `base ** (min_exponent + i)`, `i < num_kernels`.

    The defaults give the 19 octaves `2^-8, ..., 2^10` (absolute sigmas for
    `scale="fixed"`); `gaussian_kernel_bandwidths(base=2 ** 0.5, min_exponent=-9)` gives
    the half octaves `2^-4.5, ..., 2^4.5` used as median multipliers by default.

    Args:
        num_kernels: number of kernels (>= 1).
        base: ratio of consecutive values (> 0).
        min_exponent: exponent of the smallest value.

    Returns:
        A tuple of `num_kernels` positive floats, increasing when `base > 1`.
    """
    if int(num_kernels) != num_kernels or num_kernels < 1:
        raise ValueError(f"Expected `num_kernels` to be an integer >= 1. Received: num_kernels={num_kernels}")
    if not base > 0:
        raise ValueError(f"Expected `base` > 0. Received: base={base}")
    return tuple(float(base) ** (float(min_exponent) + i) for i in range(int(num_kernels)))


def domain_separation_bandwidths(bandwidth="deviation"):
    """The 19 kernels of the domain-separation networks' MMD loss, in our convention.

    That code evaluates `sum_s exp(-d^2 / (2 s))` for `s` in `DOMAIN_SEPARATION_SIGMAS`
    with fixed `s` and the biased estimator. The same kernels are `sigma = sqrt(s)` as
    standard deviations, or `sigma = 2 s` as variances.

    Args:
        bandwidth: `"deviation"` or `"variance"`.

    Returns:
        A tuple of 19 floats for `mmd2(..., bandwidth=bandwidth, scale="fixed")`.
    """
    _check_choice("bandwidth", bandwidth, BANDWIDTHS)
    if bandwidth == "deviation":
        return tuple(math.sqrt(s) for s in DOMAIN_SEPARATION_SIGMAS)
    return tuple(2.0 * s for s in DOMAIN_SEPARATION_SIGMAS)


def default_bandwidths(scale="median"):
    """The default `sigmas` for a scale: octaves `2^-8..2^10` for "fixed", else the
    half octaves `2^-4.5..2^4.5` (multipliers of the median or mean heuristic)."""
    _check_choice("scale", scale, SCALES)
    if scale != "fixed":
        return gaussian_kernel_bandwidths(19, base=2.0**0.5, min_exponent=-9.0)
    return gaussian_kernel_bandwidths(19, base=2.0, min_exponent=-8.0)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {choices}. Received: {name}={value!r}")


def check_mmd_arguments(sigmas=None, bandwidth="deviation", scale="median", estimator="unbiased", reduction="sum"):
    """Validates the options of `mmd2`; returns the sigmas as a tuple of floats (or None).

    Raises:
        ValueError: naming the offending argument.
    """
    _check_choice("bandwidth", bandwidth, BANDWIDTHS)
    _check_choice("scale", scale, SCALES)
    _check_choice("estimator", estimator, MMD_ESTIMATORS)
    _check_choice("reduction", reduction, REDUCTIONS)
    if sigmas is None:
        return None
    try:
        items = list(iter(sigmas))
    except TypeError:
        items = [sigmas]  # a single number
    try:
        values = tuple(float(s) for s in items)
    except (TypeError, ValueError):
        values = ()
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            "Expected `sigmas` to be a non-empty sequence of finite positive numbers. "
            f"Received: sigmas={sigmas!r}"
        )
    return values


def _as_features(x, name):
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 2:
        raise ValueError(
            f"Expected `{name}` of rank 2 (samples, features). Received: {name}.shape={tuple(x.shape)}"
        )
    return x


def _working_dtype(x, y):
    if x.dtype == tf.float64 or y.dtype == tf.float64:
        return tf.float64
    return tf.float32


@_no_autograph
def pairwise_squared_distances(x, y):
    """`d[i, j] = |x_i - y_j|^2` from norms and inner products, clipped at 0.

    Args:
        x: `(n, D)` floats.
        y: `(m, D)` floats.

    Returns:
        An `(n, m)` tensor, `>= 0`.
    """
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    dtype = _working_dtype(x, y)
    x, y = tf.cast(x, dtype), tf.cast(y, dtype)
    _check_feature_dims(x, y)
    xx = tf.reduce_sum(tf.square(x), axis=1)
    yy = tf.reduce_sum(tf.square(y), axis=1)
    d = xx[:, None] + yy[None, :] - 2.0 * tf.matmul(x, y, transpose_b=True)
    return tf.maximum(d, tf.zeros((), dtype))


def _self_distances(z):
    """Pairwise squared distances within `z` with an exactly-zero diagonal."""
    d = pairwise_squared_distances(z, z)
    # A mask rather than `tf.linalg.set_diag`: the latter's gradient builds its zero
    # diagonal from a shape computed under `cond`, which XLA cannot compile for a
    # dynamic batch size.
    diagonal = tf.linalg.band_part(tf.ones_like(d), 0, 0) > 0
    return tf.where(diagonal, tf.zeros_like(d), d)


@_no_autograph
def median_pairwise_squared_distance(z):
    """Median of `|z_i - z_j|^2` over the `P = N (N - 1) / 2` pairs `i < j` (no gradient).

    For even `P` the mean of the two middle values (as `numpy.median`). Computed by
    sorting the `N^2` entries with the lower triangle and diagonal set to `+inf`, so the
    shapes are static (XLA-friendly). Needs `N >= 2`.

    Args:
        z: `(N, D)` floats.

    Returns:
        A scalar.
    """
    z = tf.stop_gradient(_as_features(z, "z"))
    z = tf.cast(z, _working_dtype(z, z))
    z = z - tf.reduce_mean(z, axis=0, keepdims=True)  # distances are translation invariant
    return _median_from_distances(_self_distances(z))


def _median_from_distances(d):
    d = tf.stop_gradient(d)
    n = tf.shape(d)[0]
    upper = tf.linalg.band_part(tf.ones_like(d), 0, -1) - tf.linalg.band_part(tf.ones_like(d), 0, 0)
    values = tf.where(upper > 0, d, tf.fill(tf.shape(d), tf.constant(math.inf, d.dtype)))
    values = tf.sort(tf.reshape(values, [-1]))
    pairs = n * (n - 1) // 2
    lo = tf.maximum((pairs - 1) // 2, 0)
    hi = tf.maximum(pairs // 2, 0)
    return 0.5 * (tf.gather(values, lo) + tf.gather(values, hi))


def _kernel_lengths(sigmas, bandwidth, scale, scale_value, dtype):
    """`h_u` with `k_u = exp(-d^2 / h_u)`, shape `(K,)`."""
    sigmas = tf.constant(sigmas, dtype)
    if scale != "fixed":
        if bandwidth == "deviation":
            sigmas = sigmas * tf.sqrt(scale_value)
        else:
            sigmas = sigmas * scale_value
    if bandwidth == "deviation":
        return 2.0 * tf.square(sigmas)
    return sigmas


def _one_minus_kernel(d, lengths):
    """`1 - k_u = -expm1(-d / h_u)` per kernel, shape `(K,) + d.shape`.

    `MMD^2 = 2 E[1 - k(x, y)] - E[1 - k(x, x')] - E[1 - k(y, y')]`: the constants cancel,
    and `expm1` keeps full relative precision for wide kernels, where `k` is close to 1
    and `E k(x, x') + E k(y, y') - 2 E k(x, y)` would lose it to cancellation.
    """
    return -tf.math.expm1(-d[None] / tf.reshape(lengths, [-1] + [1] * d.shape.rank))


def _static_size(x):
    return x.shape[0] if x.shape[0] is not None else None


def _check_feature_dims(x, y):
    if x.shape[1] is not None and y.shape[1] is not None and x.shape[1] != y.shape[1]:
        raise ValueError(
            "Expected `x` and `y` with the same number of features. "
            f"Received: x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}"
        )


def _check_sample_counts(x, y, estimator):
    n, m = _static_size(x), _static_size(y)
    minimum = 1 if estimator == "biased" else 2
    for name, count in (("x", n), ("y", m)):
        if count is not None and count < minimum:
            raise ValueError(
                f"Expected at least {minimum} samples in `{name}` for estimator={estimator!r}. "
                f"Received: {name}.shape={tuple((x if name == 'x' else y).shape)}"
            )
    if estimator == "linear" and n is not None and m is not None and n != m:
        raise ValueError(
            "Expected `x` and `y` with the same number of samples for estimator='linear' "
            f"(it pairs x_i with y_i). Received: x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}"
        )


def _runtime_checks(x, y, estimator):
    """Graph-mode checks for sample counts unknown at trace time."""
    if _static_size(x) is not None and _static_size(y) is not None:
        return []
    minimum = 1 if estimator == "biased" else 2
    n, m = tf.shape(x)[0], tf.shape(y)[0]
    checks = [
        tf.debugging.assert_greater_equal(
            n, minimum, message=f"Expected at least {minimum} samples in `x` for estimator={estimator!r}"
        ),
        tf.debugging.assert_greater_equal(
            m, minimum, message=f"Expected at least {minimum} samples in `y` for estimator={estimator!r}"
        ),
    ]
    if estimator == "linear":
        checks.append(
            tf.debugging.assert_equal(
                n, m, message="Expected `x` and `y` with the same number of samples for estimator='linear'"
            )
        )
    return checks


@_no_autograph
def mmd2(x, y, sigmas=None, bandwidth="deviation", scale="median", estimator="unbiased", reduction="sum"):
    """Squared MMD between samples `x` and `y` with a sum of Gaussian kernels.

    Args:
        x: `(n, D)` samples of P (numpy or tensor).
        y: `(m, D)` samples of Q.
        sigmas: the kernel parameters, a sequence of positive floats. None: the module
            defaults (`default_bandwidths(scale)`: 19 half octaves `2^-4.5..2^4.5`
            around the median heuristic, or 19 octaves `2^-8..2^10` when fixed).
        bandwidth: `"deviation"` (`exp(-d^2 / (2 sigma^2))`) or `"variance"`
            (`exp(-d^2 / sigma)`).
        scale: `"median"` (sigmas multiply the median heuristic of the pooled batch,
            no gradient through it), `"mean"` (the same with the mean squared
            distance) or `"fixed"` (sigmas used as given).
        estimator: `"unbiased"` (U-statistic), `"biased"` (V-statistic) or `"linear"`
            (Gretton et al. 2012's linear-time statistic; needs `n == m`).
        reduction: `"sum"` (default) or `"mean"` of the per-kernel `MMD^2`.

    Returns:
        A scalar tensor in the working dtype (float32, or float64 for float64 input).

    Raises:
        ValueError: on an unknown option, non-positive sigmas, inputs not of rank 2,
            different feature dimensions, or too few samples for the estimator.

    Example:

    >>> x = np.random.normal(size=(64, 8))
    >>> y = np.random.normal(size=(64, 8)) + 1.0
    >>> float(mmd2(x, y)) > 0
    True
    """
    sigmas = check_mmd_arguments(sigmas, bandwidth, scale, estimator, reduction)
    if sigmas is None:
        sigmas = default_bandwidths(scale)
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    _check_feature_dims(x, y)
    _check_sample_counts(x, y, estimator)
    dtype = _working_dtype(x, y)
    x, y = tf.cast(x, dtype), tf.cast(y, dtype)
    with tf.control_dependencies(_runtime_checks(x, y, estimator)):
        n = tf.shape(x)[0]
    m = tf.shape(y)[0]
    # Distances are translation invariant: centring on the pooled mean (no gradient
    # needed) reduces cancellation in |a|^2 + |b|^2 - 2 a.b for features with an offset.
    pooled = tf.concat([x, y], axis=0)
    pooled = pooled - tf.stop_gradient(tf.reduce_mean(pooled, axis=0, keepdims=True))
    x, y = pooled[:n], pooled[n:]
    need_pooled = scale != "fixed" or estimator != "linear"
    d_pooled = _self_distances(pooled) if need_pooled else None
    scale_value = None
    if scale != "fixed":
        total = tf.cast(n + m, dtype)
        mean = tf.stop_gradient(tf.reduce_sum(d_pooled)) / tf.maximum(total * (total - 1.0), 1.0)
        one = tf.ones((), dtype)
        scale_value = tf.where(mean > 0, mean, one)
        if scale == "median":
            med = _median_from_distances(d_pooled)
            scale_value = tf.where(med > 0, med, scale_value)
    lengths = _kernel_lengths(sigmas, bandwidth, scale, scale_value, dtype)
    num_kernels = len(sigmas)
    if estimator == "linear":
        half = tf.minimum(n, m) // 2
        x1, x2 = x[0 : 2 * half : 2], x[1 : 2 * half : 2]
        y1, y2 = y[0 : 2 * half : 2], y[1 : 2 * half : 2]

        def g(a, b):
            return _one_minus_kernel(tf.reduce_sum(tf.square(a - b), axis=1), lengths)

        per_kernel = tf.reduce_mean(g(x1, y2) + g(x2, y1) - g(x1, x2) - g(y1, y2), axis=1)
    else:
        gk = _one_minus_kernel(d_pooled, lengths)
        gxx = tf.reduce_sum(gk[:, :n, :n], axis=[1, 2])
        gyy = tf.reduce_sum(gk[:, n:, n:], axis=[1, 2])
        gxy = tf.reduce_sum(gk[:, :n, n:], axis=[1, 2])
        nf, mf = tf.cast(n, dtype), tf.cast(m, dtype)
        # The diagonals of gxx and gyy are exactly 0 (zero self-distances), so the
        # biased and unbiased estimators differ only in their normalizers.
        if estimator == "biased":
            per_kernel = 2.0 * gxy / (nf * mf) - gxx / (nf * nf) - gyy / (mf * mf)
        else:
            per_kernel = 2.0 * gxy / (nf * mf) - gxx / (nf * (nf - 1.0)) - gyy / (mf * (mf - 1.0))
    value = tf.reduce_sum(per_kernel)
    if reduction == "mean":
        value = value / num_kernels
    return value
