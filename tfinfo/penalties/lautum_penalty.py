"""Lautum information between target images and the weights' Jacobian proxy, maximized."""

import keras
import tensorflow as tf

from tfinfo.penalties.penalty_term import Penalty
from tfinfo.penalties.penalty_term import PenaltyTerm
from tfinfo.regularizers.lautum import LautumRegularizer

RESAMPLE_PROJECTION = ("epoch", "step")


@keras.saving.register_keras_serializable(package="tfinfo")
class LautumPenalty(PenaltyTerm):
    """`- weight * L(w; x_target)`: seed 000's Lautum regularization as a loss term.

    Needs the unlabeled target images and the Jacobian proxy
    `w_i = d(r . f(x_i)) / d x_i` with `r = regularizer.projection` (the model computes it
    once per step, by double backprop). The value is the regularizer's closed form on its
    moving covariance (nats); the surrogate its fast estimate. Logs `lautum`,
    `bound_active` and `shrinkage` (see `LautumRegularizer`).

    Args:
        regularizer: a `LautumRegularizer` (default: one with `num_outputs` taken from the
            classifier when the model is built).
        weight: lambda in true nats for a mean CE (the paper's lambda is `ours * N / 2`).
        resample_projection: "epoch" (the `ProjectionResampler` callback) or "step" (a
            fresh `r` at every train step).
        proxy_training: run the classifier in training mode (dropout, input noise) for
            the proxy (True) or in inference mode (False).

    Example:

    >>> term = LautumPenalty(weight=0.01)
    >>> model = RegularizedTransferModel(classifier, terms=[term])
    >>> model.adapt(x_unlabeled)

    Reference:
        Jakubovitz et al., seed 000, eq. (13).
    """

    name = "lautum"
    sign = -1.0
    needs = ("x_target", "jacobian_proxy")
    extra_log_names = ("bound_active", "shrinkage")

    def __init__(self, regularizer=None, weight=1.0, resample_projection="epoch", proxy_training=True):
        super().__init__(regularizer, weight)
        if regularizer is not None and not isinstance(regularizer, LautumRegularizer):
            raise ValueError(
                f"Expected `regularizer` to be a LautumRegularizer or None. Received: {type(regularizer).__name__}"
            )
        if resample_projection not in RESAMPLE_PROJECTION:
            raise ValueError(
                "Expected `resample_projection` to be 'epoch' or 'step'. "
                f"Received: resample_projection={resample_projection!r}"
            )
        self.resample_projection = resample_projection
        self.proxy_training = bool(proxy_training)

    @property
    def projection(self):
        """The random projection `r` of the logits that defines the proxy."""
        return self.regularizer.projection

    def build(self, model):
        classifier = model.classifier
        input_shape = tuple(classifier.input_shape[1:])
        num_outputs = int(classifier.output_shape[-1])
        if self.regularizer is None:
            self.regularizer = LautumRegularizer(num_outputs=num_outputs, input_shape_hint=input_shape)
        if self.regularizer.num_outputs != num_outputs:
            raise ValueError(
                f"Expected a regularizer projecting {num_outputs} logits. "
                f"Received: regularizer.num_outputs={self.regularizer.num_outputs}"
            )
        if not self.regularizer.built:
            self.regularizer.build((None,) + input_shape)

    def adapt(self, x_unlabeled, **kwargs):
        self.regularizer.adapt(x_unlabeled, **kwargs)

    def ready(self):
        if bool(self.regularizer.adapted.numpy()):
            return None
        return "it estimates the target statistics Sigma_x of the Lautum term"

    def before_step(self):
        if self.resample_projection == "step":
            self.regularizer.resample_projection()

    def penalty(self, inputs):
        surrogate, value = self.regularizer((inputs["x_target"], inputs["jacobian_proxy"]), training=True)
        return Penalty(value, surrogate)

    def logs(self):
        return {"bound_active": self.regularizer.bound_active, "shrinkage": self.regularizer.shrinkage}

    def get_config(self):
        return {
            **super().get_config(),
            "resample_projection": self.resample_projection,
            "proxy_training": self.proxy_training,
        }
