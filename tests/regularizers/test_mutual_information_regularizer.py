import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import correlated_gaussians
from tfinfo.critics import ConcatCritic
from tfinfo.regularizers import MutualInformationRegularizer

RHO = 0.8


class _GaussianLogRatio(keras.layers.Layer):
    """The optimal critic of `correlated_gaussians` (unit variances, correlation RHO)."""

    def call(self, inputs):
        x, z = inputs
        one_minus = 1.0 - RHO * RHO
        term = (2.0 * RHO * x * z - RHO * RHO * (x * x + z * z)) / (2.0 * one_minus)
        return tf.reduce_sum(-0.5 * np.log(one_minus) + term, axis=-1)


@pytest.mark.parametrize("estimator", ["smile", "mine", "nwj", "dv", "js"])
def test_optimal_critic_through_the_layer_gives_the_true_mi(estimator):
    x, z, mi = correlated_gaussians(20000, 2, RHO, seed=2)
    reg = MutualInformationRegularizer(_GaussianLogRatio(), estimator=estimator, seed=0)
    reg.build(((None, 2), (None, 2)))
    reg.adapt(x)  # ~ zero mean, unit variance already: standardization keeps T* optimal
    value, surrogate = reg((x.astype("float32"), z.astype("float32")), training=True)
    assert abs(float(value) - mi) < 0.06
    assert float(surrogate) == pytest.approx(float(value), rel=1e-6)


def test_adapt_standardizes_per_feature_and_zeroes_constant_features():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(500, 4, 4, 1)).astype("float32")
    x[:, 0, 0, 0] = 7.0
    reg = MutualInformationRegularizer(ConcatCritic((8,)))
    reg.build(((None, 4, 4, 1), (None, 3)))
    reg.adapt(x)
    flat = x.reshape(500, -1).astype(np.float64)
    np.testing.assert_allclose(reg.x_mean.numpy(), flat.mean(0), rtol=1e-5)
    expected = np.where(flat.std(0) > 1e-6, 1.0 / np.maximum(flat.std(0), 1e-12), 0.0)
    np.testing.assert_allclose(reg.x_scale.numpy(), expected, rtol=1e-4)
    normalized = reg.normalize(tf.constant(x)).numpy()
    assert np.all(normalized[:, 0] == 0.0)
    np.testing.assert_allclose(normalized[:, 1:].std(0), 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match="16 features"):
        reg.adapt(np.zeros((10, 5)))
    with pytest.raises(ValueError, match="finite"):
        reg.adapt(np.full((10, 16), np.inf))


def test_mine_moving_average_moves_only_when_updating_state():
    x, z, _ = correlated_gaussians(64, 2, RHO, seed=1)
    x, z = x.astype("float32"), z.astype("float32")
    reg = MutualInformationRegularizer(ConcatCritic((8,)), estimator="mine", decay=0.5, seed=0)
    reg.build(((None, 2), (None, 2)))
    reg((x, z), training=False)
    assert float(reg.moving_average_started.numpy()) == 0.0
    reg((x, z), training=True)
    first = float(reg.log_moving_average.numpy())
    assert float(reg.moving_average_started.numpy()) == 1.0
    reg((x * 3.0, z), training=True, update_state=False)
    assert float(reg.log_moving_average.numpy()) == first
    reg((x * 3.0, z), training=True)
    assert float(reg.log_moving_average.numpy()) != first


def test_config_round_trip_keeps_the_critic_and_options():
    reg = MutualInformationRegularizer(
        ConcatCritic("seed003"), estimator="smile", tau=2.0, smile_gradient="dv", marginal="all_pairs", seed=3
    )
    clone = MutualInformationRegularizer.from_config(reg.get_config())
    assert clone.get_config() == reg.get_config()
    assert isinstance(clone.critic, ConcatCritic) and clone.critic.hidden_units == (1500, 1500)
    assert (clone.tau, clone.smile_gradient, clone.marginal) == (2.0, "dv", "all_pairs")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "kl"}, "estimator"),
        ({"marginal": "random"}, "marginal"),
        ({"critic": "concat"}, "critic"),
        ({"tau": -1.0}, "tau"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MutualInformationRegularizer(**kwargs)


def test_mixed_policy_runs_the_critic_in_half_precision_and_the_bound_in_float32():
    x, z, _ = correlated_gaussians(64, 2, 0.8, seed=0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        reg = MutualInformationRegularizer(ConcatCritic((16,)), estimator="smile", seed=0)
        reg.build(((None, 2), (None, 2)))
        reg.adapt(x)
        bound = reg((x.astype(np.float32), z.astype(np.float16)), training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert reg.dtype_policy.name == "float32" and reg.critic.dtype_policy.name == "mixed_float16"
    assert bound.value.dtype == bound.surrogate.dtype == tf.float32
    assert reg.x_mean.dtype == reg.log_moving_average.dtype == "float32"
    assert np.isfinite(float(bound.value))
    assert reg.get_config()["cross_replica"] is True


@pytest.mark.parametrize("marginal", ["shuffle", "all_pairs"])
def test_a_single_sample_batch_is_refused_with_its_size(marginal):
    # With one sample the "shuffle" marginal pairs it with itself: the "marginal" is the joint.
    reg = MutualInformationRegularizer(ConcatCritic((8,)), estimator="dv", marginal=marginal, seed=0)
    reg.build(((None, 2), (None, 3)))
    with pytest.raises(ValueError, match="Expected a batch of at least 2 samples.*Received: batch_size=1"):
        reg((tf.ones([1, 2]), tf.ones([1, 3])), training=True)
    static_one = tf.function(reg.call, input_signature=[(tf.TensorSpec([1, 2]), tf.TensorSpec([1, 3]))])
    with pytest.raises(ValueError, match="Received: batch_size=1"):
        static_one.get_concrete_function()
    with pytest.raises(ValueError, match="same number of samples"):
        reg((tf.ones([4, 2]), tf.ones([3, 3])), training=True)


def test_a_dynamic_single_sample_batch_fails_the_assertion_inside_tf_function():
    reg = MutualInformationRegularizer(ConcatCritic((8,)), estimator="smile", seed=0)
    reg.build(((None, 2), (None, 3)))
    step = tf.function(lambda x, z: reg((x, z), training=True).value)
    step(tf.ones([4, 2]), tf.ones([4, 3]))
    dynamic = tf.function(
        lambda x, z: reg((x, z), training=True).value,
        input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, 3])],
    )
    assert np.isfinite(float(dynamic(tf.ones([4, 2]), tf.ones([4, 3]))))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected a batch of at least 2 samples"):
        dynamic(tf.ones([1, 2]), tf.ones([1, 3]))


def test_the_batch_assertion_compiles_under_xla():
    # XLA compiles tf.debugging assertions as no-ops: the dynamic check must not break
    # jit_compile (there only a static batch size of 1 is refused).
    x, z, _ = correlated_gaussians(16, 2, RHO, seed=3)
    reg = MutualInformationRegularizer(ConcatCritic((8,)), estimator="smile", seed=0)
    reg.build(((None, 2), (None, 2)))
    spec = tf.TensorSpec([None, 2])
    graph = tf.function(lambda x, z: reg((x, z)).value, input_signature=[spec, spec])
    xla = tf.function(lambda x, z: reg((x, z)).value, input_signature=[spec, spec], jit_compile=True)
    x, z = tf.constant(x, tf.float32), tf.constant(z, tf.float32)
    reg.seed_generator.state.assign([0, 0])
    expected = float(graph(x, z))
    reg.seed_generator.state.assign([0, 0])
    assert float(xla(x, z)) == pytest.approx(expected, rel=1e-5)

