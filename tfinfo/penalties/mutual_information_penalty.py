"""Mutual information between target images and their features, lowered, with a trained critic."""

import keras
import tensorflow as tf

from tfinfo.penalties.penalty_term import Penalty
from tfinfo.penalties.penalty_term import PenaltyTerm
from tfinfo.regularizers.mutual_information import MutualInformationRegularizer


@keras.saving.register_keras_serializable(package="tfinfo")
class MutualInformationPenalty(PenaltyTerm):
    """`+ weight * I(x_target; z_target)`: seed 000's MI regularization as a loss term.

    Needs the unlabeled target images and their `feature_layer` output (training mode).
    The value is the variational bound of the regularizer's critic (nats), the surrogate
    its training objective, evaluated with the critic fixed and without updating the
    estimator's state (MINE's moving average moves in the critic's updates). The critic
    is trained by the model's `critic_optimizer` on `critic_loss`: `critic_steps` updates
    inside every train step, before the classifier's (each on a fresh marginal shuffle),
    or whole epochs of one or the other with the `CriticSchedule` callback. Logs `mi`.

    Args:
        regularizer: a `MutualInformationRegularizer` (default: SMILE, tau 5, concat
            critic "small").
        weight: lambda of the term (the paper's lambda is `ours * N`).
        critic_steps: critic updates per train step in the "alternate" phase (>= 0).

    Example:

    >>> term = MutualInformationPenalty(weight=0.1, critic_steps=1)
    >>> model = RegularizedTransferModel(classifier, terms=[term])
    >>> model.compile(optimizer="adam", critic_optimizer=keras.optimizers.Adam(1e-4))

    Reference:
        Jakubovitz et al., seed 000, eq. (15)-(16).
    """

    name = "mi"
    needs = ("x_target", "target_features")

    def __init__(self, regularizer=None, weight=1.0, critic_steps=1):
        if regularizer is None:
            regularizer = MutualInformationRegularizer()
        if not isinstance(regularizer, MutualInformationRegularizer):
            raise ValueError(
                f"Expected `regularizer` to be a MutualInformationRegularizer. Received: {type(regularizer).__name__}"
            )
        super().__init__(regularizer, weight)
        if isinstance(critic_steps, bool) or int(critic_steps) != critic_steps or critic_steps < 0:
            raise ValueError(f"Expected `critic_steps` >= 0. Received: critic_steps={critic_steps}")
        self.critic_steps = int(critic_steps)

    def build(self, model):
        if not self.regularizer.built:
            input_shape = tuple(model.classifier.input_shape[1:])
            self.regularizer.build(((None,) + input_shape, (None, model.feature_dim)))

    def adapt(self, x_unlabeled, **kwargs):
        self.regularizer.adapt(x_unlabeled, **kwargs)

    def penalty(self, inputs):
        bound = self.regularizer((inputs["x_target"], inputs["target_features"]), training=True, update_state=False)
        return Penalty(tf.stop_gradient(bound.value), bound.surrogate)

    def critic_variables(self):
        return self.regularizer.critic.trainable_variables

    def critic_loss(self, inputs):
        features = tf.stop_gradient(inputs["target_features"])
        return -self.regularizer((inputs["x_target"], features), training=True).surrogate

    def get_config(self):
        return {**super().get_config(), "critic_steps": self.critic_steps}
