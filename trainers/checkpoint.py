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

log = logging.getLogger("tfinfo")


def _sha256(path):
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
        if _sha256(path) != meta["sha256"]:
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
        """Writes `epoch-NNNN/` atomically and drops checkpoints beyond `keep`."""
        os.makedirs(self.directory, exist_ok=True)
        folder = os.path.join(self.directory, f"epoch-{epoch:04d}")
        tmp = folder + f".tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        variables = training_state_variables(self.model)
        path = os.path.join(tmp, "state.npz")
        np.savez(path, **{f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
        meta = {
            "epoch": epoch,
            "history": self._history,
            "paths": [v.path for v in variables],
            "shapes": [list(v.shape) for v in variables],
            "sha256": _sha256(path),
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
