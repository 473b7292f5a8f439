import math

import numpy as np
import pytest
import tensorflow as tf

from tfinfo.information.mmd import DOMAIN_SEPARATION_SIGMAS
from tfinfo.information.mmd import default_bandwidths
from tfinfo.information.mmd import domain_separation_bandwidths
from tfinfo.information.mmd import gaussian_kernel_bandwidths
from tfinfo.information.mmd import median_pairwise_squared_distance
from tfinfo.information.mmd import mmd2
from tfinfo.information.mmd import pairwise_squared_distances

CONVENTIONS = [(b, s) for b in ("deviation", "variance") for s in ("fixed", "median", "mean")]


def reference_mmd2(x, y, sigmas, bandwidth, scale, estimator):
    """Float64 numpy Mk-MMD^2 written from the definitions, loops over kernels and pairs."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    sigmas = np.asarray(sigmas, np.float64)
    if scale in ("median", "mean"):
        z = np.concatenate([x, y])
        d = np.array([[np.sum((a - b) ** 2) for b in z] for a in z])
        pairs = d[np.triu_indices(len(z), k=1)]
        heuristic = np.median(pairs) if scale == "median" else np.mean(pairs)
        sigmas = sigmas * (np.sqrt(heuristic) if bandwidth == "deviation" else heuristic)

    def k(a, b):
        d2 = np.sum((a - b) ** 2)
        if bandwidth == "deviation":
            return sum(math.exp(-d2 / (2.0 * s * s)) for s in sigmas)
        return sum(math.exp(-d2 / s) for s in sigmas)

    n, m = len(x), len(y)
    if estimator == "linear":
        half = n // 2
        terms = [
            k(x[2 * i], x[2 * i + 1]) + k(y[2 * i], y[2 * i + 1])
            - k(x[2 * i], y[2 * i + 1]) - k(x[2 * i + 1], y[2 * i])
            for i in range(half)
        ]  # fmt: skip
        return float(np.mean(terms))
    kxx = np.array([[k(a, b) for b in x] for a in x])
    kyy = np.array([[k(a, b) for b in y] for a in y])
    kxy = np.array([[k(a, b) for b in y] for a in x])
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2.0 * kxy.mean()
    )


def _fixed_data(n=14, m=11, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = 0.8 * rng.normal(size=(m, dim)) + np.array([0.7, -0.3, 0.0, 0.4])[:dim]
    return x, y


def test_kernel_families():
    octaves = gaussian_kernel_bandwidths()
    assert len(octaves) == 19 and octaves[0] == 2.0**-8 and octaves[-1] == 2.0**10
    half = default_bandwidths("median")
    assert default_bandwidths("mean") == half
    assert len(half) == 19 and half[9] == pytest.approx(1.0) and half[0] == pytest.approx(2.0**-4.5)
    assert default_bandwidths("fixed") == octaves
    assert len(DOMAIN_SEPARATION_SIGMAS) == 19
    np.testing.assert_allclose(domain_separation_bandwidths("deviation"), np.sqrt(DOMAIN_SEPARATION_SIGMAS))
    np.testing.assert_allclose(domain_separation_bandwidths("variance"), 2.0 * np.asarray(DOMAIN_SEPARATION_SIGMAS))


@pytest.mark.parametrize("bandwidth,scale", CONVENTIONS)
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_quadratic_estimators_match_numpy_reference(bandwidth, scale, estimator):
    x, y = _fixed_data()
    sigmas = (0.3, 1.0, 2.5) if scale == "fixed" else (0.5, 1.0, 2.0)
    got = mmd2(x, y, sigmas=sigmas, bandwidth=bandwidth, scale=scale, estimator=estimator)
    assert got.dtype == tf.float64
    want = reference_mmd2(x, y, sigmas, bandwidth, scale, estimator)
    np.testing.assert_allclose(float(got), want, rtol=1e-10, atol=1e-12)
    # Default sigmas and float32 inputs.
    got32 = mmd2(x.astype(np.float32), y.astype(np.float32), bandwidth=bandwidth, scale=scale, estimator=estimator)
    assert got32.dtype == tf.float32
    want = reference_mmd2(x, y, default_bandwidths(scale), bandwidth, scale, estimator)
    np.testing.assert_allclose(float(got32), want, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("bandwidth,scale", CONVENTIONS)
def test_linear_estimator_matches_numpy_reference_and_drops_an_odd_sample(bandwidth, scale):
    x, y = _fixed_data(n=13, m=13)
    sigmas = (0.3, 1.0, 2.5)
    got = mmd2(x, y, sigmas=sigmas, bandwidth=bandwidth, scale=scale, estimator="linear")
    # The scale comes from the whole pooled batch, the pairs from the first 12.
    if scale != "fixed":
        z = np.concatenate([x, y])
        d = ((z[:, None] - z[None]) ** 2).sum(-1)[np.triu_indices(len(z), k=1)]
        heuristic = np.median(d) if scale == "median" else np.mean(d)
        sigmas = np.asarray(sigmas) * (np.sqrt(heuristic) if bandwidth == "deviation" else heuristic)
    want = reference_mmd2(x[:12], y[:12], sigmas, bandwidth, "fixed", "linear")
    np.testing.assert_allclose(float(got), want, rtol=1e-10, atol=1e-12)


def test_mean_over_kernels_and_domain_separation_convention():
    x, y = _fixed_data()
    total = float(mmd2(x, y, sigmas=(0.5, 1.0, 2.0, 4.0), scale="fixed"))
    mean = float(mmd2(x, y, sigmas=(0.5, 1.0, 2.0, 4.0), scale="fixed", reduction="mean"))
    assert mean == pytest.approx(total / 4.0, rel=1e-12)
    # The domain-separation code: sum_s exp(-d^2 / (2 s)), V-statistic.
    z = np.concatenate([x, y])
    d = ((z[:, None] - z[None]) ** 2).sum(-1)
    kern = sum(np.exp(-d / (2.0 * s)) for s in DOMAIN_SEPARATION_SIGMAS)
    n = len(x)
    dsn = kern[:n, :n].mean() + kern[n:, n:].mean() - 2.0 * kern[:n, n:].mean()
    for bandwidth in ("deviation", "variance"):
        got = mmd2(
            x, y, sigmas=domain_separation_bandwidths(bandwidth), bandwidth=bandwidth, scale="fixed", estimator="biased"
        )
        np.testing.assert_allclose(float(got), dsn, rtol=1e-10)


def test_pytorch_dan_port_convention():
    """`guassian_kernel` of the widely copied DAN port: exp(-d^2 / b), b = mean d^2 * 2^(-2..2)."""
    x, y = _fixed_data(n=12, m=12)
    z = np.concatenate([x, y])
    d = ((z[:, None] - z[None]) ** 2).sum(-1)
    base = d.sum() / (len(z) ** 2 - len(z)) / 2.0**2
    kern = sum(np.exp(-d / (base * 2.0**i)) for i in range(5))
    n = len(x)
    dan = np.mean(kern[:n, :n] + kern[n:, n:] - kern[:n, n:] - kern[n:, :n])
    got = mmd2(
        x, y, sigmas=gaussian_kernel_bandwidths(5, base=2.0, min_exponent=-2), bandwidth="variance", scale="mean",
        estimator="biased",
    )  # fmt: skip
    np.testing.assert_allclose(float(got), dan, rtol=1e-10)


def test_distances_and_median():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3)) + 1e3  # a large offset: |a|^2 + |b|^2 - 2 a.b cancels badly
    y = rng.normal(size=(5, 3)) + 1e3
    want = ((x[:, None] - y[None]) ** 2).sum(-1)
    d = pairwise_squared_distances(x, y).numpy()
    assert d.min() >= 0.0
    np.testing.assert_allclose(d, want, rtol=1e-6)
    z = np.concatenate([x, y])
    dz = ((z[:, None] - z[None]) ** 2).sum(-1)
    for count in (12, 11, 2):  # even and odd numbers of pairs
        want_med = np.median(dz[:count, :count][np.triu_indices(count, k=1)])
        np.testing.assert_allclose(float(median_pairwise_squared_distance(z[:count])), want_med, rtol=1e-9)
    # Float32 with an offset: mmd2 centres first, so the result matches float64 closely.
    got = float(mmd2(x.astype(np.float32), y.astype(np.float32), scale="fixed", sigmas=(0.5, 1.0, 2.0)))
    np.testing.assert_allclose(got, float(mmd2(x, y, scale="fixed", sigmas=(0.5, 1.0, 2.0))), rtol=5e-3, atol=1e-4)


def test_same_distribution_near_zero_shifted_clearly_positive():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 8))
    y_same = rng.normal(size=(200, 8))
    y_shift = rng.normal(size=(200, 8)) + 0.5
    for scale in ("fixed", "median"):
        sigmas = (0.5, 1.0, 2.0, 4.0, 8.0) if scale == "fixed" else None
        same = float(mmd2(x, y_same, sigmas=sigmas, scale=scale))
        shifted = float(mmd2(x, y_shift, sigmas=sigmas, scale=scale))
        assert abs(same) < 0.01, (scale, same)
        assert shifted > 0.1 and shifted > 20 * abs(same), (scale, same, shifted)
        assert float(mmd2(x, y_shift, sigmas=sigmas, scale=scale, estimator="linear")) > 0.05


def _gaussian_mmd2(delta2, dim, s2, sigmas):
    """Closed form for N(mu1, s2 I) vs N(mu2, s2 I), kernels exp(-d^2 / (2 sigma^2))."""
    total = 0.0
    for sigma in sigmas:
        var = sigma * sigma + 2.0 * s2
        c = (sigma * sigma / var) ** (dim / 2.0)
        total += 2.0 * c * (1.0 - math.exp(-delta2 / (2.0 * var)))
    return total


def test_unbiased_and_linear_are_unbiased_biased_is_not():
    dim, n, repeats = 3, 10, 600
    sigmas = (0.5, 1.0, 2.0)
    rng = np.random.default_rng(3)
    estimators = ("unbiased", "biased", "linear")

    @tf.function(input_signature=[tf.TensorSpec((repeats, n, dim), tf.float64)] * 2)
    def estimates(xs, ys):
        def one(pair):
            x, y = pair
            fixed = [mmd2(x, y, sigmas=sigmas, scale="fixed", estimator=e) for e in estimators]
            return tf.stack(fixed + [mmd2(x, y, estimator="unbiased"), mmd2(x, y, estimator="biased")])

        return tf.vectorized_map(one, (xs, ys))

    for shift in (0.0, 0.6):
        mu = np.zeros(dim)
        mu[0] = shift
        values = estimates(rng.normal(size=(repeats, n, dim)), rng.normal(size=(repeats, n, dim)) + mu).numpy()
        mean, sem = values.mean(0), values.std(0) / math.sqrt(repeats)
        truth = _gaussian_mmd2(shift * shift, dim, 1.0, sigmas)
        # The U-statistic and the linear statistic are unbiased with a fixed kernel.
        assert abs(mean[0] - truth) < 4 * sem[0], (shift, mean[0], truth, sem[0])
        assert abs(mean[2] - truth) < 4 * sem[2], (shift, mean[2], truth, sem[2])
        # The V-statistic's bias is (2/n) sum_u (1 - E k_u(x, x')) > 0.
        bias = 2.0 / n * sum(1.0 - (s * s / (s * s + 2.0)) ** (dim / 2.0) for s in sigmas)
        assert abs(mean[1] - truth - bias) < 4 * sem[1] + 0.02 * bias, (shift, mean[1], truth + bias)
        assert mean[1] - truth > 10 * sem[0]
        if shift == 0.0:
            # With the median scale the kernel depends on the pooled batch, which is
            # exchangeable under P = Q: the U-statistic still has mean 0.
            assert abs(mean[3]) < 4 * sem[3], (mean[3], sem[3])
            assert mean[4] > 0.1 and np.all(values[:, 4] > 0)


@pytest.mark.parametrize("estimator", ["unbiased", "biased", "linear"])
@pytest.mark.parametrize("scale", ["fixed", "median"])
def test_gradient_reaches_the_features(estimator, scale):
    x, y = _fixed_data(n=12, m=12)
    x = tf.constant(x, tf.float32)
    y = tf.constant(y, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, y])
        value = mmd2(x, y, scale=scale, estimator=estimator)
    for grad in tape.gradient(value, [x, y]):
        assert np.all(np.isfinite(grad.numpy()))
        assert np.abs(grad.numpy()).max() > 1e-4


def test_gradient_matches_finite_differences_and_median_scale_holds_the_bandwidth():
    x, y = _fixed_data(n=6, m=5, dim=2)
    x = tf.constant(x)
    y = tf.constant(y)
    sigmas = (0.5, 1.5)
    for estimator in ("unbiased", "biased"):
        theoretical, numerical = tf.test.compute_gradient(
            lambda a: mmd2(a, y, sigmas=sigmas, scale="fixed", estimator=estimator), [x]
        )
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-7)
    # Median scale: the gradient is that of the fixed kernels at the current median.
    z = np.concatenate([x.numpy(), y.numpy()])
    scaled = tuple(s * math.sqrt(float(median_pairwise_squared_distance(z))) for s in sigmas)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        median = mmd2(x, y, sigmas=sigmas, scale="median")
        fixed = mmd2(x, y, sigmas=scaled, scale="fixed")
    np.testing.assert_allclose(float(median), float(fixed), rtol=1e-12)
    np.testing.assert_allclose(tape.gradient(median, x).numpy(), tape.gradient(fixed, x).numpy(), rtol=1e-9)


def test_dtypes_and_degenerate_features():
    x, y = _fixed_data()
    assert mmd2(x.astype(np.float16), y.astype(np.float16)).dtype == tf.float32
    assert mmd2(tf.constant(x, tf.bfloat16), tf.constant(y, tf.bfloat16)).dtype == tf.float32
    assert mmd2(x, y.astype(np.float32)).dtype == tf.float64
    # All features identical: the median is 0, the scale falls back, the value is 0.
    same = np.ones((8, 3), np.float32)
    for estimator in ("unbiased", "biased", "linear"):
        value = mmd2(same, same, estimator=estimator)
        assert np.isfinite(float(value)) and float(value) == pytest.approx(0.0, abs=1e-6)


def test_xla_compiles_with_static_shapes():
    x, y = _fixed_data(n=12, m=12)
    x, y = x.astype(np.float32), y.astype(np.float32)
    compiled = tf.function(lambda a, b: mmd2(a, b, scale="median", estimator="unbiased"), jit_compile=True)
    np.testing.assert_allclose(float(compiled(x, y)), float(mmd2(x, y)), rtol=1e-5)


def test_unknown_batch_size_in_graph():
    x, y = _fixed_data(n=12, m=10)
    spec = tf.TensorSpec((None, 4), tf.float64)
    traced = tf.function(lambda a, b: mmd2(a, b), input_signature=[spec, spec])
    np.testing.assert_allclose(float(traced(x, y)), float(mmd2(x, y)), rtol=1e-12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2 samples"):
        traced(x[:1], y)


def test_bad_arguments_name_themselves():
    x, y = _fixed_data()
    cases = [
        (dict(estimator="quadratic"), "estimator"),
        (dict(bandwidth="width"), "bandwidth"),
        (dict(scale="mad"), "scale"),
        (dict(reduction="max"), "reduction"),
        (dict(sigmas=(1.0, -2.0)), "sigmas"),
        (dict(sigmas=()), "sigmas"),
        (dict(sigmas="wide"), "sigmas"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=f"Expected `{name}`.*Received: {name}="):
            mmd2(x, y, **kwargs)
    with pytest.raises(ValueError, match="same number of features.*x.shape=\\(14, 4\\), y.shape=\\(11, 3\\)"):
        mmd2(x, y[:, :3])
    with pytest.raises(ValueError, match="rank 2.*Received: y.shape=\\(11,\\)"):
        mmd2(x, y[:, 0])
    with pytest.raises(ValueError, match="at least 2 samples in `y` for estimator='unbiased'.*y.shape=\\(1, 4\\)"):
        mmd2(x, y[:1])
    with pytest.raises(ValueError, match="at least 2 samples in `x` for estimator='linear'"):
        mmd2(x[:1], y[:1], estimator="linear")
    with pytest.raises(ValueError, match="same number of samples for estimator='linear'"):
        mmd2(x, y, estimator="linear")
    assert np.isfinite(float(mmd2(x[:1], y[:1], estimator="biased")))
    with pytest.raises(ValueError, match="num_kernels"):
        gaussian_kernel_bandwidths(num_kernels=0)
    with pytest.raises(ValueError, match="bandwidth"):
        domain_separation_bandwidths("std")


def test_gradient_compiles_under_xla_with_an_unknown_batch_size():
    # The diagonal of the within-sample distances is masked, not set with
    # `tf.linalg.set_diag`, whose gradient builds a shape under `cond` that XLA cannot
    # read from a dynamic batch dimension.
    x, y = _fixed_data(n=12, m=10)
    x, y = x.astype(np.float32), y.astype(np.float32)
    spec = tf.TensorSpec((None, 4), tf.float32)

    def value_and_gradients(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            value = mmd2(a, b)
        return (value,) + tuple(tape.gradient(value, [a, b]))

    compiled = tf.function(value_and_gradients, input_signature=[spec, spec], jit_compile=True)
    for got, want in zip(compiled(x, y), value_and_gradients(tf.constant(x), tf.constant(y))):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(compiled(x, y)[1].numpy()).max() > 0
