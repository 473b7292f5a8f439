import keras
import numpy as np
import pytest

from tfinfo.callbacks import TransferabilityProbe


def _classifier(kernel):
    inputs = keras.Input((2,))
    features = keras.layers.Dense(2, use_bias=False, name="features",
                                  kernel_initializer=keras.initializers.Constant(kernel))(inputs)
    logits = keras.layers.Dense(3, name="logits")(features)
    return keras.Model(inputs, logits)


def _blobs(n_per_class, seed, classes=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    centers = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    x = np.concatenate([centers[c] + 0.3 * rng.standard_normal((n, 2)) for c, n in zip(classes, n_per_class)])
    y = np.concatenate([np.full(n, c) for c, n in zip(classes, n_per_class)])
    return x.astype(np.float32), y


def test_probe_is_perfect_on_separable_features_and_majority_on_constant_ones():
    x_lab, y_lab = _blobs((4, 6, 3), seed=0)
    x_eval, y_eval = _blobs((20, 10, 30), seed=1)
    identity = TransferabilityProbe(x_lab, y_lab, x_eval, y_eval)
    identity.set_model(_classifier(np.eye(2)))
    assert identity.probe() == 1.0
    # Zero features carry no information: the probe predicts the labeled majority (class 1).
    zero = TransferabilityProbe(x_lab, y_lab, x_eval, y_eval)
    zero.set_model(_classifier(np.zeros((2, 2))))
    assert zero.probe() == pytest.approx(np.mean(y_eval == 1))


def test_probe_logs_every_n_epochs_and_leaves_the_network_unchanged():
    x_lab, y_lab = _blobs((5, 5, 5), seed=0)
    x_eval, y_eval = _blobs((10, 10, 10), seed=1)

    class Wrapper(keras.Model):  # like the tfinfo transfer models: `classifier` inside
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def call(self, x):
            return self.classifier(x)

    wrapper = Wrapper(_classifier(np.eye(2)))
    wrapper.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe = TransferabilityProbe(x_lab, y_lab, x_eval, y_eval, every_epochs=2)
    history = wrapper.fit(x_eval, y_eval, epochs=5, verbose=0, callbacks=[probe])
    assert [epoch for epoch, _ in probe.history] == [1, 3]
    assert history.history["transferability"] == [acc for _, acc in probe.history] == [1.0, 1.0]
    before = [w.numpy().copy() for w in wrapper.weights]
    probe.probe()
    for b, w in zip(before, wrapper.weights):
        np.testing.assert_array_equal(b, w.numpy())


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(y_labeled=np.zeros(3, np.int64)), "Expected `y_labeled` to be 4 integer labels"),
        (dict(y_labeled=np.zeros(4, np.int64)), "Expected at least two classes in `y_labeled`"),
        (dict(y_eval=np.zeros(4, np.float32)), "Expected `y_eval` to be 4 integer labels"),
        (dict(x_eval=np.zeros((0, 2))), "Expected `x_eval` with a sample axis"),
        (dict(every_epochs=0), "Expected `every_epochs` >= 1. Received: every_epochs=0"),
        (dict(c=0.0), "Expected `c` > 0"),
    ],
)
def test_bad_arguments_are_refused(changes, match):
    args = dict(x_labeled=np.zeros((4, 2)), y_labeled=np.array([0, 1, 0, 1]),
                x_eval=np.zeros((4, 2)), y_eval=np.array([0, 1, 0, 1]))
    args.update(changes)
    with pytest.raises(ValueError, match=match):
        TransferabilityProbe(**args)


def test_a_classifier_without_the_feature_layer_is_named_in_the_error():
    x, y = _blobs((3, 3, 3), seed=0)
    probe = TransferabilityProbe(x, y, x, y, feature_layer="penultimate")
    probe.set_model(_classifier(np.eye(2)))
    with pytest.raises(ValueError, match="layer named 'penultimate'"):
        probe.probe()
