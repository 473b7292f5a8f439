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
