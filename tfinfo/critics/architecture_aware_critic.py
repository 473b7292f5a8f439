"""Architecture-aware MINE critic (seed 003, AA-MINE): a copy of `F_i` inside the critic."""

import copy

import keras
import numpy as np
import tensorflow as tf

from tfinfo.critics.concat_critic import ConcatCritic
from tfinfo.critics.concat_critic import flatten_features


def _non_input_layers(network):
    return [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)]


def _source_weights(source):
    """All weights (trainable and not) of a network, a layer or a list of layers, in order."""
    if isinstance(source, (list, tuple)):
        return [w for layer in source for w in layer.get_weights()]
    return source.get_weights()


def _clone(source):
    """An unshared copy of the architecture of `source` (a model, a layer or a list of layers)."""
    if isinstance(source, dict):
        # Keras's functional from_config consumes parts of the dict: work on a copy.
        network = keras.saving.deserialize_keras_object(copy.deepcopy(source))
    elif isinstance(source, keras.Model):
        try:
            network = keras.models.clone_model(source)
        except Exception as error:  # subclassed models without a usable get_config
            raise ValueError(
                "Expected `feature_network` to be a Sequential or functional model, a layer, or a list of layers "
                f"that can be rebuilt from their configs. Received: {source!r} ({error})"
            ) from None
    elif isinstance(source, keras.layers.Layer):
        network = keras.Sequential([source.__class__.from_config(source.get_config())])
    elif isinstance(source, (list, tuple)) and source and all(isinstance(layer, keras.layers.Layer) for layer in source):
        network = keras.Sequential([layer.__class__.from_config(layer.get_config()) for layer in source])
    else:
        raise ValueError(
            "Expected `feature_network` to be a Keras model, a layer or a non-empty list of layers "
            f"(layers 1..i of the network being measured). Received: feature_network={source!r}"
        )
    if not isinstance(network, keras.Model):
        network = keras.Sequential([network])
    return network


@keras.saving.register_keras_serializable(package="tfinfo")
class ArchitectureAwareCritic(keras.layers.Layer):
    """The AA-MINE critic `T(x, z) = MLP([F_i(x), z])` for `I(X; L_i + eps)`, `L_i = F_i(X)`.

    The critic holds its own copy of `F_i`, layers `1..i` of the network being measured
    (same architecture, weights copied from the network, no variable shared), and scores a
    pair by passing `x` through the copy and `[F_i(x), z]` through a concat head (a
    `ConcatCritic`). When `z = F_i(x) + eps` the head only has to compare its two inputs,
    which is what makes the estimate grow without bound as the noise goes to zero.

    Training the copy. Algorithm 1 of seed 003 updates "the discriminator" parameters
    `theta` by gradient ascent on the DV bound, with `theta_0` "initialize the
    discriminator"; the text (section 4, Appendix C) describes the copy of layers `1..i` as
    the device that informs the critic of `F_i`. The paper never says whether the copy's
    weights are part of `theta`. Here `train_copy=False` (the default; DESIGN.md section 3:
    "a frozen copy") keeps the copy equal to the network: its variables are
    non-trainable, so `trainable_variables` is the head only and the critic knows `F_i`
    exactly. `train_copy=True` is the literal reading of Algorithm 1: the copy starts at the
    network's weights and is updated with the head (all of its layers, also copies of
    frozen ones). `sync_from(network)` copies the network's current weights in again:
    with `train_copy=False`, call it after every update of the network when the critic is
    used as a regularizer (`InformationBottleneckModel` does, before every step's critic
    updates; with `train_copy=True` it never re-syncs, so the copy's training is kept).

    Mode. The copy always runs in inference mode (`training=False`: no dropout,
    batch-norm moving statistics). The joint pairs are `(x, F_i(x) + eps)` only when `z`
    is the network's inference-mode output: a `z` computed in training mode through
    dropout or batch normalization is not what the copy computes
    (`InformationBottleneckModel` gives the critic inference-mode representations, and
    refuses `representation_mode="training"` with such layers in `1..i`).

    `adapt(x, z)` (optional) stores a per-feature mean `m` and standard deviation `s` (of
    `z`, or of `F_i(x)` without `z`); the head then sees `[(F_i(x) - m) / s, (z - m) / s]`:
    one fixed bijection of `z`, which leaves the mutual information unchanged and keeps the
    head's inputs at unit scale.

    Args:
        feature_network: the sub-network `F_i` to copy: a Sequential or functional model,
            a single layer, or a list of layers applied in order (layers `1..i`); or the
            serialized copy found in `get_config()`. Built sources have their weights
            copied (at once, or when the critic is built); unbuilt ones are copied by a
            later `sync_from`. Use `from_network(network, layer_index)` to take the first
            `layer_index` layers of a whole network.
        hidden_units: the head's hidden layer sizes, or a `CRITIC_PRESETS` name
            ("seed003" is the paper's 2 x 1500 LeakyReLU; "small": 2 x 256 ReLU).
        activation: the head's hidden activation (ignored for a preset name).
        train_copy: whether the copy of `F_i` is trained with the head (see above).
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tuple `(x, z)` with the same leading dimension `N`; `x` is what the
            network takes (a flattened `x` is reshaped to the copy's input shape when that
            is known) and `z` has `F_i(x)`'s size per sample (any shape, flattened).

    Returns:
        A float tensor of shape `(N,)`; `score_matrix(x, z)` gives all `N x M` pairs and
        runs the copy once per `x`, so it works with `critic_scores(..., "all_pairs")` and
        `estimate_mutual_information`.

    Example:

    >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
    ...                         keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
    >>> critic = ArchitectureAwareCritic.from_network(net, layer_index=3)
    >>> z = net(x) + 0.1 * keras.random.normal((len(x), 10))
    >>> scores = critic.score_matrix(x, z)        # (N, N), scores[i, j] = T(x_i, z_j)
    >>> ... train `net` ...
    >>> critic.sync_from(ArchitectureAwareCritic.sub_network(net, 3))

    Reference:
        Seed 003 ("The effectiveness of layer-by-layer training using the information
        bottleneck principle"), section 4, Figure 1, Algorithm 1 and Appendix C;
        Belghazi et al. 2018, "MINE: Mutual Information Neural Estimation".
    """

    def __init__(self, feature_network, hidden_units="small", activation="relu", train_copy=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(train_copy, (bool, np.bool_)):
            raise ValueError(f"Expected `train_copy` to be a bool. Received: train_copy={train_copy!r}")
        pending = None
        if not isinstance(feature_network, dict):
            pending = _source_weights(feature_network) if _is_built(feature_network) else None
        self.feature_network = _clone(feature_network)
        self.train_copy = bool(train_copy)
        # Every layer of the copy, also those cloned from frozen layers of the network
        # (the layer-by-layer scheme freezes them): the copy is trained or not as a whole.
        _set_trainable(self.feature_network, self.train_copy)
        # The head computes in the critic's dtype policy (e.g. float32 under a mixed
        # policy); the copy keeps the network's layers' own policies, so `F_i(x)` is
        # computed exactly as the network computes `L_i`.
        self.head = ConcatCritic(hidden_units, activation=activation, name="head", dtype=self.dtype_policy)
        self.hidden_units = self.head.hidden_units
        self.activation = self.head.activation
        # A tuple of arrays: held until the copy is built, never tracked as state.
        self._pending_weights = tuple(pending) if pending else None
        self._network_input_shape = _model_input_shape(self.feature_network)
        if self._pending_weights is not None and self.feature_network.built:
            self._assign(self._pending_weights)

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, value)
        # A frozen copy stays frozen whatever is done to the critic's own flag.
        if not getattr(self, "train_copy", True) and getattr(self, "feature_network", None) is not None:
            self.feature_network.trainable = False

    # -- construction helpers -------------------------------------------------------------

    @staticmethod
    def sub_network(network, layer_index):
        """`F_i`: the first `layer_index` layers of `network` (sharing its layers and weights).

        Args:
            network: a Sequential or functional model. Input layers are not counted.
            layer_index: `i >= 1`; the output of the `i`-th non-input layer is `L_i`.

        Returns:
            A model (functional when `network` has defined inputs, else a Sequential of the
            same layer objects) computing `L_i` from the network's input.
        """
        if not isinstance(network, keras.Model):
            raise ValueError(f"Expected `network` to be a Keras model. Received: network={network!r}")
        layers = _non_input_layers(network)
        if isinstance(layer_index, bool) or not isinstance(layer_index, (int, np.integer)) or not (
            1 <= int(layer_index) <= len(layers)
        ):
            raise ValueError(
                f"Expected `layer_index` to be an int in [1, {len(layers)}] (the layers of {network.name!r} "
                f"after its input). Received: layer_index={layer_index!r}"
            )
        layer_index = int(layer_index)
        try:
            inputs = network.inputs
        except (AttributeError, ValueError):
            inputs = None
        if inputs:
            inputs = inputs[0] if len(inputs) == 1 else inputs
            return keras.Model(inputs, layers[layer_index - 1].output, name=f"{network.name}_up_to_{layer_index}")
        return keras.Sequential(layers[:layer_index], name=f"{network.name}_up_to_{layer_index}")

    @classmethod
    def from_network(cls, network, layer_index, **kwargs):
        """A critic for `I(X; L_i + eps)` whose copy is layers `1..layer_index` of `network`."""
        return cls(cls.sub_network(network, layer_index), **kwargs)

    # -- keeping the copy equal to the network ----------------------------------------------

    def _assign(self, weights):
        targets = self.feature_network.weights
        shapes = [tuple(w.shape) for w in targets]
        got = [tuple(np.shape(w)) for w in weights]
        if shapes != got:
            raise ValueError(
                "Expected `network` to have the weights of the copied sub-network "
                f"({len(shapes)} arrays, shapes {shapes}). Received: {len(got)} arrays, shapes {got}"
            )
        for target, value in zip(targets, weights):
            target.assign(np.asarray(value, dtype=target.dtype))

    def sync_from(self, network):
        """Copies the current weights of `network` (`F_i`: a model, layer or list of layers,
        with the copy's architecture) into the copy; returns `self`."""
        if isinstance(network, (list, tuple)):
            valid = all(isinstance(layer, keras.layers.Layer) for layer in network)
        else:
            valid = isinstance(network, keras.layers.Layer)
        if not valid:
            raise ValueError(f"Expected `network` to be a model, a layer or a list of layers. Received: {network!r}")
        if not _is_built(network):
            raise ValueError(f"Expected `network` to be built (to have weights). Received: unbuilt {network!r}")
        weights = _source_weights(network)
        if not self.feature_network.built:
            self._pending_weights = tuple(weights)
        else:
            self._assign(weights)
        return self

    def adapt(self, x, z=None, batch_size=512):
        """Sets the head's fixed normalization `(t - m) / s`, applied to `F_i(x)` and `z` alike.

        `m` and `s` are the per-feature mean and standard deviation of `z` when it is given
        (for `z = F_i(x) + eps`: `Var[F_i(x)] + sigma^2`, so both head inputs are at most
        of unit scale whatever the noise), else of `F_i(x)` computed by the copy.
        """
        if not self.built:
            raise ValueError("Expected a built critic: call it or `build((x_shape, z_shape))` before `adapt`.")
        if z is None:
            x = np.asarray(x)
            if x.ndim < 1 or x.shape[0] < 2:
                raise ValueError(f"Expected `x` with at least 2 samples. Received: shape={x.shape}")
            ref = np.concatenate(
                [
                    np.asarray(self.features(tf.constant(x[i : i + batch_size], tf.float32)), np.float64)
                    for i in range(0, x.shape[0], int(batch_size))
                ]
            )
        else:
            ref = np.asarray(z, np.float64)
            ref = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref[:, None]
            if ref.shape[0] < 2 or ref.shape[1] != self.feature_dim:
                raise ValueError(
                    f"Expected `z` of shape (N >= 2, {self.feature_dim}). Received: shape={np.shape(z)}"
                )
        std = ref.std(axis=0)
        self.feature_mean.assign(ref.mean(axis=0).astype("float32"))
        self.feature_std.assign(np.where(std > 1e-6, std, 1.0).astype("float32"))
        return self

    # -- layer API ------------------------------------------------------------------------

    def build(self, input_shape):
        x_shape, z_shape = input_shape
        x_shape = tuple(x_shape)
        if self._network_input_shape is not None:
            net_shape = (None, *self._network_input_shape[1:])
        else:
            net_shape = (None, *x_shape[1:])
        if not self.feature_network.built:
            self.feature_network.build(net_shape)
            self._network_input_shape = _model_input_shape(self.feature_network) or net_shape
        out_shape = self.feature_network.compute_output_shape(net_shape)
        feature_dim = int(np.prod([int(d) for d in out_shape[1:]]))
        z_dim = int(np.prod([int(d) for d in tuple(z_shape)[1:]]))
        if z_dim != feature_dim:
            raise ValueError(
                f"Expected `z` to have the size of the copied sub-network's output ({feature_dim} per sample, "
                f"shape {tuple(out_shape)}). Received: z shape={tuple(z_shape)}"
            )
        self.feature_dim = feature_dim
        self.feature_mean = self.add_weight(
            shape=(feature_dim,), initializer="zeros", trainable=False, name="feature_mean"
        )
        self.feature_std = self.add_weight(
            shape=(feature_dim,), initializer="ones", trainable=False, name="feature_std"
        )
        self.head.build(((None, feature_dim), (None, feature_dim)))
        if self._pending_weights is not None:
            self._assign(self._pending_weights)
            self._pending_weights = None

    def features(self, x):
        """`F_i(x)` computed by the copy, flattened to `(N, feature_dim)`."""
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        if self._network_input_shape is not None:
            target = [int(d) for d in self._network_input_shape[1:]]
            if x.shape.rank != len(target) + 1:
                x = tf.reshape(x, [-1, *target])
        return flatten_features(self.feature_network(x, training=False))

    def _normalized(self, x, z):
        if not self.built:
            self.build((tuple(x.shape), tuple(z.shape)))
        features = self.features(x)
        z = flatten_features(z)
        mean = tf.cast(self.feature_mean, self.compute_dtype)
        std = tf.cast(self.feature_std, self.compute_dtype)
        features = (tf.cast(features, self.compute_dtype) - mean) / std
        z = (tf.cast(z, self.compute_dtype) - mean) / std
        return features, z

    def call(self, inputs):
        x, z = inputs
        return self.head(self._normalized(x, z))

    def score_matrix(self, x, z):
        """All-pairs scores `(N, M)`: entry `[i, j]` is `T(x_i, z_j)`."""
        features, z = self._normalized(x, z)
        return self.head.score_matrix(features, z)

    def get_config(self):
        config = {
            "feature_network": keras.saving.serialize_keras_object(self.feature_network),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "train_copy": self.train_copy,
        }
        base_config = super().get_config()
        return {**base_config, **config}


def _set_trainable(network, value):
    network.trainable = value
    for layer in getattr(network, "layers", []):
        _set_trainable(layer, value)


def _is_built(source):
    if isinstance(source, (list, tuple)):
        return bool(source) and all(getattr(layer, "built", False) for layer in source)
    return bool(getattr(source, "built", False))


def _model_input_shape(network):
    try:
        inputs = network.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape)
