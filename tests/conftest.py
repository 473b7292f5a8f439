import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    import keras

    keras.utils.set_random_seed(1234)
    yield


def random_joint_covariance(d, k, seed, coupling=0.8):
    """A random positive-definite (d + k) joint covariance with sizeable cross terms."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d + k, d + k + 3))
    joint = a @ a.T / (d + k + 3)
    scale = np.ones(d + k)
    joint = joint * np.outer(scale, scale)
    joint[:d, d:] *= coupling
    joint[d:, :d] *= coupling
    joint += 0.05 * np.eye(d + k)
    assert np.all(np.linalg.eigvalsh(joint) > 0)
    return joint[:d, :d], joint[d:, d:], joint[:d, d:], joint


def correlated_gaussians(n, dim, rho, seed):
    """`x ~ N(0, I)`, `z = rho x + sqrt(1 - rho^2) eps`; true MI `-dim/2 log(1 - rho^2)` nats."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    z = rho * x + np.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dim))
    return x, z, -0.5 * dim * np.log(1.0 - rho * rho)


def optimal_gaussian_critic(x, z, rho):
    """The log density ratio `log p(x, z) / (p(x) p(z))` of `correlated_gaussians`, float64.

    Broadcasts: `x[:, None], z[None, :]` gives the all-pairs matrix.
    """
    one_minus = 1.0 - rho * rho
    term = (2.0 * rho * x * z - rho * rho * (x * x + z * z)) / (2.0 * one_minus)
    return (-0.5 * np.log(one_minus) + term).sum(-1)
