"""Additive Gaussian noise whose differential entropy is zero (seed 004, section 6.1)."""

import contextlib
import math

import keras
import tensorflow as tf

from tfinfo.layers.measurement_noise import portable_normal

ZERO_ENTROPY_VARIANCE = 1.0 / (2.0 * math.pi * math.e)
"""`1 / (2 pi e)`: the variance of the Gaussian with differential entropy 0 nats.

`h(N(0, s^2)) = 1/2 ln(2 pi e s^2)`, which is 0 exactly when `s^2 = 1 / (2 pi e)`
(about 0.0585, a standard deviation of about 0.242).
"""


@keras.saving.register_keras_serializable(package="tfinfo")
class ZeroEntropyNoise(keras.layers.Layer):
    """Adds `eps ~ N(0, 1 / (2 pi e))` to every unit: the latent becomes `Z = Z_hat + eps`.

    Differential entropies of a deterministic, continuous latent are unbounded below: the
    network can shrink the latent's scale and drive `H[Z]` (and `H[Z | Y]`) to minus
    infinity without changing its predictions. Kirsch et al. add independent noise of
    zero differential entropy, `h(eps) = 1/2 ln(2 pi e Var[eps]) = 0` per unit, so that
    `H[Z] = H[Z_hat + eps] >= H[eps] = 0`, every information quantity of the model is
    non-negative, and the surrogate regularizers of section 6.3
    (`tfinfo.regularizers.ActivationL2Regularizer`, `LogVarianceRegularizer`,
    `ConditionalLogVarianceRegularizer`) bound meaningful quantities. The variance is
    fixed by that requirement and is not an argument.

    When the noise is active. In the paper the noise is part of the stochastic encoder
    `p(z | x)` that defines the model, `p(y_hat | x) = E_{p(z | x)} p(y_hat | z)`
    (sections 3 and 6.1), and information-plane measurements are of that `Z`; the paper
    does not say whether the noise is switched off for test-time predictions. So this
    is an explicit argument, `training_only`:

    - `training_only=False` (default, the paper's model): the noise is added on every
      call, in training and in inference; `predict` is then stochastic (seeded by
      `seed`), and `Z` measured after training is the representation that was trained.
    - `training_only=True`: like `keras.layers.GaussianNoise`, the noise is added only
      when `training=True`, and inference is deterministic.

    Under a mixed-precision policy the noise is drawn in float32 and cast to the
    compute dtype.

    The noise is drawn by `tfinfo.layers.measurement_noise.portable_normal`, so a train
    step compiled with XLA (`jit_compile=True`) draws the same noise as in graph mode
    (`keras.random.normal` does not: XLA derives other random numbers from the seed).

    Under a distribution strategy (in a replica context with several replicas) every
    replica draws the noise of the whole global batch, from the same seed state, and
    keeps the rows of its own samples (their position in the global batch, from the
    all-gathered local batch sizes). So a sample gets the same noise as it would on one
    device fed the global batch, whatever the number of replicas.

    Args:
        training_only: add noise only when called with `training=True` (default
            False: always, as in the paper's probabilistic model).
        seed: integer seed of the noise (a `keras.random.SeedGenerator`), or None.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: the latent `Z_hat`, a tensor of any shape.
        training: Python boolean; only consulted when `training_only=True`.

    Returns:
        `inputs + eps` with the shape and compute dtype of `inputs`.

    Example:

    >>> noise = ZeroEntropyNoise(seed=0)
    >>> z = noise(keras.ops.zeros((100000, 1)))
    >>> round(float(keras.ops.var(z)) * 2 * math.pi * math.e, 1)
    1.0

    Reference:
        Kirsch, Lyle, Gal, "Unpacking Information Bottlenecks: Unifying
        Information-Theoretic Objectives in Deep Learning" (seed 004), section 6.1,
        Observation 6 and appendix A.5; section 7.3 adds this noise to the final-layer
        activations.
    """

    variance = ZERO_ENTROPY_VARIANCE
    stddev = math.sqrt(ZERO_ENTROPY_VARIANCE)

    def __init__(self, training_only=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(training_only, bool):
            raise ValueError(
                f"Expected `training_only` to be True or False. Received: training_only={training_only!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Expected `seed` to be an integer or None. Received: seed={seed!r}")
        self.training_only = training_only
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if self.training_only and not training:
            return inputs
        half = self.compute_dtype in ("float16", "bfloat16")
        dtype = "float32" if half else self.compute_dtype
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            noise = self._replica_rows_of_global_noise(context, inputs, dtype)
        else:
            noise = self._draw(tf.shape(inputs), dtype)
        return keras.ops.cast(inputs, self.compute_dtype) + keras.ops.cast(noise, self.compute_dtype)

    def _draw(self, shape, dtype):
        return portable_normal(shape, self.seed_generator, stddev=self.stddev, dtype=dtype)

    def _replica_rows_of_global_noise(self, context, inputs, dtype):
        """This replica's rows of the noise drawn for the global batch (same seed state on
        every replica, so every replica draws the same global noise)."""
        shape = tf.shape(inputs)
        sizes = context.all_gather(shape[:1], axis=0)  # local batch sizes, in replica order
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        offset = tf.reduce_sum(tf.where(tf.range(tf.shape(sizes)[0]) < replica, sizes, tf.zeros_like(sizes)))
        global_shape = tf.concat([tf.reduce_sum(sizes, keepdims=True), shape[1:]], axis=0)
        noise = self._draw(global_shape, dtype)
        return tf.slice(noise, tf.concat([[offset], tf.zeros_like(shape[1:])], axis=0), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {"training_only": self.training_only, "seed": self.seed}
        base_config = super().get_config()
        return {**base_config, **config}


def zero_entropy_noise_layers(model):
    """The `ZeroEntropyNoise` layers of a Keras model, in layer order (nested models
    included).

    Args:
        model: a `keras.Model` (any object with a `layers` list), or a layer.

    Returns:
        A list of `ZeroEntropyNoise` layers (empty when there is none).

    Example:

    >>> [layer.name for layer in zero_entropy_noise_layers(classifier)]
    ['bottleneck_noise']
    """
    if isinstance(model, ZeroEntropyNoise):
        return [model]
    found = []
    for layer in getattr(model, "layers", []):
        found.extend(zero_entropy_noise_layers(layer))
    return found


@contextlib.contextmanager
def inference_noise_off(model):
    """Within the block, the `ZeroEntropyNoise` layers of `model` add no noise in inference.

    Sets `training_only=True` on every such layer that has `training_only=False` and
    restores it on exit, so that a layer's value is computed on the noise-free path
    (the noise layer passes `Z_hat` through). Only calls made (and functions traced)
    inside the block see the change: build a new `keras.Model` on the layers' tensors
    inside the block (its `predict` is traced there), or call the layers eagerly; a
    `predict_function` the model traced earlier keeps the noise, and one traced inside
    the block keeps it off.

    Args:
        model: a `keras.Model` (or a layer).

    Yields:
        The layers switched (those already `training_only` are left alone).

    Example:

    >>> with inference_noise_off(classifier):
    ...     z_hat = keras.Model(classifier.inputs, classifier.get_layer("bottleneck_noise").output).predict(x)
    """
    switched = [layer for layer in zero_entropy_noise_layers(model) if not layer.training_only]
    for layer in switched:
        layer.training_only = True
    try:
        yield switched
    finally:
        for layer in switched:
            layer.training_only = False
