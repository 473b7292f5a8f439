"""Gaussian noise used only to measure `I(X; L + eps)`, never in the forward pass (seed 003, section 3)."""

import math
import numbers

import keras
import tensorflow as tf

_PHILOX = 1  # `tf.random.Algorithm.PHILOX.value`
_MANTISSA_BITS = 24


def _key_and_counter(seed_generator):
    """Philox key and counter from a `keras.random.SeedGenerator`'s state `[seed, step]`
    (advancing it): key `seed`, counter `(0, step)`, so successive draws never overlap."""
    state = tf.cast(seed_generator.next(), tf.int64)
    key = tf.bitcast(state[:1], tf.uint64)
    counter = tf.bitcast(tf.stack([tf.zeros_like(state[1]), state[1]]), tf.uint64)
    return key, counter


def portable_randint(shape, minval, maxval, seed_generator):
    """Uniform int32 integers in `[minval, maxval)` that are the same in graph mode, under
    XLA and on every replica holding the same generator state.

    `keras.random` draws from a seed variable through an op whose XLA kernel derives
    another Philox key than the CPU and GPU kernels, so a `jit_compile=True` step draws
    other numbers than graph mode. Here the key and counter are formed explicitly and
    only the integer generator is used, whose bits XLA reproduces.

    Args:
        shape: output shape (a list or an int32 tensor; dynamic sizes are fine).
        minval, maxval: Python ints, `minval < maxval`.
        seed_generator: a `keras.random.SeedGenerator` (advanced by one).

    Returns:
        An int32 tensor of `shape`.
    """
    key, counter = _key_and_counter(seed_generator)
    return tf.raw_ops.StatelessRandomUniformIntV2(
        shape=tf.cast(shape, tf.int32),
        key=key,
        counter=counter,
        alg=tf.constant(_PHILOX, tf.int32),
        minval=tf.constant(int(minval), tf.int32),
        maxval=tf.constant(int(maxval), tf.int32),
    )


def portable_normal(shape, seed_generator, stddev=1.0, dtype="float32"):
    """`N(0, stddev^2)` samples that agree (to float rounding, about 1e-7 relative) in
    graph mode, under XLA and on every replica holding the same generator state.

    The float generators of XLA turn the same random bits into other numbers than the
    CPU and GPU kernels (they use other mantissa bits), so this draws 24-bit uniform
    integers (`portable_randint`) and applies the Box-Muller transform itself. The tails
    stop at about 5.8 standard deviations (probability below 1e-8).

    Args:
        shape: output shape (a list or an int32 tensor).
        seed_generator: a `keras.random.SeedGenerator` (advanced by one).
        stddev: standard deviation.
        dtype: output dtype (computed in float64 for float64, else in float32).

    Returns:
        A tensor of `shape` and `dtype`.
    """
    dtype = tf.as_dtype(dtype)
    work = tf.float64 if dtype == tf.float64 else tf.float32
    bits = portable_randint(tf.concat([[2], tf.cast(shape, tf.int32)], axis=0), 0, 2**_MANTISSA_BITS, seed_generator)
    u = tf.cast(bits, work) * (2.0**-_MANTISSA_BITS)
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - u[0]))  # 1 - u in (0, 1]
    return tf.cast(tf.cast(stddev, work) * radius * tf.cos((2.0 * math.pi) * u[1]), dtype)


@keras.saving.register_keras_serializable(package="tfinfo")
class MeasurementNoise(keras.layers.Layer):
    """The noise `eps ~ N(0, variance I)` of the noise-regularized information `I(X; L + eps)`.

    For a deterministic network and a continuous input, `I(X; L)` between the input and
    a layer is infinite. Seed 003 measures and penalizes `I(X; L + eps)` instead, and
    stresses that the noise "is added only for the sake of quantifying complexity, and is
    not part of the net". This layer records that noise in the model (its variance and
    seed are saved with it) while keeping it out of the computation:

    - calling the layer is the identity, in training and in inference (inputs are not
      even cast: `autocast` is off by default), so placing it after layer `L` changes
      neither the predictions nor the gradients of the network;
    - `sample(x)` returns `x + eps` with fresh noise on every call, for the estimators
      (seed 003's Algorithm 1 draws independent noise for the joint and the marginal
      batches: call `sample` once for each);
    - the noise is drawn by `portable_normal`, so a train step compiled with XLA draws
      the same noise as in graph mode;
    - `noise_entropy(d)` is `h(L + eps | X) = d/2 ln(2 pi e variance)` (seed 003,
      eq. 3), so `I(X; L + eps) = h(L + eps) - noise_entropy(d)`.

    Args:
        variance: variance `sigma^2 > 0` of each noise coordinate (seed 003 uses 2 in its
            experiments; the level sets the strength of the penalty).
        seed: integer seed of the noise (a `keras.random.SeedGenerator`), or None.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: a tensor of any shape, returned unchanged.
        training: ignored; the layer is the identity in every mode.

    Example:

    >>> noise = MeasurementNoise(variance=2.0, seed=0)
    >>> features = keras.ops.ones((4, 3))
    >>> bool(keras.ops.all(noise(features) == features))
    True
    >>> noisy = noise.sample(features)  # features + N(0, 2 I), for an MI estimator

    Reference:
        Seed 003 ("The effectiveness of layer-by-layer training using the information
        bottleneck principle", anonymous ICLR 2019 submission), section 3 (eqs. 2, 3
        and 5) and Algorithm 1 (appendix A).
    """

    def __init__(self, variance, seed=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if (
            isinstance(variance, bool)
            or not isinstance(variance, numbers.Real)
            or not math.isfinite(variance)
            or variance <= 0
        ):
            raise ValueError(f"Expected `variance` to be a finite number > 0. Received: variance={variance!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Expected `seed` to be an integer or None. Received: seed={seed!r}")
        self.variance = float(variance)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    @property
    def stddev(self):
        """The noise standard deviation, `sqrt(variance)`."""
        return math.sqrt(self.variance)

    def call(self, inputs, training=None):
        return inputs

    def sample(self, inputs):
        """Returns `inputs + eps`, `eps ~ N(0, variance)` drawn afresh for every element.

        Floating inputs keep their dtype, except half precision (float16, bfloat16),
        which is computed in float32 like integer inputs, so the noise variance is exact
        to float32 precision. The gradient with respect to `inputs` is the identity.
        """
        dtype = keras.backend.standardize_dtype(inputs.dtype) if hasattr(inputs, "dtype") else None
        if dtype not in ("float32", "float64"):
            dtype = "float32"
        x = keras.ops.convert_to_tensor(inputs, dtype=dtype)
        return x + portable_normal(tf.shape(x), self.seed_generator, stddev=self.stddev, dtype=dtype)

    def noise_entropy(self, num_features):
        """`h(eps) = num_features / 2 * ln(2 pi e variance)` nats: `h(L + eps | X)` of seed 003, eq. 3."""
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) or num_features < 1:
            raise ValueError(
                f"Expected `num_features` to be an integer >= 1. Received: num_features={num_features!r}"
            )
        return 0.5 * int(num_features) * math.log(2.0 * math.pi * math.e * self.variance)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {"variance": self.variance, "seed": self.seed}
        base_config = super().get_config()
        return {**base_config, **config}
