"""Pre-transfer training with MI regularization: `CE(source) + lambda * I(x_target; z_target)`."""

import keras

from tfinfo.models.regularized_transfer_model import RegularizedTransferModel
from tfinfo.penalties.lautum_penalty import RESAMPLE_PROJECTION
from tfinfo.penalties.lautum_penalty import LautumPenalty
from tfinfo.penalties.mutual_information_penalty import MutualInformationPenalty
from tfinfo.regularizers.lautum import LautumRegularizer


@keras.saving.register_keras_serializable(package="tfinfo")
class MutualInformationTransferModel(RegularizedTransferModel):
    """Wraps a classifier; `fit` trains it on source labels while lowering `I(x_t; z_t)`.

    A `RegularizedTransferModel` with a `MutualInformationPenalty` (and, with a
    `lautum_regularizer`, a `LautumPenalty`). Each training batch is `((x_source, x_target), y_source)`. `z_t` is the output of
    the classifier's layer `feature_layer` (the penultimate features) on the unlabeled
    target images, and `I(x_t; z_t)` is estimated by the critic of a
    `MutualInformationRegularizer`. The loss of the classifier step is
    `CE(y_source, f(x_source)) + mi_weight * I(x_t; z_t)` (and, with a
    `lautum_regularizer`, `- lautum_weight * L(w; x_t)` as well: seed 000's Lautum+MI).

    The critic has its own optimizer (`compile(critic_optimizer=...)`) on its own
    variables, and the classifier step holds it fixed. Two alternation schedules:
    `critic_steps` critic updates inside every `train_step` before the classifier update
    (seed 003; each on a fresh marginal shuffle of the batch's features), or whole epochs
    of one or the other (seed 000: "alternately"), switched by the `CriticSchedule`
    callback through `set_phase`. `call` is the classifier's, so `predict`, `evaluate`
    and `export` serve the classifier alone.

    Logged per epoch (means): `loss`, `ce`, `mi` (the bound's value, nats),
    `critic_loss` (minus the critic's training objective), `accuracy` (source batch);
    with Lautum also `lautum`, `bound_active`, `shrinkage`.

    The phase is read when the step is traced: `set_phase` (and `fit`, for a phase
    restored from a checkpoint) rebuilds the train function when it changes, because
    under a distribution strategy optimizer updates synchronize the replicas and cannot
    sit inside a graph conditional.

    Under a `tf.distribute` strategy the regularizers score the global batch (the
    replicas' inputs and features are all-gathered, the critic's marginal shuffle is a
    permutation of the global batch drawn alike on every replica, each replica scores its
    own rows), so the bound, MINE's moving average and the Lautum state are the global
    batch's; the MI and Lautum terms, the critic's loss and a plain CE are divided by the
    number of replicas (a compiled loss already is), so each update, of the classifier
    and of the critic, is the single-device update on the global batch. Under a mixed
    precision policy the classifier and the critic compute in half precision, the
    regularizers' statistics and bounds in float32; under `mixed_float16` both losses
    are scaled (`compile` wraps the critic optimizer in a `LossScaleOptimizer` too, as
    Keras wraps `optimizer`). A train step compiles with XLA
    (`compile(jit_compile=True)`) and draws the same shuffles as in graph mode.

    Args:
        classifier: a functional Keras model from images to logits with a layer named
            `feature_layer`.
        regularizer: a `MutualInformationRegularizer` (default: SMILE, tau 5, concat
            critic "small").
        mi_weight: lambda of the MI term.
        critic_steps: critic updates per `train_step` in the "alternate" phase (>= 0).
        feature_layer: name of the layer whose output is `z`.
        lautum_regularizer: optional `LautumRegularizer` for Lautum+MI.
        lautum_weight: lambda of the Lautum term.
        resample_projection: Lautum's projection resampling, "epoch" or "step".
        proxy_training: the classifier's mode (dropout, input noise) for the Lautum
            Jacobian proxy. True: the proxy comes from the target forward pass the MI
            term uses (training mode); False: from a second, inference-mode pass.

    Call arguments:
        inputs: images for the classifier, or a training pair `(x_source, x_target)`,
            for which the source logits are returned (Keras builds compiled losses
            this way under a distribution strategy).
        training: passed to the classifier.

    Example:

    >>> model = MutualInformationTransferModel(classifier, mi_weight=0.1, critic_steps=1)
    >>> model.adapt(x_unlabeled)
    >>> model.compile(optimizer="adam", critic_optimizer=keras.optimizers.Adam(1e-4),
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model.fit(transfer_dataset(...), epochs=5)

    Reference:
        Jakubovitz et al., seed 000, eq. (15)-(16) and section 5.1.
    """

    nested_config_keys = ("classifier", "regularizer", "lautum_regularizer")

    def __init__(
        self,
        classifier,
        regularizer=None,
        mi_weight=1.0,
        critic_steps=1,
        feature_layer="features",
        lautum_regularizer=None,
        lautum_weight=0.0,
        resample_projection="epoch",
        proxy_training=True,
        **kwargs,
    ):
        if resample_projection not in RESAMPLE_PROJECTION:
            raise ValueError(
                "Expected `resample_projection` to be 'epoch' or 'step'. "
                f"Received: resample_projection={resample_projection!r}"
            )
        terms = [MutualInformationPenalty(regularizer, mi_weight, critic_steps)]
        if lautum_regularizer is not None:
            if not isinstance(lautum_regularizer, LautumRegularizer):
                raise ValueError(
                    "Expected `lautum_regularizer` to be a LautumRegularizer or None. "
                    f"Received: {type(lautum_regularizer).__name__}"
                )
            terms.append(LautumPenalty(lautum_regularizer, lautum_weight, resample_projection, proxy_training))
        super().__init__(classifier, terms=terms, feature_layer=feature_layer, **kwargs)
        self.regularizer = terms[0].regularizer
        self.lautum_regularizer = lautum_regularizer
        # Without a Lautum term these are kept for `get_config` only.
        self._lautum_arguments = {"weight": float(lautum_weight), "resample_projection": resample_projection,
                                  "proxy_training": bool(proxy_training)}

    def _lautum_argument(self, name):
        terms = self.terms[1:]
        return getattr(terms[0], name) if terms else self._lautum_arguments[name]

    @property
    def mi_weight(self):
        return self.terms[0].weight

    @property
    def lautum_weight(self):
        return self._lautum_argument("weight")

    @property
    def resample_projection(self):
        return self._lautum_argument("resample_projection")

    @property
    def proxy_training(self):
        return self._lautum_argument("proxy_training")

    def get_config(self):
        return {
            **self.base_config(),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "regularizer": keras.saving.serialize_keras_object(self.regularizer),
            "mi_weight": self.mi_weight,
            "critic_steps": self.critic_steps,
            "feature_layer": self.feature_layer,
            "lautum_regularizer": (
                None
                if self.lautum_regularizer is None
                else keras.saving.serialize_keras_object(self.lautum_regularizer)
            ),
            "lautum_weight": self.lautum_weight,
            "resample_projection": self.resample_projection,
            "proxy_training": self.proxy_training,
        }
