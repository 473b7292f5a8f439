import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.covariance import ledoit_wolf_shrinkage

from tfinfo.models import LautumTransferModel
from tfinfo.regularizers import LautumRegularizer


def _images(n, shape=(6, 6, 1), seed=0, constant_border=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n,) + shape).astype(np.float32)
    if constant_border:
        x[:, 0, :, :] = 0.0  # zero-variance features, like MNIST borders
    return x


def _numpy_features(reg, x, w):
    """float64 numpy re-implementation of the normalization and whitening."""
    n = x.shape[0]
    x = x.reshape(n, -1).astype(np.float64)
    w = w.reshape(n, -1).astype(np.float64)
    xc = (x - reg.x_mean.numpy()) * reg.x_scale.numpy()
    xc -= xc.mean(0)
    wc = w - w.mean(0)
    var = (wc**2).mean(0)
    wn = wc / np.sqrt(var + 1e-6 * var.mean() + 1e-30)
    chol = reg.x_cholesky_numpy = reg.x_whitener.numpy().astype(np.float64)
    xt = np.linalg.solve(chol, xc.T).T
    return xt, wn


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


def test_ema_update_matches_its_formula():
    x = _images(200, seed=1)
    reg = LautumRegularizer(ema_decay=0.9, input_shape_hint=x.shape[1:])
    reg.adapt(x)
    rng = np.random.default_rng(2)
    batches = [(x[i * 16 : (i + 1) * 16], rng.normal(size=(16,) + x.shape[1:]).astype(np.float32)) for i in range(3)]
    cross, cov = 0.0, 0.0
    for xb, wb in batches:
        reg((tf.constant(xb), tf.constant(wb)), training=True)
        xt, wn = _numpy_features(reg, xb, wb)
        cross = 0.9 * cross + 0.1 * xt.T @ wn / len(xb)
        cov = 0.9 * cov + 0.1 * wn.T @ wn / len(xb)
    np.testing.assert_allclose(reg.cross_ema.numpy(), cross, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(reg.w_ema.numpy(), cov, rtol=2e-4, atol=2e-6)
    assert int(reg.step.numpy()) == 3


def test_exact_mode_gradient_equals_autodiff_through_the_closed_form():
    x = _images(200, seed=3)
    a = 0.9
    reg = LautumRegularizer(ema_decay=a, mode="exact", input_shape_hint=x.shape[1:])
    reg.adapt(x)
    rng = np.random.default_rng(4)
    x1, x2 = tf.constant(x[:20]), tf.constant(x[20:40])
    w1 = tf.constant(rng.normal(size=(20,) + x.shape[1:]), tf.float32)
    w2 = tf.Variable(rng.normal(size=(20,) + x.shape[1:]), dtype=tf.float32)
    reg((x1, w1), training=True)
    prev_cross, prev_w = reg.cross_ema.numpy(), reg.w_ema.numpy()
    power = reg.power_vector.numpy()
    with tf.GradientTape() as tape:
        surrogate, value = reg((x2, w2), training=True)
    grad = tape.gradient(surrogate, w2).numpy()

    # Reference: differentiate L((a S_1 + (1 - a) S_batch(w)) / (1 - a^2)) directly.
    reg.power_vector.assign(power)
    with tf.GradientTape() as tape:
        xt, wt = reg._features(x2, w2)
        n = 20.0
        debias = 1 - a**2
        cross = (a * prev_cross + (1 - a) * tf.matmul(xt, wt, transpose_a=True) / n) / debias
        cov = (a * prev_w + (1 - a) * tf.matmul(wt, wt, transpose_a=True) / n) / debias
        reference, _, _ = reg.closed_form(cross, cov, reg._shrinkage(tf.constant(2, tf.int64), 20))
    ref_grad = tape.gradient(reference, w2).numpy()
    assert float(value) == pytest.approx(float(reference), rel=1e-4)
    assert np.linalg.norm(ref_grad) > 0
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-3, atol=2e-3 * np.abs(ref_grad).max())


def test_fast_mode_refreshes_the_adjoint_only_every_k_steps():
    x = _images(200, seed=5)
    reg = LautumRegularizer(mode="fast", refresh_every=3, ema_decay=0.9, input_shape_hint=x.shape[1:])
    reg.adapt(x)
    rng = np.random.default_rng(6)
    adjoints = []
    for i in range(5):
        w = rng.normal(size=(16,) + x.shape[1:]).astype(np.float32)
        reg((tf.constant(x[16 * i : 16 * (i + 1)]), tf.constant(w)), training=True)
        adjoints.append(reg.adjoint_w.numpy().copy())
    # Refreshes happen at steps 1 and 4.
    np.testing.assert_array_equal(adjoints[0], adjoints[1])
    np.testing.assert_array_equal(adjoints[1], adjoints[2])
    assert not np.allclose(adjoints[2], adjoints[3])
    np.testing.assert_array_equal(adjoints[3], adjoints[4])


def test_bound_keeps_perfectly_correlated_inputs_finite():
    x = _images(300, seed=7, constant_border=False)
    reg = LautumRegularizer(max_correlation=0.9, ema_decay=0.5, input_shape_hint=x.shape[1:])
    reg.adapt(x)
    values = []
    for i in range(6):
        xb = tf.constant(x[40 * i : 40 * (i + 1)])
        _, value = reg((xb, xb * 3.0 + 1.0), training=True)  # w is a copy of x: rho -> 1
        values.append(float(value))
    assert np.all(np.isfinite(values))
    assert float(reg.bound_active.numpy()) == 1.0
    k = reg.feature_dim
    rho = 0.9
    assert max(values) <= k * (0.5 * np.log(1 - rho**2) + rho**2 / (1 - rho**2)) * 1.0001
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


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "slow"}, "Expected `mode` to be one of"),
    ({"ema_decay": 1.0}, r"Expected `ema_decay` in \[0, 1\). Received: ema_decay=1.0"),
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
        assert all(v.dtype in ("float32", "int64", "bool") for v in reg.weights)
        values[policy] = float(value)
    assert values["mixed_float16"] == pytest.approx(values["float32"], rel=1e-6)
