"""Bad arguments and inputs of `LautumRegularizer`: a Keras-style `ValueError` naming
the argument, the expected and the received values, before any statistic changes."""

import numpy as np
import pytest
import tensorflow as tf

from tfinfo.regularizers import LautumRegularizer


def _adapted(shape=(4, 4, 1), n=60, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    reg = LautumRegularizer(input_shape_hint=shape, seed=1, **kwargs)
    reg.adapt(rng.uniform(0, 255, size=(n,) + shape).astype(np.float32))
    return reg


def _pair(n=8, shape=(4, 4, 1), seed=1):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(0, 255, size=(n,) + shape), tf.float32),
            tf.constant(rng.normal(size=(n,) + shape), tf.float32))


@pytest.mark.parametrize("kwargs,match", [
    ({"num_outputs": "ten"}, r"Expected `num_outputs` to be an integer >= 1. Received: num_outputs='ten'"),
    ({"num_outputs": 0}, r"Expected `num_outputs` to be an integer >= 1. Received: num_outputs=0"),
    ({"num_outputs": -1}, r"Received: num_outputs=-1"),
    ({"num_outputs": 2.5}, r"Expected `num_outputs` to be an integer >= 1. Received: num_outputs=2.5"),
    ({"num_outputs": True}, r"Expected `num_outputs` to be an integer >= 1. Received: num_outputs=True"),
    ({"num_outputs": None}, r"Received: num_outputs=None"),
    ({"ema_decay": "0.9"}, r"Expected `ema_decay` in \(0, 1\). Received: ema_decay='0.9'"),
    ({"ema_decay": float("nan")}, r"Expected `ema_decay` in \(0, 1\). Received: ema_decay=nan"),
    ({"ema_decay": True}, r"Expected `ema_decay` in \(0, 1\). Received: ema_decay=True"),
    ({"ema_decay": -0.5}, r"Expected `ema_decay` in \(0, 1\)"),
    ({"max_correlation": "high"}, r"Expected `max_correlation` in \(0, 1\). Received: max_correlation='high'"),
    ({"max_correlation": 0.0}, r"Expected `max_correlation` in \(0, 1\)"),
    ({"refresh_every": 0}, r"Expected `refresh_every` to be an integer >= 1 or None. Received: refresh_every=0"),
    ({"refresh_every": 1.5}, r"Received: refresh_every=1.5"),
    ({"projection_dim": "8"}, r"Expected `projection_dim` to be an integer >= 1 or None. Received: projection_dim='8'"),
    ({"projection_dim": 0}, r"Received: projection_dim=0"),
    ({"mode": None}, r"Expected `mode` to be one of \('exact', 'fast'\). Received: mode=None"),
    ({"precision": 64}, r"Expected `precision` to be one of .*Received: precision=64"),
    ({"seed": "one"}, r"Expected `seed` to be an integer or None. Received: seed='one'"),
    ({"seed": 1.5}, r"Received: seed=1.5"),
    ({"cross_replica": "no"}, r"Expected `cross_replica` to be a bool. Received: cross_replica='no'"),
    ({"input_shape_hint": (4, 0, 1)}, r"Expected `input_shape_hint` to be a per-sample shape of positive integers"
                                      r".*Received: input_shape_hint=\(4, 0, 1\)"),
    ({"input_shape_hint": (4, None)}, r"Expected `input_shape_hint`"),
    ({"input_shape_hint": 16}, r"Expected `input_shape_hint`.*Received: input_shape_hint=16"),
])
def test_bad_constructor_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LautumRegularizer(**kwargs)


def test_valid_constructor_arguments_are_normalized():
    reg = LautumRegularizer(num_outputs=np.int64(5), ema_decay=np.float32(0.5), refresh_every=np.int32(3),
                            seed=np.int64(2), input_shape_hint=[np.int64(4), 4], cross_replica=np.bool_(False))
    assert (reg.num_outputs, reg.refresh_every, reg.seed) == (5, 3, 2)
    assert all(type(v) is int for v in (reg.num_outputs, reg.refresh_every, reg.seed))
    assert reg.ema_decay == 0.5 and reg.input_shape_hint == (4, 4) and reg.cross_replica is False
    assert reg.input_dim == 16


def test_wrong_number_of_pixels_is_refused_naming_x():
    reg = _adapted()
    x, w = _pair(shape=(5, 5, 1))
    before = reg.step.numpy()
    with pytest.raises(ValueError, match=r"Expected `x` with 16 features per sample .*"
                                         r"Received: x.shape=\(8, 5, 5, 1\) \(25 features per sample\)"):
        reg((x, w), training=True)
    assert reg.step.numpy() == before
    # Another per-sample shape with the same number of features is the same input.
    x, w = _pair(shape=(16,))
    _, value = reg((x, w), training=True)
    assert np.isfinite(float(value))


def test_w_of_another_shape_than_x_is_refused_naming_w():
    reg = _adapted()
    x, w = _pair()
    for bad in (w[:6], tf.reshape(w, (8, 16)), w[..., None]):
        with pytest.raises(ValueError, match=r"Expected `w` of the same shape as `x` \(8, 4, 4, 1\). "
                                             r"Received: w.shape=\(" + ", ".join(map(str, bad.shape))):
            reg((x, bad), training=True)


@pytest.mark.parametrize("inputs,match", [
    (lambda x, w: x, r"Expected `inputs` to be a pair \(x, w\) .*Received: a .*Tensor of shape \(8, 4, 4, 1\)"),
    (lambda x, w: x[:2], r"Expected `inputs` to be a pair .*Received: a .*Tensor of shape \(2, 4, 4, 1\)"),
    (lambda x, w: (x, w, w), r"Expected `inputs` to be a pair .*Received: a tuple of 3 elements"),
    (lambda x, w: [x], r"Received: a list of 1 elements"),
    (lambda x, w: {"x": x, "w": w}, r"Expected `inputs` to be a pair .*Received: a dict"),
    (lambda x, w: (x[0], w[0]), r"Expected `x` of shape \(N,\) \+ input_shape .*Received: x.shape=\(4, 4, 1\)"
                                r"|Expected `x` with 16 features"),
    (lambda x, w: (tf.reshape(x, (-1,)), tf.reshape(w, (-1,))), r"Expected `x` of shape \(N,\) \+ input_shape"),
])
def test_non_pair_inputs_are_refused(inputs, match):
    reg = _adapted()
    x, w = _pair()
    with pytest.raises(ValueError, match=match):
        reg(inputs(x, w), training=True)


def test_a_single_tensor_does_not_build_an_unbuilt_layer():
    reg = LautumRegularizer()
    x, w = _pair(n=2)  # a batch of 2 would unpack into two rows
    with pytest.raises(ValueError, match=r"Expected `inputs` to be a pair"):
        reg(x, training=True)
    assert not reg.built
    with pytest.raises(ValueError, match=r"Expected `w` of the same shape as `x` \(None, 4, 4, 1\). Received: w.shape=\(None, 16\)"):
        reg.build(((None, 4, 4, 1), (None, 16)))
    assert not reg.built


def test_adapt_and_estimate_check_their_inputs():
    reg = _adapted()
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match=r"Expected `x_unlabeled` with 16 features per sample .*"
                                         r"Received: x_unlabeled.shape=\(60, 5, 5\) \(25 features per sample\)"):
        reg.adapt(rng.uniform(size=(60, 5, 5)))
    with pytest.raises(ValueError, match=r"Expected numeric `x_unlabeled`. Received: dtype=<U"):
        reg.adapt(np.array([["a"] * 16] * 4))
    with pytest.raises(ValueError, match=r"Expected `chunk_size` to be an integer >= 1. Received: chunk_size=0"):
        reg.adapt(rng.uniform(size=(60, 4, 4, 1)), chunk_size=0)
    x, w = _pair()
    with pytest.raises(ValueError, match=r"Expected `x` with 16 features per sample"):
        reg.estimate(x[:, :2], w[:, :2])
    with pytest.raises(ValueError, match=r"Expected `w` of the same shape as `x`"):
        reg.estimate(x, w[:4])
    value, rho = reg.estimate(x, w)
    assert np.isfinite(float(value)) and 0.0 <= float(rho) < 1.0


def test_shapes_unknown_until_run_time_are_not_refused_when_traced():
    reg = _adapted()
    x, w = _pair()
    call = tf.function(lambda a, b: reg((a, b), training=True)[1],
                       input_signature=[tf.TensorSpec((None, None, None, 1))] * 2)
    assert np.isfinite(float(call(x, w)))
