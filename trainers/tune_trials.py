"""What the trials of a `tfinfo-tune` search run: the validation split of the labeled
target images, one execution (stage 1, re-seed, stage 2, validation accuracy), and the
Keras Tuner tuner and oracles that drive them.

Keras Tuner (and TensorFlow) are imported only when `run_execution` runs or
`tuner_classes` is first called.
"""

import os
import time

import numpy as np

from trainers.tune_space import apply_hyperparameters
from trainers.tune_store import OBJECTIVE
from trainers.tune_store import write_json


def validation_split(y, num_classes, validation_fraction, seed):
    """Splits labeled images into a stage-2 training part and a validation part.

    Every class gets `round(validation_fraction * len(y)) // num_classes` validation
    images; the remainder goes one each to the first classes of a seeded class order.
    Every class keeps at least one training image.

    Args:
        y: integer labels in `0..num_classes-1` of the labeled target images.
        num_classes: number of classes.
        validation_fraction: fraction in (0, 1) of the images held out.
        seed: seed of the draw.

    Returns:
        `(train_indices, validation_indices)`: disjoint sorted int64 index arrays
        into `y` whose union is `range(len(y))`.

    Raises:
        ValueError: if the fraction is outside (0, 1), leaves a class without a
            validation image, or a class without a training image.
    """
    y = np.asarray(y).astype(np.int64).ravel()
    if isinstance(validation_fraction, bool) or not 0.0 < float(validation_fraction) < 1.0:
        raise ValueError(f"Expected validation_fraction in (0, 1). Received: validation_fraction={validation_fraction}")
    num_val = int(round(float(validation_fraction) * len(y)))
    if num_val < num_classes:
        raise ValueError(
            f"Expected validation_fraction * labeled >= num_classes ({num_classes}: one validation image per "
            f"class). Received: validation_fraction={validation_fraction}, labeled={len(y)} "
            f"({num_val} validation images)")
    rng = np.random.default_rng([int(seed), 20240])
    quota = np.full(num_classes, num_val // num_classes)
    quota[rng.permutation(num_classes)[: num_val % num_classes]] += 1
    validation = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        if len(members) <= quota[c]:
            raise ValueError(
                f"Expected more than {quota[c]} labeled images of class {c} (its validation share plus at least "
                f"one for training). Received: {len(members)} with validation_fraction={validation_fraction}, "
                f"labeled={len(y)}")
        validation.append(rng.choice(members, size=quota[c], replace=False))
    validation = np.sort(np.concatenate(validation)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(y)), validation).astype(np.int64)
    return train, validation


def run_execution(method, data, x_val, y_val, config, logdir=None, hparams=None, run_name=None):
    """Stage 1, re-seed, stage 2, then accuracy on the validation images.

    Args:
        method: a `trainers.methods.Method`.
        data: the `TransferData` whose labeled images are the stage-2 training part.
        x_val: validation images.
        y_val: their labels.
        config: the trial's `TransferConfig`.
        logdir: TensorBoard folder of this execution, or `None` for no logging.
        hparams: the trial's hyperparameter values, written to TensorBoard's HParams.
        run_name: the HParams session name (e.g. `trial_3/execution0`).

    Returns:
        A dict with `val_accuracy` and the two stages' histories and wall times.
    """
    import keras
    import keras_tuner

    from trainers.pipeline import reseed_stage2
    from trainers.pipeline import config_classifier

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    classifier = config_classifier(config, data)

    def tensorboard(stage):
        if logdir is None:
            return []
        return [keras.callbacks.TensorBoard(os.path.join(logdir, stage), write_graph=False, profile_batch=0)]

    start = time.perf_counter()
    pretrain_history = method.pretrain(classifier, data, config, callbacks=tensorboard("pretrain"))
    pretrain_s = time.perf_counter() - start
    reseed_stage2(classifier, config.seed + 1)
    start = time.perf_counter()
    finetune_history = method.finetune(classifier, data, config, callbacks=tensorboard("finetune"))
    finetune_s = time.perf_counter() - start
    # Eager calls: the validation split is small, and tracing `predict` costs more than it.
    batch = max(config.batch_size, 256)
    logits = np.concatenate([
        keras.ops.convert_to_numpy(classifier(x_val[i:i + batch].astype(np.float32), training=False))
        for i in range(0, len(x_val), batch)
    ])
    bad = int(np.size(logits) - np.count_nonzero(np.isfinite(logits)))
    if bad:
        raise keras_tuner.errors.FailedTrialError(
            f"Expected finite logits on the validation images. Received: {bad} non-finite values (training diverged)")
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_val))
    if logdir is not None:
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hparams_api

        with tf.summary.create_file_writer(logdir).as_default():
            if hparams:
                hparams_api.hparams(hparams, trial_id=run_name)
            tf.summary.scalar(OBJECTIVE, accuracy, step=0)
    return {
        OBJECTIVE: accuracy,
        "seed": config.seed,
        "wall_time_s": {"pretrain": pretrain_s, "finetune": finetune_s},
        "history": {"pretrain": pretrain_history, "finetune": finetune_history},
    }


_CLASSES = {}


def tuner_classes():
    """`(Tuner subclass, {tuner name: oracle subclass})`, built on first use so that
    importing this module does not import Keras Tuner (and TensorFlow)."""
    if _CLASSES:
        return _CLASSES["tuner"], _CLASSES["oracles"]
    import keras_tuner

    class TransferTuner(keras_tuner.Tuner):
        """Runs one two-stage transfer per execution and reports its validation accuracy.

        `run_trial` is overridden, as Keras Tuner documents for tuning anything: no
        hypermodel; the hyperparameters are the oracle's, applied to the base config.

        Args:
            oracle: a Keras Tuner oracle whose space holds `TransferConfig` fields.
            base_config: the `TransferConfig` the trials start from.
            space: dict `name -> SearchDimension`.
            method: the `trainers.methods.Method`.
            data: the `TransferData` of stage 2's training part.
            x_val: validation images.
            y_val: their labels.
            tensorboard: whether to log TensorBoard scalars under each trial.
            progress: optional callable given one line of text per finished trial.
            execute: the function running one execution, called as `run_execution`
                is (`run_tune` passes the one `trainers.tune_pipeline` holds).
            **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
                `executions_per_trial`, ...).
        """

        def __init__(self, oracle, *, base_config, space, method, data, x_val, y_val, tensorboard=True,
                     progress=None, execute=run_execution, **kwargs):
            super().__init__(oracle, **kwargs)
            self.base_config = base_config
            self.space = space
            self.method = method
            self.data = data
            self.x_val = x_val
            self.y_val = y_val
            self.tensorboard = tensorboard
            self.progress = progress
            self.execute = execute

        def run_trial(self, trial, *args, **kwargs):
            values = dict(trial.hyperparameters.values)
            config = apply_hyperparameters(self.base_config, values, self.space)
            trial_dir = self.get_trial_dir(trial.trial_id)
            executions = []
            for execution in range(self.executions_per_trial):
                run_config = config.replace(seed=config.seed + execution)
                logdir = os.path.join(trial_dir, "logs", f"execution{execution}") if self.tensorboard else None
                result = self.execute(self.method, self.data, self.x_val, self.y_val, run_config, logdir,
                                      hparams=values, run_name=f"trial_{trial.trial_id}/execution{execution}")
                executions.append(result)
                write_json(os.path.join(trial_dir, "executions.json"), executions)
            return [{OBJECTIVE: r[OBJECTIVE]} for r in executions]

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            if self.progress is not None:
                self.progress(_trial_line(self.oracle.get_trial(trial.trial_id)))

    def base_first(oracle_class):
        class BaseFirst(oracle_class):
            """The first trial evaluates the defaults: the base config's values."""

            def populate_space(self, trial_id):
                if not self.trials:
                    values = {hp.name: hp.default for hp in self.hyperparameters.space}
                    return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": values}
                return super().populate_space(trial_id)

        BaseFirst.__name__ = f"BaseFirst{oracle_class.__name__}"
        return BaseFirst

    oracles = {
        "random": (keras_tuner.oracles.RandomSearchOracle, base_first(keras_tuner.oracles.RandomSearchOracle)),
        "bayesian": (keras_tuner.oracles.BayesianOptimizationOracle,
                     base_first(keras_tuner.oracles.BayesianOptimizationOracle)),
    }
    _CLASSES.update(tuner=TransferTuner, oracles=oracles)
    return TransferTuner, oracles


def _trial_line(trial):
    values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in trial.hyperparameters.values.items())
    if trial.status == "COMPLETED" and trial.score is not None:
        return f"trial {trial.trial_id}: {trial.status} {OBJECTIVE}={trial.score:.4f} {values}"
    reason = trial.message.strip().splitlines()[-1] if trial.message else ""
    return f"trial {trial.trial_id}: {trial.status} {values} ({reason})"

