"""Concat critic: an MLP on `[flatten(x), z]` (the MINE statistics network)."""

import keras
import tensorflow as tf

CRITIC_PRESETS = {
    # Seed 003 (noise-regularized MI / layer-by-layer IB): 2 hidden layers of 1500, LeakyReLU.
    "seed003": {"hidden_units": (1500, 1500), "activation": "leaky_relu"},
    # Seed 002 (MINE estimator details): 4 hidden layers of 1024, ReLU.
    "seed002": {"hidden_units": (1024, 1024, 1024, 1024), "activation": "relu"},
    # A CPU-sized default.
    "small": {"hidden_units": (256, 256), "activation": "relu"},
}


def flatten_features(t):
    """`(batch, ...)` -> `(batch, prod(...))`, cast to float32 unless float32/float64."""
    t = tf.convert_to_tensor(t)
    if t.dtype != tf.float32 and t.dtype != tf.float64:
        t = tf.cast(t, tf.float32)
    batch = tf.shape(t)[0]
    if t.shape.rank is not None and t.shape.rank == 2:
        return t
    size = 1
    for dim in t.shape[1:]:
        size *= dim
    return tf.reshape(t, [batch, size])


@keras.saving.register_keras_serializable(package="tfinfo")
class ConcatCritic(keras.layers.Layer):
    """A critic `T(x, z) = MLP([flatten(x), z])` scoring (x, z) pairs.

    `call((x, z))` scores the `N` aligned pairs `(x_i, z_i)`; `score_matrix(x, z)` scores
    all `N x N` pairs `(x_i, z_j)` without materializing the `N^2` concatenations: the
    first dense layer is linear, so its pre-activations are `x_i W_x + z_j W_z + b`.

    Args:
        hidden_units: sizes of the hidden layers, or a preset name from
            `CRITIC_PRESETS` ("seed003": 2 x 1500 LeakyReLU as in seed 003; "seed002":
            4 x 1024 ReLU as in seed 002; "small": 2 x 256 ReLU).
        activation: hidden activation (ignored when `hidden_units` is a preset name).
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tuple `(x, z)` with the same leading dimension; `x` of any rank >= 2 is
            flattened per sample.

    Returns:
        A float tensor of shape `(N,)`.

    Example:

    >>> critic = ConcatCritic("small")
    >>> joint = critic((x, z))                   # (N,)
    >>> scores = critic.score_matrix(x, z)       # (N, N), scores[i, j] = T(x_i, z_j)

    Reference:
        Belghazi et al. 2018, "MINE: Mutual Information Neural Estimation".
    """

    def __init__(self, hidden_units="small", activation="relu", **kwargs):
        super().__init__(**kwargs)
        if isinstance(hidden_units, str):
            if hidden_units not in CRITIC_PRESETS:
                raise ValueError(
                    f"Expected `hidden_units` to be a tuple of ints or one of {sorted(CRITIC_PRESETS)}. "
                    f"Received: hidden_units={hidden_units!r}"
                )
            preset = CRITIC_PRESETS[hidden_units]
            hidden_units, activation = preset["hidden_units"], preset["activation"]
        hidden_units = tuple(int(u) for u in hidden_units)
        if not hidden_units or min(hidden_units) < 1:
            raise ValueError(
                f"Expected `hidden_units` to be a non-empty tuple of positive ints. Received: hidden_units={hidden_units}"
            )
        self.hidden_units = hidden_units
        self.activation = keras.activations.serialize(keras.activations.get(activation))
        self._activation = keras.activations.get(activation)
        self.hidden_layers = [
            keras.layers.Dense(units, activation=None, name=f"hidden_{i}") for i, units in enumerate(hidden_units)
        ]
        self.output_layer = keras.layers.Dense(1, name="score")

    def build(self, input_shape):
        x_shape, z_shape = input_shape
        x_dim = 1
        for d in x_shape[1:]:
            x_dim *= int(d)
        z_dim = 1
        for d in z_shape[1:]:
            z_dim *= int(d)
        self.x_dim, self.z_dim = x_dim, z_dim
        width = x_dim + z_dim
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = layer.units
        self.output_layer.build((None, width))

    def _head(self, hidden):
        hidden = self._activation(hidden)
        for layer in self.hidden_layers[1:]:
            hidden = self._activation(layer(hidden))
        return self.output_layer(hidden)[..., 0]

    def call(self, inputs):
        x, z = inputs
        joint = tf.concat(
            [tf.cast(flatten_features(x), self.compute_dtype), tf.cast(flatten_features(z), self.compute_dtype)], axis=-1
        )
        return self._head(self.hidden_layers[0](joint))

    def score_matrix(self, x, z):
        """All-pairs scores `(N, M)`: entry `[i, j]` is `T(x_i, z_j)`."""
        if not self.built:
            self.build((tuple(x.shape), tuple(z.shape)))
        x = tf.cast(flatten_features(x), self.compute_dtype)
        z = tf.cast(flatten_features(z), self.compute_dtype)
        first = self.hidden_layers[0]
        kernel = tf.cast(first.kernel, self.compute_dtype)
        bias = tf.cast(first.bias, self.compute_dtype)
        hx = tf.matmul(x, kernel[: self.x_dim])
        hz = tf.matmul(z, kernel[self.x_dim :]) + bias
        n, m = tf.shape(hx)[0], tf.shape(hz)[0]
        pre = tf.reshape(hx[:, None, :] + hz[None, :, :], [n * m, self.hidden_units[0]])
        return tf.reshape(self._head(pre), [n, m])

    def get_config(self):
        config = {"hidden_units": list(self.hidden_units), "activation": self.activation}
        base_config = super().get_config()
        return {**base_config, **config}
