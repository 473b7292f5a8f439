"""Layer-by-layer training with the information-bottleneck functional (seed 003, section 5)."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfinfo.models.information_bottleneck_model import InformationBottleneckModel


@dataclasses.dataclass
class LayerByLayerResult:
    """What `train_layer_by_layer` returns.

    Attributes:
        model: the classifier with the post-trained linear readout on top (the model
            to evaluate and ship), `keras.Model(inputs, readout logits)`.
        layers: names of the layers trained, in order.
        histories: per trained layer, its `History.history` dict (loss, ce, i_x, i_y, ...).
        readout_history: the readout's `History.history`.
        warmups: per trained layer, its critics' warm-up (`warmup_history`: one dict
            `{"step", "i_x", "i_y"}` per critic-only step; empty without warm-up).
    """

    model: object
    layers: list
    histories: dict
    readout_history: dict
    warmups: dict = dataclasses.field(default_factory=dict)


def trainable_layer_names(classifier):
    """Layers with a `kernel` (dense and convolution layers), in order."""
    return [layer.name for layer in classifier.layers if hasattr(layer, "kernel")]


def build_layer_stage(classifier, layer, x, *, beta=1e-3, noise_variance=2.0, critic_steps=10, x_critic="mine",
                      x_regularizer=None, seed=None, optimizer=None, critic_optimizer=None, critic_batches="fresh",
                      critic_warmup="settle", **compile_kwargs):
    """One stage of `train_layer_by_layer`: the compiled IB model that trains `layer` alone.

    Freezes every layer of `classifier` except `layer` (`trainable`), builds an
    `InformationBottleneckModel` with `L = layer`, `alpha=0, beta=1, gamma=beta` (seed 003
    eq. 7), with fresh critics that its `fit` warms up first (`critic_warmup`), adapts
    its critic's input statistics to `x` and compiles it. Call it (or
    `train_layer_by_layer`) inside a `tf.distribute` strategy's scope to train the stage
    on several replicas: the model and both optimizers are then created in that scope.

    Args:
        classifier: functional `keras.Model` from inputs to outputs.
        layer: name of the layer trained in this stage.
        x: training inputs (numpy), for `adapt`.
        beta, noise_variance, critic_steps, x_critic, seed: as in `train_layer_by_layer`.
        x_regularizer: optional `MutualInformationRegularizer` for `I(X; L + eps)`.
        optimizer: the layer's optimizer (default `Adam(1e-3)`).
        critic_optimizer: the critics' optimizer (default `Adam(1e-4)`).
        critic_batches, critic_warmup: as in `InformationBottleneckModel` (defaults:
            a fresh minibatch per critic update; warm-up until the estimates settle).
        **compile_kwargs: further `compile` arguments (e.g. `jit_compile`).

    Returns:
        The compiled `InformationBottleneckModel`.
    """
    for lay in classifier.layers:
        lay.trainable = lay.name == layer
    model = InformationBottleneckModel(
        classifier, x_regularizer=x_regularizer, layer=layer, alpha=0.0, beta=1.0, gamma=beta,
        noise_variance=noise_variance, critic_steps=critic_steps, x_critic=x_critic, seed=seed,
        critic_batches=critic_batches, critic_warmup=critic_warmup,
    )
    model.adapt(x)
    model.compile(optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(1e-3),
                  critic_optimizer=critic_optimizer if critic_optimizer is not None else keras.optimizers.Adam(1e-4),
                  **compile_kwargs)
    return model


def train_layer_by_layer(classifier, x, y, *, layers=None, beta=1e-3, noise_variance=2.0, critic_steps=10,
                         epochs_per_layer=1, readout_epochs=5, batch_size=100, learning_rate=1e-3,
                         critic_learning_rate=1e-4, readout_learning_rate=1e-2, x_critic="mine",
                         x_regularizer_factory=None, callbacks=(), seed=None, verbose=0, critic_batches="fresh",
                         critic_warmup="settle"):
    """Trains `classifier` one layer at a time with the IB functional, then a linear readout.

    For each layer `L_i` in order: every other layer is frozen, and layer i is trained
    with `-I(Y; L_i) + beta * I(X; L_i + eps)` (seed 003 eq. 7) while the two MINE
    critics train alternately (`critic_steps` critic updates per layer update, each on
    a minibatch of its own, Algorithm 1); every stage has fresh critics, which are first
    warmed up alone (seed 003 appendix C: until their estimates settle, by default)
    before the layer follows them; then layer i is frozen and the next one starts. Finally the whole
    network is frozen and one dense linear layer is post-trained on its output with
    cross-entropy (mutual information is invariant to invertible maps, so the IB-trained
    output need not be the one-hot label; the readout finds the map).

    Callbacks see one continuous epoch count across the stages (`initial_epoch`), so an
    `InformationPlane` callback draws each layer's whole trajectory; the warm-ups run
    before each stage's epochs, without the callbacks (their estimates are in
    `LayerByLayerResult.warmups`).

    Each stage is `build_layer_stage`. Called inside a `tf.distribute` strategy's scope,
    every stage and the readout train on the strategy's replicas, with the same numbers
    as on one device (see `InformationBottleneckModel`).

    Args:
        classifier: functional `keras.Model` from inputs to outputs; its layers are left
            frozen (`trainable=False`) afterwards.
        x: training inputs (numpy), `(N,) + input_shape`.
        y: integer labels, `(N,)`.
        layers: names of the layers to train in order; `None` = every layer with a kernel.
        beta: the bottleneck weight of `I(X; L_i + eps)` (seed 003: 1e-3).
        noise_variance: variance of the measurement noise (seed 003: 2).
        critic_steps: critic updates per layer update (seed 003: 10).
        epochs_per_layer: epochs of each layer's stage.
        readout_epochs: epochs of the linear readout.
        batch_size: minibatch size of every critic update and layer update (with
            `critic_batches="fresh"` each stage's `fit` takes batches of
            `(critic_steps + 1) * batch_size` rows from a reshuffled, repeated stream;
            an epoch is `ceil(N / batch_size)` layer updates, as many as a CE epoch has
            steps; the readout's batches are `batch_size`).
        learning_rate: Adam learning rate of the layers and the readout (seed 003: 1e-3).
        critic_learning_rate: Adam learning rate of the critics (seed 003: 1e-4).
        readout_learning_rate: Adam learning rate of the readout (`None` = `learning_rate`);
            1e-2 by default: the IB-trained output is not at CE's scale, and at 1e-3 the
            readout needed many more epochs (measured on the embedded digits).
        x_critic: `"mine"` or `"aa_mine"` (seed 003's architecture-aware critic, a copy
            of layers 1..i kept in sync), for `I(X; L_i + eps)`.
        x_regularizer_factory: optional `f(layer_name) -> MutualInformationRegularizer`
            for `I(X; L_i + eps)` (e.g. with an architecture-aware critic); default MINE.
        callbacks: Keras callbacks for every stage.
        seed: seed of the critics' noise and shuffles.
        verbose: Keras verbosity.
        critic_batches: `"fresh"` (Algorithm 1) or `"reuse"` (the `critic_steps`
            updates and the layer update share one minibatch).
        critic_warmup: critic-only steps at the start of every stage (an int >= 0) or
            `"settle"` (until the held-out estimates settle; `CriticWarmup`).

    Returns:
        A `LayerByLayerResult`.

    Example:

    >>> result = train_layer_by_layer(mlp, x_train, y_train, beta=1e-3, epochs_per_layer=2)
    >>> result.model.evaluate(x_test, y_test)

    Reference:
        Elad et al., seed 003, section 5, Algorithm 1 and appendix C.
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or len(y) == 0:
        raise ValueError(f"Expected `y` to be {len(x)} integer labels. Received: shape={y.shape}, dtype={y.dtype}")
    names = trainable_layer_names(classifier) if layers is None else list(layers)
    known = [layer.name for layer in classifier.layers]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ValueError(f"Expected `layers` among the classifier's layers {known}. Received: {names}")
    for name, value, low in (("epochs_per_layer", epochs_per_layer, 1), ("readout_epochs", readout_epochs, 1),
                             ("batch_size", batch_size, 2)):
        if int(value) < low:
            raise ValueError(f"Expected `{name}` >= {low}. Received: {name}={value}")
    histories, warmups, epoch = {}, {}, 0
    for index, name in enumerate(names):
        model = build_layer_stage(
            classifier, name, x, beta=beta, noise_variance=noise_variance, critic_steps=critic_steps,
            x_critic=x_critic, seed=None if seed is None else seed + index,
            x_regularizer=None if x_regularizer_factory is None else x_regularizer_factory(name),
            optimizer=keras.optimizers.Adam(learning_rate),
            critic_optimizer=keras.optimizers.Adam(critic_learning_rate),
            critic_batches=critic_batches, critic_warmup=critic_warmup,
        )
        # An epoch is as many layer updates as a CE epoch has steps; the critics' fresh
        # minibatches come from a reshuffled stream on top of them.
        stream = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
            len(x), seed=None if seed is None else seed + index, reshuffle_each_iteration=True).repeat().batch(
            model.batch_size_for(int(batch_size)))
        history = model.fit(stream, epochs=epoch + int(epochs_per_layer), initial_epoch=epoch,
                            steps_per_epoch=-(-len(x) // int(batch_size)), verbose=verbose, callbacks=list(callbacks))
        histories[name] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        warmups[name] = list(model.warmup_history)
        epoch += int(epochs_per_layer)
    for layer in classifier.layers:
        layer.trainable = False
    readout = keras.layers.Dense(int(np.max(y)) + 1, name="readout")
    inputs = classifier.inputs[0] if len(classifier.inputs) == 1 else classifier.inputs
    model = keras.Model(inputs, readout(classifier.outputs[0]), name=f"{classifier.name}_readout")
    model.compile(optimizer=keras.optimizers.Adam(readout_learning_rate or learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    readout_history = model.fit(x, y, batch_size=batch_size, epochs=int(readout_epochs), shuffle=True,
                                verbose=verbose)
    return LayerByLayerResult(
        model=model,
        layers=names,
        histories=histories,
        readout_history={k: [float(v) for v in vs] for k, vs in readout_history.history.items()},
        warmups=warmups,
    )
