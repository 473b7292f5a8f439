"""The target statistics of `tfinfo.regularizers.lautum.LautumRegularizer.adapt`, and the
projection's normal draws.

Computed once from the unlabeled target set: the normalization and Ledoit-Wolf shrunk
whitening of x (optionally onto its principal components), with the rank and degeneracy
checks that refuse a target set the Lautum estimate cannot use.
"""

import numpy as np
import tensorflow as tf

from tfinfo.critics.marginals import random_bits


def standard_normal(n, seed_generator):
    """`n` standard normal draws (Box-Muller on `random_bits`): the same numbers in graph
    mode, under XLA (where TensorFlow's own stateless generators draw others) and on every
    replica of a strategy (their seed generators are mirrored)."""
    bits = random_bits(2 * n, seed_generator)
    uniform = (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) + 0.5) / 2.0**24
    radius = tf.sqrt(-2.0 * tf.math.log(uniform[:n]))
    return radius * tf.cos((2.0 * np.pi) * uniform[n:])


def ledoit_wolf_coefficient(x, mean, scale, corr, chunk_size):
    """Ledoit-Wolf shrinkage towards `mu I` of the correlation matrix (float64, chunked)."""
    n, d = x.shape
    mu = np.trace(corr) / d
    delta = np.sum((corr - mu * np.eye(d)) ** 2) / d
    beta = 0.0  # sum_ij sum_n z_ni^2 z_nj^2 = sum_n ||z_n||^4
    for i in range(0, n, chunk_size):
        z = (x[i : i + chunk_size].astype(np.float64) - mean) * scale
        beta += np.sum(np.sum(z**2, axis=1) ** 2)
    beta = (beta / n - np.sum(corr**2)) / (d * n)
    if delta <= 0.0:
        return 1.0
    return float(min(max(beta, 0.0), delta) / delta)


def target_statistics(x, input_dim, chunk_size, projection_dim=None):
    """Mean, scale and whitening of the target set's Ledoit-Wolf-shrunk `Sigma_x`.

    Args:
        x: `(N, D)` array of flattened unlabeled target inputs, N >= 2.
        input_dim: the number of features the layer expects (`D` must equal it).
        chunk_size: rows processed at once (float64).
        projection_dim: if set, the number of principal components kept.

    Returns:
        A dict: `mean` and `scale` (per feature, 0 for constant features), `whitener`
        (the Cholesky factor of `Sigma_x`, or its top `projection_dim` eigenvectors),
        `pca_scale` (their inverse square-root eigenvalues; None without projection),
        `shrinkage`, `num_constant_features` and `rank`.
    """
    if x.shape[1] != input_dim:
        raise ValueError(
            f"Expected unlabeled inputs with {input_dim} features per sample. "
            f"Received: {x.shape[1]}"
        )
    n, d = x.shape
    mean = np.zeros(d)
    for i in range(0, n, chunk_size):
        mean += x[i : i + chunk_size].astype(np.float64).sum(0)
    mean /= n
    gram = np.zeros((d, d))
    for i in range(0, n, chunk_size):
        c = x[i : i + chunk_size].astype(np.float64) - mean
        gram += c.T @ c
    if not np.all(np.isfinite(gram)):
        raise ValueError("Expected finite unlabeled target inputs. Received: NaN or inf values")
    var = np.diag(gram) / n
    constant = var <= 1e-12 * max(var.max(), 1e-300)
    scale = np.where(constant, 0.0, 1.0 / np.sqrt(np.where(constant, 1.0, var)))
    corr = gram / n * scale[:, None] * scale[None, :]
    if constant.all():
        raise ValueError(
            "Expected unlabeled target inputs that vary (Sigma_x needs at least one "
            f"feature with non-zero variance). Received: {n} inputs, all identical"
        )
    gamma = ledoit_wolf_coefficient(x, mean, scale, corr, chunk_size)
    target = np.trace(corr) / d
    sigma_x = (1.0 - gamma) * corr + gamma * target * np.eye(d)
    eigval, eigvec = np.linalg.eigh(sigma_x)
    # The rank of the sample correlation over the features that vary. Fewer samples
    # than features (rank N - 1), or a few degenerate directions, are what the
    # Ledoit-Wolf shrinkage is for (whitened x is then ~0 there and adds nothing).
    # A set spanning less than half of what its size allows (repeated or collinear
    # images) is degenerate, and so is a projection onto more directions than the
    # set spans, or a shrunk Sigma_x that is numerically singular.
    corr_eig = np.linalg.eigvalsh(corr)
    rank = int(np.sum(corr_eig > 1e-9 * corr_eig.max()))
    varying = int(d - constant.sum())
    if projection_dim is None:
        expected = min(n - 1, varying)
        degenerate = 2 * rank < expected or eigval.min() <= 1e-10 * eigval.max()
    else:
        expected = projection_dim
        degenerate = rank < expected
    if degenerate:
        raise ValueError(
            f"Expected unlabeled target inputs spanning {expected} dimensions ({n} inputs, "
            f"{varying} varying features"
            + ("" if projection_dim is None else f", projection_dim={projection_dim}")
            + f"). Received: {n} inputs of {d} features spanning rank {rank}; pass more "
            f"(and more varied) unlabeled inputs, or set projection_dim <= {rank}"
        )
    top = np.argsort(eigval)[::-1][: projection_dim or d]
    if projection_dim is None:
        whitener, pca_scale = np.linalg.cholesky(sigma_x).astype(np.float32), None
    else:
        whitener = eigvec[:, top].astype(np.float32)
        pca_scale = (1.0 / np.sqrt(eigval[top])).astype(np.float32)
    return {
        "mean": mean.astype(np.float32),
        "scale": scale.astype(np.float32),
        "whitener": whitener,
        "pca_scale": pca_scale,
        "shrinkage": float(gamma),
        "num_constant_features": int(constant.sum()),
        "rank": rank,
    }


# ---------------------------------------------------------------------- features


__all__ = ["ledoit_wolf_coefficient", "standard_normal", "target_statistics"]
