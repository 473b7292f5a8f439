"""The `tfinfo-tune` job as a function: a Keras Tuner search over a transfer method's
hyperparameters, scored on a validation split of the labeled target images.

This module defines no absl flags (tests import it; `trainers/tune.py` is the CLI), and
imports TensorFlow, Keras and Keras Tuner only once the arguments are validated, so a bad
argument is refused in a fraction of a second.

The search space is a mapping `name -> "KIND:ARGS"` over `TransferConfig` fields, or the
same as one string `"name=KIND:ARGS,name=KIND:ARGS"` (the CLI's `--search`), for example
`lautum_weight=log:1e-3:1e-1,pretrain_epochs=int:1:3,ema_decay=choice:0.99|0.999`; the
kinds, the parser and the methods' default spaces are in `trainers.tune_space`. The
search's files are handled by `trainers.tune_store` and what a trial runs (the validation
split, one execution, the Keras Tuner classes) by `trainers.tune_trials`; `run_tune` ties
them together, and their public names are importable from here too.
"""

import dataclasses
import os
import time

import numpy as np

from trainers.config import TransferConfig
from trainers.tune_space import KINDS
from trainers.tune_space import UNTUNABLE
from trainers.tune_space import SearchDimension
from trainers.tune_space import apply_hyperparameters
from trainers.tune_space import default_search_space
from trainers.tune_space import parse_dimension
from trainers.tune_space import parse_search_space
from trainers.tune_space import resolve_search_space
from trainers.tune_store import BEST_CONFIG_FILE
from trainers.tune_store import OBJECTIVE
from trainers.tune_store import RESULTS_FILE
from trainers.tune_store import SPEC_FILE
from trainers.tune_store import check_directory
from trainers.tune_store import prepare_directory
from trainers.tune_store import search_spec
from trainers.tune_store import trial_record
from trainers.tune_store import write_json
# run_tune hands the tuner this module's `_run_execution` when it runs, so replacing it here
# (as the tests do) replaces what every trial executes.
from trainers.tune_trials import run_execution as _run_execution
from trainers.tune_trials import tuner_classes
from trainers.tune_trials import validation_split

TUNERS = ("random", "bayesian")

__all__ = [
    "BEST_CONFIG_FILE",
    "KINDS",
    "OBJECTIVE",
    "RESULTS_FILE",
    "SPEC_FILE",
    "TUNERS",
    "UNTUNABLE",
    "SearchDimension",
    "default_search_space",
    "parse_dimension",
    "parse_search_space",
    "resolve_search_space",
    "run_tune",
    "validation_split",
]


def run_tune(
    base_config,
    directory,
    *,
    tuner="random",
    max_trials=10,
    validation_fraction=0.2,
    search_space=None,
    extend_search_space=False,
    executions_per_trial=1,
    overwrite=False,
    base_first=True,
    num_initial_points=None,
    tensorboard=True,
    verbose=0,
    progress=None,
):
    """Searches a method's hyperparameters with Keras Tuner; resumable.

    The data of `base_config` is prepared once. Its labeled target images are split
    (class-balanced, seeded by `base_config.seed`) into a validation part and the
    stage-2 training part; the target test set is never read. Each trial applies its
    hyperparameters to `base_config`, builds the classifier, pre-trains (stage 1, on
    the source and the unlabeled target training images, which include the validation
    images without their labels, as in `tfinfo-transfer`), re-seeds, fine-tunes
    (stage 2) on the training part, and reports the accuracy on the validation part
    (`val_accuracy`, maximized; averaged over `executions_per_trial` seeds
    `base_config.seed + i`). Trials use the same seeds, so they differ only by their
    hyperparameters.

    `directory` is the Keras Tuner project: `oracle.json`, `trial_*/` (Keras Tuner's
    `trial.json`, our `executions.json` and TensorBoard `logs/`), plus `tune_spec.json`
    (what the search is), `tune_results.json` and `best_config.json`. Rerunning with the
    same arguments resumes: finished trials are not redone, an interrupted one is rerun,
    and a larger `max_trials` adds trials. Different arguments raise an error instead
    of mixing two searches.

    Args:
        base_config: the `TransferConfig` the trials start from (method, data, seed,
            label budget and every field not searched).
        directory: the search's folder.
        tuner: `"random"` (`RandomSearchOracle`) or `"bayesian"`
            (`BayesianOptimizationOracle`).
        max_trials: total number of trials of the search (including earlier runs').
        validation_fraction: fraction of the labeled target images held out as the
            validation split; at least one per class, at least one training image left
            per class.
        search_space: `None` for `default_search_space(base_config)`, or a string
            `"name=KIND:ARGS,..."` / dict `{name: "KIND:ARGS"}` (see `trainers.tune_space`).
        extend_search_space: if True, `search_space` overrides or adds to the default.
        executions_per_trial: trainings (seeds) averaged per trial.
        overwrite: if True, delete an earlier search in `directory` first.
        base_first: if True, the first trial uses the base config's values (those
            lying in the space; else Keras Tuner's default: the lower end or first
            choice), so the best is compared against the starting point.
        num_initial_points: random trials before the Bayesian oracle fits its Gaussian
            process (`None`: Keras Tuner's 3 x the number of dimensions).
        tensorboard: if True, write TensorBoard logs of both stages and the trial's
            `val_accuracy` with its HParams under `trial_*/logs/`.
        verbose: Keras Tuner's display verbosity (0 or 1); the fits use
            `base_config.verbose`.
        progress: optional callable given one line of text per finished trial.

    Returns:
        The dictionary written to `directory/tune_results.json`: `trials` (id, status,
        hyperparameters, `val_accuracy` or `None`, per-execution results, failure
        message), `best` (id, `val_accuracy`, hyperparameters), `best_config` (path of
        the full `TransferConfig` with the best hyperparameters, which
        `tfinfo-transfer --config` accepts), the space, the split sizes and the base.

    Raises:
        ValueError: a bad argument, search space, base config or data, or a directory
            holding a different search.
        RuntimeError: if no trial completed (each failed trial's message is recorded),
            or Keras Tuner stopped after consecutive failed trials.
    """
    if not isinstance(base_config, TransferConfig):
        raise ValueError(f"Expected base_config to be a TransferConfig. Received: {type(base_config).__name__}")
    if tuner not in TUNERS:
        raise ValueError(f"Expected tuner to be one of {list(TUNERS)}. Received: tuner={tuner!r}")
    for name, value, low in (("max_trials", max_trials, 1), ("executions_per_trial", executions_per_trial, 1),
                             ("num_initial_points", num_initial_points, 1)):
        if value is None and name == "num_initial_points":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"Expected {name} to be an integer >= {low}. Received: {name}={value!r}")
    if num_initial_points is not None and tuner != "bayesian":
        raise ValueError(f"Expected num_initial_points only with tuner='bayesian'. Received: tuner={tuner!r}, "
                         f"num_initial_points={num_initial_points!r}")
    fraction_ok = isinstance(validation_fraction, (int, float)) and not isinstance(validation_fraction, bool)
    if not (fraction_ok and 0.0 < validation_fraction < 1.0):
        raise ValueError(
            f"Expected validation_fraction in (0, 1). Received: validation_fraction={validation_fraction!r}")
    if not directory:
        raise ValueError(f"Expected a directory. Received: directory={directory!r}")
    space = resolve_search_space(base_config, search_space, extend_search_space)
    directory = os.path.abspath(directory)
    spec = search_spec(base_config, tuner, validation_fraction, space, executions_per_trial, base_first,
                        num_initial_points)

    check_directory(directory, spec, overwrite)

    import keras_tuner  # imports TensorFlow

    from trainers.methods import get_method
    from trainers.pipeline import prepare_data

    method = get_method(base_config.method)
    if tensorboard:
        try:
            from tensorboard.plugins.hparams import api  # noqa: F401
        except ImportError as error:
            raise ValueError("Expected the tensorboard package for TensorBoard logging (pip install tensorboard), "
                             f"or tensorboard=False. Received: {error}") from None
    start = time.perf_counter()
    data = prepare_data(base_config)
    train_idx, val_idx = validation_split(data.y_labeled, data.num_classes, validation_fraction, base_config.seed)
    x_val, y_val = data.x_labeled[val_idx], np.asarray(data.y_labeled)[val_idx].astype(np.int64)
    stage2 = dataclasses.replace(data, x_labeled=data.x_labeled[train_idx], y_labeled=data.y_labeled[train_idx])
    method.check_data(stage2, base_config)  # before anything is written
    data_s = time.perf_counter() - start
    prepare_directory(directory, spec, overwrite)

    tuner_class, oracles = tuner_classes()
    oracle_class = oracles[tuner][1 if base_first else 0]
    hp = keras_tuner.HyperParameters()
    defaults = base_config.to_dict()
    for name, dim in space.items():
        dim.declare(hp, defaults.get(name))
    oracle_kwargs = dict(
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        max_trials=int(max_trials),
        # Keras Tuner draws a random seed for 0: shift so that seed 0 is reproducible too.
        seed=int(base_config.seed) + 1,
        hyperparameters=hp,
        tune_new_entries=False,
        allow_new_entries=False,
    )
    if tuner == "bayesian":
        oracle_kwargs["num_initial_points"] = num_initial_points
    search = tuner_class(
        oracle_class(**oracle_kwargs),
        base_config=base_config,
        space=space,
        method=method,
        data=stage2,
        x_val=x_val,
        y_val=y_val,
        tensorboard=tensorboard,
        progress=progress,
        execute=_run_execution,
        directory=os.path.dirname(directory),
        project_name=os.path.basename(directory),
        executions_per_trial=int(executions_per_trial),
        overwrite=False,
    )
    start = time.perf_counter()
    stopped = None
    try:
        search.search(verbose=int(verbose))
    except RuntimeError as error:  # Keras Tuner's limit of consecutive failed trials
        stopped = error
    search_s = time.perf_counter() - start

    oracle = search.oracle
    order = list(oracle.start_order) + sorted(set(oracle.trials) - set(oracle.start_order))
    trials = [trial_record(oracle.trials[t], search.get_trial_dir(t)) for t in order]
    completed = [t for t in trials if t["status"] == "COMPLETED"]
    best = max(completed, key=lambda t: t[OBJECTIVE]) if completed else None  # ties: the earliest trial
    best_config_path = os.path.join(directory, BEST_CONFIG_FILE)
    results = {
        "method": base_config.method,
        "tuner": tuner,
        "objective": OBJECTIVE,
        "direction": "max",
        "max_trials": int(max_trials),
        "num_trials": len(trials),
        "num_completed": len(completed),
        "validation": {
            "fraction": float(validation_fraction),
            "num_validation": int(len(val_idx)),
            "num_train": int(len(train_idx)),
            "validation_per_class": np.bincount(y_val, minlength=data.num_classes).tolist(),
        },
        "search_space": {name: dim.spec() for name, dim in space.items()},
        "trials": trials,
        "best": None,
        "best_config": None,
        "wall_time_s": {"data": data_s, "search": search_s},
        "base_config": base_config.to_dict(),
    }
    if best is not None:
        best_config = apply_hyperparameters(base_config, best["hyperparameters"], space)
        write_json(best_config_path, best_config.to_dict())
        results["best"] = {k: best[k] for k in ("trial_id", OBJECTIVE, "hyperparameters")}
        results["best_config"] = best_config_path
    elif os.path.isfile(best_config_path):
        os.remove(best_config_path)
    write_json(os.path.join(directory, RESULTS_FILE), results)
    if best is None or stopped is not None:
        failed = [t for t in trials if t["status"] != "COMPLETED"]
        reason = f" ({failed[-1]['message']})" if failed and failed[-1]["message"] else ""
        raise RuntimeError(
            f"Expected completed trials. Received: {len(completed)} of {len(trials)} completed"
            f"{'; Keras Tuner stopped after consecutive failures' if stopped is not None else ''}{reason}; "
            f"see {os.path.join(directory, RESULTS_FILE)}")
    return results
