"""Separable critic: `T(x, z) = g(x) . h(z)`."""

import keras
import tensorflow as tf

from tfinfo.critics.concat_critic import flatten_features


def _mlp(hidden_units, embedding_dim, activation, name):
    layers = [keras.layers.Dense(u, activation=activation, name=f"{name}_hidden_{i}") for i, u in enumerate(hidden_units)]
    layers.append(keras.layers.Dense(embedding_dim, name=f"{name}_embedding"))
    return layers


@keras.saving.register_keras_serializable(package="tfinfo")
class SeparableCritic(keras.layers.Layer):
    """A critic `T(x, z) = g(x) . h(z) / sqrt(embedding_dim)` with two MLP encoders.

    Scoring all `N x N` pairs costs one matrix product, so every off-diagonal pair of a
    batch can serve as a marginal sample (and InfoNCE gets `N - 1` negatives per row).

    Args:
        hidden_units: hidden layer sizes of both encoders.
        embedding_dim: size of `g(x)` and `h(z)`.
        activation: hidden activation.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: a tuple `(x, z)` with the same leading dimension; each flattened per sample.

    Returns:
        A float tensor of shape `(N,)`, the aligned pair scores.

    Example:

    >>> critic = SeparableCritic(hidden_units=(256,), embedding_dim=32)
    >>> scores = critic.score_matrix(x, z)  # (N, N)

    Reference:
        Poole et al. 2019, "On variational bounds of mutual information", section 2.
    """

    def __init__(self, hidden_units=(256,), embedding_dim=32, activation="relu", **kwargs):
        super().__init__(**kwargs)
        hidden_units = tuple(int(u) for u in hidden_units)
        if hidden_units and min(hidden_units) < 1:
            raise ValueError(f"Expected positive `hidden_units`. Received: hidden_units={hidden_units}")
        if int(embedding_dim) < 1:
            raise ValueError(f"Expected `embedding_dim` >= 1. Received: embedding_dim={embedding_dim}")
        self.hidden_units = hidden_units
        self.embedding_dim = int(embedding_dim)
        self.activation = keras.activations.serialize(keras.activations.get(activation))
        self.x_layers = _mlp(hidden_units, self.embedding_dim, activation, "g")
        self.z_layers = _mlp(hidden_units, self.embedding_dim, activation, "h")

    def build(self, input_shape):
        for layers, shape in zip((self.x_layers, self.z_layers), input_shape):
            width = 1
            for d in shape[1:]:
                width *= int(d)
            for layer in layers:
                layer.build((None, width))
                width = layer.units

    def _encode(self, layers, t):
        t = tf.cast(flatten_features(t), self.compute_dtype)
        for layer in layers:
            t = layer(t)
        return t

    def embeddings(self, x, z):
        """Returns `(g(x), h(z) / sqrt(embedding_dim))`."""
        if not self.built:
            self.build((tuple(x.shape), tuple(z.shape)))
        scale = tf.cast(self.embedding_dim ** -0.5, self.compute_dtype)
        return self._encode(self.x_layers, x), self._encode(self.z_layers, z) * scale

    def call(self, inputs):
        gx, hz = self.embeddings(*inputs)
        return tf.reduce_sum(gx * hz, axis=-1)

    def score_matrix(self, x, z):
        """All-pairs scores `(N, M)`: entry `[i, j]` is `T(x_i, z_j)`."""
        gx, hz = self.embeddings(x, z)
        return tf.matmul(gx, hz, transpose_b=True)

    def get_config(self):
        config = {
            "hidden_units": list(self.hidden_units),
            "embedding_dim": self.embedding_dim,
            "activation": self.activation,
        }
        base_config = super().get_config()
        return {**base_config, **config}
