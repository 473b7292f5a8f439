"""Multi-kernel MMD between source and target features, lowered (seed 000's Mk-MMD baseline)."""

import keras
import tensorflow as tf

from tfinfo.penalties.penalty_term import Penalty
from tfinfo.penalties.penalty_term import PenaltyTerm
from tfinfo.regularizers.mmd import MMDRegularizer


@keras.saving.register_keras_serializable(package="tfinfo")
class MMDPenalty(PenaltyTerm):
    """`+ weight * MMD^2(z_source, z_target)` on the `feature_layer` outputs.

    Needs the source and target features, both in training mode (input noise and
    dropout on, as the CE sees them). The value and the surrogate are the
    `MMDRegularizer`'s estimate. Logs `mmd`.

    Args:
        regularizer: an `MMDRegularizer` (default: 19 Gaussian kernels scaled by the
            median distance, unbiased).
        weight: lambda of the term (>= 0).

    Example:

    >>> model = RegularizedTransferModel(classifier, terms=[MMDPenalty(weight=1.0)])

    Reference:
        Jakubovitz et al., seed 000, section 5.1; Long et al., ICML 2015.
    """

    name = "mmd"
    needs = ("source_features", "target_features")

    def __init__(self, regularizer=None, weight=1.0):
        if regularizer is None:
            regularizer = MMDRegularizer()
        if not isinstance(regularizer, MMDRegularizer):
            raise ValueError(
                f"Expected `regularizer` to be an MMDRegularizer. Received: regularizer={type(regularizer).__name__}"
            )
        super().__init__(regularizer, weight)

    def build(self, model):
        if not self.regularizer.built:
            self.regularizer.build(((None, model.feature_dim), (None, model.feature_dim)))

    def penalty(self, inputs):
        value = tf.cast(self.regularizer((inputs["source_features"], inputs["target_features"])), tf.float32)
        return Penalty(value, value)
