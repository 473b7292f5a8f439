"""Alternates whole epochs of critic training and classifier training."""

import keras


class CriticSchedule(keras.callbacks.Callback):
    """Switches a `MutualInformationTransferModel` between critic and classifier epochs.

    Seed 000 trains the MI estimator "alternately" with the classifier. With this
    callback, each cycle is `critic_epochs` epochs in which only the critic learns (the
    classifier is held fixed and only logged), then `classifier_epochs` epochs in which
    only the classifier learns (the critic is held fixed). `warmup_critic_epochs` extra
    critic epochs come first, so that the MI penalty starts from a trained critic. After
    `fit` the model is back in the "alternate" phase (critic steps inside each step).

    Args:
        critic_epochs: critic epochs per cycle (>= 1).
        classifier_epochs: classifier epochs per cycle (>= 1).
        warmup_critic_epochs: critic epochs before the first cycle (>= 0).

    Example:

    >>> model.fit(data, epochs=12, callbacks=[CriticSchedule(critic_epochs=1, classifier_epochs=2)])
    """

    def __init__(self, critic_epochs=1, classifier_epochs=1, warmup_critic_epochs=0):
        super().__init__()
        for name, value, low in (
            ("critic_epochs", critic_epochs, 1),
            ("classifier_epochs", classifier_epochs, 1),
            ("warmup_critic_epochs", warmup_critic_epochs, 0),
        ):
            if int(value) != value or int(value) < low:
                raise ValueError(f"Expected `{name}` to be an integer >= {low}. Received: {name}={value}")
        self.critic_epochs = int(critic_epochs)
        self.classifier_epochs = int(classifier_epochs)
        self.warmup_critic_epochs = int(warmup_critic_epochs)

    def phase_for_epoch(self, epoch):
        """"critic" or "classifier": what the schedule trains in epoch `epoch` (0-based)."""
        if epoch < self.warmup_critic_epochs:
            return "critic"
        position = (epoch - self.warmup_critic_epochs) % (self.critic_epochs + self.classifier_epochs)
        return "critic" if position < self.critic_epochs else "classifier"

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "set_phase"):
            raise ValueError(
                "Expected a model with critic phases (a MutualInformationTransferModel). "
                f"Received: {type(self.model).__name__}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_phase(self.phase_for_epoch(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["phase_critic"] = float(self.phase_for_epoch(epoch) == "critic")

    def on_train_end(self, logs=None):
        self.model.set_phase("alternate")
