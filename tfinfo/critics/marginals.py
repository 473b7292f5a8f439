"""Joint and marginal critic scores from one batch of aligned `(x, z)` samples."""

import collections

import keras
import tensorflow as tf

MARGINALS = ("shuffle", "all_pairs")
MIN_BATCH_SIZE = 2
_BATCH_SIZE_MESSAGE = (
    "Expected a batch of at least 2 samples: marginal pairs join a sample's x with another "
    "sample's z (with one sample, the 'shuffle' marginal pairs it with itself, a joint pair). "
    "Received: batch_size="
)

CriticScores = collections.namedtuple("CriticScores", ["joint", "marginal", "matrix"])
CriticScores.__doc__ = """Joint scores `(N,)`, marginal scores, and the `N x N` matrix (or None)."""


def critic_scores(critic, x, z, marginal="shuffle", seed=None, cross_replica=False):
    """Scores a batch's joint pairs and samples from the product of its marginals.

    With `cross_replica=True`, under a `tf.distribute` strategy with several replicas,
    the batch is the global one: the replicas' `x` and `z` are all-gathered, each
    replica scores its own rows (its joint pairs, its share of the shuffled pairs or its
    rows of the score matrix) and the scores are all-gathered, so every replica returns
    the scores one device computes on the global batch (the same permutation when the
    replicas' seed generators hold the same state, as mirrored ones do), and the critic's
    work is split between the replicas. Gradients flow through the all-gathers: each
    replica receives the gradient of a global objective summed over the replicas, so a
    train step divides such an objective by the number of replicas, as Keras divides
    compiled losses.

    Args:
        critic: a critic layer (`ConcatCritic`, `SeparableCritic`, or any layer with
            `call((x, z)) -> (N,)` and, for `"all_pairs"`, `score_matrix(x, z)`).
        x, z: aligned samples with the same leading dimension `N >= 2` (the global `N`
            with `cross_replica`). A smaller batch is refused: `ValueError` when `N` is
            static, a `tf.debugging` assertion in a traced step (which XLA ignores).
        marginal: `"shuffle"`: the pairs `(x_{p(i)}, z_{p(i+1)})` for a random
            permutation `p`, `N` pairs and never an aligned one; `"all_pairs"`: all
            `N (N - 1)` pairs `i != j` (needed by InfoNCE; cheap for a separable critic).
        seed: `None`, an int, or a `keras.random.SeedGenerator` for the shuffle (use a
            generator inside a traced step, so that each step draws a new permutation).
        cross_replica: score the global batch under a multi-replica strategy.

    Returns:
        `CriticScores(joint, marginal, matrix)`; `matrix` is the `N x N` score matrix for
        `"all_pairs"` and `None` for `"shuffle"`.
    """
    if marginal not in MARGINALS:
        raise ValueError(f"Expected `marginal` to be one of {MARGINALS}. Received: marginal={marginal!r}")
    x = tf.convert_to_tensor(x)
    z = tf.convert_to_tensor(z)
    if x.shape[0] is not None and z.shape[0] is not None and x.shape[0] != z.shape[0]:
        raise ValueError(
            f"Expected `x` and `z` to have the same number of samples. Received: {x.shape[0]} and {z.shape[0]}"
        )
    context = tf.distribute.get_replica_context() if cross_replica else None
    if context is not None and context.num_replicas_in_sync > 1:
        return _global_critic_scores(context, critic, x, z, marginal, seed)
    x = _checked_batch(x)
    if marginal == "all_pairs":
        from tfinfo.information.bounds import split_scores

        matrix = critic.score_matrix(x, z)
        joint, off = split_scores(matrix)
        return CriticScores(joint, off, matrix)
    joint = critic((x, z))
    n = tf.shape(x)[0]
    perm = random_permutation(n, seed)
    shifted = tf.roll(perm, shift=1, axis=0)
    off = critic((tf.gather(x, perm), tf.gather(z, shifted)))
    return CriticScores(joint, off, None)


def _checked_batch(x):
    """`x` with a batch of at least `MIN_BATCH_SIZE`: `ValueError` when the size is static,
    a `tf.debugging` assertion otherwise (ignored by XLA; see `check_leading_size`)."""
    from tfinfo.information.bounds import check_leading_size

    return check_leading_size(x, MIN_BATCH_SIZE, _BATCH_SIZE_MESSAGE)


def _hash32(x):
    """Wellons' "lowbias32" integer hash, a bijection of uint32."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def random_bits(n, seed):
    """`n` distinct pseudo-random uint32 values, a hash of the index and a seed.

    TensorFlow's stateless random ops draw other numbers inside an XLA cluster than its
    CPU kernels (measured with TF 2.21: Philox with the same key and counter), so a step
    compiled with `jit_compile=True` would draw other permutations than graph mode.
    These bits are plain integer arithmetic and are the same everywhere: graph mode,
    XLA, and every replica of a strategy.

    Args:
        n: number of values (a scalar int tensor or int).
        seed: a `keras.random.SeedGenerator` (advanced by one draw, as `keras.random`
            ops do) or an integer tensor of shape `(2,)`.

    Returns:
        A `(n,)` uint32 tensor; distinct entries for distinct indices.
    """
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    seed = tf.cast(tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), tf.constant(0xFFFFFFFF, tf.int64)), tf.uint32)
    index = tf.cast(tf.range(n), tf.uint32)
    salt = _hash32(tf.bitwise.bitwise_xor(seed[1], tf.constant(0x9E3779B9, tf.uint32)))
    return _hash32(_hash32(tf.bitwise.bitwise_xor(index, _hash32(seed[0]))) + salt)


def random_permutation(n, seed):
    """A random permutation of `range(n)` from `random_bits` (the same under XLA).

    Args:
        n: the size (a scalar int tensor or int).
        seed: a `keras.random.SeedGenerator` or a `(2,)` integer tensor; other seeds
            (`None`, an int) fall back to `keras.random.shuffle`.
    """
    if not (isinstance(seed, keras.random.SeedGenerator) or tf.is_tensor(seed)):
        return keras.random.shuffle(tf.range(n), seed=seed)
    return tf.argsort(tf.cast(random_bits(n, seed), tf.int64))


@tf.custom_gradient
def _dense_gradient(t):
    """Identity whose gradient is dense: the all-gather's gradient (an all-reduce) cannot
    take the `IndexedSlices` that `tf.gather` produces."""

    def grad(dy):
        return tf.convert_to_tensor(dy)

    return tf.identity(t), grad


def _global_critic_scores(context, critic, x, z, marginal, seed):
    """`critic_scores` of the all-gathered batch, each replica scoring its own rows."""
    local_size = tf.shape(x)[:1]
    sizes = context.all_gather(local_size, axis=0)
    start = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    rows = tf.range(start, start + local_size[0])
    x_all, z_all = (_dense_gradient(t) for t in context.all_gather([x, z], axis=0))
    z_all = _checked_batch(z_all)  # the global batch: one sample per replica is enough
    if marginal == "all_pairs":
        from tfinfo.information.bounds import split_scores

        matrix = context.all_gather(critic.score_matrix(x, z_all), axis=0)
        joint, off = split_scores(matrix)
        return CriticScores(joint, off, matrix)
    # The permutation of the global batch, drawn alike on every replica.
    perm = random_permutation(tf.shape(x_all)[0], seed)
    shifted = tf.roll(perm, shift=1, axis=0)
    joint = critic((x, z))
    off = critic((tf.gather(x_all, tf.gather(perm, rows)), tf.gather(z_all, tf.gather(shifted, rows))))
    joint, off = context.all_gather([joint, off], axis=0)
    return CriticScores(joint, off, None)
