"""Noise-regularized MI I(X; L + eps) against a linear-Gaussian closed form."""

import time

import keras
import numpy as np
import pytest

from tfinfo.critics import ArchitectureAwareCritic
from tfinfo.information.noise_regularized import noise_regularized_mutual_information

D, K, VARIANCE = 5, 3, 0.1


def _linear_gaussian(n=4000, seed=0):
    """x ~ N(mu, diag(s^2)), L = W x; truth 1/2 logdet(I + W diag(s^2) W^T / sigma^2), float64.

    The inputs are deliberately not standardized (mean 2, scales 0.5..2): a copy of the
    layer fed standardized inputs would compute the wrong features.
    """
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(K, D)) / np.sqrt(D)
    scale = np.linspace(0.5, 2.0, D)
    x = 2.0 + scale * rng.standard_normal((n, D))
    cov_l = w @ np.diag(scale**2) @ w.T
    truth = 0.5 * np.linalg.slogdet(np.eye(K) + cov_l / VARIANCE)[1]
    keras.utils.set_random_seed(seed)
    layer = keras.layers.Dense(K, name="linear")
    network = keras.Sequential([keras.Input((D,)), layer, keras.layers.Dense(2, name="after")])
    layer.kernel.assign(w.T.astype("float32"))
    layer.bias.assign(np.full(K, -1.0, "float32"))  # a shift changes nothing
    return network, x.astype("float32"), float(truth)


def test_truth_is_the_closed_form():
    # Sanity of the reference itself: a scalar instance of seed 003 eq. (4).
    a, var_x, var_eps = 1.5, 2.0, 0.3
    assert 0.5 * np.log(1 + var_x * a * a / var_eps) == pytest.approx(
        0.5 * np.linalg.slogdet(np.eye(1) + np.array([[a * a * var_x]]) / var_eps)[1]
    )
    _, _, truth = _linear_gaussian()
    assert 2.0 < truth < 4.0


def test_aa_mine_is_within_10_percent_of_the_linear_gaussian_truth():
    network, x, truth = _linear_gaussian()
    start = time.perf_counter()
    details = noise_regularized_mutual_information(
        network,
        x,
        layer_index=1,
        noise_variance=VARIANCE,
        critic="aa_mine",
        steps=800,
        batch_size=64,
        learning_rate=1e-3,
        holdout=0.25,
        hidden_units=(128, 128),
        seed=0,
        return_details=True,
    )
    elapsed = time.perf_counter() - start
    print(f"truth {truth:.4f} nats, AA-MINE {details['value']:.4f} nats ({elapsed:.1f} s)")
    assert details["feature_dim"] == K and details["critic"] == "aa_mine"
    assert details["noise_variance"] == VARIANCE and details["n_eval"] == 1000
    assert abs(details["value"] - truth) <= 0.10 * truth


def test_a_constant_layer_carries_no_information():
    network, x, _ = _linear_gaussian(n=1200)
    for w in network.layers[0].weights:
        w.assign(np.zeros(tuple(w.shape), "float32"))
    value = noise_regularized_mutual_information(
        network, x, 1, noise_variance=0.5, steps=150, batch_size=64, hidden_units=(32,), seed=1
    )
    assert abs(value) < 0.1


def test_noise_draws_repeat_each_sample_with_fresh_noise():
    network, x, _ = _linear_gaussian(n=300)
    details = noise_regularized_mutual_information(
        network, x, 1, noise_variance=1.0, noise_draws=4, steps=2, batch_size=32, hidden_units=(8,), return_details=True
    )
    assert details["n_train"] + details["n_eval"] == 1200


def test_standard_mine_and_critic_layers_are_accepted():
    network, x, _ = _linear_gaussian(n=400)
    value = noise_regularized_mutual_information(
        network, x, 1, noise_variance=1.0, critic="mine", steps=5, batch_size=32, hidden_units=(8,)
    )
    assert np.isfinite(value)
    critic = ArchitectureAwareCritic.from_network(network, 1, hidden_units=(8,))
    details = noise_regularized_mutual_information(
        network, x, 1, noise_variance=1.0, critic=critic, steps=5, batch_size=32, return_details=True
    )
    assert details["critic"] == "aa_mine" and np.isfinite(details["value"])
    # The whole network (layer_index=None) and a list of layers are accepted as F_i.
    whole = noise_regularized_mutual_information(network, x, None, 1.0, steps=2, batch_size=32, hidden_units=(8,))
    layers = noise_regularized_mutual_information(list(network.layers), x, 1, 1.0, steps=2, batch_size=32, hidden_units=(8,))
    assert np.isfinite(whole) and np.isfinite(layers)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise_variance": 0.0}, r"Expected `noise_variance` to be a finite number > 0. Received: noise_variance=0.0"),
        ({"noise_variance": -1}, r"Expected `noise_variance`.*Received: noise_variance=-1"),
        ({"noise_variance": float("nan")}, r"Expected `noise_variance`.*Received: noise_variance=nan"),
        ({"noise_variance": "big"}, r"Expected `noise_variance`.*Received: noise_variance='big'"),
        ({"critic": "knn"}, r"Expected `critic` to be one of \('aa_mine', 'mine'\) or a critic layer. Received: critic='knn'"),
        ({"layer_index": 3}, r"Expected `layer_index` to be an int in \[1, 2\].*Received: layer_index=3"),
        ({"noise_draws": 0}, r"Expected `noise_draws` to be an int >= 1. Received: noise_draws=0"),
        ({"holdout": 1.5}, r"Expected `holdout` in \(0, 1\). Received: holdout=1.5"),
    ],
)
def test_bad_arguments_raise_expected_received(kwargs, match):
    network, x, _ = _linear_gaussian(n=100)
    arguments = {"layer_index": 1, "noise_variance": 1.0, "steps": 1, "batch_size": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        noise_regularized_mutual_information(network, x, **arguments)


def test_bad_network_and_inputs_raise_expected_received():
    network, x, _ = _linear_gaussian(n=100)
    with pytest.raises(ValueError, match=r"Expected `network` to be a Keras model, a layer or a non-empty list of layers. Received: network='mlp'"):
        noise_regularized_mutual_information("mlp", x, 1, 1.0)
    with pytest.raises(ValueError, match=r"Expected `x` of shape \(N, \.\.\.\) with N >= 2. Received: shape=\(5,\)"):
        noise_regularized_mutual_information(network, x[0], 1, 1.0)
