"""`.keras` files of the transfer models saved by earlier code load with today's code.

The fixtures in `fixtures/` were written by `fixtures/make_transfer_fixtures.py` at the
commit that added them, with the predictions they made then; a change to a model's
config, variables or compile config that breaks users' saved files fails here.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.fixtures.make_transfer_fixtures import data
from tfinfo.models import LautumTransferModel
from tfinfo.models import MMDTransferModel
from tfinfo.models import MutualInformationTransferModel

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.mark.parametrize("name, cls", [("lautum", LautumTransferModel), ("mi", MutualInformationTransferModel),
                                       ("mmd", MMDTransferModel)])
def test_a_model_saved_before_loads_predicts_the_same_and_trains_on(name, cls):
    model = keras.models.load_model(os.path.join(HERE, f"{name}_transfer_model.keras"))
    assert type(model) is cls
    probe = data(seed=1, n=8)[0]
    expected = np.load(os.path.join(HERE, f"{name}_transfer_model_probe_logits.npy"))
    np.testing.assert_allclose(model.predict(probe, verbose=0), expected, rtol=1e-5, atol=1e-5)
    # The optimizer state came back (one epoch of Adam: 2 steps), and training goes on.
    assert int(model.optimizer.iterations.numpy()) == 2
    xs, ys, xt = data()
    history = model.fit(tf.data.Dataset.from_tensor_slices(((xs, xt), ys)).batch(20), epochs=1, verbose=0).history
    assert int(model.optimizer.iterations.numpy()) == 4 and np.isfinite(history["loss"][-1])
    assert {"loss", "ce", "accuracy"} <= set(history)
