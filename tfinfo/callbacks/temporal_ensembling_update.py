"""Drives the epoch-level state of a `TemporalEnsemblingModel`."""

import keras


class TemporalEnsemblingUpdate(keras.callbacks.Callback):
    """Sets the unsupervised weight at each epoch's start and updates the ensemble at its end.

    At `on_epoch_begin` it calls the model's `set_unsupervised_weight()`, which takes the
    ramp-up weight of the model's own epoch counter `t` (the number of completed ensemble
    updates, saved with the model), not of `fit`'s epoch argument: a reloaded model, or a
    second `fit` call, continues the schedule where it stopped. At `on_epoch_end` it calls
    `update_ensemble()`: `Z <- alpha Z + (1 - alpha) z_epoch`, `z_tilde <- Z / (1 - alpha^t)`.

    Example:

    >>> model.fit(ds, epochs=300, callbacks=[TemporalEnsemblingUpdate()])
    """

    def on_train_begin(self, logs=None):
        if not all(hasattr(self.model, name) for name in ("update_ensemble", "set_unsupervised_weight")):
            raise ValueError(
                "Expected a model with a temporal ensemble (a TemporalEnsemblingModel). "
                f"Received: {type(self.model).__name__}"
            )
        self.model._ensemble_update_attached = True

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_unsupervised_weight()

    def on_epoch_end(self, epoch, logs=None):
        self.model.update_ensemble()

    def on_train_end(self, logs=None):
        self.model._ensemble_update_attached = False
