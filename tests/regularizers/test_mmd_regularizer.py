import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.information.mmd import mmd2
from tfinfo.regularizers.mmd import MMDRegularizer


def _features(n=40, m=30, dim=6, shift=0.5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), rng.normal(size=(m, dim)) + shift


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"sigmas": [0.5, 1.0, 2.0], "bandwidth": "variance", "scale": "fixed", "estimator": "biased"},
        {"bandwidth": "variance", "estimator": "linear", "reduction": "mean"},
    ],
)
def test_value_is_mmd2_with_the_same_options(kwargs):
    zs, zt = _features(m=40)
    reg = MMDRegularizer(**kwargs)
    value = reg((zs.astype("float32"), zt.astype("float32")))
    assert value.shape == () and value.dtype == tf.float32
    np.testing.assert_allclose(float(value), float(mmd2(zs, zt, **kwargs)), rtol=2e-5)
    # No autocast: float64 stays float64, also under a half-precision policy.
    assert reg((zs, zt)).dtype == tf.float64
    half = MMDRegularizer(dtype="mixed_float16", **kwargs)
    assert half((zs.astype("float16"), zt.astype("float16"))).dtype == tf.float32
    assert half((zs, zt)).dtype == tf.float64


def test_defaults_are_documented_ones():
    reg = MMDRegularizer()
    assert (reg.bandwidth, reg.scale, reg.estimator, reg.reduction) == ("deviation", "median", "unbiased", "sum")
    assert len(reg.kernel_sigmas) == 19 and reg.kernel_sigmas[9] == pytest.approx(1.0)
    assert MMDRegularizer(scale="fixed").kernel_sigmas[-1] == 2.0**10


def test_gradient_flows_to_both_feature_batches():
    zs, zt = _features()
    zs, zt = tf.constant(zs, tf.float32), tf.constant(zt, tf.float32)
    reg = MMDRegularizer()
    with tf.GradientTape() as tape:
        tape.watch([zs, zt])
        value = reg((zs, zt))
    for grad in tape.gradient(value, [zs, zt]):
        assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).max() > 1e-4


def test_get_config_round_trip():
    reg = MMDRegularizer(
        sigmas=(0.25, 1.0, 4.0), bandwidth="variance", scale="fixed", estimator="biased", reduction="mean",
        cross_replica=False, name="mk_mmd",
    )  # fmt: skip
    config = reg.get_config()
    assert config["sigmas"] == [0.25, 1.0, 4.0] and config["estimator"] == "biased"
    clone = MMDRegularizer.from_config(config)
    assert clone.get_config() == config
    assert clone.name == "mk_mmd" and clone.cross_replica is False
    serialized = keras.saving.serialize_keras_object(reg)
    assert serialized["registered_name"] == "tfinfo>MMDRegularizer"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(revived, MMDRegularizer) and revived.get_config() == config
    zs, zt = _features()
    assert float(revived((zs, zt))) == float(reg((zs, zt)))
    assert MMDRegularizer.from_config(MMDRegularizer().get_config()).sigmas is None


def test_bad_arguments_name_themselves():
    for kwargs, name in [
        ({"estimator": "mean"}, "estimator"),
        ({"bandwidth": "sigma"}, "bandwidth"),
        ({"scale": "auto"}, "scale"),
        ({"reduction": "max"}, "reduction"),
        ({"sigmas": [1.0, 0.0]}, "sigmas"),
    ]:
        with pytest.raises(ValueError, match=f"Expected `{name}`.*Received: {name}="):
            MMDRegularizer(**kwargs)
    zs, zt = _features()
    with pytest.raises(ValueError, match="same number of features.*z_target.shape=\\(None, 5\\)"):
        MMDRegularizer().build(((None, 6), (None, 5)))
    with pytest.raises(ValueError, match="same number of features"):
        MMDRegularizer()((zs, zt[:, :5]))
    with pytest.raises(ValueError, match="at least 2 samples in `x`"):
        MMDRegularizer()((zs[:1], zt))
    with pytest.raises(ValueError, match="same number of samples for estimator='linear'"):
        MMDRegularizer(estimator="linear")((zs, zt))
    with pytest.raises(ValueError, match="rank 2"):
        MMDRegularizer().build(((None, 4, 6), (None, 6)))
