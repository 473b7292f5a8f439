"""An honest diagnostic of the Lautum information the network reaches."""

import keras
import numpy as np
import tensorflow as tf


class LautumProbe(keras.callbacks.Callback):
    """Logs `L(w; x)` estimated from scratch on a fixed set of target images, each epoch.

    The training value (`lautum` in the logs) comes from a moving covariance that mixes
    the weights of many past steps, and early on it is mostly the estimation bias of
    canonical correlations from few samples against 2D dimensions. At the end of every
    `every_epochs` epochs this callback computes the Jacobian proxies of `x_probe` with
    the current weights (in the model's proxy mode), estimates the Lautum information of
    those N pairs in one go with the regularizer's estimator
    (`LautumRegularizer.estimate`: the same normalization, whitening, shrinkage
    `k / (k + N)` and bound), and logs

    - `logs[name]`: that estimate, in nats;
    - `logs[name + "_null"]`: the same estimate with the proxies of the probe set
      permuted across images (x and w independent by construction): the value that
      estimation bias alone gives at this N and k;
    - `logs[name + "_max_correlation"]`: the largest canonical correlation.

    `name - name_null` is the part of L that the weights, not the estimator, produce.
    The logs reach `History`, `results.json` and `TensorBoard` callbacks placed after
    this one.

    Args:
        x_probe: target images, shape `(N,) + input_shape`; a few times k images give a
            small bias (the tfinfo pipeline uses up to 2,000 unlabeled target images).
        every_epochs: probe after every this many epochs.
        batch_size: batch size of the Jacobian computation.
        seed: seed of the null permutation.
        name: log key.

    Example:

    >>> probe = LautumProbe(x_target_unlabeled[:2000])
    >>> model.fit(train, epochs=10, callbacks=[probe])
    >>> probe.history[-1]  # (epoch, value, null value)
    """

    def __init__(self, x_probe, every_epochs=1, batch_size=200, seed=0, name="lautum_probe"):
        super().__init__()
        x_probe = np.asarray(x_probe)
        if x_probe.ndim < 2 or x_probe.shape[0] < 2:
            raise ValueError(
                f"Expected at least 2 probe images. Received: x_probe.shape={x_probe.shape}"
            )
        if int(every_epochs) < 1:
            raise ValueError(f"Expected `every_epochs` >= 1. Received: every_epochs={every_epochs}")
        if int(batch_size) < 1:
            raise ValueError(f"Expected `batch_size` >= 1. Received: batch_size={batch_size}")
        self.x_probe = x_probe
        self.every_epochs = int(every_epochs)
        self.batch_size = int(batch_size)
        self.name = name
        self.permutation = np.random.default_rng(seed).permutation(len(x_probe))
        self.history = []
        self._proxy = None

    def _parts(self):
        model = self.model
        candidates = [getattr(model, "lautum_regularizer", None), getattr(model, "regularizer", None)]
        candidates += [getattr(term, "regularizer", None) for term in getattr(model, "terms", [])]
        regularizer = next((r for r in candidates if r is not None and hasattr(r, "estimate")), None)
        if regularizer is None:
            raise ValueError(
                "Expected a model with a LautumRegularizer (`regularizer` or "
                f"`lautum_regularizer`). Received: {type(model).__name__}"
            )
        classifier = getattr(model, "classifier", model)
        terms = [t for t in getattr(model, "terms", []) if getattr(t, "regularizer", None) is regularizer]
        training = getattr(model, "proxy_training", terms[0].proxy_training if terms else True)
        return classifier, regularizer, bool(training)

    def measure(self):
        """Returns `(value, null_value, max_correlation)` with the current weights."""
        classifier, regularizer, training = self._parts()
        if self._proxy is None:

            @tf.function
            def proxy(x):
                x = tf.cast(x, tf.float32)
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    logits = classifier(x, training=training)
                    projected = tf.reduce_sum(tf.cast(logits, tf.float32) * regularizer.projection)
                return tape.gradient(projected, x)

            self._proxy = proxy
        # A training-mode proxy draws dropout and noise: restore the classifier's seed
        # generators afterwards, so that a run with the probe trains exactly as one without.
        seeds = [v for v in classifier.variables if "seed_generator_state" in v.path]
        saved = [v.numpy() for v in seeds]
        try:
            w = np.concatenate(
                [self._proxy(self.x_probe[i : i + self.batch_size]).numpy()
                 for i in range(0, len(self.x_probe), self.batch_size)]
            )
        finally:
            for v, value in zip(seeds, saved):
                v.assign(value)
        value, rho = regularizer.estimate(self.x_probe, w)
        null, _ = regularizer.estimate(self.x_probe, w[self.permutation])
        return float(value), float(null), float(rho)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs:
            return
        value, null, rho = self.measure()
        self.history.append((epoch, value, null))
        if logs is not None:
            logs[self.name] = value
            logs[self.name + "_null"] = null
            logs[self.name + "_max_correlation"] = rho
