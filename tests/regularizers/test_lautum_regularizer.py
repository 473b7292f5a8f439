import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.covariance import ledoit_wolf_shrinkage

from tfinfo.models import LautumTransferModel
from tests.regularizers.lautum_reference import Reference as _Reference
from tests.regularizers.lautum_reference import np_lautum as _np_lautum
from tfinfo.regularizers import LautumRegularizer


def _images(n, shape=(6, 6, 1), seed=0, constant_border=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n,) + shape).astype(np.float32)
    if constant_border:
        x[:, 0, :, :] = 0.0  # zero-variance features, like MNIST borders
    return x



def test_linear_model_jacobian_proxy_is_w_transpose_r():
    d, k = 12, 4
    classifier = keras.Sequential([keras.Input((d,)), keras.layers.Dense(k)])
    model = LautumTransferModel(classifier)
    x = tf.random.normal((7, d))
    _, w = model.jacobian_proxy(x)
    kernel = classifier.layers[-1].kernel.numpy()  # (d, k): f(x) = kernel^T x + b = W x + b
    expected = kernel @ model.regularizer.projection.numpy()  # W^T r
    np.testing.assert_allclose(w.numpy(), np.tile(expected, (7, 1)), rtol=1e-6, atol=1e-7)


def test_projection_vector_has_the_papers_variance():
    reg = LautumRegularizer(num_outputs=10_000, input_shape_hint=(4,), seed=3)
    r = reg.projection.numpy()
    # variance 1/sqrt(K): 0.01 for K = 10,000; relative SE of a variance ~ sqrt(2/K).
    assert r.var() == pytest.approx(1 / np.sqrt(10_000), rel=4 * np.sqrt(2 / 10_000))
    before = r.copy()
    reg.resample_projection()
    assert not np.allclose(before, reg.projection.numpy())


def test_adapt_handles_constant_features_and_matches_ledoit_wolf():
    x = _images(300)
    reg = LautumRegularizer(input_shape_hint=x.shape[1:])
    reg.adapt(x)
    scale = reg.x_scale.numpy().reshape(x.shape[1:])
    assert np.all(scale[0] == 0.0) and np.all(scale[1:] > 0)
    assert reg.num_constant_features == 6
    flat = x.reshape(len(x), -1).astype(np.float64)
    z = (flat - flat.mean(0)) * reg.x_scale.numpy()
    assert reg.x_shrinkage == pytest.approx(ledoit_wolf_shrinkage(z, assume_centered=True), rel=1e-4)
    assert np.all(np.isfinite(reg.x_whitener.numpy()))


# --------------------------------------------------------------------------------------
# An independent float64 reference: the joint covariance recursion, the Lautum
# information as a KL divergence between Gaussians (not the layer's spectral formula),
# the canonical correlations by an SVD, and gradients by central differences.


def test_the_references_analytic_gradient_matches_central_differences():
    # The slow D = 784 test uses the reference's closed-form derivative: check it here.
    x = _images(300, shape=(3, 3, 1), seed=5, constant_border=False)
    reg = LautumRegularizer(ema_decay=0.8, input_shape_hint=x.shape[1:])
    reg.adapt(x)
    ref = _Reference(reg)
    for i, (xb, wb) in enumerate(_batches(x, 6, 12, seed=6, dim=9, coupling=1.0)):
        value, rho, grad = ref.analytic_after(xb, wb)
        assert rho < reg.max_correlation  # the unbounded value is the layer's here
        jxx, jxw, jww = ref.blocks_after(xb, wb)
        c = np.linalg.solve(np.linalg.cholesky(jxx), jxw) @ np.linalg.inv(np.linalg.cholesky(jww)).T
        assert rho == pytest.approx(np.linalg.svd(c, compute_uv=False)[0], rel=1e-9)
        assert value == pytest.approx(ref.value_after(xb, wb), rel=1e-9)
        np.testing.assert_allclose(grad, ref.gradient(xb, wb), rtol=1e-4, atol=1e-5 * np.abs(grad).max())
        ref.step(xb, wb)


def _layer_step(reg, x, w):
    w = tf.Variable(w, dtype=tf.float32)
    with tf.GradientTape() as tape:
        surrogate, value = reg((tf.constant(x, tf.float32), w), training=True)
    return float(value), float(surrogate), tape.gradient(surrogate, w).numpy().ravel()


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _batches(x, steps, n, seed, dim, coupling):
    """Target batches and Jacobian-like proxies partly linear in x (correlations grow)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(x[0].size, x[0].size))
    for _ in range(steps):
        xb = x[rng.integers(0, len(x), n)]
        wb = coupling * xb.reshape(n, -1) @ mix / 255.0 + rng.normal(size=(n, x[0].size))
        yield xb, wb.reshape(xb.shape).astype(np.float32)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_joint_covariance_follows_its_recursion(mode):
    x = _images(200, seed=1)
    reg = LautumRegularizer(ema_decay=0.9, mode=mode, input_shape_hint=x.shape[1:])
    reg.adapt(x)
    ref = _Reference(reg)
    for xb, wb in _batches(x, 30, 16, seed=2, dim=36, coupling=0.0):
        reg((tf.constant(xb), tf.constant(wb)), training=True)
        ref.step(xb, wb)
    # 30 steps: the running mean (1 / (t + k/n)) hands over to the EMA (0.1) at t = 8.
    np.testing.assert_allclose(reg.x_ema.numpy(), ref.jxx, atol=1e-5)
    np.testing.assert_allclose(reg.cross_ema.numpy(), ref.jxw, atol=1e-5)
    np.testing.assert_allclose(reg.w_ema.numpy(), ref.jww, atol=1e-5)
    assert float(reg.shrinkage.numpy()) == pytest.approx(ref.prior, rel=1e-5)


def test_the_identity_prior_is_kept_above_its_floor_and_a_nonfinite_batch_changes_nothing():
    x = _images(200, seed=11)
    reg = LautumRegularizer(ema_decay=0.5, refresh_every=4, input_shape_hint=x.shape[1:])
    reg.adapt(x)
    batches = list(_batches(x, 12, 16, seed=12, dim=36, coupling=0.0))
    for xb, wb in batches:
        reg((tf.constant(xb), tf.constant(wb)), training=True)
    floor = 36 / (36 + 16 * 1.5 / 0.5)
    assert float(reg.prior_weight.numpy()) >= floor * 0.5**3 - 1e-12  # topped up at step 12
    assert float(reg.prior_weight.numpy()) == pytest.approx(floor)
    state = [v.numpy().copy() for v in reg.weights]
    bad = batches[0][1].copy()
    bad[0, 0, 0, 0] = np.nan
    _, value = reg((tf.constant(batches[0][0]), tf.constant(bad)), training=True)
    assert int(reg.nonfinite_count.numpy()) == 1
    changed = [v.path for v, before in zip(reg.weights, state)
               if v.name != "nonfinite_count" and not np.array_equal(v.numpy(), before, equal_nan=True)]
    assert changed == []
    xb, wb = batches[1]
    _, value = reg((tf.constant(xb), tf.constant(wb)), training=True)
    assert np.isfinite(float(value)) and int(reg.step.numpy()) == 13


# refresh_every=1000: between eigendecompositions only the tracked directions see the bound.
@pytest.mark.parametrize("mode,refresh", [("fast", 5), ("fast", 1000), ("exact", 5)])
def test_value_and_gradient_match_a_float64_reference(mode, refresh):
    x = _images(300, shape=(3, 3, 1), seed=3, constant_border=False)
    reg = LautumRegularizer(ema_decay=0.8, mode=mode, refresh_every=refresh, max_correlation=0.9,
                            input_shape_hint=x.shape[1:])
    reg.adapt(x)
    ref = _Reference(reg)
    active = 0
    for xb, wb in _batches(x, 25, 12, seed=4, dim=9, coupling=3.0):
        expected_value = ref.value_after(xb, wb)
        expected_grad = ref.gradient(xb, wb)
        value, surrogate, grad = _layer_step(reg, xb, wb)
        ref.step(xb, wb)
        assert value >= 0.0
        assert value == pytest.approx(expected_value, rel=1e-4, abs=1e-6)
        assert surrogate == pytest.approx(value, rel=1e-6)
        assert _cosine(grad, expected_grad) > 0.9999
        assert np.linalg.norm(grad) == pytest.approx(np.linalg.norm(expected_grad), rel=1e-3)
        active += float(reg.bound_active.numpy())
    # The coupled proxies push the top correlation past 0.9: the bound was exercised.
    assert active >= 3


def test_kl_form_equals_the_canonical_correlation_form():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 8))
    joint = a.T @ a / 40
    jxx, jxw, jww = joint[:4, :4], joint[:4, 4:], joint[4:, 4:]
    assert _np_lautum(jxx, jxw, jww) == pytest.approx(_np_lautum(jxx, jxw, jww, max_correlation=1 - 1e-12), rel=1e-9)


def test_fast_mode_equals_exact_mode_step_by_step():
    # D = 64, batch 32, the paper's decay: the fast mode's rank-n updates give the exact
    # mode's value and gradient at every step, from the first one (float64 state).
    x = _images(600, shape=(8, 8, 1), seed=6, constant_border=True)
    fast = LautumRegularizer(mode="fast", input_shape_hint=x.shape[1:], refresh_every=50)
    exact = LautumRegularizer(mode="exact", input_shape_hint=x.shape[1:])
    fast.adapt(x)
    exact.adapt(x)
    for xb, wb in _batches(x, 120, 32, seed=7, dim=64, coupling=0.5):
        v_fast, _, g_fast = _layer_step(fast, xb, wb)
        v_exact, _, g_exact = _layer_step(exact, xb, wb)
        assert v_fast >= 0.0
        assert v_fast == pytest.approx(v_exact, rel=1e-4)
        assert _cosine(g_fast, g_exact) > 0.9999
    assert int(fast.nonfinite_count.numpy()) == int(exact.nonfinite_count.numpy()) == 0


def test_bound_is_flat_past_max_correlation_and_sits_at_it():
    reg = LautumRegularizer(max_correlation=0.9, input_shape_hint=(2,))
    f = lambda rho: 0.5 * np.log(1 - rho**2) + rho**2 / (1 - rho**2)  # noqa: E731

    def value_and_grad(rho):
        cx, c, s = (tf.constant(m, tf.float64) for m in (np.eye(2), np.diag([rho, 0.3]), np.eye(2)))
        value, grad_c, grad_s, lam, _ = reg.closed_form(cx, c, s)
        return float(value), grad_c.numpy(), grad_s.numpy(), lam.numpy()

    below, grad_below, _, _ = value_and_grad(0.85)
    assert below == pytest.approx(f(0.85) + f(0.3), rel=1e-10)
    assert grad_below[0, 0] > 0  # a larger correlation below the bound raises L
    for rho in (0.9005, 0.95, 0.999):
        value, grad_c, grad_s, lam = value_and_grad(rho)
        # The value sits at the bound (rho = max_correlation exactly) ...
        assert value == pytest.approx(f(0.9) + f(0.3), rel=1e-10)
        # ... and nothing rewards pushing the top correlation further.
        assert grad_c[0, 0] == 0.0 and grad_s[0, 0] == 0.0
        assert grad_c[1, 1] > 0
    # Where the value stops rising: within 1e-3 of max_correlation.
    grid = np.linspace(0.85, 0.95, 1001)
    values = np.array([value_and_grad(r)[0] for r in grid])
    assert abs(grid[np.argmax(values >= values.max() - 1e-12)] - 0.9) <= 1e-3


def test_bound_keeps_perfectly_correlated_inputs_finite():
    x = _images(300, seed=7, constant_border=False)
    for mode in ("fast", "exact"):
        reg = LautumRegularizer(max_correlation=0.9, ema_decay=0.5, mode=mode, input_shape_hint=x.shape[1:])
        reg.adapt(x)
        values = []
        for i in range(6):
            xb = tf.constant(x[40 * i : 40 * (i + 1)])
            _, value = reg((xb, xb * 3.0 + 1.0), training=True)  # w is a copy of x: rho -> 1
            values.append(float(value))
        assert np.all(np.isfinite(values))
        assert float(reg.bound_active.numpy()) == 1.0
        rho = 0.9
        assert max(values) <= reg.feature_dim * (0.5 * np.log(1 - rho**2) + rho**2 / (1 - rho**2)) * (1 + 1e-6)
        assert int(reg.nonfinite_count.numpy()) == 0


def test_first_steps_with_constant_features_have_finite_value_and_gradient():
    x = _images(120, seed=8)
    reg = LautumRegularizer(input_shape_hint=x.shape[1:])
    reg.adapt(x)
    for i in range(3):
        w = tf.Variable(np.random.default_rng(i).normal(size=(10,) + x.shape[1:]), dtype=tf.float32)
        w[:, :, 0, :].assign(tf.zeros_like(w[:, :, 0, :]))  # a constant Jacobian column too
        with tf.GradientTape() as tape:
            surrogate, value = reg((tf.constant(x[10 * i : 10 * (i + 1)]), w), training=True)
        grad = tape.gradient(surrogate, w).numpy()
        assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
        assert np.abs(grad).max() > 0
    assert int(reg.nonfinite_count.numpy()) == 0


def test_misuse_is_refused_with_expected_received():
    x = _images(50, seed=10)
    reg = LautumRegularizer(input_shape_hint=x.shape[1:])
    w = tf.zeros((4,) + x.shape[1:])
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected `adapt"):
        reg((tf.constant(x[:4]), w), training=True)
    with pytest.raises(ValueError, match="Expected unlabeled target inputs that vary.*Received: 50 inputs, all identical"):
        reg.adapt(np.full_like(x, 7.0))
    # 3 distinct images repeated: a target covariance of rank 2 cannot be whitened ...
    low_rank = np.repeat(x[:3], 20, axis=0)
    with pytest.raises(ValueError, match=r"Expected unlabeled target inputs spanning 30 dimensions .*"
                       r"Received: 60 inputs of 36 features spanning rank 2; .* projection_dim <= 2"):
        reg.adapt(low_rank)
    # ... but their span can be.
    projected = LautumRegularizer(input_shape_hint=x.shape[1:], projection_dim=2)
    projected.adapt(low_rank)
    assert projected.x_rank == 2
    reg.adapt(x)
    with pytest.raises(ValueError, match="Expected a batch of at least 2 .*Received: batch size 1"):
        reg((tf.constant(x[:1]), w[:1]), training=True)
    call = tf.function(lambda a, b: reg((a, b), training=True)[1],
                       input_signature=[tf.TensorSpec((None,) + x.shape[1:])] * 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected a batch of at least 2"):
        call(tf.constant(x[:1]), w[:1])
    assert float(call(tf.constant(x[:4]), w)) >= 0.0


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "slow"}, "Expected `mode` to be one of"),
    ({"ema_decay": 1.0}, r"Expected `ema_decay` in \(0, 1\). Received: ema_decay=1.0"),
    ({"ema_decay": 0.0}, r"Expected `ema_decay` in \(0, 1\)"),
    ({"precision": "float16"}, "Expected `precision` to be one of"),
    ({"max_correlation": 1.0}, "Expected `max_correlation` in"),
    ({"projection_dim": 100, "input_shape_hint": (4, 4, 1)}, "Expected `projection_dim` <= the input dimension 16"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LautumRegularizer(**kwargs)


def test_projection_mode_whitens_the_target_set():
    x = _images(400, seed=9)
    reg = LautumRegularizer(projection_dim=8, input_shape_hint=x.shape[1:])
    reg.adapt(x)
    xt, _ = reg._features(tf.constant(x), tf.constant(x))
    cov = np.cov(xt.numpy().T, bias=True)
    # The top principal components of the (shrunk) correlation matrix, scaled to unit
    # variance: close to identity up to the Ledoit-Wolf shrinkage of the eigenvalues.
    assert cov.shape == (8, 8)
    np.testing.assert_allclose(np.diag(cov), 1.0, rtol=0.25)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-4


def test_get_config_round_trip():
    reg = LautumRegularizer(num_outputs=5, ema_decay=0.99, mode="fast", refresh_every=7,
                            projection_dim=3, max_correlation=0.95, seed=2, input_shape_hint=(4, 4, 1))
    clone = LautumRegularizer.from_config(reg.get_config())
    assert clone.get_config() == reg.get_config()
    assert clone.feature_dim == 3 and clone.input_dim == 16


def test_projection_draws_are_the_same_under_xla():
    def draws(jit_compile):
        reg = LautumRegularizer(num_outputs=5, input_shape_hint=(4,), seed=7)
        def resample():
            reg.resample_projection()
            return tf.convert_to_tensor(reg.projection)

        step = tf.function(resample, jit_compile=jit_compile)
        return [reg.projection.numpy()] + [step().numpy() for _ in range(2)]

    graph, xla = draws(False), draws(True)
    np.testing.assert_allclose(np.array(xla), np.array(graph), rtol=1e-6)
    assert not np.allclose(graph[1], graph[2])


def test_statistics_stay_float32_under_a_mixed_policy():
    rng = np.random.default_rng(0)
    x_target = rng.uniform(0, 1, size=(64, 3, 3, 1)).astype(np.float32)
    x, w = rng.uniform(0, 1, size=(16, 3, 3, 1)), rng.normal(size=(16, 3, 3, 1))
    values = {}
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            reg = LautumRegularizer(num_outputs=3, input_shape_hint=(3, 3, 1), ema_decay=0.5, seed=0)
            reg.adapt(x_target)
            # Half-precision inputs (as a network under the policy produces) are cast up.
            surrogate, value = reg((tf.cast(x, tf.float16), tf.cast(w, tf.float16)), training=True)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert reg.dtype_policy.name == "float32"
        assert surrogate.dtype == value.dtype == tf.float32
        assert all(v.dtype in ("float32", "float64", "int64", "bool") for v in reg.weights)
        values[policy] = float(value)
    assert values["mixed_float16"] == pytest.approx(values["float32"], rel=1e-6)
