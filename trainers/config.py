"""The configuration of a two-stage transfer run. Every field is documented."""

import dataclasses
import functools
import importlib.util
import json
import math
import numbers
import os
import traceback
import typing

# Smallest value of each integer field (`None` is allowed where the field is annotated `... | None`).
_INT_MINIMUM = {
    "labeled": 1, "seed": 0, "num_classes": 2, "image_size": 12, "channels": 1, "batch_size": 1,
    "pretrain_epochs": 0, "finetune_epochs": 0, "refresh_every": 1, "projection_dim": 1,
    "critic_steps": 1, "critic_epochs": 1, "lautum_probe": 0, "classifier_epochs": 1, "te_rampup_epochs": 0,
    "te_epochs": 0, "te_unlabeled": 0, "ctc_revitalization_epochs": 0, "probe_every": 0,
    "verbose": 0,
}
# Integer fields with a largest value or a set of values (`tfinfo.architectures.build_classifier`
# needs image_size >= 12: two 2x2 poolings, then a valid 3x3 convolution).
_INT_MAXIMUM = {"seed": 2**32 - 1, "verbose": 2}
_INT_VALUES = {"channels": (1, 3)}  # tfinfo.layers.image_preprocessing.ImagePreprocessing
CRITIC_SCHEDULES = ("step", "epochs")
# Allowed values of the text fields whose sets the library keeps under private names (or
# that only trainers reads); the public ones are read from the library (`_library_choices`).
_CHOICES = {
    "architecture": ("small", "paper"),  # tfinfo.architectures._WIDTHS
    "lautum_mode": ("fast", "exact"),  # tfinfo.regularizers.lautum._MODES
    "lautum_precision": ("float32", "float64"),  # tfinfo.regularizers.lautum._PRECISIONS
    "lautum_proxy": ("training", "inference"),
    "resample_projection": ("epoch", "step"),  # tfinfo.models.LautumTransferModel's check
    "critic_schedule": CRITIC_SCHEDULES,
}
# (low, high, low included, high included) of the float fields with a range (None: unbounded),
# as the library checks them when the models are built.
_FLOAT_RANGES = {
    "learning_rate": (0.0, None, False, False),
    "finetune_learning_rate": (0.0, None, False, False),
    "critic_learning_rate": (0.0, None, False, False),
    "dropout": (0.0, 1.0, True, False),  # keras.layers.Dropout
    "noise_stddev": (0.0, None, True, False),  # keras.layers.GaussianNoise
    "ema_decay": (0.0, 1.0, False, False),  # tfinfo.regularizers.LautumRegularizer
    "max_correlation": (0.0, 1.0, False, False),  # tfinfo.regularizers.LautumRegularizer
    "mi_tau": (0.0, None, False, False),  # tfinfo.information.bounds.check_estimator
    "te_momentum": (0.0, 1.0, True, False),  # TemporalEnsemblingModel's ensemble_momentum
    "te_max_weight": (0.0, None, True, False),
    "mmd_weight": (0.0, None, True, False),  # MMDTransferModel
    "ctc_alpha": (0.0, None, True, False),  # InformationAggregationModel
    "ctc_beta": (0.0, None, True, False),  # InformationRevitalizationModel
}
# Fields that only change what is displayed or where a cache lives, not what a run
# computes: they are not part of a run's identity (`TransferConfig.identity`).
NON_IDENTITY_FIELDS = frozenset({"verbose", "cache_dir"})


@functools.cache
def _library_choices():
    """The allowed values of the text fields whose sets the library names publicly."""
    from tfinfo.callbacks.non_finite_guard import POLICIES
    from tfinfo.critics.concat_critic import CRITIC_PRESETS
    from tfinfo.information.bounds import ESTIMATORS
    from tfinfo.information.bounds import SMILE_GRADIENTS

    return {
        "mi_estimator": tuple(ESTIMATORS),
        "smile_gradient": tuple(SMILE_GRADIENTS),
        "critic": tuple(CRITIC_PRESETS) + ("separable",),  # trainers.methods builds SeparableCritic
        "nonfinite_policy": tuple(POLICIES),
    }


def choices(name):
    """The allowed values of the text field `name`, or None when any text is allowed."""
    return _CHOICES.get(name) or _library_choices().get(name)


def _range_text(low, high, low_in, high_in):
    if high is None:
        return f"a finite number {'>=' if low_in else '>'} {low:g}"
    return f"a number in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


_FIELDS = None


def check_field(name, value):
    """Checks one `TransferConfig` field's type and range; returns the value normalized
    (integers as int, numbers as float).

    Raises:
        ValueError: "Expected `name` to be ... Received: name=value".
    """
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = {f.name: f for f in dataclasses.fields(TransferConfig)}
    if name not in _FIELDS:
        raise ValueError(f"Expected configuration fields among {sorted(_FIELDS)}. Received: {[name]}")
    field = _FIELDS[name]
    if value is None and _optional(field):
        return None
    received = f"Received: {name}={value!r}"
    if name in _INT_MINIMUM:
        low, high = _INT_MINIMUM[name], _INT_MAXIMUM.get(name)
        integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral or value < low or (high is not None and value > high):
            allowed = "None or an integer" if _optional(field) else "an integer"
            bound = f" >= {low}" if high is None else (
                f" >= {low} and < 2**32" if name == "seed" else f" in {low}..{high}")
            raise ValueError(f"Expected `{name}` to be {allowed}{bound}. {received}")
        if name in _INT_VALUES and value not in _INT_VALUES[name]:
            raise ValueError(f"Expected `{name}` to be one of {_INT_VALUES[name]}. {received}")
        return int(value)
    if isinstance(field.default, float):
        low, high, low_in, high_in = _FLOAT_RANGES.get(name, (None, None, False, False))
        text = "a finite number" if low is None else _range_text(low, high, low_in, high_in)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"Expected `{name}` to be {text}. {received}")
        if low is not None and not ((low <= value if low_in else low < value) and (
                high is None or (value <= high if high_in else value < high))):
            raise ValueError(f"Expected `{name}` to be {text}. {received}")
        return float(value)
    if not isinstance(value, str):
        allowed = "None or a string" if _optional(field) else "a string"
        raise ValueError(f"Expected `{name}` to be {allowed}. {received}")
    allowed = choices(name)
    if allowed is not None and value not in allowed:
        raise ValueError(f"Expected `{name}` to be one of {allowed}. {received}")
    return value


def _optional(field):
    """Whether the dataclass field accepts None (annotated `X | None`)."""
    return type(None) in typing.get_args(field.type)


@dataclasses.dataclass
class TransferConfig:
    """Settings of `tfinfo-transfer`; config files return one from `get_config()`.

    There is one default: `TransferConfig()` is the embedded default's recipe
    (`configs/embedded.py`), whatever data it is given; data flags or a config file
    change only the fields they name. The paper's settings (dropout 0.5, input noise
    0.15, TE's 80-epoch ramp-up) are written out in `configs/mnist_notmnist.py` and
    `configs/cifar10_cifar100.py`.

    Attributes:
        method: registered method name (`standard`, `lautum`, ...).
        source: data spec of the labeled source set (`None` = embedded digits).
        target: data spec of the target set (`None` = embedded letters A-J).
        labeled: number of labeled target training images (class-balanced).
        seed: seed of the split, the data order and the network initialization.
        num_classes: number of classes; `None` infers it from the data.
        architecture: `small` (CPU) or `paper` (Laine & Aila widths).
        image_size: side the images are resized to inside the network (32 in the paper).
        channels: channels inside the network (3 in the paper).
        dropout: dropout rate of the CNN (0.5 in the paper; 0.2 here: the embedded
            default's 1,438 source images are far fewer than MNIST's 60,000).
        noise_stddev: input Gaussian noise of the CNN (0.15 in the paper; 0.05 here).
        batch_size: mini-batch size of both stages (50 for MNIST, 100 for CIFAR).
        pretrain_epochs: epochs of stage 1 on the source set (16: the embedded default's
            stage 1 converges; see `configs/embedded.py`).
        finetune_epochs: epochs of stage 2 on the labeled target images. `results.json`
            says whether stage 2 converged (`stage2.converged`: the classifier fits its
            labeled images, >= 99% in inference mode) and the run warns when it did not.
            The TE methods read `te_epochs` instead when it is set.
        learning_rate: Adam learning rate of stage 1.
        finetune_learning_rate: Adam learning rate of stage 2.
        lautum_weight: lambda of `CE - lambda * L`, in true nats (paper's lambda / 2).
        ema_decay: decay of the Lautum covariance moving averages (0.999 in the paper).
        lautum_mode: `fast` (exact value and gradient by rank-n updates of the inverse
            covariance, O(k^2 n) a step) or `exact` (an eigendecomposition every step).
        refresh_every: steps between the fast mode's refactorizations (rounding drift).
        lautum_precision: `float32` or `float64`: dtype of the Lautum covariance state
            and linear algebra (float32: about 3x faster; over 2,000 training steps at
            D = 784 the fast mode's value stayed within 1.2e-4 of a float64 reference,
            see `tests/models/test_lautum_transfer_model.py`).
        lautum_proxy: `training` or `inference`: the classifier's mode (dropout, input
            noise) when the Jacobian proxy w is computed.
        lautum_probe: number of unlabeled target images on which `LautumProbe` estimates
            L from scratch after every stage-1 epoch (0 = off).
        projection_dim: optional PCA dimension replacing the D input pixels.
        max_correlation: bound on the canonical correlations of the Lautum value.
        resample_projection: `epoch` or `step`: when the projection vector is redrawn.
        mi_weight: lambda of `CE + lambda * I(x_t; z_t)` (nats).
        mi_estimator: bound of the MI critic: smile, mine, dv, nwj, infonce, js.
        mi_tau: SMILE's clipping threshold.
        smile_gradient: `js` (the SMILE authors' code) or `dv`.
        critic: concat-critic preset (`small`, `seed003`, `seed002`) or `separable`.
        critic_steps: critic updates per classifier step (schedule `step`).
        critic_learning_rate: Adam learning rate of the critic's own optimizer.
        critic_schedule: `step` (critic_steps inside every step) or `epochs` (whole
            epochs alternate, see `critic_epochs` and `classifier_epochs`).
        critic_epochs: critic epochs per cycle in the `epochs` schedule.
        classifier_epochs: classifier epochs per cycle in the `epochs` schedule.
        te_momentum: Temporal Ensembling's ensemble momentum (0.6 in Laine & Aila).
        te_max_weight: TE's `w_max`, scaled by labeled / N (30 in Laine & Aila).
        te_rampup_epochs: epochs of TE's Gaussian ramp-up of the consistency weight
            (Laine & Aila: 80 of 300 epochs on a GPU; here 8 of 20 on a CPU).
        te_epochs: stage-2 epochs for the TE methods (over labeled + unlabeled
            target images; 20 on a CPU); `None` = `finetune_epochs`.
        te_unlabeled: at most this many unlabeled target images in TE's stage 2 (a
            seeded subset, to bound its cost on a CPU); `None` = all of them.
        mmd_weight: lambda of `CE + lambda * MMD^2(z_source, z_target)`.
        ctc_alpha: CTC's weight of the aggregation (memory-bank InfoNCE) loss (seed 002: 0.01).
        ctc_beta: CTC's weight of the revitalization loss (seed 002: 1.0).
        ctc_revitalization_epochs: epochs of CTC's second stage (`None` = half of
            `pretrain_epochs`, as seed 002's 200 + 100); stage 1 runs `pretrain_epochs`.
        probe_every: every this many stage-1 epochs, fit a linear probe on the frozen
            features of the labeled target images and log its target test accuracy
            (`transferability` in the stage-1 history); 0 = never.
        nonfinite_policy: what a NaN or infinite loss term does: `stop` (the run ends
            with an error naming the term, the step and the likely cause; the
            checkpoints so far are kept) or `skip` (the step is undone and counted;
            `results.json` has the counts; one device only).
        cache_dir: where the embedded default dataset is cached.
        verbose: Keras progress-bar verbosity (0, 1 or 2).
    """

    method: str = "lautum"
    source: str | None = None
    target: str | None = None
    labeled: int = 100
    seed: int = 0
    num_classes: int | None = None
    architecture: str = "small"
    image_size: int = 32
    channels: int = 3
    # 1,438 source images are far fewer than MNIST's 60,000: lighter dropout and noise
    # than the paper's 0.5 / 0.15 let the small CNN learn them in a few epochs.
    dropout: float = 0.2
    noise_stddev: float = 0.05
    batch_size: int = 50
    # Stage 1 runs to convergence on the source task: at 10 epochs (290 steps) the
    # source CE was still falling (0.09-0.13), and where a run stopped moved its source
    # test accuracy by up to 6 points (seed 2: standard 98.1, mi 91.9; at 16 epochs
    # 97.8 and 99.4), which a comparison of regularizers must not inherit.
    pretrain_epochs: int = 16
    finetune_epochs: int = 60
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-3
    lautum_weight: float = 0.01
    ema_decay: float = 0.999
    lautum_mode: str = "fast"
    refresh_every: int = 200
    lautum_precision: str = "float32"
    lautum_proxy: str = "training"
    lautum_probe: int = 2000
    projection_dim: int | None = None
    max_correlation: float = 0.99
    resample_projection: str = "epoch"
    mi_weight: float = 0.01
    mi_estimator: str = "smile"
    mi_tau: float = 5.0
    smile_gradient: str = "js"
    critic: str = "small"
    critic_steps: int = 1
    critic_learning_rate: float = 1e-4
    critic_schedule: str = "step"
    critic_epochs: int = 1
    classifier_epochs: int = 1
    te_momentum: float = 0.6
    te_max_weight: float = 30.0
    te_rampup_epochs: int = 8
    te_epochs: int | None = 20
    te_unlabeled: int | None = 500
    mmd_weight: float = 1.0
    ctc_alpha: float = 0.01
    ctc_beta: float = 1.0
    ctc_revitalization_epochs: int | None = None
    probe_every: int = 0
    nonfinite_policy: str = "stop"
    cache_dir: str | None = None
    verbose: int = 1

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Checks every field's type, range and allowed values (`check_field`), so that a
        bad value in a config file or a flag is refused before any data is read or any
        file is written. Called on construction (and so by `replace`)."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, check_field(field.name, getattr(self, field.name)))

    def identity(self):
        """The fields that define what a run computes: `to_dict()` without
        `NON_IDENTITY_FIELDS` (display and cache settings). A workdir holds one identity."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_IDENTITY_FIELDS}

    def replace(self, **changes):
        """Returns a copy with `changes` applied; unknown names raise a clear error."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(
                f"Expected configuration fields among {sorted(names)}. Received: {unknown}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)


def config_from_flags(flag_values, overrides):
    """The run's `TransferConfig` from parsed CLI flags: `--config` (or the one default,
    `TransferConfig()`) with every flag in `overrides` that was given."""
    config = load_config(flag_values.config) if flag_values.config else TransferConfig()
    changes = {name: getattr(flag_values, name) for name in overrides if getattr(flag_values, name) is not None}
    return config.replace(**changes)


def _user_error(error, path):
    """`Type: message (PATH, line N)` of an exception raised by the user's file `path`."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    if line is None:
        for frame in reversed(traceback.extract_tb(error.__traceback__)):
            if os.path.abspath(frame.filename) == os.path.abspath(path):
                line = frame.lineno
                break
    text = getattr(error, "msg", None) if isinstance(error, SyntaxError) else str(error)
    return f"{type(error).__name__}: {text}" + (f" ({path}, line {line})" if line else "")


def call_python_config(path, function, module_name):
    """Runs the Python config file `path` and returns what its `function()` returns.

    A file that does not run (a syntax error, an exception at import), a missing
    `function` or one that raises is reported as a `ValueError` naming the file, the
    function and the line, instead of a traceback.
    """
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code: any error is a bad input
        raise ValueError(f"Expected {path} to be a Python config file that runs. "
                         f"Received: {_user_error(error, path)}") from None
    if not callable(getattr(module, function, None)):
        raise ValueError(f"Expected {path} to define {function}(). Received: no such function")
    try:
        return getattr(module, function)()
    except Exception as error:  # the user's code: any error is a bad input
        raise ValueError(f"Expected {function}() in {path} to return a configuration. "
                         f"Received: {_user_error(error, path)}") from None


def read_json_object(path, what="a JSON object"):
    """The JSON object in `path`; unreadable, truncated or non-object content raises a
    `ValueError` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        raise ValueError(f"Expected {what} in {path}. Received: unreadable or invalid JSON "
                         f"({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"Expected {what} in {path}. Received: {type(data).__name__}")
    return data


def load_config(path):
    """Loads a config file: a Python file with `get_config()` or a JSON object of fields.

    Args:
        path: path of a `.py` or `.json` file.

    Returns:
        A `TransferConfig`.
    """
    if not os.path.isfile(path):
        raise ValueError(f"Expected an existing config file. Received: config={path!r}")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
            raise ValueError(f"Expected a JSON object of configuration fields in {path}. "
                             f"Received: invalid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"Expected a JSON object in {path}. Received: {type(data).__name__}")
        return TransferConfig().replace(**data)
    if path.endswith(".py"):
        config = call_python_config(path, "get_config", "tfinfo_user_config")
        if isinstance(config, dict):
            config = TransferConfig().replace(**config)
        if not isinstance(config, TransferConfig):
            raise ValueError(f"Expected get_config() in {path} to return a TransferConfig or a dict of its "
                             f"fields. Received: {type(config).__name__}")
        return config
    raise ValueError(f"Expected a .py or .json config file. Received: config={path!r}")


@dataclasses.dataclass
class CompareConfig:
    """What `tfinfo-compare` runs.

    Attributes:
        base: the `TransferConfig` every run starts from (data, network, epochs, ...).
        methods: method names, in table order.
        labeled: label budgets (labeled target training images per run).
        seeds: seeds; each (method, budget) is run once per seed.
        paper: `"mnist_notmnist"` or `"cifar10_cifar100"` to print seed 000's numbers
            beside ours, or `None`.
        method_overrides: per-method `TransferConfig` changes (e.g. tuned lambdas).
        baseline: the method every other one is paired with, seed by seed (same split
            and initialization), for the paired differences and tests; None for none.
    """

    base: object
    methods: tuple = ("standard", "lautum", "mi")
    labeled: tuple = (50, 100, 200)
    seeds: tuple = (0, 1, 2)
    paper: str | None = None
    method_overrides: dict = dataclasses.field(default_factory=dict)
    baseline: str | None = "standard"
