"""The method registry: each method says how stage 1 (pre-transfer) and stage 2 train.

A new method is a subclass of `Method` decorated with `@register_method`; the CLI and
the comparison tools find it by name.
"""

import dataclasses

import keras
import numpy as np

from tfinfo.callbacks import CriticSchedule
from tfinfo.callbacks import LautumProbe
from tfinfo.callbacks import ProjectionResampler
from tfinfo.callbacks.temporal_ensembling_update import TemporalEnsemblingUpdate
from tfinfo.critics.marginals import MIN_BATCH_SIZE
from tfinfo.critics import ConcatCritic
from tfinfo.critics import SeparableCritic
from tfinfo.data import labeled_dataset
from tfinfo.data import transfer_dataset
from tfinfo.data.indexed import indexed_dataset
from tfinfo.data.temporal_ensembling import temporal_ensembling_dataset
from tfinfo.models import LautumTransferModel
from tfinfo.models import MMDTransferModel
from tfinfo.models import MutualInformationTransferModel
from tfinfo.models.information_aggregation_model import InformationAggregationModel
from tfinfo.models.information_revitalization_model import InformationRevitalizationModel
from tfinfo.models.temporal_ensembling_model import TemporalEnsemblingModel
from tfinfo.regularizers import LautumRegularizer
from tfinfo.regularizers import MMDRegularizer
from tfinfo.regularizers import MutualInformationRegularizer
from trainers.config import CRITIC_SCHEDULES
from trainers.runner import Runner

METHODS = {}


def register_method(cls):
    """Class decorator adding a `Method` subclass to the registry under `cls.name`."""
    METHODS[cls.name] = cls
    return cls


def get_method(name):
    if name not in METHODS:
        raise ValueError(f"Expected --method to be one of {sorted(METHODS)}. Received: method={name!r}")
    return METHODS[name]()


@dataclasses.dataclass
class TransferData:
    """Arrays of one transfer problem, validated and brought to a common geometry."""

    x_source: np.ndarray
    y_source: np.ndarray
    x_source_test: np.ndarray
    y_source_test: np.ndarray
    x_labeled: np.ndarray
    y_labeled: np.ndarray
    x_unlabeled: np.ndarray
    x_target_train: np.ndarray
    x_target_test: np.ndarray
    y_target_test: np.ndarray
    num_classes: int
    skipped_files: dict = dataclasses.field(default_factory=dict)


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _runner(runner, callbacks, config):
    """The given `Runner`, or plain `fit` with `callbacks` (library use, tests)."""
    return runner if runner is not None else Runner(callbacks=callbacks, verbose=config.verbose)


class Method:
    """Base class: plain CE in both stages (standard transfer).

    `stage1` names the pre-transfer stage: methods with the same `stage1` (e.g.
    `standard` and `te`) pre-train identically, so `tfinfo-compare` runs it once per
    seed and reuses it. Stage 1 reads the target's training images without their
    labels (`data.x_target_train`), so it does not depend on the label budget.
    """

    name = None
    stage1 = "standard"

    def finetune_epochs_field(self, config):
        """The config field that sets the number of stage-2 epochs (named in warnings)."""
        return "finetune_epochs"

    def check_data(self, data, config):
        """Refuses, with a `ValueError` naming the field, a config this method cannot
        train on `data` (a `TransferData`). Called after the data is loaded and before
        anything is written, so a run that would fail in its first step never starts.
        Subclasses extend it; the base needs nothing beyond the config's own checks."""

    def pretrain(self, classifier, data, config, callbacks=(), runner=None):
        classifier.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate), loss=_loss(), metrics=["accuracy"]
        )
        train = labeled_dataset(
            data.x_source, data.y_source, batch_size=config.batch_size, shuffle=True, seed=config.seed
        )
        return _runner(runner, callbacks, config).fit(classifier, train, config.pretrain_epochs, name="pretrain")

    def finetune(self, classifier, data, config, callbacks=(), runner=None):
        classifier.compile(
            optimizer=keras.optimizers.Adam(config.finetune_learning_rate),
            loss=_loss(),
            metrics=["accuracy"],
        )
        train = labeled_dataset(
            data.x_labeled, data.y_labeled, batch_size=config.batch_size, shuffle=True, seed=config.seed
        )
        return _runner(runner, callbacks, config).fit(classifier, train, config.finetune_epochs, name="finetune")


@register_method
class Standard(Method):
    """Standard transfer: CE on source, then CE on the labeled target images."""

    name = "standard"


@register_method
class Lautum(Method):
    """Stage 1 with `CE(source) - lambda * L(w; x_target)` on unlabeled target batches."""

    name = "lautum"
    stage1 = "lautum"

    def build_model(self, classifier, data, config):
        regularizer = _lautum_regularizer(data, config)
        model = LautumTransferModel(
            classifier,
            regularizer,
            lautum_weight=config.lautum_weight,
            resample_projection=config.resample_projection,
            proxy_training=config.lautum_proxy == "training",
        )
        model.adapt(data.x_target_train)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=_loss())
        return model

    def callbacks(self, config):
        return [ProjectionResampler()] if config.resample_projection == "epoch" else []

    def check_data(self, data, config):
        """Stage 1 pairs source batches with unlabeled target batches and drops the last
        incomplete source batch; the penalties need two samples per batch (covariances,
        marginal pairs)."""
        super().check_data(data, config)
        if config.batch_size < MIN_BATCH_SIZE:
            raise ValueError(f"Expected `batch_size` >= {MIN_BATCH_SIZE} for method {config.method!r} (its "
                             f"stage-1 penalty needs two samples per batch). Received: batch_size={config.batch_size}")
        if len(data.x_source) < config.batch_size:
            raise ValueError(f"Expected `batch_size` <= the {len(data.x_source)} source training images (method "
                             f"{config.method!r} drops the last incomplete batch, so a larger batch leaves no step). "
                             f"Received: batch_size={config.batch_size}")
        if len(data.x_target_train) < MIN_BATCH_SIZE:
            raise ValueError(f"Expected at least {MIN_BATCH_SIZE} target training images for method "
                             f"{config.method!r}. Received: {len(data.x_target_train)}")

    def pretrain(self, classifier, data, config, callbacks=(), runner=None):
        model = self.build_model(classifier, data, config)
        train = transfer_dataset(
            data.x_source,
            data.y_source,
            data.x_target_train,
            batch_size=config.batch_size,
            seed=config.seed,
        )
        regularizer = getattr(model, "lautum_regularizer", None) or model.regularizer
        extra = list(self.callbacks(config))
        if isinstance(regularizer, LautumRegularizer) and config.lautum_probe:
            # L from scratch on a fixed subset of the unlabeled target images, with the
            # current weights, beside the moving training value (history, TensorBoard).
            x = data.x_target_train
            keep = np.random.default_rng(config.seed + 1).permutation(len(x))[: config.lautum_probe]
            extra.append(LautumProbe(x[np.sort(keep)], seed=config.seed))
        out = _runner(runner, callbacks, config).fit(
            model, train, config.pretrain_epochs, callbacks=extra, name="pretrain"
        )
        if isinstance(regularizer, LautumRegularizer):
            out["nonfinite_count"] = int(regularizer.nonfinite_count.numpy())
            out["final_max_canonical_correlation"] = float(regularizer.max_canonical_correlation.numpy())
        return out


def _lautum_regularizer(data, config):
    return LautumRegularizer(
        num_outputs=data.num_classes,
        ema_decay=config.ema_decay,
        mode=config.lautum_mode,
        refresh_every=config.refresh_every,
        precision=config.lautum_precision,
        projection_dim=config.projection_dim,
        max_correlation=config.max_correlation,
        seed=config.seed,
        input_shape_hint=data.x_source.shape[1:],
    )


def _critic(config):
    if config.critic == "separable":
        return SeparableCritic()
    return ConcatCritic(config.critic)


@register_method
class MutualInformation(Lautum):
    """Stage 1 with `CE(source) + lambda * I(x_target; z_target)`, a MINE-style critic
    trained alternately (seed 000, section 4.2)."""

    name = "mi"
    stage1 = "mi"
    uses_lautum = False

    def build_model(self, classifier, data, config):
        if config.critic_schedule not in CRITIC_SCHEDULES:
            raise ValueError(
                f"Expected `critic_schedule` to be one of {CRITIC_SCHEDULES}. "
                f"Received: critic_schedule={config.critic_schedule!r}"
            )
        marginal = "all_pairs" if config.mi_estimator == "infonce" else "shuffle"
        regularizer = MutualInformationRegularizer(
            _critic(config),
            estimator=config.mi_estimator,
            tau=config.mi_tau,
            smile_gradient=config.smile_gradient,
            marginal=marginal,
            seed=config.seed,
        )
        model = MutualInformationTransferModel(
            classifier,
            regularizer,
            mi_weight=config.mi_weight,
            critic_steps=config.critic_steps,
            lautum_regularizer=_lautum_regularizer(data, config) if self.uses_lautum else None,
            lautum_weight=config.lautum_weight if self.uses_lautum else 0.0,
            resample_projection=config.resample_projection,
            proxy_training=config.lautum_proxy == "training",
        )
        model.adapt(data.x_target_train)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            critic_optimizer=keras.optimizers.Adam(config.critic_learning_rate),
            loss=_loss(),
        )
        return model

    def callbacks(self, config):
        extra = super().callbacks(config) if self.uses_lautum else []
        if config.critic_schedule == "epochs":
            extra.append(CriticSchedule(config.critic_epochs, config.classifier_epochs))
        return extra


@register_method
class LautumMutualInformation(MutualInformation):
    """Lautum+MI: both regularizers in the same pre-transfer stage (seed 000, 5.1 item 7)."""

    name = "lautum_mi"
    stage1 = "lautum_mi"
    uses_lautum = True



class _TemporalEnsemblingFinetune:
    """Stage 2 by Temporal Ensembling on the labeled + unlabeled target images."""

    def finetune_epochs_field(self, config):
        return "finetune_epochs" if config.te_epochs is None else "te_epochs"

    def finetune(self, classifier, data, config, callbacks=(), runner=None):
        x_unlabeled = data.x_unlabeled
        if config.te_unlabeled is not None and config.te_unlabeled < len(x_unlabeled):
            if config.te_unlabeled < 0:
                raise ValueError(f"Expected te_unlabeled >= 0 or None. Received: te_unlabeled={config.te_unlabeled}")
            keep = np.random.default_rng(config.seed).permutation(len(x_unlabeled))[: config.te_unlabeled]
            x_unlabeled = x_unlabeled[np.sort(keep)]
        train, num_examples = temporal_ensembling_dataset(
            data.x_labeled, data.y_labeled, x_unlabeled, batch_size=config.batch_size, seed=config.seed
        )
        model = TemporalEnsemblingModel(
            classifier,
            num_examples=num_examples,
            num_labeled=len(data.x_labeled),
            ensemble_momentum=config.te_momentum,
            max_unsupervised_weight=config.te_max_weight,
            rampup_epochs=config.te_rampup_epochs,
        )
        model.compile(optimizer=keras.optimizers.Adam(config.finetune_learning_rate), loss=_loss())
        epochs = getattr(config, self.finetune_epochs_field(config))
        return _runner(runner, callbacks, config).fit(
            model, train, epochs, callbacks=[TemporalEnsemblingUpdate()], name="temporal_ensembling"
        )


@register_method
class TemporalEnsembling(_TemporalEnsemblingFinetune, Method):
    """Standard CE pre-training, then Temporal Ensembling on the target (Laine & Aila)."""

    name = "te"


@register_method
class LautumTemporalEnsembling(_TemporalEnsemblingFinetune, Lautum):
    """Lautum pre-training, then Temporal Ensembling on the target (seed 000, 5.1)."""

    name = "lautum_te"



@register_method
class ContrastiveTransfer(Method):
    """CTC (seed 002): information aggregation, then revitalization, on the source set;
    then the same fine-tuning as standard transfer. Uses no unlabeled target images."""

    name = "ctc"
    stage1 = "ctc"

    def pretrain(self, classifier, data, config, callbacks=(), runner=None):
        aggregation = InformationAggregationModel(
            classifier, num_examples=len(data.x_source), alpha=config.ctc_alpha, seed=config.seed
        )
        aggregation.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=_loss())
        train = indexed_dataset(data.x_source, data.y_source, batch_size=config.batch_size, seed=config.seed)
        runner = _runner(runner, callbacks, config)
        first = runner.fit(aggregation, train, config.pretrain_epochs, name="aggregation")
        revitalization = InformationRevitalizationModel(classifier, aggregation, beta=config.ctc_beta)
        revitalization.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=_loss())
        epochs = config.ctc_revitalization_epochs
        if epochs is None:
            epochs = max(1, config.pretrain_epochs // 2)
        second = runner.fit(revitalization, train, epochs, name="revitalization")
        return {"aggregation": first, "revitalization": second}


@register_method
class MultiKernelMMD(Lautum):
    """Stage 1 with `CE(source) + lambda * MMD^2(z_source, z_target)`, 19 Gaussian
    kernels (Long et al.; seed 000, 5.1), then standard fine-tuning."""

    name = "mmd"
    stage1 = "mmd"

    def build_model(self, classifier, data, config):
        model = MMDTransferModel(classifier, MMDRegularizer(), mmd_weight=config.mmd_weight)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=_loss())
        return model

    def callbacks(self, config):
        return []
