"""Linear-probe accuracy on the target task, measured during pre-training."""

import keras
import numpy as np


class TransferabilityProbe(keras.callbacks.Callback):
    """Logs how well frozen features transfer, every few epochs of pre-training.

    Every `every_epochs` epochs, computes the features of the labeled target images
    (the output of `feature_layer` of the classifier, in inference mode), fits a
    multinomial logistic regression on them (features standardized with the labeled
    set's statistics, L2 strength `1 / c`) and logs its accuracy on the evaluation
    target images as `logs[name]`, so it appears in the `History`, in `CSVLogger` and
    in `TensorBoard` callbacks placed after this one. The network is not changed.
    Seed 002 (A.3, "temporal analyses") tracks transferability this way during
    pre-training.

    The classifier is `model.classifier` when the trained model wraps one (the tfinfo
    transfer models do), else the model itself.

    Args:
        x_labeled: labeled target images, shape `(N,) + input_shape`.
        y_labeled: their integer labels, shape `(N,)`.
        x_eval: target images to measure accuracy on (e.g. the target test set).
        y_eval: their integer labels.
        every_epochs: probe after every this many epochs (and never in between).
        feature_layer: name of the classifier's feature layer (rank-2 output).
        c: inverse L2 strength of the logistic regression (scikit-learn's `C`).
        batch_size: batch size of the feature computation.
        name: log key of the accuracy.

    Attributes:
        history: list of `(epoch, accuracy)`, one per probe.

    Example:

    >>> probe = TransferabilityProbe(x_lab, y_lab, x_test, y_test, every_epochs=2)
    >>> model.fit(source, epochs=10, callbacks=[probe])
    >>> probe.history  # [(1, 0.41), (3, 0.55), ...]

    Reference:
        Seed 002 (MINE details and CTC), appendix A.3.
    """

    def __init__(self, x_labeled, y_labeled, x_eval, y_eval, every_epochs=1, feature_layer="features",
                 c=1.0, batch_size=256, name="transferability"):
        super().__init__()
        self.x_labeled, self.y_labeled = _check_pair(x_labeled, y_labeled, "x_labeled", "y_labeled")
        self.x_eval, self.y_eval = _check_pair(x_eval, y_eval, "x_eval", "y_eval")
        if len(np.unique(self.y_labeled)) < 2:
            raise ValueError(
                "Expected at least two classes in `y_labeled` to fit a classifier. "
                f"Received: classes {np.unique(self.y_labeled).tolist()}"
            )
        if int(every_epochs) < 1:
            raise ValueError(f"Expected `every_epochs` >= 1. Received: every_epochs={every_epochs}")
        if not float(c) > 0:
            raise ValueError(f"Expected `c` > 0. Received: c={c}")
        self.every_epochs = int(every_epochs)
        self.feature_layer = feature_layer
        self.c = float(c)
        self.batch_size = int(batch_size)
        self.name = name
        self.history = []
        self._features = None

    def _feature_model(self):
        from tfinfo.models.classifier_wrapper import features_and_logits_model

        classifier = getattr(self.model, "classifier", self.model)
        if self._features is None or self._features[0] is not classifier:
            self._features = (classifier, features_and_logits_model(classifier, self.feature_layer))
        return self._features[1]

    def probe(self):
        """Fits the linear probe on the current features; returns its eval accuracy."""
        from sklearn.linear_model import LogisticRegression

        model = self._feature_model()

        def features(x):
            out = model.predict(x, batch_size=self.batch_size, verbose=0)[0]
            return np.asarray(out, np.float64)

        f_lab, f_eval = features(self.x_labeled), features(self.x_eval)
        mean, std = f_lab.mean(axis=0), f_lab.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays constant (zero)
        probe = LogisticRegression(C=self.c, max_iter=1000)
        probe.fit((f_lab - mean) / std, self.y_labeled)
        return float(np.mean(probe.predict((f_eval - mean) / std) == self.y_eval))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs:
            return
        accuracy = self.probe()
        self.history.append((epoch, accuracy))
        if logs is not None:
            logs[self.name] = accuracy


def _check_pair(x, y, x_name, y_name):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"Expected `{x_name}` with a sample axis and at least one sample. Received: shape={x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"Expected `{y_name}` to be {len(x)} integer labels (one per `{x_name}` sample). "
            f"Received: shape={y.shape}, dtype={y.dtype}"
        )
    return x.astype(np.float32), y
