"""Variational MI bounds: against closed forms, float64 numpy references and MINE's correction."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from tests.conftest import correlated_gaussians
from tests.conftest import optimal_gaussian_critic
from tfinfo.information import bounds

RHO = 0.8


@pytest.fixture(scope="module")
def optimal_scores():
    x, z, mi = correlated_gaussians(20000, 2, RHO, seed=3)
    joint = optimal_gaussian_critic(x, z, RHO)
    perm = np.random.default_rng(4).permutation(len(x))
    marginal = optimal_gaussian_critic(x, z[perm], RHO)
    k = 1000
    matrix = optimal_gaussian_critic(x[:k, None, :], z[None, :k, :], RHO)
    return joint, marginal, matrix, mi


# Independent float64 references of each bound's value.
def ref_lme(t):
    return special.logsumexp(t) - np.log(t.size)


def ref_dv(j, m):
    return j.mean() - ref_lme(m)


def ref_nwj(j, m):
    return 1.0 + j.mean() - np.exp(m).mean()


def ref_smile(j, m, tau):
    return j.mean() - np.log(np.clip(np.exp(m), np.exp(-tau), np.exp(tau)).mean())


def ref_infonce(s):
    return np.mean(np.diag(s) - (special.logsumexp(s, axis=1) - np.log(s.shape[1])))


@pytest.mark.parametrize("name", ["dv", "mine", "nwj", "smile", "js"])
def test_optimal_critic_gives_the_true_mutual_information(optimal_scores, name):
    joint, marginal, _, mi = optimal_scores
    value = float(bounds.evaluate_bound(name, joint, marginal).value)
    assert abs(value - mi) < 0.05, (name, value, mi)


def test_optimal_critic_infonce_is_its_analytic_value(optimal_scores):
    _, _, matrix, mi = optimal_scores
    value = float(bounds.infonce_bound(matrix).value)
    # With K = 1000 >> e^I the cap log K is far away and InfoNCE(T*) ~= I - O(1/K).
    assert abs(value - mi) < 0.05
    assert abs(value - ref_infonce(matrix)) < 1e-9


@pytest.mark.parametrize("tau", [0.5, 2.0, 5.0])
def test_values_match_float64_references_on_random_scores(tau):
    rng = np.random.default_rng(7)
    j = rng.normal(1.0, 2.0, size=64)
    m = rng.normal(0.0, 3.0, size=64 * 63)
    s = rng.normal(0.0, 3.0, size=(64, 64))
    np.testing.assert_allclose(float(bounds.dv_bound(j, m).value), ref_dv(j, m), rtol=1e-12)
    np.testing.assert_allclose(float(bounds.nwj_bound(j, m).value), ref_nwj(j, m), rtol=1e-12)
    np.testing.assert_allclose(float(bounds.js_bound(j, m).value), ref_nwj(j, m), rtol=1e-12)
    np.testing.assert_allclose(float(bounds.smile_bound(j, m, tau=tau).value), ref_smile(j, m, tau), rtol=1e-12)
    np.testing.assert_allclose(float(bounds.infonce_bound(s).value), ref_infonce(s), rtol=1e-12)
    np.testing.assert_allclose(float(bounds.log_mean_exp(m)), ref_lme(m), rtol=1e-12)


def test_log_mean_exp_is_stable_for_large_and_small_scores():
    assert float(bounds.log_mean_exp(tf.constant([1000.0, 1000.0]))) == pytest.approx(1000.0)
    assert float(bounds.log_mean_exp(tf.constant([-1000.0, -1000.0]))) == pytest.approx(-1000.0)
    rows = bounds.log_mean_exp(tf.constant([[0.0, 800.0], [1.0, 1.0]]), axis=1).numpy()
    np.testing.assert_allclose(rows, [800.0 - np.log(2.0), 1.0], rtol=1e-6)
    # DV stays finite where a naive log(mean(exp)) overflows float32.
    assert np.isfinite(float(bounds.dv_bound(tf.constant([1.0]), tf.constant([200.0, 0.0])).value))


def _grads(fn, joint, marginal):
    j = tf.Variable(joint)
    m = tf.Variable(marginal)
    with tf.GradientTape() as tape:
        out = fn(j, m)
    return out, tape.gradient(out, [j, m])


def test_mine_gradient_is_the_moving_average_correction_of_dv():
    rng = np.random.default_rng(0)
    joint = rng.normal(1.0, 1.0, 32)
    marginal = rng.normal(0.0, 1.5, 96)
    previous = np.log(2.5)  # an older moving average of E_q[e^T]
    decay = 0.9
    mine, (gj_mine, gm_mine) = _grads(
        lambda j, m: bounds.mine_bound(j, m, log_moving_average=previous, decay=decay).surrogate, joint, marginal
    )
    plain, (gj_dv, gm_dv) = _grads(lambda j, m: bounds.dv_bound(j, m).value, joint, marginal)
    batch_mean = np.exp(marginal).mean()
    ma = decay * 2.5 + (1 - decay) * batch_mean
    # Same reported value, same joint gradient.
    assert float(mine) == pytest.approx(float(plain), rel=1e-12)
    np.testing.assert_allclose(gj_mine.numpy(), gj_dv.numpy(), rtol=1e-12)
    # Plain DV: -e^T_k / sum(e^T); MINE: -e^T_k / (n * ma) -- the batch mean replaced by ma.
    np.testing.assert_allclose(gm_dv.numpy(), -np.exp(marginal) / np.exp(marginal).sum(), rtol=1e-10)
    np.testing.assert_allclose(gm_mine.numpy(), -np.exp(marginal) / (marginal.size * ma), rtol=1e-10)
    np.testing.assert_allclose(gm_mine.numpy(), gm_dv.numpy() * batch_mean / ma, rtol=1e-10)
    # The returned state is the updated moving average.
    state = bounds.mine_bound(joint, marginal, log_moving_average=previous, decay=decay).log_moving_average
    assert float(state) == pytest.approx(np.log(ma), rel=1e-12)


def test_mine_without_state_equals_plain_dv_gradient():
    rng = np.random.default_rng(1)
    joint, marginal = rng.normal(size=8), rng.normal(size=24)
    _, (_, gm_mine) = _grads(lambda j, m: bounds.mine_bound(j, m).surrogate, joint, marginal)
    _, (_, gm_dv) = _grads(lambda j, m: bounds.dv_bound(j, m).value, joint, marginal)
    np.testing.assert_allclose(gm_mine.numpy(), gm_dv.numpy(), rtol=1e-10)


def test_smile_clips_only_the_marginal_term_and_its_gradient_is_explicit():
    tau = 1.0
    joint = np.array([3.0, 0.5, -0.2, 2.5])  # joint scores above tau are not clipped
    marginal = np.array([2.0, -3.0, 0.3, 0.1, -0.5, 1.5])
    value_dv, (gj_dv, gm_dv) = _grads(
        lambda j, m: bounds.smile_bound(j, m, tau=tau, gradient="dv").surrogate, joint, marginal
    )
    value_js, (gj_js, gm_js) = _grads(
        lambda j, m: bounds.smile_bound(j, m, tau=tau, gradient="js").surrogate, joint, marginal
    )
    assert float(value_dv) == pytest.approx(ref_smile(joint, marginal, tau), rel=1e-12)
    assert float(value_js) == pytest.approx(float(value_dv), rel=1e-12)
    # "dv": the gradient of E_p[min(T, tau)] - log E_q[clip(e^T)]: d/dT_j = 1/n below tau,
    # 0 above; clipped marginal entries get no gradient.
    np.testing.assert_allclose(gj_dv.numpy(), np.where(joint < tau, 0.25, 0.0), rtol=1e-12)
    clipped = np.abs(marginal) > tau
    assert np.all(gm_dv.numpy()[clipped] == 0.0)
    inside = np.exp(np.clip(marginal, -tau, tau))
    np.testing.assert_allclose(gm_dv.numpy()[~clipped], -(inside / inside.sum())[~clipped], rtol=1e-10)
    # "js": the f-GAN Jensen-Shannon gradient.
    np.testing.assert_allclose(gj_js.numpy(), special.expit(-joint) / 4, rtol=1e-10)
    np.testing.assert_allclose(gm_js.numpy(), -special.expit(marginal) / 6, rtol=1e-10)


@pytest.mark.parametrize("c", [-3.0, 0.5, 3.0, 50.0])
def test_smile_dv_gradient_does_not_reward_a_critic_that_runs_away(c):
    # The clipped DV of a constant critic T = c is c - clip(c, -tau, tau): unbounded in c.
    # Its plain gradient along c is 1 once c > tau (the marginal term has saturated), which
    # is what drove trained critics to thousands of nats; the "dv" surrogate's is 0 there.
    # Below -tau (value c + tau < 0) it stays 1, which pulls c back up.
    tau = 1.0
    shift = tf.Variable(c, dtype=tf.float64)
    with tf.GradientTape() as tape:
        bound = bounds.smile_bound(shift + tf.zeros(8, tf.float64), shift + tf.zeros(56, tf.float64), tau, "dv")
    assert float(bound.surrogate) == pytest.approx(c - np.clip(c, -tau, tau), abs=1e-12)
    assert float(tape.gradient(bound.surrogate, shift)) == pytest.approx(1.0 if c < -tau else 0.0, abs=1e-12)


def test_smile_at_the_optimal_critic_is_biased_at_finite_tau():
    # 4-D Gaussians with correlation 0.93 (4.0 nats); tau = 2 clips most marginal scores.
    dim, rho, tau = 4, 0.93, 2.0
    x, z, mi = correlated_gaussians(20000, dim, rho, seed=8)
    perm = np.random.default_rng(9).permutation(len(x))
    joint, marginal = optimal_gaussian_critic(x, z, rho), optimal_gaussian_critic(x, z[perm], rho)
    value = float(bounds.smile_bound(joint, marginal, tau=tau).value)
    # The population value, float64 numpy on 400,000 fresh samples: about 4.91, not 4.00.
    xr, zr, _ = correlated_gaussians(400000, dim, rho, seed=10)
    zq = np.random.default_rng(11).standard_normal(zr.shape)
    reference = ref_smile(optimal_gaussian_critic(xr, zr, rho), optimal_gaussian_critic(xr, zq, rho), tau)
    assert reference > mi + 0.5
    assert abs(value - reference) < 0.1, (value, reference, mi)


def test_infonce_is_invariant_to_functions_of_x_only():
    rng = np.random.default_rng(12)
    s = rng.normal(0.0, 2.0, size=(32, 32))
    a = rng.normal(0.0, 5.0, size=32)
    np.testing.assert_allclose(float(bounds.infonce_bound(s + a[:, None]).value), ref_infonce(s), rtol=1e-12)
    shifted = s + a[None, :]
    np.testing.assert_allclose(float(bounds.infonce_bound(shifted).value), ref_infonce(shifted), rtol=1e-12)
    assert abs(ref_infonce(shifted) - ref_infonce(s)) > 0.1


def test_infonce_is_capped_at_log_k():
    k = 16
    scores = np.full((k, k), -50.0)
    np.fill_diagonal(scores, 50.0)
    value = float(bounds.infonce_bound(scores).value)
    assert value <= np.log(k) + 1e-9
    assert value == pytest.approx(np.log(k), abs=1e-6)


def test_nwj_overflow_gives_minus_inf_not_nan():
    value = float(bounds.nwj_bound(tf.constant([0.0]), tf.constant([1000.0])).value)
    assert value == -np.inf


def test_half_precision_scores_are_computed_in_float32():
    value = bounds.dv_bound(tf.constant([1.0], tf.float16), tf.constant([0.0, 0.5], tf.float16)).value
    assert value.dtype == tf.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "mime"}, "estimator"),
        ({"estimator": "smile", "tau": 0.0}, "tau"),
        ({"estimator": "smile", "smile_gradient": "nwj"}, "smile_gradient"),
        ({"estimator": "mine", "decay": 1.0}, "decay"),
        ({"estimator": "infonce"}, "matrix"),
    ],
)
def test_bad_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bounds.evaluate_bound(joint=[1.0, 2.0], marginal=[0.0, 0.1], **kwargs)


def test_integer_scores_and_non_square_matrices_are_rejected():
    with pytest.raises(ValueError, match="joint"):
        bounds.dv_bound([1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="square"):
        bounds.infonce_bound(np.zeros((3, 4)))


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (bounds.dv_bound, ([1.0], np.zeros(0)), "at least 1 score in `marginal`. Received: marginal.size=0"),
        (bounds.nwj_bound, (np.zeros(0), [1.0]), "at least 1 score in `joint`. Received: joint.size=0"),
        (bounds.smile_bound, ([1.0], np.zeros(0)), "marginal.size=0"),
        (bounds.mine_bound, ([1.0], np.zeros(0)), "marginal.size=0"),
        (bounds.split_scores, (np.ones((1, 1)),), "K >= 2 .* Received: K=1"),
        (bounds.infonce_bound, (np.ones((1, 1)),), "K >= 2 .* Received: K=1"),
    ],
)
def test_too_few_scores_are_refused(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_too_few_scores_are_refused_inside_tf_function_with_dynamic_shapes():
    vector = tf.TensorSpec([None], tf.float32)
    dv = tf.function(lambda j, m: bounds.dv_bound(j, m).value, input_signature=[vector, vector])
    assert float(dv(tf.constant([1.0]), tf.constant([0.0]))) == pytest.approx(1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Received: marginal.size="):
        dv(tf.constant([1.0]), tf.zeros([0]))
    infonce = tf.function(lambda s: bounds.infonce_bound(s).value, input_signature=[tf.TensorSpec([None, None])])
    assert float(infonce(tf.eye(2))) == pytest.approx(ref_infonce(np.eye(2)), rel=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Received: K="):
        infonce(tf.ones([1, 1]))
