"""Epoch checkpoints of the whole training state, for exact resume after a kill.

The state of these methods is more than weights: EMA covariances and adjoints, the
projection vector, critics, the critic optimizer, the TE ensemble, memory banks and
every seed generator (dropout, noise, marginal shuffles). `keras.Model.variables`
holds all of them (seed generators included); the optimizers' variables are added.

Each checkpoint is a folder `epoch-NNNN/` with `state.npz` (every variable, in the
model's order), and `meta.json` (epoch, the history so far, the variables' paths and
shapes, and the SHA-256 of `state.npz`). Folders are written under a temporary name and
renamed, so a kill leaves either the old or the new checkpoint, never half of one. A
checkpoint whose checksum or archive does not read is skipped with a warning for the
previous one; if none reads, the run stops with an error saying so.

Data order is the `Runner`'s business: it trains on one repeated stream of the dataset
and skips the batches of the finished epochs, so resumed epochs see the batches the
uninterrupted run saw.
"""

import glob
import hashlib
import json
import logging
import os
import shutil

import keras
import numpy as np

from tfinfo.callbacks.non_finite_guard import training_state_variables
from trainers.config import read_json_object
from trainers.workdir import write_error
from trainers.workdir import writing_folder

log = logging.getLogger("tfinfo")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CheckpointError(ValueError):
    """No usable checkpoint where some exist, or one from a different model."""


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state every epoch and restores the newest readable one.

    Args:
        directory: folder of this fit's checkpoints.
        keep: how many epoch checkpoints to keep.

    Use: `initial_epoch = ckpt.prepare()` before `fit(..., initial_epoch=...,
    callbacks=[ckpt])`; the state is restored in `on_train_begin`, when every variable
    exists; `ckpt.full_history(history)` prepends the epochs of earlier processes.
    """

    def __init__(self, directory, keep=2):
        super().__init__()
        if keep < 1:
            raise ValueError(f"Expected keep >= 1. Received: keep={keep}")
        self.directory = directory
        self.keep = keep
        self.initial_epoch = 0
        self.skipped = []
        self._loaded = None
        self._history = {}

    def _folders(self):
        return sorted(glob.glob(os.path.join(self.directory, "epoch-[0-9][0-9][0-9][0-9]")), reverse=True)

    def _read(self, folder):
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        path = os.path.join(folder, "state.npz")
        if sha256_file(path) != meta["sha256"]:
            raise OSError(f"checksum mismatch in {path}")
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[f"v{i}"] for i in range(len(meta["paths"]))]
        return meta, arrays

    def prepare(self):
        """Reads the newest readable checkpoint.

        Returns:
            The number of finished epochs (0 when there is no checkpoint).
        """
        folders = self._folders()
        for folder in folders:
            try:
                meta, arrays = self._read(folder)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
                log.warning("tfinfo: checkpoint %s is unreadable (%s); trying the previous one", folder, error)
                self.skipped.append(os.path.basename(folder))
                continue
            self._loaded = (folder, meta, arrays)
            self.initial_epoch = int(meta["epoch"])
            self._history = meta["history"]
            break
        else:
            if folders:
                raise CheckpointError(
                    f"Expected a readable checkpoint in {self.directory}. Received: {len(folders)} corrupt "
                    f"checkpoint(s) ({', '.join(os.path.basename(f) for f in folders)}). Delete that folder "
                    "to train this stage from its start."
                )
        return self.initial_epoch

    def on_train_begin(self, logs=None):
        if self._loaded is None:
            return
        folder, meta, arrays = self._loaded
        for attr in ("optimizer", "critic_optimizer"):
            optimizer = getattr(self.model, attr, None)
            if optimizer is not None and not optimizer.built:
                optimizer.build(self.model.trainable_variables)
        variables = training_state_variables(self.model)
        # Paths carry Keras's automatic name counters, which depend on what else the
        # process built: the structure is checked by count and shapes.
        shapes = [list(v.shape) for v in variables]
        if shapes != meta["shapes"]:
            raise CheckpointError(
                f"Expected the checkpoint {folder} to hold the state of this model ({len(shapes)} variables). "
                f"Received: {len(meta['paths'])} variables that do not match (another method or config wrote "
                "it?). Delete that folder, or use another workdir, to start this stage over."
            )
        for variable, value in zip(variables, arrays):
            variable.assign(value)
        log.info("tfinfo: resumed from %s (epoch %d)", folder, self.initial_epoch)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self._history.setdefault(key, []).append(float(value))
        self.save(epoch + 1)

    def save(self, epoch):
        """Writes `epoch-NNNN/` atomically and drops checkpoints beyond `keep`. A failed
        write (e.g. a full disk) leaves no temporary folder and raises a `WorkdirError`."""
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise write_error(self.directory, error) from None
        folder = os.path.join(self.directory, f"epoch-{epoch:04d}")
        with writing_folder(folder) as tmp:
            variables = training_state_variables(self.model)
            path = os.path.join(tmp, "state.npz")
            np.savez(path, **{f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
            meta = {
                "epoch": epoch,
                "history": self._history,
                "paths": [v.path for v in variables],
                "shapes": [list(v.shape) for v in variables],
                "sha256": sha256_file(path),
            }
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        for old in self._folders()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)

    def full_history(self, history):
        """The history of every epoch: the checkpoint's, which `on_epoch_end` extended."""
        return {k: list(v) for k, v in self._history.items()} if self._history else history


# Stage 1's result: `STAGE1/classifier.weights.h5` and `STAGE1/stage1.json` (its facts and
# the weights' SHA-256). A stage 1 whose checksum does not match is never reused.
STAGE1_WEIGHTS = "classifier.weights.h5"
STAGE1_INFO = "stage1.json"


def _stage1_problem(folder):
    """(info, None) for an intact stage-1 folder, else (None, what is wrong)."""
    try:
        info = read_json_object(os.path.join(folder, STAGE1_INFO), "the stage-1 facts")
        expected = info.get("sha256")
        if not expected:
            return None, "no checksum recorded"
        if sha256_file(os.path.join(folder, STAGE1_WEIGHTS)) != expected:
            return None, f"checksum mismatch in {os.path.join(folder, STAGE1_WEIGHTS)}"
    except (OSError, ValueError) as error:
        return None, str(error)
    return info, None


def load_stage1(classifier, folder):
    """Loads a finished stage 1 from `folder` into `classifier` and returns its facts;
    None when there is none, or (with a warning) when it is damaged: a file that does not
    match its checksum or does not load is never reused, stage 1 is trained again."""
    if not os.path.exists(folder):
        return None
    info, problem = _stage1_problem(folder)
    if problem is None:
        before = classifier.get_weights()
        try:
            classifier.load_weights(os.path.join(folder, STAGE1_WEIGHTS))
            return info
        except (OSError, ValueError) as error:
            classifier.set_weights(before)  # a partial load must not seed the retraining
            problem = f"{type(error).__name__}: {error}"
    log.warning("tfinfo: the stage 1 in %s is damaged (%s); training stage 1 again instead of reusing it",
                folder, problem)
    return None


def save_stage1(classifier, folder, info):
    """Writes the stage-1 weights, their checksum and `info` atomically: a half-written
    folder is never read. A damaged folder there is replaced; an intact one (another
    process finished the same stage 1 first) is kept."""
    with writing_folder(folder) as tmp:
        weights = os.path.join(tmp, STAGE1_WEIGHTS)
        classifier.save_weights(weights)
        with open(os.path.join(tmp, STAGE1_INFO), "w") as f:
            json.dump({**info, "sha256": sha256_file(weights)}, f, indent=2)
        if os.path.isdir(folder):
            if _stage1_problem(folder)[1] is None:
                shutil.rmtree(tmp)
                return
            shutil.rmtree(folder)
        os.replace(tmp, folder)
