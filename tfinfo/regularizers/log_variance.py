"""The log-variance surrogate `sum_i 1/2 ln(2 pi e Var[Z_i])` of `H[Z]` (seed 004, section 6.3)."""

import math
import numbers

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinfo")
class LogVarianceRegularizer(keras.layers.Layer):
    """Mean-field Gaussian upper bound on the latent's entropy, `sum_i 1/2 ln(2 pi e Var[Z_i])`.

    The Gaussian has the largest entropy for a given covariance, and Hadamard's
    inequality drops the off-diagonal terms, so (seed 004, section 6.2 and appendix
    A.6) `H[Z] <= 1/2 ln det(2 pi e Cov[Z]) <= sum_i 1/2 ln(2 pi e Var[Z_i])`, with the
    variances estimated on the batch. `CE + gamma * value` is the "log Var[Z]" surrogate
    IB objective of Observation 8. Apply it to `Z = Z_hat + eps` after
    `tfinfo.layers.ZeroEntropyNoise`, as the paper does: the noise keeps every
    `Var[Z_i] >= 1/(2 pi e)` in the population, so each term is non-negative and the
    bound cannot run to minus infinity (sections 6.1 and 7.2).

    Guarding the logarithm. A batch can still produce a tiny sample variance (a unit
    that is constant when the noise layer is absent, or a chance draw), whose log and
    gradient explode. The value is computed as
    `sum_i 1/2 ln(2 pi e (Var_hat[Z_i] + epsilon))`. Adding `epsilon` is adding the
    variance of one more independent Gaussian noise `eps'`, so by the paper's own
    argument (appendix A.5, `H[Z] <= H[Z + eps']`) the value stays an upper bound on
    `H[Z]` for every `epsilon >= 0`; the guard can loosen the bound, never break it.
    The default 1e-6 is a numerical guard only (about 1.7e-5 of the zero-entropy
    variance: on a noisy latent it changes each term by less than 1e-5 nats). To
    regularize a noise-free `Z_hat` instead, pass
    `epsilon=tfinfo.layers.ZERO_ENTROPY_VARIANCE`: since
    `Var[Z_hat + eps] = Var[Z_hat] + 1/(2 pi e)` for independent noise, this is the same
    bound with the zero-entropy noise added analytically (each term `>= 0`, gradient
    bounded) rather than sampled.

    Variances are computed in float32 (float64 inputs in float64) whatever the dtype
    policy, by the two-pass formula (centre, then square), so they are never negative.
    Under a distribution strategy (`cross_replica=True`) the replicas' latents are
    all-gathered first, so every replica computes the variances of the global batch and
    a train step that divides its loss by the number of replicas, as Keras does, applies
    the single-device gradient.

    Args:
        epsilon: variance added before the logarithm, `>= 0` (default 1e-6; see above).
        unbiased: `Var_hat` with the `1/(N - 1)` normalization (default True, the usual
            sample variance) or the `1/N` (maximum-likelihood) one.
        cross_replica: all-gather the latent across replicas before estimating.
        **kwargs: base `Layer` arguments.

    Call arguments:
        z: the latent, a `(N, ...)` tensor, `N >= 2`; every non-batch axis counts as
            units (a `(N,)` tensor is one unit).

    Returns:
        A scalar tensor, in nats.

    Example:

    >>> reg = LogVarianceRegularizer()
    >>> z = np.random.default_rng(0).normal(size=(4096, 8)) / np.sqrt(2 * np.pi * np.e)
    >>> abs(float(reg(z))) < 0.2  # 8 units of zero-entropy variance: about 0 nats
    True

    Reference:
        Kirsch, Lyle, Gal, "Unpacking Information Bottlenecks: Unifying
        Information-Theoretic Objectives in Deep Learning" (seed 004), sections 6.1-6.3
        (Observations 6-8), appendices A.5 and A.6.
    """

    def __init__(self, epsilon=1e-6, unbiased=True, cross_replica=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, numbers.Real)
            or not math.isfinite(epsilon)
            or epsilon < 0
        ):
            raise ValueError(f"Expected `epsilon` to be a finite number >= 0. Received: epsilon={epsilon!r}")
        if not isinstance(unbiased, bool):
            raise ValueError(f"Expected `unbiased` to be True or False. Received: unbiased={unbiased!r}")
        self.epsilon = float(epsilon)
        self.unbiased = unbiased
        self.cross_replica = bool(cross_replica)

    def call(self, z):
        z = tf.convert_to_tensor(z)
        if z.shape.rank is not None and z.shape.rank < 1:
            raise ValueError(f"Expected `z` with a batch axis (rank >= 1). Received: z.shape={tuple(z.shape)}")
        if z.shape.rank is not None and z.shape[0] is not None and z.shape[0] < 2:
            raise ValueError(
                f"Expected at least 2 samples to estimate variances. Received: z.shape={tuple(z.shape)}"
            )
        dtype = tf.float64 if z.dtype == tf.float64 else tf.float32
        z = tf.reshape(tf.cast(z, dtype), [tf.shape(z)[0], -1])
        context = tf.distribute.get_replica_context()
        if self.cross_replica and context is not None and context.num_replicas_in_sync > 1:
            z = context.all_gather(z, axis=0)
        n = tf.cast(tf.shape(z)[0], dtype)
        centered = z - tf.reduce_mean(z, axis=0, keepdims=True)
        denominator = tf.maximum(n - 1.0 if self.unbiased else n, 1.0)
        variance = tf.reduce_sum(tf.square(centered), axis=0) / denominator
        return tf.reduce_sum(0.5 * tf.math.log(2.0 * math.pi * math.e * (variance + self.epsilon)))

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = {"epsilon": self.epsilon, "unbiased": self.unbiased, "cross_replica": self.cross_replica}
        base_config = super().get_config()
        return {**base_config, **config}
