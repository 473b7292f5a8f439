"""The files of a `tfinfo-tune` directory: the search spec a rerun must match to resume,
the JSON writer of the results and the best config, and the per-trial records.

Nothing here imports TensorFlow or Keras Tuner: the trials passed to `trial_record` are
Keras Tuner's, read through their attributes only.
"""

import json
import os
import shutil

import numpy as np

# The metric each trial reports and the oracle maximizes.
OBJECTIVE = "val_accuracy"
SPEC_FILE = "tune_spec.json"
RESULTS_FILE = "tune_results.json"
BEST_CONFIG_FILE = "best_config.json"


def write_json(path, payload):
    """Writes `payload` to `path` as indented JSON (numpy numbers and arrays as JSON
    numbers and lists), through a temporary file moved into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Expected JSON-serializable values. Received: {type(value).__name__}")


def search_spec(base_config, tuner, validation_fraction, space, executions_per_trial, base_first,
                num_initial_points):
    """What a directory's search is: a rerun must match it to resume."""
    config = base_config.identity()  # display and cache settings do not make another search
    return {
        "tuner": tuner,
        "validation_fraction": float(validation_fraction),
        "executions_per_trial": int(executions_per_trial),
        "base_first": bool(base_first),
        "num_initial_points": num_initial_points,
        "search_space": {name: dim.spec() for name, dim in space.items()},
        "base_config": config,
    }


def check_directory(directory, spec, overwrite):
    """Refuses a directory holding another search (read-only: nothing is written yet)."""
    spec_path = os.path.join(directory, SPEC_FILE)
    looks_tuned = os.path.isfile(spec_path) or os.path.isfile(os.path.join(directory, "oracle.json"))
    if overwrite:
        if os.path.isdir(directory) and os.listdir(directory) and not looks_tuned:
            raise ValueError("Expected `directory` to be empty or an earlier tfinfo-tune directory when overwriting. "
                             f"Received: directory={directory!r} holding other files")
        return
    if os.path.isfile(spec_path):
        with open(spec_path) as f:
            earlier = json.load(f)
        now = json.loads(json.dumps(spec, default=_json_default))
        if earlier != now:
            diff = sorted(k for k in set(earlier) | set(now) if earlier.get(k) != now.get(k))
            if "base_config" in diff:
                old, new = earlier.get("base_config") or {}, now["base_config"]
                diff.remove("base_config")
                diff += [f"base_config.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise ValueError(
                f"Expected the same search as the one in {directory!r} to resume it (or overwrite=True, or "
                f"another directory). Received: differences in {diff}")
    elif looks_tuned:
        raise ValueError(f"Expected a tfinfo-tune directory (with {SPEC_FILE}) to resume. Received: directory="
                         f"{directory!r} holding a Keras Tuner project without it")


def prepare_directory(directory, spec, overwrite):
    """Deletes an earlier search when overwriting, then records `spec`."""
    if overwrite and os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, SPEC_FILE), spec)


def trial_record(trial, trial_dir):
    """The record of a Keras Tuner `trial` in the results: its status, hyperparameters,
    objective, the executions of `trial_dir/executions.json` (without histories) and the
    last line of its failure message."""
    executions = None
    path = os.path.join(trial_dir, "executions.json")
    if os.path.isfile(path):
        with open(path) as f:
            executions = [{k: v for k, v in e.items() if k != "history"} for e in json.load(f)]
    message = trial.message.strip().splitlines()[-1] if trial.message else None
    completed = trial.status == "COMPLETED"
    return {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "hyperparameters": dict(trial.hyperparameters.values),
        OBJECTIVE: float(trial.score) if completed and trial.score is not None else None,
        "executions": executions if completed else None,
        "message": message,
    }

