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


# ---------------------------------------------------------------------- bad input
_CLOSED_FORMS = (gaussian_lautum_information, gaussian_mutual_information)


def _reference_lautum_and_mi(sx, sw, sxw):
    """float64 NumPy reference from the canonical correlations (solves, no inverse)."""
    lx, lw = np.linalg.cholesky(sx), np.linalg.cholesky(sw)
    c = np.linalg.solve(lw, np.linalg.solve(lx, sxw).T).T
    rho2 = np.linalg.svd(c, compute_uv=False) ** 2
    return np.sum(0.5 * np.log1p(-rho2) + rho2 / (1 - rho2)), -0.5 * np.sum(np.log1p(-rho2))


@pytest.mark.parametrize("d,k,seed", [(3, 2, 0), (2, 5, 1), (1, 1, 2)])
def test_valid_inputs_pass_the_checks_with_the_reference_value(d, k, seed):
    sx, sw, sxw, _ = random_joint_covariance(d, k, seed)
    expected = _reference_lautum_and_mi(sx, sw, sxw)
    for fn, value in zip(_CLOSED_FORMS, expected):
        np.testing.assert_allclose(fn(sx, sw, sxw), value, rtol=1e-10)
        # Lists, eager tensors and variables are checked and computed the same way.
        np.testing.assert_allclose(fn(sx.tolist(), sw.tolist(), sxw.tolist()), value, rtol=1e-10)
        t = fn(tf.Variable(sx), tf.constant(sw), tf.constant(sxw))
        np.testing.assert_allclose(float(t.numpy()), value, rtol=1e-10)
        # Rounding-level asymmetry and a tiny negative eigenvalue direction in a
        # PSD-within-tolerance covariance are accepted (symmetrized).
        noisy = sx + 1e-12 * np.triu(np.ones((d, d)), 1)
        np.testing.assert_allclose(fn(noisy, sw, sxw), value, rtol=1e-9)


def test_float32_tensors_near_the_bound_are_checked_in_their_dtype():
    sx, sw = np.eye(1), np.eye(1)
    rho = 1.0 - 1e-9  # fine in float64, numerically 1 in float32
    expected = _reference_lautum_and_mi(sx, sw, np.array([[rho]]))[0]
    np.testing.assert_allclose(gaussian_lautum_information(sx, sw, np.array([[rho]])), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"Expected `sigma_xw`.*float32\). Received: largest canonical"):
        gaussian_lautum_information(tf.constant(sx, tf.float32), tf.constant(sw, tf.float32),
                                    tf.constant([[rho]], tf.float32))


def _bad_blocks():
    sx, sw, sxw, _ = random_joint_covariance(3, 2, 3)
    upper = sx.copy()
    upper[0, 2] += 0.5  # the issue: the upper triangle used to be ignored
    nan_x = sx.copy()
    nan_x[1, 1] = np.nan
    not_psd = sx - 2.0 * np.linalg.eigvalsh(sx).max() * np.outer([1, 0, 0], [1, 0, 0])
    singular_w = np.ones((2, 2))
    inf_xw = sxw.copy()
    inf_xw[0, 0] = np.inf
    # Scaling the cross-covariance up makes the joint covariance indefinite.
    lx, lw = np.linalg.cholesky(sx), np.linalg.cholesky(sw)
    rho = np.linalg.svd(np.linalg.solve(lw, np.linalg.solve(lx, sxw).T).T, compute_uv=False).max()
    return [
        ((upper, sw, sxw), r"Expected `sigma_x` to be symmetric .*Received: max asymmetry .* = 0\.5"),
        ((sx, sw.T + np.array([[0, 1], [0, 0]]), sxw), r"Expected `sigma_w` to be symmetric .*Received: max asymmetry"),
        ((nan_x, sw, sxw), r"Expected `sigma_x` to be finite. Received: 1 NaN or inf entries"),
        ((not_psd, sw, sxw), r"Expected `sigma_x` to be positive semidefinite .*Received: smallest eigenvalue -"),
        ((sx, -np.eye(2), sxw), r"Expected `sigma_w` to be positive semidefinite"),
        ((sx, singular_w, sxw), r"Expected `sigma_w` to be positive definite .*Received: smallest eigenvalue"),
        ((np.zeros((3, 3)), sw, sxw), r"Expected `sigma_x` to be positive definite"),
        ((sx, sw, inf_xw), r"Expected `sigma_xw` to be finite"),
        ((sx, sw, sxw * (1.5 / rho)), r"Expected `sigma_xw` to be a cross-covariance consistent .*"
                                      r"Received: largest canonical correlation 1\.5"),
        ((sx, sw, sxw / rho), r"Expected `sigma_xw` to be a cross-covariance consistent"),  # exactly 1
        ((sx, sw, np.zeros((2, 2))), r"Expected `sigma_xw` of shape \(3, 2\)"),
        ((np.zeros((0, 0)), sw, np.zeros((0, 2))), r"Expected `sigma_x` to be a square matrix \(non-empty\)"),
        ((sx, [["a", "b"], ["c", "d"]], sxw), r"Expected `sigma_w` to be a real-valued matrix"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_blocks())))
@pytest.mark.parametrize("fn", _CLOSED_FORMS)
@pytest.mark.parametrize("as_tensors", [False, True])
def test_bad_inputs_raise_naming_the_argument(case, fn, as_tensors):
    args, match = _bad_blocks()[case]
    if as_tensors:
        try:
            args = [tf.constant(np.asarray(a, np.float64)) for a in args]
        except (TypeError, ValueError):
            pytest.skip("not a numeric array")
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_the_issue_non_symmetric_sigma_x_is_no_longer_read_as_its_lower_triangle():
    sx = np.array([[1.0, 0.9], [0.0, 1.0]])
    sxw = np.array([[0.3], [0.0]])
    with pytest.raises(ValueError, match="Expected `sigma_x` to be symmetric"):
        gaussian_lautum_information(sx, np.eye(1), sxw)


def test_symbolic_tensors_inside_tf_function_are_not_checked():
    @tf.function
    def lautum(sx, sw, sxw):
        return gaussian_lautum_information(sx, sw, sxw)

    sx, sw, sxw, _ = random_joint_covariance(2, 2, 4)
    expected = _reference_lautum_and_mi(sx, sw, sxw)[0]
    np.testing.assert_allclose(float(lautum(tf.constant(sx), tf.constant(sw), tf.constant(sxw))), expected,
                               rtol=1e-10)
    # An impossible cross-covariance gives NaN there (documented), no error at trace time.
    value = lautum(tf.constant(np.eye(1)), tf.constant(np.eye(1)), tf.constant([[2.0]], tf.float64))
    assert np.isnan(float(value))

    # Concrete (numpy) arguments of the traced function are still checked at trace time.
    @tf.function
    def closed_over(sxw):
        return gaussian_lautum_information(np.array([[1.0, 1.0], [0.0, 1.0]]), np.eye(2), sxw)

    with pytest.raises(ValueError, match="Expected `sigma_x` to be symmetric"):
        closed_over(tf.zeros((2, 2), tf.float64))


def test_lower_level_helpers_check_concrete_inputs():
    from tfinfo.information.gaussian import canonical_cross
    from tfinfo.information.gaussian import lautum_and_mi_from_gram

    sx, sw, sxw, _ = random_joint_covariance(3, 2, 6)
    c = canonical_cross(sx, sw, sxw).numpy()
    lx, lw = np.linalg.cholesky(sx), np.linalg.cholesky(sw)
    np.testing.assert_allclose(c, np.linalg.solve(lw, np.linalg.solve(lx, sxw).T).T, rtol=1e-10)
    with pytest.raises(ValueError, match="Expected `sigma_x` to be symmetric"):
        canonical_cross(sx + np.triu(np.ones((3, 3)), 1), sw, sxw)
    lautum, mi = lautum_and_mi_from_gram(tf.constant(np.diag([0.09, 0.81])))
    rho2 = np.array([0.09, 0.81])
    np.testing.assert_allclose(float(lautum), np.sum(0.5 * np.log1p(-rho2) + rho2 / (1 - rho2)), rtol=1e-10)
    np.testing.assert_allclose(float(mi), -0.5 * np.sum(np.log1p(-rho2)), rtol=1e-10)
    for gram, match in ((np.diag([0.5, 1.0]), r"in \[0, 1\). Received: eigenvalues from 0\.5 to 1"),
                        (np.diag([-0.5, 0.2]), r"in \[0, 1\)"),
                        (np.array([[0.1, 0.2], [0.0, 0.1]]), "Expected `gram` to be symmetric"),
                        (np.array([[np.nan, 0.0], [0.0, 0.1]]), "Expected `gram` to be finite"),
                        (np.ones((2, 3)), "Expected `gram` to be a square matrix")):
        with pytest.raises(ValueError, match=match):
            lautum_and_mi_from_gram(gram)
