"""The interface between a `RegularizedTransferModel` and one penalty term of its loss."""

import collections
import math
import numbers

import keras

# What a term returns: `value` is logged (nats, or the term's unit), `surrogate` is what
# the loss differentiates (equal to `value` for a plain estimate; a bound's training
# objective for the variational terms; a fast estimate for Lautum).
Penalty = collections.namedtuple("Penalty", ["value", "surrogate"])

# The inputs a term can ask the model for. Each is computed once per step, whatever the
# number of terms that use it.
INPUTS = (
    "x_source",  # the labeled source images
    "x_target",  # the unlabeled target images
    "source_logits",  # the classifier's logits on x_source (training mode)
    "source_features",  # the `feature_layer` output on x_source (training mode)
    "target_features",  # the `feature_layer` output on x_target (training mode)
    "jacobian_proxy",  # w_i = d(r . f(x_i)) / d x_i on x_target, r the term's projection
)


class PenaltyTerm:
    """One term of a `RegularizedTransferModel`'s loss: `loss += sign * weight * surrogate`.

    A subclass sets `name` (the logged name of its value), `sign` (+1 for a penalty the
    training lowers, -1 for an information the training raises, as Lautum's),
    `needs` (a tuple of names from `INPUTS`), and implements `penalty(inputs)`. It holds
    its Keras state in `regularizer` (a layer the model tracks and saves). Optional hooks:
    `build(model)` checks the classifier and builds the regularizer, `adapt(x)` computes
    target statistics, `ready()` says why it needs `adapt` before training, `before_step()` runs
    at the start of each train step, `logs()` gives extra logged scalars (their names in
    `extra_log_names`), and a term with a trained critic implements `critic_variables()`
    and `critic_loss(inputs)` (at most one such term per model).

    Every value a term returns is the global batch's under a `tf.distribute` strategy
    (the regularizers all-gather the replicas' inputs); the model divides the surrogate
    by the number of replicas, as Keras divides compiled losses.

    Args:
        regularizer: the Keras layer that computes the term.
        weight: lambda of the term (>= 0); the sign is the term's.

    Example:

    >>> class L2Features(PenaltyTerm):
    ...     name, needs = "l2", ("target_features",)
    ...     def penalty(self, inputs):
    ...         value = tf.reduce_mean(tf.square(inputs["target_features"]))
    ...         return Penalty(value, value)
    >>> model = RegularizedTransferModel(classifier, terms=[L2Features(None, weight=0.1)])

    Reference:
        Jakubovitz et al., seed 000, eq. (13) and (15).
    """

    name = "penalty"
    sign = 1.0
    needs = ()
    extra_log_names = ()
    proxy_training = True  # read by the model when the term needs "jacobian_proxy"

    def __init__(self, regularizer=None, weight=1.0):
        unknown = sorted(set(self.needs) - set(INPUTS))
        if unknown:
            raise ValueError(f"Expected `needs` to name inputs among {list(INPUTS)}. Received: {unknown}")
        self.regularizer = regularizer
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"Expected `weight` to be a finite number >= 0. Received: weight={weight!r}")
        self.weight = float(weight)

    @property
    def log_names(self):
        """The names this term logs: its value, then its extra scalars."""
        return (self.name,) + tuple(self.extra_log_names)

    def build(self, model):
        """Checks the model's classifier (e.g. its number of outputs) and builds the regularizer."""

    def adapt(self, x_unlabeled):
        """Target statistics computed once before training (default: none)."""

    def ready(self):
        """None when the term can train, else why it needs `adapt` first (raised by `fit`)."""
        return None

    def before_step(self):
        """Runs at the start of every train step (e.g. a fresh random projection)."""

    def penalty(self, inputs):
        """The term on a batch: a `Penalty(value, surrogate)` of float32 scalars."""
        raise NotImplementedError(f"{type(self).__name__} must implement `penalty(inputs)`")

    def logs(self):
        """Extra scalars to log after `penalty` (names in `extra_log_names`)."""
        return {}

    def critic_variables(self):
        """The variables of a critic trained by its own optimizer (default: none)."""
        return []

    def critic_loss(self, inputs):
        """The critic's training loss on a batch (the classifier's inputs held fixed)."""
        raise NotImplementedError(f"{type(self).__name__} has no critic")

    def get_config(self):
        regularizer = None if self.regularizer is None else keras.saving.serialize_keras_object(self.regularizer)
        return {"regularizer": regularizer, "weight": self.weight}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("regularizer") is not None:
            config["regularizer"] = keras.saving.deserialize_keras_object(config["regularizer"])
        return cls(**config)
