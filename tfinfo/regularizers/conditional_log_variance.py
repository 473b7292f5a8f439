"""The conditional log-variance surrogate `E_y sum_i 1/2 ln(2 pi e Var[Z_i | y])` of `H[Z | Y]` (seed 004, 6.3)."""

import math
import numbers

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinfo")
class ConditionalLogVarianceRegularizer(keras.layers.Layer):
    """Class-conditional mean-field Gaussian bound on `H[Z | Y]`, `E_y sum_i 1/2 ln(2 pi e Var[Z_i | y])`.

    Observation 7 of seed 004: `H[Z | Y] = E_{p(y)} H[Z | y]`, and each `H[Z | y]` is at
    most the entropy of the Gaussian with the same per-unit variances, so
    `H[Z | Y] <~ E_{p_hat(y)} sum_i 1/2 ln(2 pi e Var_hat[Z_i | y])` with the sample
    variances of the latent within each class. `CE + gamma * value` is the
    "log Var[Z | Y]" surrogate IB objective of Observation 8, the tightest of the three.
    Apply it to `Z = Z_hat + eps` after `tfinfo.layers.ZeroEntropyNoise`.

    Classes in a batch. `p_hat(y)` is the class frequency in the batch, and a class's
    variance is estimable only from at least 2 of its samples. So:

    - classes absent from the batch get weight 0 (there is nothing to estimate), and
    - classes with a single sample in the batch get weight 0 too (their sample
      variance is undefined with `1/(n - 1)` and identically 0 with `1/n`, which would
      contribute the constant `1/2 ln(2 pi e epsilon)` per unit and no gradient); that
      sample receives no gradient from this regularizer;
    - the remaining classes are weighted by their counts, renormalized:
      `w_y = n_y / sum_{y': n_y' >= 2} n_y'`. This is `E_{p_hat(y)}` over the classes
      the batch can estimate. If no class has 2 samples, the value is 0.
    - labels outside `[0, num_classes)` (e.g. -1 for unlabeled samples) are ignored.

    Guarding the logarithm: as in `LogVarianceRegularizer`, the value uses
    `Var_hat[Z_i | y] + epsilon`, the variance of `Z + eps'` for an extra independent
    noise, so it remains an upper bound on `H[Z | Y]` for every `epsilon >= 0`
    (appendix A.5); the default 1e-6 is a numerical guard, and
    `epsilon=tfinfo.layers.ZERO_ENTROPY_VARIANCE` adds the zero-entropy noise
    analytically when the regularizer is given the noise-free `Z_hat`. Small classes
    make the guard matter: with 2 samples the sample variance of the noise alone is
    `chi^2_1`-distributed and falls below 1% of its mean about 8% of the time.

    Computation is in float32 (float64 inputs in float64) whatever the dtype policy,
    with one-hot matrix products (no dynamic shapes, so XLA-compatible) and the two-pass
    variance. With `cross_replica=True`, latents and labels are all-gathered across
    replicas first, so the class statistics are those of the global batch.

    Args:
        num_classes: number of classes `C` (labels are `0..C-1`).
        epsilon: variance added before the logarithm, `>= 0` (default 1e-6).
        unbiased: per-class variance with `1/(n_y - 1)` (default True) or `1/n_y`.
        cross_replica: all-gather latents and labels across replicas before estimating.
        **kwargs: base `Layer` arguments.

    Call arguments:
        z: the latent, a `(N, ...)` tensor; every non-batch axis counts as units.
        y: the labels, integer class indices of shape `(N,)` or `(N, 1)`, or one-hot
            rows of shape `(N, num_classes)` (their argmax is used).

    Returns:
        A scalar tensor, in nats.

    Example:

    >>> reg = ConditionalLogVarianceRegularizer(num_classes=10)
    >>> z = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    >>> y = np.arange(64) % 10
    >>> value = reg(z, y)

    Reference:
        Kirsch, Lyle, Gal, "Unpacking Information Bottlenecks: Unifying
        Information-Theoretic Objectives in Deep Learning" (seed 004), sections 6.2 and
        6.3 (Observations 7 and 8), appendices A.5 and A.6.
    """

    def __init__(self, num_classes, epsilon=1e-6, unbiased=True, cross_replica=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(
                f"Expected `num_classes` to be an integer >= 1. Received: num_classes={num_classes!r}"
            )
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, numbers.Real)
            or not math.isfinite(epsilon)
            or epsilon < 0
        ):
            raise ValueError(f"Expected `epsilon` to be a finite number >= 0. Received: epsilon={epsilon!r}")
        if not isinstance(unbiased, bool):
            raise ValueError(f"Expected `unbiased` to be True or False. Received: unbiased={unbiased!r}")
        self.num_classes = int(num_classes)
        self.epsilon = float(epsilon)
        self.unbiased = unbiased
        self.cross_replica = bool(cross_replica)

    def _class_indices(self, y):
        y = tf.convert_to_tensor(y)
        rank = y.shape.rank
        if rank == 2 and y.shape[1] is not None and y.shape[1] > 1:
            if y.shape[1] != self.num_classes:
                raise ValueError(
                    f"Expected one-hot `y` with num_classes={self.num_classes} columns. "
                    f"Received: y.shape={tuple(y.shape)}"
                )
            return tf.argmax(y, axis=1, output_type=tf.int32)
        if rank not in (1, 2):
            raise ValueError(
                "Expected `y` of shape (N,), (N, 1) or (N, num_classes). "
                f"Received: y.shape={tuple(y.shape) if rank is not None else None}"
            )
        y = tf.reshape(y, [-1])
        if y.dtype.is_floating:
            y = tf.round(y)
        return tf.cast(y, tf.int32)

    def call(self, z, y):
        z = tf.convert_to_tensor(z)
        if z.shape.rank is not None and z.shape.rank < 1:
            raise ValueError(f"Expected `z` with a batch axis (rank >= 1). Received: z.shape={tuple(z.shape)}")
        labels = self._class_indices(y)
        if z.shape[0] is not None and labels.shape[0] is not None and z.shape[0] != labels.shape[0]:
            raise ValueError(
                "Expected `z` and `y` with the same number of samples. "
                f"Received: z.shape={tuple(z.shape)}, y.shape={tuple(tf.convert_to_tensor(y).shape)}"
            )
        dtype = tf.float64 if z.dtype == tf.float64 else tf.float32
        z = tf.reshape(tf.cast(z, dtype), [tf.shape(z)[0], -1])
        context = tf.distribute.get_replica_context()
        if self.cross_replica and context is not None and context.num_replicas_in_sync > 1:
            # Separately: the gradient of a joint gather would all-reduce the integer labels too.
            z = context.all_gather(z, axis=0)
            labels = context.all_gather(labels, axis=0)
        # (N, C) membership; out-of-range labels give a zero row and are ignored.
        onehot = tf.one_hot(labels, self.num_classes, dtype=dtype)
        counts = tf.reduce_sum(onehot, axis=0)  # (C,)
        means = tf.matmul(onehot, z, transpose_a=True) / tf.maximum(counts, 1.0)[:, None]  # (C, F)
        centered = z - tf.matmul(onehot, means)  # each sample minus its class mean
        squares = tf.matmul(onehot, tf.square(centered), transpose_a=True)  # (C, F)
        estimable = counts >= 2.0
        denominator = tf.where(estimable, counts - 1.0 if self.unbiased else counts, 1.0)
        # Classes that cannot be estimated get a placeholder variance of 1: masked below,
        # and finite, so that no inf * 0 = NaN reaches the gradient (even with epsilon=0).
        variances = tf.where(estimable[:, None], squares / denominator[:, None], 1.0)
        per_class = tf.reduce_sum(0.5 * tf.math.log(2.0 * math.pi * math.e * (variances + self.epsilon)), axis=1)
        kept = tf.where(estimable, counts, 0.0)
        weights = kept / tf.maximum(tf.reduce_sum(kept), 1.0)
        return tf.reduce_sum(weights * per_class)

    def compute_output_shape(self, z_shape, y_shape=None):
        return ()

    def get_config(self):
        config = {
            "num_classes": self.num_classes,
            "epsilon": self.epsilon,
            "unbiased": self.unbiased,
            "cross_replica": self.cross_replica,
        }
        base_config = super().get_config()
        return {**base_config, **config}
