"""Joint and marginal critic scores from one batch of aligned `(x, z)` samples."""

import collections

import keras
import tensorflow as tf

MARGINALS = ("shuffle", "all_pairs")

CriticScores = collections.namedtuple("CriticScores", ["joint", "marginal", "matrix"])
CriticScores.__doc__ = """Joint scores `(N,)`, marginal scores, and the `N x N` matrix (or None)."""


def critic_scores(critic, x, z, marginal="shuffle", seed=None):
    """Scores a batch's joint pairs and samples from the product of its marginals.

    Args:
        critic: a critic layer (`ConcatCritic`, `SeparableCritic`, or any layer with
            `call((x, z)) -> (N,)` and, for `"all_pairs"`, `score_matrix(x, z)`).
        x, z: aligned samples with the same leading dimension `N >= 2`.
        marginal: `"shuffle"`: the pairs `(x_{p(i)}, z_{p(i+1)})` for a random
            permutation `p`, `N` pairs and never an aligned one; `"all_pairs"`: all
            `N (N - 1)` pairs `i != j` (needed by InfoNCE; cheap for a separable critic).
        seed: `None`, an int, or a `keras.random.SeedGenerator` for the shuffle (use a
            generator inside a traced step, so that each step draws a new permutation).

    Returns:
        `CriticScores(joint, marginal, matrix)`; `matrix` is the `N x N` score matrix for
        `"all_pairs"` and `None` for `"shuffle"`.
    """
    if marginal not in MARGINALS:
        raise ValueError(f"Expected `marginal` to be one of {MARGINALS}. Received: marginal={marginal!r}")
    if marginal == "all_pairs":
        from tfinfo.information.bounds import split_scores

        matrix = critic.score_matrix(x, z)
        joint, off = split_scores(matrix)
        return CriticScores(joint, off, matrix)
    joint = critic((x, z))
    n = tf.shape(x)[0]
    perm = keras.random.shuffle(tf.range(n), seed=seed)
    shifted = tf.roll(perm, shift=1, axis=0)
    off = critic((tf.gather(x, perm), tf.gather(z, shifted)))
    return CriticScores(joint, off, None)
