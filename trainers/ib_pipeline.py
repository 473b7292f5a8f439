"""The `tfinfo-ib` job as a function: data -> MLP -> objective -> information plane -> outputs."""

import json
import math
import numbers
import os
import time

from trainers.ib_evaluation import EXPORT_NOISE

OBJECTIVES = ("ce", "ce_weight_decay", "ib_end_to_end", "ib_layerwise", "surrogate_l2", "surrogate_logvar",
              "surrogate_cond_logvar")
X_CRITICS = ("mine", "aa_mine")
CRITIC_BATCHES = ("fresh", "reuse")
_INT_MINIMUM = {"epochs": 1, "readout_epochs": 1, "batch_size": 2, "critic_steps": 1, "plane_samples": 2,
                "plane_every": 1, "seed": 0, "eval_draws": 1, "plane_bins": 2, "plane_noise_draws": 1}
# (minimum, whether the minimum itself is allowed) of the float flags.
_FLOAT_MINIMUM = {"learning_rate": (0.0, False), "critic_learning_rate": (0.0, False), "weight_decay": (0.0, True),
                  "alpha": (0.0, True), "beta": (0.0, True), "gamma": (0.0, True), "noise_variance": (0.0, False),
                  "plane_noise_variance": (0.0, False)}


def _received(name, value):
    return f"Received: --{name}={value!r}"


def parse_critic_warmup(value):
    """`--critic_warmup` -> `"settle"` or an int >= 0 (critic-only steps; 0: none)."""
    text = str(value).strip()
    if text == "settle":
        return "settle"
    try:
        steps = int(text)
    except ValueError:
        steps = -1
    if steps < 0 or isinstance(value, bool):
        raise ValueError(f"Expected `--critic_warmup` to be 'settle' or an integer >= 0. "
                         f"{_received('critic_warmup', value)}")
    return steps


def parse_bin_range(text):
    """`--plane_bin_range` -> `(bin_range, bin_width)` of `InformationPlane`.

    `"layer"` and `"unit"` are ranges of the data, `"LOW,HIGH"` a fixed range (e.g.
    `-1,1`: Shwartz-Ziv & Tishby's tanh bins), `"width:W"` bins of fixed width `W`
    (e.g. `width:0.5`: Saxe et al.'s code).

    Raises:
        ValueError: "Expected `--plane_bin_range` ... Received: --plane_bin_range=...".
    """
    bad = ValueError("Expected `--plane_bin_range` to be layer, unit, LOW,HIGH (finite, LOW < HIGH) or width:W "
                     f"(W > 0), e.g. -1,1 or width:0.5. {_received('plane_bin_range', text)}")
    if not isinstance(text, str):
        raise bad
    text = text.strip()
    if text in ("layer", "unit"):
        return text, None
    try:
        if text.startswith("width:"):
            width = float(text[len("width:"):])
            if math.isfinite(width) and width > 0:
                return "layer", width
            raise bad
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise bad from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise bad
    return (low, high), None


def check_ib_flags(workdir, objective, hidden, estimators, strategy="none", devices=None, verbose=0, **numbers_):
    """Checks every argument of `run_ib` (the flags of `tfinfo-ib`) without touching the data,
    TensorFlow's runtime or the file system.

    Args:
        workdir, objective, hidden, strategy, devices, verbose: as the flags.
        estimators: the information-plane estimators allowed (`estimator` is among `numbers_`).
        **numbers_: the other flags by name (`epochs=10, learning_rate=1e-3, ...`), with
            `x_critic` and `estimator` required and `export_noise` (one of `EXPORT_NOISE`,
            default `"inference"`), `plane_bin_range` (see `parse_bin_range`, default
            `"layer"`), `critic_batches` (one of `CRITIC_BATCHES`, default `"fresh"`) and
            `critic_warmup` (see `parse_critic_warmup`, default `"settle"`) optional.

    Returns:
        `hidden` as a list of ints.

    Raises:
        ValueError: "Expected `--flag` ... Received: --flag=..." for the first bad flag.
    """
    if not isinstance(workdir, str) or not workdir.strip():
        raise ValueError(f"Expected `--workdir` to be a folder path. {_received('workdir', workdir)}")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"Expected `--workdir` to be a folder (new or existing). {_received('workdir', workdir)}, "
                         "an existing file")
    if objective not in OBJECTIVES:
        raise ValueError(f"Expected `--objective` to be one of {list(OBJECTIVES)}. {_received('objective', objective)}")
    x_critic, estimator = numbers_.pop("x_critic"), numbers_.pop("estimator")
    export_noise = numbers_.pop("export_noise", "inference")
    plane_bin_range = numbers_.pop("plane_bin_range", "layer")
    critic_batches = numbers_.pop("critic_batches", "fresh")
    parse_critic_warmup(numbers_.pop("critic_warmup", "settle"))
    if critic_batches not in CRITIC_BATCHES:
        raise ValueError(f"Expected `--critic_batches` to be one of {list(CRITIC_BATCHES)}. "
                         f"{_received('critic_batches', critic_batches)}")
    if x_critic not in X_CRITICS:
        raise ValueError(f"Expected `--x_critic` to be one of {list(X_CRITICS)}. {_received('x_critic', x_critic)}")
    if estimator not in estimators:
        raise ValueError(f"Expected `--estimator` to be one of {list(estimators)}. {_received('estimator', estimator)}")
    if export_noise not in EXPORT_NOISE:
        raise ValueError(f"Expected `--export_noise` to be one of {list(EXPORT_NOISE)}. "
                         f"{_received('export_noise', export_noise)}")
    parse_bin_range(plane_bin_range)
    try:
        widths = [int(str(h).strip()) for h in hidden]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise ValueError(f"Expected `--hidden` to be positive integers, e.g. 256,128. "
                         f"Received: --hidden={','.join(map(str, hidden))!r}")
    for name, value in numbers_.items():
        if name in _INT_MINIMUM:
            low = _INT_MINIMUM[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"Expected `--{name}` to be an integer >= {low}. {_received(name, value)}")
        elif name in _FLOAT_MINIMUM:
            low, closed = _FLOAT_MINIMUM[name]
            if value is None and name == "plane_noise_variance":
                continue
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (value == low and not closed):
                raise ValueError(f"Expected `--{name}` to be a finite number {'>=' if closed else '>'} {low:g}. "
                                 f"{_received(name, value)}")
        else:
            raise ValueError(f"Expected flags among {sorted({**_INT_MINIMUM, **_FLOAT_MINIMUM})}. "
                             f"Received: {name}={value!r}")
    if numbers_.get("seed", 0) >= 2**32:
        raise ValueError(f"Expected `--seed` to be an integer < 2**32. {_received('seed', numbers_['seed'])}")
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"Expected `--verbose` to be 0, 1 or 2. {_received('verbose', verbose)}")
    if devices is not None:
        if strategy != "mirrored":
            raise ValueError(f"Expected `--devices` only with --strategy mirrored. {_received('devices', devices)} "
                             f"with --strategy={strategy}")
        if isinstance(devices, bool) or not isinstance(devices, numbers.Integral) or devices < 1:
            raise ValueError(f"Expected `--devices` to be an integer >= 1. {_received('devices', devices)}")
    return widths


def build_mlp(input_shape, num_classes, hidden, *, weight_decay=0.0, zero_entropy_noise=False, seed=0):
    """Rescaled, flattened pixels -> Dense(h, relu) x len(hidden) -> logits.

    Layers are named `dense_1..n` and `logits`; with `zero_entropy_noise` the last hidden
    layer is followed by a `ZeroEntropyNoise` layer named `bottleneck_noise`."""
    import keras

    from tfinfo.layers import ZeroEntropyNoise

    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1.0 / 255.0)(inputs))
    for i, width in enumerate(hidden):
        x = keras.layers.Dense(int(width), activation="relu", name=f"dense_{i + 1}", kernel_regularizer=regularizer,
                               kernel_initializer=keras.initializers.GlorotUniform(seed + i))(x)
    if zero_entropy_noise:
        x = ZeroEntropyNoise(seed=seed, name="bottleneck_noise")(x)
    logits = keras.layers.Dense(num_classes, name="logits", kernel_regularizer=regularizer,
                                kernel_initializer=keras.initializers.GlorotUniform(seed + 100))(x)
    return keras.Model(inputs, logits, name="mlp")


def run_ib(workdir, objective, data=None, hidden=(256, 128), epochs=10, readout_epochs=30, batch_size=100,
           learning_rate=1e-3, critic_learning_rate=1e-4, weight_decay=5e-4, alpha=1.0, beta=1.0, gamma=1e-3,
           noise_variance=2.0, critic_steps=10, x_critic="aa_mine", estimator="kde", plane_noise_variance=None,
           plane_samples=1000, plane_every=1, plane_bins=30, plane_bin_range="layer", plane_noise_draws=10,
           eval_draws=10, export_noise="inference", critic_batches="fresh", critic_warmup="settle", seed=0,
           verbose=0, strategy=None):
    """Trains with `objective`, measures the information plane, writes the outputs.

    In `surrogate_*` runs the plane measures `Z = Z_hat + eps` of the `bottleneck_noise`
    layer with the layer's variance `1 / (2 pi e)` (other layers with
    `plane_noise_variance`, default `noise_variance`); `test_accuracy` is the accuracy
    of the mean softmax over `eval_draws` seeded noise draws and
    `test_accuracy_noise_free` that with the noise bypassed (`trainers.ib_evaluation`);
    `export_noise` (`"inference"` or `"training_only"`) chooses whether the saved
    `classifier.keras` keeps the noise at inference.

    The IB objectives follow seed 003's Algorithm 1 (`critic_batches="fresh"`): every
    critic update and the network step get a minibatch of `batch_size` rows of their
    own, drawn from a reshuffled, repeated stream; an epoch is `ceil(N / batch_size)`
    network updates, as many as a CE epoch has steps (so the critics train on
    `critic_steps` passes over the data per epoch). Before the network's first update (end to end) and before
    each layer's stage (layer by layer) the critics train alone for `critic_warmup`
    steps, or until their held-out estimates settle (`"settle"`, at most 500 steps);
    the warm-ups' estimates are in `results.json` (`history["warmup"]`, per stage for
    `ib_layerwise`).

    `strategy` (a `tf.distribute.Strategy`, default one device) is the scope the models
    are built and trained in; `batch_size` is the global batch. Every argument is
    checked (`check_ib_flags`, then the data) before any training or file writing. Under
    `MultiWorkerMirroredStrategy` the fit is `trainers.distributed.fit`'s custom loop
    (not for `ib_layerwise`, whose stages use `model.fit`).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from trainers.distributed import fit as distributed_fit
    from trainers.distributed import is_multi_worker

    from trainers.ib_evaluation import describe_evaluation
    from trainers.ib_evaluation import evaluate_classifier
    from trainers.ib_evaluation import export_classifier

    from tfinfo.callbacks.information_plane import INFORMATION_PLANE_ESTIMATORS
    from tfinfo.callbacks.critic_warmup import CriticWarmup
    from tfinfo.callbacks.information_plane import InformationPlane
    from tfinfo.data import load_spec
    from tfinfo.models import InformationBottleneckModel
    from tfinfo.models import SurrogateBottleneckModel
    from tfinfo.models import train_layer_by_layer
    from tfinfo.regularizers import ActivationL2Regularizer
    from tfinfo.regularizers import ConditionalLogVarianceRegularizer
    from tfinfo.regularizers import LogVarianceRegularizer

    hidden = check_ib_flags(
        workdir, objective, hidden, INFORMATION_PLANE_ESTIMATORS, verbose=verbose, epochs=epochs,
        readout_epochs=readout_epochs, batch_size=batch_size, learning_rate=learning_rate,
        critic_learning_rate=critic_learning_rate, weight_decay=weight_decay, alpha=alpha, beta=beta, gamma=gamma,
        noise_variance=noise_variance, critic_steps=critic_steps, x_critic=x_critic, estimator=estimator,
        plane_noise_variance=plane_noise_variance, plane_samples=plane_samples, plane_every=plane_every, seed=seed,
        plane_bins=plane_bins, plane_bin_range=plane_bin_range, plane_noise_draws=plane_noise_draws,
        eval_draws=eval_draws, export_noise=export_noise, critic_batches=critic_batches, critic_warmup=critic_warmup)
    bin_range, bin_width = parse_bin_range(plane_bin_range)
    critic_warmup = parse_critic_warmup(critic_warmup)
    strategy = strategy or tf.distribute.get_strategy()
    if objective == "ib_layerwise" and is_multi_worker(strategy):
        raise ValueError("Expected `--strategy` none or mirrored for ib_layerwise. Received: --strategy=multi_worker")
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    try:
        splits = load_spec(data, role="source", seed=seed)
    except (ValueError, OSError) as error:
        raise ValueError(f"Expected `--data` to be a data spec that loads. Received: --data={data!r}, "
                         f"which fails with: {error}") from None
    os.makedirs(workdir, exist_ok=True)
    x_train, y_train = np.asarray(splits.x_train, np.float32), np.asarray(splits.y_train, np.int64)
    x_test, y_test = np.asarray(splits.x_test, np.float32), np.asarray(splits.y_test, np.int64)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    with strategy.scope():
        classifier = build_mlp(x_train.shape[1:], num_classes, hidden,
                               weight_decay=weight_decay if objective == "ce_weight_decay" else 0.0,
                               zero_entropy_noise=objective.startswith("surrogate"), seed=seed)
        plane = InformationPlane(
            x_test, y_test, estimator=estimator,
            noise_variance=plane_noise_variance or noise_variance, every_epochs=plane_every,
            num_samples=plane_samples, num_bins=plane_bins, bin_range=bin_range, bin_width=bin_width,
            noise_draws=plane_noise_draws, seed=seed,
            csv_path=os.path.join(workdir, "information_plane.csv"),
            log_dir=os.path.join(workdir, "tensorboard"),
            png_path=os.path.join(workdir, "information_plane.png"),
        )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        # Losses, regularizer and critic values, learning rates (the plane writes its own).
        board = keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard", "train"), write_graph=False)
        if objective == "ib_layerwise":
            result = train_layer_by_layer(
                classifier, x_train, y_train, beta=gamma, noise_variance=noise_variance, critic_steps=critic_steps,
                epochs_per_layer=epochs, readout_epochs=readout_epochs, batch_size=batch_size,
                learning_rate=learning_rate, critic_learning_rate=critic_learning_rate, x_critic=x_critic,
                callbacks=[plane, board], seed=seed, verbose=verbose, critic_batches=critic_batches,
                critic_warmup=critic_warmup)
            final, history = result.model, {"layers": result.histories, "readout": result.readout_history,
                                            "warmup": result.warmups}
        else:
            if objective in ("ce", "ce_weight_decay"):
                model = classifier
                model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
            elif objective == "ib_end_to_end":
                model = InformationBottleneckModel(classifier, alpha=alpha, beta=beta, gamma=gamma,
                                                   noise_variance=noise_variance, critic_steps=critic_steps,
                                                   x_critic=x_critic, seed=seed, critic_batches=critic_batches)
                model.adapt(x_train)
                model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                              critic_optimizer=keras.optimizers.Adam(critic_learning_rate))
            else:
                regularizer = {
                    "surrogate_l2": ActivationL2Regularizer,
                    "surrogate_logvar": LogVarianceRegularizer,
                    "surrogate_cond_logvar": lambda: ConditionalLogVarianceRegularizer(num_classes=num_classes),
                }[objective]()
                model = SurrogateBottleneckModel(classifier, regularizer, layer="bottleneck_noise", weight=gamma)
                model.compile(optimizer=keras.optimizers.Adam(learning_rate))
            # The IB model splits each batch into a minibatch per critic update and one
            # for the network step (Algorithm 1): it takes `batch_size_for` rows.
            # An epoch of the IB model is as many network updates as a CE epoch has steps,
            # each critic update on a fresh minibatch of a reshuffled, repeated stream.
            steps, warmup = None, []
            train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(
                len(x_train), seed=seed, reshuffle_each_iteration=True)
            if objective == "ib_end_to_end":
                steps = -(-len(x_train) // batch_size)
                train = train.repeat().batch(model.batch_size_for(batch_size))
            else:
                train = train.batch(batch_size)
            if objective == "ib_end_to_end" and critic_warmup != 0:
                # The custom loop of mirrored/multi-worker runs does not call `model.fit`,
                # so the warm-up is its own fit with the callback (on every strategy).
                critic_warmup_callback = CriticWarmup(critic_warmup)
                try:
                    distributed_fit(model, train, critic_warmup_callback.max_steps,
                                    callbacks=[critic_warmup_callback], steps_per_epoch=1)
                finally:  # back to the alternate phase, the network as it was, also on an error
                    critic_warmup_callback.release(model)
                warmup = critic_warmup_callback.estimates
            history = distributed_fit(model, train, epochs, callbacks=[plane, board], verbose=verbose,
                                      steps_per_epoch=steps).history
            history = {k: [float(v) for v in vs] for k, vs in history.items()}
            if objective == "ib_end_to_end":
                history["warmup"] = warmup
            final = classifier
    evaluation = evaluate_classifier(final, x_test, y_test, draws=eval_draws, seed=seed)
    last_epoch = max(row["epoch"] for row in plane.rows)
    information = {row["layer"]: {"i_x": row["i_x"], "i_y": row["i_y"]}
                   for row in plane.rows if row["epoch"] == last_epoch}
    export_classifier(final, os.path.join(workdir, "classifier.keras"), export_noise)
    results = {
        "objective": objective,
        "test_accuracy": evaluation["test_accuracy"],
        "estimator": estimator,
        "final_epoch": last_epoch,
        "information": information,
        "num_train": int(len(x_train)),
        "num_test": int(len(x_test)),
        "wall_time_s": time.perf_counter() - start,
        "num_replicas": int(strategy.num_replicas_in_sync),
        "history": history,
        # New keys (the ones above are read by other tools and stay as they were).
        "test_accuracy_noise_free": evaluation["test_accuracy_noise_free"],
        "evaluation": {**{k: v for k, v in evaluation.items() if not k.startswith("test_accuracy")},
                       "description": describe_evaluation(evaluation, export_noise)},
        "export_noise": export_noise,
        "information_description": plane.describe(),
        "config": dict(objective=objective, data=data, hidden=hidden, epochs=epochs, readout_epochs=readout_epochs,
                       batch_size=batch_size, learning_rate=learning_rate, critic_learning_rate=critic_learning_rate,
                       weight_decay=weight_decay, alpha=alpha, beta=beta, gamma=gamma, noise_variance=noise_variance,
                       critic_steps=critic_steps, x_critic=x_critic, estimator=estimator, plane_samples=plane_samples,
                       plane_every=plane_every, seed=seed, plane_noise_variance=plane_noise_variance,
                       plane_bins=plane_bins, plane_bin_range=plane_bin_range, plane_noise_draws=plane_noise_draws,
                       eval_draws=eval_draws, export_noise=export_noise, critic_batches=critic_batches,
                       critic_warmup=critic_warmup),
    }
    tmp = os.path.join(workdir, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(workdir, "results.json"))
    return results
