"""A new method added by the README's path ("Adding a method"), defined in this file alone."""

import json

import keras
import numpy as np

from tests.trainers.test_transfer_cli import _tiny_config
from trainers.methods import METHODS
from trainers.methods import Method
from trainers.methods import get_method
from trainers.methods import register_method
from trainers.pipeline import run_transfer


def test_a_method_defined_in_a_test_file_runs_through_the_transfer_pipeline(tmp_path, monkeypatch):
    monkeypatch.setattr("trainers.methods.METHODS", dict(METHODS))  # the toy leaves with the test

    @register_method
    class LinearProbe(Method):
        """Standard stage 1; stage 2 trains only the last layer (a linear probe)."""

        name = "linear_probe"
        calls = []

        def finetune(self, classifier, data, config, callbacks=(), runner=None):
            LinearProbe.calls.append(len(data.x_labeled))
            for layer in [layer for layer in classifier.layers if layer.weights][:-1]:
                layer.trainable = False
            return super().finetune(classifier, data, config, callbacks=callbacks, runner=runner)

    assert isinstance(get_method("linear_probe"), LinearProbe)
    workdir = tmp_path / "run"
    results = run_transfer(_tiny_config(tmp_path, method="linear_probe", finetune_epochs=3), str(workdir))

    assert LinearProbe.calls == [8]  # stage 2 was the toy's, on the 8 labeled images
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["method"] == results["method"] == "linear_probe"
    assert saved["stage1"]["key"].startswith("standard_")  # its stage 1 is standard's (Method.stage1)
    assert len(saved["history"]["finetune"]["loss"]) == 3
    # The shipped classifier is stage 1's everywhere but in the last layer.
    shipped = keras.models.load_model(workdir / "classifier.keras")
    pretrained = keras.models.load_model(workdir / "classifier.keras")
    pretrained.load_weights(workdir / "stage1" / "classifier.weights.h5")
    layers = [(a, b) for a, b in zip(shipped.layers, pretrained.layers) if a.weights]
    for a, b in layers[:-1]:
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v, err_msg=a.name)
    last, first = layers[-1]
    assert max(np.abs(u - v).max() for u, v in zip(last.get_weights(), first.get_weights())) > 1e-4
