import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tests.conftest import random_joint_covariance
from tfinfo.information import gaussian_lautum_information
from tfinfo.information import gaussian_mutual_information


def _kl_gaussians(cov0, cov1):
    """KL(N(0, cov0) || N(0, cov1)) in float64 with solves and slogdet (independent reference)."""
    n = cov0.shape[0]
    _, logdet0 = np.linalg.slogdet(cov0)
    _, logdet1 = np.linalg.slogdet(cov1)
    return 0.5 * (np.trace(np.linalg.solve(cov1, cov0)) - n + logdet1 - logdet0)


def _block_diag(a, b):
    out = np.zeros((a.shape[0] + b.shape[0],) * 2)
    out[: a.shape[0], : a.shape[0]] = a
    out[a.shape[0] :, a.shape[0] :] = b
    return out


@pytest.mark.parametrize("d,k,seed", [(5, 3, 0), (3, 7, 1), (4, 4, 2), (12, 2, 3), (1, 1, 4)])
def test_closed_forms_equal_kl_divergences(d, k, seed):
    sx, sw, sxw, joint = random_joint_covariance(d, k, seed)
    product = _block_diag(sx, sw)
    lautum = gaussian_lautum_information(sx, sw, sxw)
    mi = gaussian_mutual_information(sx, sw, sxw)
    assert isinstance(lautum, float) and isinstance(mi, float)
    np.testing.assert_allclose(lautum, _kl_gaussians(product, joint), rtol=1e-6)
    np.testing.assert_allclose(mi, _kl_gaussians(joint, product), rtol=1e-6)
    assert lautum > 0 and mi > 0


def test_paper_equation_9_is_twice_the_lautum_information():
    sx, sw, sxw, _ = random_joint_covariance(4, 3, 7)
    m = np.linalg.solve(sx, sxw) @ np.linalg.solve(sw, sxw.T)
    eye = np.eye(4)
    eq9 = np.linalg.slogdet(eye - m)[1] + 2 * np.trace(np.linalg.inv(eye - m) - eye)
    np.testing.assert_allclose(2 * gaussian_lautum_information(sx, sw, sxw), eq9, rtol=1e-8)


def test_canonical_correlation_form():
    # Diagonal canonical structure: rho = (0.3, 0.9).
    rho = np.array([0.3, 0.9])
    sx, sw, sxw = np.eye(2), np.eye(2), np.diag(rho)
    expected_l = np.sum(0.5 * np.log(1 - rho**2) + rho**2 / (1 - rho**2))
    expected_i = -0.5 * np.sum(np.log(1 - rho**2))
    np.testing.assert_allclose(gaussian_lautum_information(sx, sw, sxw), expected_l, rtol=1e-10)
    np.testing.assert_allclose(gaussian_mutual_information(sx, sw, sxw), expected_i, rtol=1e-10)


def test_monte_carlo_agrees_with_closed_forms():
    d, k = 2, 2
    sx, sw, sxw, joint = random_joint_covariance(d, k, 11, coupling=0.6)
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.multivariate_normal(np.zeros(d), sx, size=n)
    w = rng.multivariate_normal(np.zeros(k), sw, size=n)
    xw = np.concatenate([x, w], axis=1)
    log_joint = stats.multivariate_normal(np.zeros(d + k), joint).logpdf(xw)
    log_product = stats.multivariate_normal(np.zeros(d), sx).logpdf(x) + stats.multivariate_normal(
        np.zeros(k), sw
    ).logpdf(w)
    terms = log_product - log_joint  # E over P_x P_w: the Lautum information
    se = terms.std() / np.sqrt(n)
    assert abs(terms.mean() - gaussian_lautum_information(sx, sw, sxw)) < 4 * se + 1e-3
    z = rng.multivariate_normal(np.zeros(d + k), joint, size=n)
    terms_mi = stats.multivariate_normal(np.zeros(d + k), joint).logpdf(z) - (
        stats.multivariate_normal(np.zeros(d), sx).logpdf(z[:, :d])
        + stats.multivariate_normal(np.zeros(k), sw).logpdf(z[:, d:])
    )
    se_mi = terms_mi.std() / np.sqrt(n)
    assert abs(terms_mi.mean() - gaussian_mutual_information(sx, sw, sxw)) < 4 * se_mi + 1e-3


def test_tensor_inputs_are_differentiable():
    sx, sw, sxw, _ = random_joint_covariance(3, 2, 5)
    sxw_t = tf.Variable(sxw, dtype=tf.float64)
    with tf.GradientTape() as tape:
        value = gaussian_lautum_information(tf.constant(sx), tf.constant(sw), sxw_t)
    grad = tape.gradient(value, sxw_t).numpy()
    # Central finite differences in float64 as the reference.
    eps, fd = 1e-6, np.zeros_like(sxw)
    for idx in np.ndindex(*sxw.shape):
        up, down = sxw.copy(), sxw.copy()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (gaussian_lautum_information(sx, sw, up) - gaussian_lautum_information(sx, sw, down)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)
    assert float(value.numpy()) == pytest.approx(gaussian_lautum_information(sx, sw, sxw), rel=1e-12)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"Expected `sigma_xw` of shape \(3, 2\).*Received: sigma_xw.shape=\(2, 3\)"):
        gaussian_lautum_information(np.eye(3), np.eye(2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Expected `sigma_x` to be a square matrix"):
        gaussian_mutual_information(np.ones((3, 2)), np.eye(2), np.zeros((3, 2)))
