"""The `tfinfo-tune` job as a function: a Keras Tuner search over a transfer method's
hyperparameters, scored on a validation split of the labeled target images.

This module defines no absl flags (tests import it; `trainers/tune.py` is the CLI), and
imports TensorFlow, Keras and Keras Tuner only once the arguments are validated, so a bad
argument is refused in a fraction of a second.

The search space is a mapping `name -> "KIND:ARGS"` over `TransferConfig` fields, or the
same as one string `"name=KIND:ARGS,name=KIND:ARGS"` (the CLI's `--search`):

- `log:LOW:HIGH`: log-uniform in [LOW, HIGH] (LOW > 0); integers for integer fields.
- `float:LOW:HIGH[:STEP]`: uniform in [LOW, HIGH] (float fields).
- `int:LOW:HIGH[:STEP]`: the integers LOW, LOW + STEP, ..., HIGH (integer fields).
- `choice:A|B|C`: one of the listed values (numbers or words).
- `fixed:VALUE`: a constant (recorded with the trials, not searched).

For example `lautum_weight=log:1e-3:1e-1,pretrain_epochs=int:1:3,ema_decay=choice:0.99|0.999`.
A given space replaces the method's default space (`default_search_space`); with
`extend_search_space=True` its entries override or add to the default's instead.
"""

import dataclasses
import json
import math
import os
import shutil
import time
import typing

import numpy as np

from trainers.config import TransferConfig

OBJECTIVE = "val_accuracy"
TUNERS = ("random", "bayesian")
KINDS = ("log", "float", "int", "choice", "fixed")
SPEC_FILE = "tune_spec.json"
RESULTS_FILE = "tune_results.json"
BEST_CONFIG_FILE = "best_config.json"

# Fields a search may not change: they define the data (prepared once per search and
# split once), the label budget, or only logging.
UNTUNABLE = frozenset({"method", "source", "target", "labeled", "seed", "num_classes", "cache_dir", "verbose",
                       "probe_every"})

# Field families that only some methods read: searching one the method ignores wastes trials.
_FAMILIES = (
    (("lautum", "lautum_te", "lautum_mi"),
     ("lautum_", "ema_decay", "refresh_every", "projection_dim", "max_correlation")),
    (("mi", "lautum_mi"), ("mi_", "critic", "smile_gradient", "classifier_epochs")),
    (("te", "lautum_te"), ("te_",)),
    (("ctc",), ("ctc_",)),
    (("mmd",), ("mmd_",)),
)
_KNOWN_METHODS = frozenset(m for methods, _ in _FAMILIES for m in methods) | {"standard"}


def _field_type(annotation):
    """`"int"`, `"float"` or `"str"`: the type of a field annotated `T` or `T | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return {int: "int", float: "float"}.get(args[0], "str")


_FIELD_TYPES = {f.name: _field_type(f.type) for f in dataclasses.fields(TransferConfig)}


def _format_number(value):
    """The shortest text that parses back to `value` (`0.001`, `1e-05`, `32`)."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclasses.dataclass(frozen=True)
class SearchDimension:
    """One searched (or fixed) `TransferConfig` field.

    Attributes:
        name: the `TransferConfig` field.
        kind: one of `KINDS`.
        dtype: `"int"`, `"float"` or `"str"`, the field's type.
        low: lower end (log, float, int).
        high: upper end (log, float, int).
        step: grid step (float, int) or `None`.
        values: the values (choice, fixed: one value).
    """

    name: str
    kind: str
    dtype: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    values: tuple = ()

    def spec(self):
        """The canonical `KIND:ARGS` string (parses back to an equal dimension)."""
        if self.kind in ("choice", "fixed"):
            text = "|".join(v if isinstance(v, str) else _format_number(v) for v in self.values)
            return f"{self.kind}:{text}"
        parts = [self.kind, _format_number(self.low), _format_number(self.high)]
        if self.step is not None:
            parts.append(_format_number(self.step))
        return ":".join(parts)

    def contains(self, value):
        """Whether `value` is a value this dimension can take."""
        if self.kind in ("choice", "fixed"):
            return value in self.values
        if value is None or isinstance(value, (str, bool)) or not self.low <= value <= self.high:
            return False
        if self.dtype == "int" and int(value) != value:
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True

    def declare(self, hp, default=None):
        """Declares the dimension on a `keras_tuner.HyperParameters`; `default` is
        used when the dimension contains it (else Keras Tuner's default)."""
        default = default if default is not None and self.contains(default) else None
        if self.kind == "fixed":
            return hp.Fixed(self.name, self.values[0])
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values), default=default)
        sampling = "log" if self.kind == "log" else "linear"
        if self.dtype == "int":
            return hp.Int(self.name, int(self.low), int(self.high), step=None if self.step is None else int(self.step),
                          sampling=sampling, default=None if default is None else int(default))
        return hp.Float(self.name, float(self.low), float(self.high), step=self.step, sampling=sampling,
                        default=None if default is None else float(default))


def _bad_entry(entry, why=None):
    if why:
        return ValueError(f"Expected a `search` entry with {why}. Received: search entry {entry!r}")
    return ValueError(
        "Expected `search` entries NAME=KIND:ARGS, KIND:ARGS one of log:LOW:HIGH, float:LOW:HIGH[:STEP], "
        f"int:LOW:HIGH[:STEP], choice:A|B|..., fixed:VALUE. Received: search entry {entry!r}"
    )


def _parse_value(token, dtype, entry):
    token = token.strip()
    if dtype == "str":
        if not token:
            raise _bad_entry(entry, "non-empty values")
        return token
    try:
        value = int(token) if dtype == "int" else float(token)
    except ValueError:
        raise _bad_entry(entry, f"{'integer' if dtype == 'int' else 'numeric'} values for this field") from None
    if not math.isfinite(value):
        raise _bad_entry(entry, "finite values")
    if value < 0:
        raise _bad_entry(entry, "non-negative values")
    return value


def _check_field(name, method, entry):
    if name not in _FIELD_TYPES:
        raise ValueError(f"Expected `search` names among the TransferConfig fields {sorted(_FIELD_TYPES)}. "
                         f"Received: search entry {entry!r}")
    if name in UNTUNABLE:
        raise ValueError(f"Expected `search` names other than {sorted(UNTUNABLE)} (they define the data, the label "
                         f"budget or the logging). Received: search entry {entry!r}")
    if method in _KNOWN_METHODS:
        for methods, prefixes in _FAMILIES:
            if name.startswith(prefixes) and method not in methods:
                raise ValueError(f"Expected `search` names that method {method!r} reads ({name} is read only by "
                                 f"{list(methods)}). Received: search entry {entry!r}")


def parse_dimension(name, spec, method=None):
    """Parses one `KIND:ARGS` string for field `name`.

    Args:
        name: a `TransferConfig` field.
        spec: `log:LOW:HIGH`, `float:LOW:HIGH[:STEP]`, `int:LOW:HIGH[:STEP]`,
            `choice:A|B|...` or `fixed:VALUE`.
        method: if given, `name` must be a field that this method reads.

    Returns:
        A `SearchDimension`.

    Raises:
        ValueError: "Expected ... Received: ..." naming the entry.
    """
    entry = f"{name}={spec}"
    if not isinstance(spec, str) or ":" not in spec:
        raise _bad_entry(entry)
    _check_field(name, method, entry)
    dtype = _FIELD_TYPES[name]
    kind, _, args = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise _bad_entry(entry)
    if kind in ("choice", "fixed"):
        values = tuple(_parse_value(t, dtype, entry) for t in args.split("|"))
        if kind == "fixed" and len(values) != 1:
            raise _bad_entry(entry, "one value after fixed:")
        if kind == "choice" and (len(values) < 2 or len(set(values)) != len(values)):
            raise _bad_entry(entry, "at least two distinct values after choice:")
        return SearchDimension(name, kind, dtype, values=values)
    if dtype == "str":
        raise _bad_entry(entry, f"choice: or fixed: for the text field {name}")
    if kind == "float" and dtype == "int":
        raise _bad_entry(entry, f"int: or log: for the integer field {name}")
    if kind == "int" and dtype == "float":
        raise _bad_entry(entry, f"float: or log: for the float field {name}")
    parts = args.split(":")
    if len(parts) not in ((2,) if kind == "log" else (2, 3)):
        raise _bad_entry(entry, "LOW:HIGH" + ("" if kind == "log" else "[:STEP]") + f" after {kind}:")
    low, high, *step = (_parse_value(p, dtype, entry) for p in parts)
    step = step[0] if step else None
    if not low < high:
        raise _bad_entry(entry, "LOW < HIGH")
    if kind == "log" and low <= 0:
        raise _bad_entry(entry, "LOW > 0 for log:")
    if step is not None and not 0 < step <= high - low:
        raise _bad_entry(entry, "0 < STEP <= HIGH - LOW")
    return SearchDimension(name, kind, dtype, low=low, high=high, step=step)


def parse_search_space(search, method=None):
    """Parses a search space.

    Args:
        search: `"name=KIND:ARGS,name=KIND:ARGS"` or a dict `{name: "KIND:ARGS"}`.
        method: if given, every name must be a field this method reads.

    Returns:
        A dict `name -> SearchDimension`, in the given order.

    Raises:
        ValueError: "Expected ... Received: ..." naming the bad entry.
    """
    if isinstance(search, str):
        entries = [e.strip() for e in search.split(",")]
        if not all(entries) or not search.strip():
            raise ValueError("Expected `search` to be NAME=KIND:ARGS entries separated by commas. "
                             f"Received: search={search!r}")
        pairs = []
        for entry in entries:
            name, sep, spec = entry.partition("=")
            if not sep:
                raise _bad_entry(entry)
            pairs.append((name.strip(), spec.strip()))
    elif isinstance(search, dict) and search:
        pairs = list(search.items())
    else:
        raise ValueError("Expected `search` to be a non-empty string or dict of NAME=KIND:ARGS entries. "
                         f"Received: search={search!r}")
    space = {}
    for name, spec in pairs:
        if name in space:
            raise ValueError(f"Expected each `search` name once. Received: search={search!r} naming {name!r} twice")
        space[name] = parse_dimension(name, spec, method)
    return space


def _epochs_range(epochs):
    low = max(1, int(epochs) // 2)
    return f"int:{low}:{max(low + 1, 2 * int(epochs))}"


def default_search_space(config):
    """The method's default search space around `config` (a `TransferConfig`).

    Every method: `learning_rate` and `finetune_learning_rate` log-uniform in
    [1e-4, 1e-2]; `pretrain_epochs` and the stage-2 epochs (`te_epochs` for the TE
    methods when the config sets it, else `finetune_epochs`) integers from half to
    twice the config's value. Plus, by method: `lautum_weight` (log [1e-3, 1e-1]) and
    `ema_decay` (0.9, 0.99 or 0.999) for lautum, lautum_te, lautum_mi; `mi_weight`
    (log [1e-3, 1e-1]), `critic_steps` (1..5), `critic_learning_rate` (log [1e-5,
    1e-3]) and, with the SMILE estimator, `mi_tau` ([1, 10]) for mi, lautum_mi;
    `te_max_weight` (log [1, 100]) and `te_rampup_epochs` (half to twice the config's)
    for te, lautum_te; `ctc_alpha` (log [1e-3, 1e-1]) and `ctc_beta` (log [0.1, 10])
    for ctc; `mmd_weight` (log [0.1, 10]) for mmd.

    Returns:
        A dict `name -> "KIND:ARGS"`.
    """
    method = config.method
    space = {}
    if method in ("lautum", "lautum_te", "lautum_mi"):
        space.update(lautum_weight="log:0.001:0.1", ema_decay="choice:0.9|0.99|0.999")
    if method in ("mi", "lautum_mi"):
        space.update(mi_weight="log:0.001:0.1", critic_steps="int:1:5", critic_learning_rate="log:1e-05:0.001")
        if config.mi_estimator == "smile":
            space["mi_tau"] = "float:1:10"
    if method in ("te", "lautum_te"):
        space.update(te_max_weight="log:1:100", te_rampup_epochs=_epochs_range(config.te_rampup_epochs))
    if method == "ctc":
        space.update(ctc_alpha="log:0.001:0.1", ctc_beta="log:0.1:10")
    if method == "mmd":
        space["mmd_weight"] = "log:0.1:10"
    space.update(learning_rate="log:0.0001:0.01", finetune_learning_rate="log:0.0001:0.01",
                 pretrain_epochs=_epochs_range(config.pretrain_epochs))
    if method in ("te", "lautum_te") and config.te_epochs is not None:
        space["te_epochs"] = _epochs_range(config.te_epochs)
    else:
        space["finetune_epochs"] = _epochs_range(config.finetune_epochs)
    return space


def resolve_search_space(config, search=None, extend=False):
    """The space a search over `config.method` runs.

    Args:
        config: the base `TransferConfig`.
        search: `None` (the method's default), or a string / dict as in
            `parse_search_space`.
        extend: if True, `search` overrides or adds to the default's entries
            instead of replacing the default.

    Returns:
        A dict `name -> SearchDimension`.
    """
    default = parse_search_space(default_search_space(config), config.method)
    if search is None:
        return default
    given = parse_search_space(search, config.method)
    return {**default, **given} if extend else given


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


def _write_json(path, payload):
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


def _search_spec(base_config, tuner, validation_fraction, space, executions_per_trial, base_first,
                 num_initial_points):
    """What a directory's search is: a rerun must match it to resume."""
    config = {k: v for k, v in base_config.to_dict().items() if k not in ("verbose", "cache_dir")}
    return {
        "tuner": tuner,
        "validation_fraction": float(validation_fraction),
        "executions_per_trial": int(executions_per_trial),
        "base_first": bool(base_first),
        "num_initial_points": num_initial_points,
        "search_space": {name: dim.spec() for name, dim in space.items()},
        "base_config": config,
    }


def _check_directory(directory, spec, overwrite):
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


def _prepare_directory(directory, spec, overwrite):
    """Deletes an earlier search when overwriting, then records `spec`."""
    if overwrite and os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory, exist_ok=True)
    _write_json(os.path.join(directory, SPEC_FILE), spec)


def _apply(base_config, values, space):
    """`base_config` with the trial's hyperparameter values, cast to the field types."""
    changes = {}
    for name, value in values.items():
        if name not in space:
            continue
        dtype = space[name].dtype
        changes[name] = int(value) if dtype == "int" else float(value) if dtype == "float" else str(value)
    return base_config.replace(**changes)


def _run_execution(method, data, x_val, y_val, config, logdir=None, hparams=None, run_name=None):
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


def _tuner_classes():
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
            **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
                `executions_per_trial`, ...).
        """

        def __init__(self, oracle, *, base_config, space, method, data, x_val, y_val, tensorboard=True,
                     progress=None, **kwargs):
            super().__init__(oracle, **kwargs)
            self.base_config = base_config
            self.space = space
            self.method = method
            self.data = data
            self.x_val = x_val
            self.y_val = y_val
            self.tensorboard = tensorboard
            self.progress = progress

        def run_trial(self, trial, *args, **kwargs):
            values = dict(trial.hyperparameters.values)
            config = _apply(self.base_config, values, self.space)
            trial_dir = self.get_trial_dir(trial.trial_id)
            executions = []
            for execution in range(self.executions_per_trial):
                run_config = config.replace(seed=config.seed + execution)
                logdir = os.path.join(trial_dir, "logs", f"execution{execution}") if self.tensorboard else None
                result = _run_execution(self.method, self.data, self.x_val, self.y_val, run_config, logdir,
                                        hparams=values, run_name=f"trial_{trial.trial_id}/execution{execution}")
                executions.append(result)
                _write_json(os.path.join(trial_dir, "executions.json"), executions)
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


def _trial_record(trial, trial_dir):
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
            `"name=KIND:ARGS,..."` / dict `{name: "KIND:ARGS"}` (see the module docstring).
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
    spec = _search_spec(base_config, tuner, validation_fraction, space, executions_per_trial, base_first,
                        num_initial_points)

    _check_directory(directory, spec, overwrite)

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
    data_s = time.perf_counter() - start
    _prepare_directory(directory, spec, overwrite)

    tuner_class, oracles = _tuner_classes()
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
    trials = [_trial_record(oracle.trials[t], search.get_trial_dir(t)) for t in order]
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
        best_config = _apply(base_config, best["hyperparameters"], space)
        _write_json(best_config_path, best_config.to_dict())
        results["best"] = {k: best[k] for k in ("trial_id", OBJECTIVE, "hyperparameters")}
        results["best_config"] = best_config_path
    elif os.path.isfile(best_config_path):
        os.remove(best_config_path)
    _write_json(os.path.join(directory, RESULTS_FILE), results)
    if best is None or stopped is not None:
        failed = [t for t in trials if t["status"] != "COMPLETED"]
        reason = f" ({failed[-1]['message']})" if failed and failed[-1]["message"] else ""
        raise RuntimeError(
            f"Expected completed trials. Received: {len(completed)} of {len(trials)} completed"
            f"{'; Keras Tuner stopped after consecutive failures' if stopped is not None else ''}{reason}; "
            f"see {os.path.join(directory, RESULTS_FILE)}")
    return results
