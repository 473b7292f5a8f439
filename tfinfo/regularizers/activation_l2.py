"""The activation L2 surrogate `E ||Z||^2` of the information bottleneck (seed 004, section 6.3)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinfo")
class ActivationL2Regularizer(keras.layers.Layer):
    """Mean squared norm of the latent, `E ||Z||^2`, the loosest surrogate of `H[Z]`.

    Kirsch et al. bound the entropy of the latent by its power: by the maximum-entropy
    property of the Gaussian, `E ||Z||^2 <= C'` implies `H[Z | Y] <= H[Z] <= C` with
    `C' = e^{2C} / (2 pi e)`, so `CE + gamma * E ||Z||^2` is a surrogate IB objective
    (Observation 8). Appendix A.7 shows it is, up to a factor 1/2 and a constant, the
    regularizer of Alemi et al.'s deep variational IB. Its `gamma` does not map to the IB
    `beta` (it is not an entropy). Apply it to `Z = Z_hat + eps` after
    `tfinfo.layers.ZeroEntropyNoise`, as the paper does; the noise adds the constant
    `K / (2 pi e)` in expectation for a K-unit latent.

    The value is `mean_n sum_j z_nj^2` over the batch, every non-batch axis counting as
    units. It is computed in float32 (float64 inputs in float64) whatever the dtype
    policy, and returned as a scalar. Under a distribution strategy
    (`cross_replica=True`) the sum of squares and the sample count are summed across
    replicas (an all-reduce, through which gradients flow), so every replica returns the
    value of the global batch, even when the replicas' batches differ in size, and a
    train step that divides its loss by the number of replicas, as Keras does, applies
    the single-device gradient (as `LogVarianceRegularizer` does).

    Args:
        cross_replica: sum over the replicas' batches before dividing.
        **kwargs: base `Layer` arguments.

    Call arguments:
        z: the latent, a `(N, ...)` tensor (a `(N,)` tensor is one unit per sample).

    Returns:
        A scalar tensor, `E ||Z||^2`.

    Example:

    >>> reg = ActivationL2Regularizer()
    >>> float(reg(np.array([[3.0, 4.0], [0.0, 1.0]], "float32")))
    13.0

    Reference:
        Kirsch, Lyle, Gal, "Unpacking Information Bottlenecks: Unifying
        Information-Theoretic Objectives in Deep Learning" (seed 004), sections 6.2
        and 6.3 (Observation 8), appendix A.7.
    """

    def __init__(self, cross_replica=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not isinstance(cross_replica, bool):
            raise ValueError(f"Expected `cross_replica` to be True or False. Received: cross_replica={cross_replica!r}")
        self.cross_replica = cross_replica

    def call(self, z):
        z = tf.convert_to_tensor(z)
        if z.shape.rank is not None and z.shape.rank < 1:
            raise ValueError(f"Expected `z` with a batch axis (rank >= 1). Received: z.shape={tuple(z.shape)}")
        dtype = tf.float64 if z.dtype == tf.float64 else tf.float32
        z = tf.reshape(tf.cast(z, dtype), [tf.shape(z)[0], -1])
        total = tf.reduce_sum(tf.square(z))
        count = tf.cast(tf.shape(z)[0], dtype)
        context = tf.distribute.get_replica_context()
        if self.cross_replica and context is not None and context.num_replicas_in_sync > 1:
            total, count = context.all_reduce("sum", [total, count])
        return total / count

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = {"cross_replica": self.cross_replica}
        base_config = super().get_config()
        return {**base_config, **config}
