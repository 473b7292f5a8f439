"""How the pipeline's fits run: checkpoints and exact resume, TensorBoard, strategy route.

Every `fit` of a method goes through a `Runner`. With a workdir it

- writes TensorBoard logs to `WORKDIR/tensorboard/<stage>/<name>` (losses, regularizer
  values, learning rates, the information quantities the models log);
- checkpoints the whole training state at the end of every epoch into
  `WORKDIR/checkpoints/<stage>/<name>/epoch-NNNN/` and, when the same command runs again,
  resumes from the newest readable checkpoint (see `TrainingCheckpoint`);
- trains through `trainers.distributed.fit`, which takes a custom loop under
  `MultiWorkerMirroredStrategy` (Keras's `fit` fails there) and `model.fit` otherwise.

Without a workdir it is `model.fit` with the given callbacks.
"""

import os
import signal

import keras

from tfinfo.callbacks import NonFiniteGuard
from trainers.checkpoint import TrainingCheckpoint


def history_dict(history):
    """Per-epoch floats of a Keras `History` (or of a plain dict of lists)."""
    values = history.history if hasattr(history, "history") else history
    return {k: [float(v) for v in vs] for k, vs in values.items()}


class Runner:
    """Runs the fits of one stage of the pipeline.

    Args:
        workdir: the run's folder, or `None` for plain `model.fit`.
        stage: `"stage1"` or `"stage2"`: names the TensorBoard and checkpoint folders.
        callbacks: extra callbacks of every fit (e.g. the transferability probe).
        verbose: Keras verbosity.
        tensorboard: write TensorBoard logs (only with a workdir).
        resume: checkpoint every epoch and resume from the checkpoints (only with a workdir).
        keep_checkpoints: how many epoch checkpoints to keep (2: the newest can be
            corrupt and the previous one is still there).
        nonfinite_policy: `"stop"` or `"skip"` (see `tfinfo.callbacks.NonFiniteGuard`).
    """

    def __init__(self, workdir=None, stage="stage1", callbacks=(), verbose=0, tensorboard=True, resume=True,
                 keep_checkpoints=2, nonfinite_policy="stop"):
        self.workdir = workdir
        self.stage = stage
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.tensorboard = tensorboard
        self.resume = resume
        self.keep_checkpoints = keep_checkpoints
        self.nonfinite_policy = nonfinite_policy
        self.resumed_from = {}
        self.skipped = {}

    def fit(self, model, dataset, epochs, callbacks=(), name="fit"):
        """Fits `model` on `dataset` for `epochs` (resuming if a checkpoint exists).

        Returns:
            The per-epoch history of all `epochs`, including those of an earlier,
            interrupted process.
        """
        from trainers.distributed import fit as distributed_fit

        guard = NonFiniteGuard(self.nonfinite_policy)
        callbacks = list(callbacks) + self.callbacks + [guard]
        checkpoint = None
        initial_epoch = 0
        if self.workdir is not None:
            if self.resume:
                checkpoint = TrainingCheckpoint(
                    os.path.join(self.workdir, "checkpoints", self.stage, name), keep=self.keep_checkpoints
                )
                initial_epoch = checkpoint.prepare()
                if initial_epoch:
                    self.resumed_from[name] = initial_epoch
                callbacks.append(checkpoint)
            _maybe_inject_nan(model)
            faults = os.environ.get(FAULT_INJECTION_ENV)
            if faults:
                callbacks.append(_FaultInjection(f"{self.stage}/{name}", faults, os.path.join(self.workdir, "faults")))
            if self.tensorboard:
                callbacks.append(keras.callbacks.TensorBoard(
                    os.path.join(self.workdir, "tensorboard", self.stage, name), write_graph=False
                ))
        # One repeated stream: epoch e trains on batches [e * steps, (e + 1) * steps) of it
        # whatever the process, so a resumed run skips exactly the finished epochs'
        # batches (reshuffles included). Keras's own epoch iterators would not do: it
        # creates iterators besides the epoch's, each advancing the shuffle seeds.
        steps = int(dataset.cardinality())
        steps_per_epoch = None
        if steps > 0:
            dataset = dataset.repeat().skip(initial_epoch * steps)
            steps_per_epoch = steps
        history = history_dict(distributed_fit(model, dataset, epochs, callbacks=callbacks, verbose=self.verbose,
                                               initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch))
        if checkpoint is not None:
            history = checkpoint.full_history(history)
        if self.nonfinite_policy == "skip":  # the epochs of earlier processes included
            self.skipped[name] = {"steps": int(sum(history.get("skipped_steps", []))), "terms": guard.skipped_terms,
                                  "events": guard.events}
        return history


FAULT_INJECTION_ENV = "TFINFO_FAULT_INJECTION"


class _FaultInjection(keras.callbacks.Callback):
    """Test hook: SIGKILLs this process at the points named in `TFINFO_FAULT_INJECTION`.

    The variable is a comma list of `STAGE/NAME:EPOCH` (after that epoch's checkpoint)
    or `STAGE/NAME:EPOCH:BATCH` (after that batch, mid-epoch), e.g.
    `stage1/pretrain:1:2,stage2/finetune:0`. Epochs and batches count from 0. Each point
    fires once: a marker file in `marker_dir` records it, so the rerun passes it.
    """

    def __init__(self, where, spec, marker_dir):
        super().__init__()
        self.marker_dir = marker_dir
        self.where = where
        self.points = []
        for item in spec.split(","):
            parts = item.strip().split(":")
            if parts[0] == where:
                self.points.append(tuple(int(p) for p in parts[1:]))
        self.epoch = 0

    def _maybe_kill(self, point):
        if point not in self.points:
            return
        marker = os.path.join(self.marker_dir, self.where.replace("/", "_") + "-" + "-".join(map(str, point)))
        if os.path.exists(marker):
            return
        os.makedirs(self.marker_dir, exist_ok=True)
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._maybe_kill((self.epoch, batch))

    def on_epoch_end(self, epoch, logs=None):
        self._maybe_kill((epoch,))


NAN_INJECTION_ENV = "TFINFO_INJECT_NAN"
def _maybe_inject_nan(model):
    """Test hook: `TFINFO_INJECT_NAN=TERM:CALL` (TERM a penalty term's name: lautum, mi,
    mmd) makes that term of `model` NaN at its CALL-th training step
    (`inject_nan_into_term`)."""
    spec = os.environ.get(NAN_INJECTION_ENV)
    if not spec or getattr(model, "_tfinfo_nan_injected", False):
        return
    from tfinfo.regularizers.nan_injection import inject_nan_into_term

    name, _, at_call = spec.partition(":")
    for term in getattr(model, "terms", ()):
        if term.name == name:
            inject_nan_into_term(term, int(at_call))
            model._tfinfo_nan_injected = True
            return
