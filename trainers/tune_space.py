"""The search-space grammar of `tfinfo-tune`: which `TransferConfig` fields a search may
vary, how one `KIND:ARGS` entry is parsed, and each method's default space.

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

This module imports neither TensorFlow nor Keras Tuner: `SearchDimension.declare` is given
the `keras_tuner.HyperParameters` to declare on.
"""

import dataclasses
import math
import typing

import numpy as np

from trainers.config import TransferConfig
from trainers.config import check_field

KINDS = ("log", "float", "int", "choice", "fixed")

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


def _check_allowed(name, values, entry):
    """Refuses a value the field does not accept (a choice outside the field's allowed
    values, a range end outside its range): checked when the space is parsed, so that a
    bad search is refused before anything is written, not trial after trial."""
    for value in values:
        try:
            check_field(name, value)
        except ValueError as error:
            raise ValueError(f"Expected `search` values that `{name}` accepts ({error}). "
                             f"Received: search entry {entry!r}") from None


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
        _check_allowed(name, values, entry)
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
    _check_allowed(name, (low, high), entry)  # the fields' ranges are intervals: both ends suffice
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


def apply_hyperparameters(base_config, values, space):
    """`base_config` with the trial's hyperparameter values, cast to the field types."""
    changes = {}
    for name, value in values.items():
        if name not in space:
            continue
        dtype = space[name].dtype
        changes[name] = int(value) if dtype == "int" else float(value) if dtype == "float" else str(value)
    return base_config.replace(**changes)
