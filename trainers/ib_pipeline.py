"""The `tfinfo-ib` job as a function: data -> MLP -> objective -> information plane -> outputs."""

import json
import os
import time

OBJECTIVES = ("ce", "ce_weight_decay", "ib_end_to_end", "ib_layerwise", "surrogate_l2", "surrogate_logvar",
              "surrogate_cond_logvar")


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
           noise_variance=2.0, critic_steps=10, x_critic="aa_mine", estimator="kde", plane_noise_variance=None, plane_samples=1000,
           plane_every=1, seed=0, verbose=0, strategy=None):
    """Trains with `objective`, measures the information plane, writes the outputs.

    `strategy` (a `tf.distribute.Strategy`, default one device) is the scope the models
    are built and trained in; `batch_size` is the global batch. Under
    `MultiWorkerMirroredStrategy` the fit is `trainers.distributed.fit`'s custom loop
    (not for `ib_layerwise`, whose stages use `model.fit`).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from trainers.distributed import fit as distributed_fit
    from trainers.distributed import is_multi_worker

    from tfinfo.callbacks.information_plane import INFORMATION_PLANE_ESTIMATORS
    from tfinfo.callbacks.information_plane import InformationPlane
    from tfinfo.data import load_spec
    from tfinfo.models import InformationBottleneckModel
    from tfinfo.models import SurrogateBottleneckModel
    from tfinfo.models import train_layer_by_layer
    from tfinfo.regularizers import ActivationL2Regularizer
    from tfinfo.regularizers import ConditionalLogVarianceRegularizer
    from tfinfo.regularizers import LogVarianceRegularizer

    if objective not in OBJECTIVES:
        raise ValueError(f"Expected --objective to be one of {list(OBJECTIVES)}. Received: objective={objective!r}")
    if x_critic not in ("mine", "aa_mine"):
        raise ValueError(f"Expected --x_critic to be one of ['mine', 'aa_mine']. Received: x_critic={x_critic!r}")
    if estimator not in INFORMATION_PLANE_ESTIMATORS:
        raise ValueError(f"Expected --estimator to be one of {list(INFORMATION_PLANE_ESTIMATORS)}. "
                         f"Received: estimator={estimator!r}")
    try:
        hidden = [int(h) for h in hidden]
    except ValueError:
        raise ValueError(f"Expected --hidden to be positive integers. Received: hidden={list(hidden)}") from None
    if not hidden or min(hidden) < 1:
        raise ValueError(f"Expected --hidden to be positive integers. Received: hidden={list(hidden)}")
    if int(epochs) < 1:
        raise ValueError(f"Expected --epochs >= 1. Received: epochs={epochs}")
    strategy = strategy or tf.distribute.get_strategy()
    if objective == "ib_layerwise" and is_multi_worker(strategy):
        raise ValueError("Expected --strategy none or mirrored for ib_layerwise. Received: strategy=multi_worker")
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    splits = load_spec(data, role="source", seed=seed)
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
            num_samples=plane_samples, seed=seed,
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
                callbacks=[plane, board], seed=seed,
                verbose=verbose)
            final, history = result.model, {"layers": result.histories, "readout": result.readout_history}
        else:
            if objective in ("ce", "ce_weight_decay"):
                model = classifier
                model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
            elif objective == "ib_end_to_end":
                model = InformationBottleneckModel(classifier, alpha=alpha, beta=beta, gamma=gamma,
                                                   noise_variance=noise_variance, critic_steps=critic_steps,
                                                   x_critic=x_critic, seed=seed)
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
            train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(
                len(x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
            history = distributed_fit(model, train, epochs, callbacks=[plane, board], verbose=verbose).history
            history = {k: [float(v) for v in vs] for k, vs in history.items()}
            final = classifier
    logits = final.predict(x_test, batch_size=256, verbose=0)
    test_accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
    last_epoch = max(row["epoch"] for row in plane.rows)
    information = {row["layer"]: {"i_x": row["i_x"], "i_y": row["i_y"]}
                   for row in plane.rows if row["epoch"] == last_epoch}
    final.save(os.path.join(workdir, "classifier.keras"))
    results = {
        "objective": objective,
        "test_accuracy": test_accuracy,
        "estimator": estimator,
        "final_epoch": last_epoch,
        "information": information,
        "num_train": int(len(x_train)),
        "num_test": int(len(x_test)),
        "wall_time_s": time.perf_counter() - start,
        "num_replicas": int(strategy.num_replicas_in_sync),
        "history": history,
        "config": dict(objective=objective, data=data, hidden=hidden, epochs=epochs, readout_epochs=readout_epochs,
                       batch_size=batch_size, learning_rate=learning_rate, critic_learning_rate=critic_learning_rate,
                       weight_decay=weight_decay, alpha=alpha, beta=beta, gamma=gamma, noise_variance=noise_variance,
                       critic_steps=critic_steps, x_critic=x_critic, estimator=estimator, plane_samples=plane_samples,
                       plane_every=plane_every, seed=seed),
    }
    tmp = os.path.join(workdir, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(workdir, "results.json"))
    return results
