"""Redraws the Lautum random projection vector at the start of every epoch."""

import keras


class ProjectionResampler(keras.callbacks.Callback):
    """Redraws `r ~ N(0, 1/sqrt(K))` of every Lautum regularizer once per epoch.

    The paper found one projection per epoch more stable than one per step. The vector
    lives in a non-trainable variable of the regularizer, so it is checkpointed with the
    model. Finds the regularizer as `model.regularizer` (a `LautumTransferModel`), `model.lautum_regularizer`
    (a `MutualInformationTransferModel` with Lautum) or any
    layer attribute exposing `resample_projection()`.

    Args:
        every_epochs: redraw every this many epochs (1 = each epoch, the default).

    Example:

    >>> model.fit(data, epochs=10, callbacks=[ProjectionResampler()])
    """

    def __init__(self, every_epochs=1):
        super().__init__()
        if int(every_epochs) < 1:
            raise ValueError(f"Expected `every_epochs` >= 1. Received: every_epochs={every_epochs}")
        self.every_epochs = int(every_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0 or epoch % self.every_epochs:
            return
        regularizers = [
            layer
            for layer in (
                getattr(self.model, "regularizer", None),
                getattr(self.model, "lautum_regularizer", None),
                *getattr(self.model, "layers", ()),
            )
            if layer is not None and hasattr(layer, "resample_projection")
        ]
        if not regularizers:
            raise ValueError(
                "Expected a model with a Lautum regularizer (a `resample_projection()` method). "
                f"Received: {type(self.model).__name__}"
            )
        for reg in {id(r): r for r in regularizers}.values():
            reg.resample_projection()
