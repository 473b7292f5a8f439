import keras
import numpy as np
import pytest

from tfinfo.layers import ZeroEntropyNoise
from tfinfo.models.surrogate_bottleneck_model import SurrogateBottleneckModel
from tfinfo.regularizers import ActivationL2Regularizer
from tfinfo.regularizers import ConditionalLogVarianceRegularizer
from tfinfo.regularizers import LogVarianceRegularizer


def _net(seed=0):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, name="bottleneck", kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    z = ZeroEntropyNoise(seed=seed, name="noisy")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(z))


def _data(n=512):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    return (2.0 * np.eye(3, 4)[y] + rng.standard_normal((n, 4))).astype(np.float32), y


@pytest.mark.parametrize("make", [ActivationL2Regularizer, LogVarianceRegularizer,
                                  lambda: ConditionalLogVarianceRegularizer(num_classes=3)])
def test_the_weighted_penalty_is_lowered_and_ce_still_learns(make):
    x, y = _data()
    runs = {}
    for weight in (0.0, 0.1):
        model = SurrogateBottleneckModel(_net(), make(), layer="noisy", weight=weight)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        runs[weight] = model.fit(x, y, batch_size=512, epochs=40, verbose=0).history
    # Same network, data and noise seeds: only the penalty's weight differs.
    assert runs[0.0]["surrogate"][0] == pytest.approx(runs[0.1]["surrogate"][0], rel=1e-5)
    assert runs[0.1]["surrogate"][-1] < runs[0.0]["surrogate"][-1] - 0.05
    assert runs[0.1]["loss"][-1] == pytest.approx(runs[0.1]["ce"][-1] + 0.1 * runs[0.1]["surrogate"][-1], rel=1e-4)
    assert runs[0.1]["accuracy"][-1] > 0.6  # CE keeps the label information


def test_config_round_trip_and_bad_arguments(tmp_path):
    x, y = _data(64)
    model = SurrogateBottleneckModel(_net(), LogVarianceRegularizer(epsilon=1e-3), layer="noisy", weight=0.5)
    model.compile(optimizer="adam")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    model.save(str(tmp_path / "s.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "s.keras"))
    assert loaded.weight == 0.5 and loaded.layer == "noisy" and loaded.regularizer.epsilon == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="Expected `weight` >= 0. Received: weight=-1"):
        SurrogateBottleneckModel(_net(), ActivationL2Regularizer(), layer="noisy", weight=-1)
    with pytest.raises(ValueError, match="Expected `layer` to name one of the classifier's layers"):
        SurrogateBottleneckModel(_net(), ActivationL2Regularizer(), layer="nope")


def test_compile_builds_the_optimizer_on_the_classifier():
    net = _net()
    model = SurrogateBottleneckModel(net, ActivationL2Regularizer(), layer="noisy")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    # Built before the step is traced (no second trace); iteration, learning rate, momenta.
    assert model.optimizer.built and len(model.optimizer.variables) == 2 + len(net.trainable_variables)
