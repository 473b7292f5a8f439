"""`estimate_mutual_information`: train a critic on held-in samples, report on held-out ones."""

import math

import keras
import numpy as np
import tensorflow as tf

from tfinfo.information import bounds as bounds_lib

_EVAL_BLOCK = 1024  # held-out samples per evaluation block (K for InfoNCE)
_ROW_CHUNK = 128  # rows of the all-pairs score matrix computed at once


def _as_matrix(a, name):
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Expected `{name}` to be a numeric array. Received: {type(a).__name__} ({error})") from None
    if a.ndim < 1 or a.shape[0] < 1:
        raise ValueError(f"Expected `{name}` to have a leading sample axis. Received: shape={a.shape}")
    a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a[:, None]
    if not np.all(np.isfinite(a)):
        raise ValueError(f"Expected `{name}` to hold finite values. Received: {int(np.sum(~np.isfinite(a)))} non-finite")
    return a


def _make_critic(critic):
    from tfinfo.critics import ConcatCritic
    from tfinfo.critics import SeparableCritic

    if critic is None:
        critic = "separable"
    if critic == "concat":
        return ConcatCritic("small")
    if critic == "separable":
        return SeparableCritic(hidden_units=(256,), embedding_dim=32)
    if isinstance(critic, keras.layers.Layer):
        return critic
    raise ValueError(
        "Expected `critic` to be 'concat', 'separable' or a critic layer. "
        f"Received: critic={critic!r}"
    )


def _score_matrix(critic, x, z):
    rows = [critic.score_matrix(x[i : i + _ROW_CHUNK], z) for i in range(0, int(x.shape[0]), _ROW_CHUNK)]
    return tf.concat(rows, axis=0)


def estimate_mutual_information(
    x,
    z,
    estimator="smile",
    critic=None,
    steps=1000,
    batch_size=128,
    learning_rate=5e-4,
    holdout=0.5,
    tau=5.0,
    smile_gradient="js",
    decay=0.99,
    standardize=True,
    seed=0,
    return_details=False,
):
    """Estimates `I(X; Z)` in nats with a trained critic and a variational bound.

    The samples are split at random: a critic is trained on the held-in part by Adam
    on the bound's training surrogate (minibatches of `batch_size`, all off-diagonal
    pairs of each batch as marginal samples), and the bound is reported on the held-out
    part, in blocks of up to 1024 samples using every off-diagonal pair. Reporting on
    held-out samples keeps an overfitted critic from inflating the estimate. InfoNCE
    cannot exceed `log K` with `K` the block size; `return_details=True` reports the cap.

    Args:
        x, z: arrays with the same number of samples `N` on axis 0 (any trailing shape;
            flattened per sample).
        estimator: one of `"smile"`, `"mine"`, `"dv"`, `"nwj"`, `"infonce"`, `"js"`
            (see `tfinfo.information.bounds`).
        critic: `"separable"` (default: `g(x) . h(z)`, one hidden layer of 256, cheap on
            all pairs), `"concat"` (MLP on `[x, z]`, 2 x 256 ReLU; slower), or a critic
            layer (fresh, unbuilt or built for these shapes).
        steps: critic training steps.
        batch_size: training minibatch size.
        learning_rate: Adam learning rate.
        holdout: fraction of samples held out for the reported value, in (0, 1).
        tau, smile_gradient: SMILE's clipping and gradient (`"js"` or `"dv"`; see
            `tfinfo.information.bounds.smile_bound`). The reported SMILE value is biased
            at finite `tau` even for the optimal critic.
        decay: MINE's moving-average decay.
        standardize: scale each feature of `x` and `z` to zero mean and unit variance
            using held-in statistics (mutual information is invariant to this).
        seed: seeds the split, the critic initialization and the minibatches.
        return_details: return a dict instead of a float.

    Returns:
        The estimate in nats (a float), or with `return_details` a dict with `value`,
        `estimator`, `n_train`, `n_eval`, `block_size`, `log_k` and `train_curve` (the
        training bound every 50 steps).

    Example:

    >>> mi = estimate_mutual_information(x, z, estimator="smile", steps=500)

    Reference:
        Belghazi et al. 2018 (MINE); Poole et al. 2019; Song & Ermon 2020.
    """
    bounds_lib.check_estimator(estimator, tau=tau, smile_gradient=smile_gradient, decay=decay)
    x = _as_matrix(x, "x")
    z = _as_matrix(z, "z")
    if x.shape[0] != z.shape[0]:
        raise ValueError(
            f"Expected `x` and `z` to have the same number of samples. Received: {x.shape[0]} and {z.shape[0]}"
        )
    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"Expected `holdout` in (0, 1). Received: holdout={holdout}")
    n = x.shape[0]
    n_eval = int(round(n * float(holdout)))
    n_train = n - n_eval
    batch_size = int(batch_size)
    if batch_size < 2:
        raise ValueError(f"Expected `batch_size` >= 2. Received: batch_size={batch_size}")
    if n_train < batch_size or n_eval < 2:
        raise ValueError(
            f"Expected at least batch_size={batch_size} held-in and 2 held-out samples. "
            f"Received: {n} samples with holdout={holdout} ({n_train} held-in, {n_eval} held-out)"
        )
    if int(steps) < 1:
        raise ValueError(f"Expected `steps` >= 1. Received: steps={steps}")

    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    train_idx, eval_idx = order[:n_train], order[n_train:]
    if standardize:
        for name in ("x", "z"):
            a = x if name == "x" else z
            mean = a[train_idx].mean(axis=0)
            std = a[train_idx].std(axis=0)
            std = np.where(std > 1e-12, std, 1.0)
            a = (a - mean) / std
            x, z = (a, z) if name == "x" else (x, a)
    x = x.astype(np.float32)
    z = z.astype(np.float32)
    x_train, z_train = tf.constant(x[train_idx]), tf.constant(z[train_idx])

    keras.utils.set_random_seed(int(seed))
    critic = _make_critic(critic)
    if not critic.built:
        critic.build(((None, x.shape[1]), (None, z.shape[1])))
    optimizer = keras.optimizers.Adam(learning_rate)
    log_ma = tf.Variable(0.0, trainable=False)
    first = tf.Variable(True, trainable=False)

    @tf.function
    def train_step(idx):
        xb, zb = tf.gather(x_train, idx), tf.gather(z_train, idx)
        with tf.GradientTape() as tape:
            matrix = critic.score_matrix(xb, zb)
            joint, marginal = bounds_lib.split_scores(matrix)
            # MINE's moving average starts at the first batch's mean.
            previous = tf.where(first, tf.stop_gradient(bounds_lib.log_mean_exp(marginal)), log_ma)
            bound = bounds_lib.evaluate_bound(
                estimator,
                joint,
                marginal,
                matrix=matrix,
                tau=tau,
                smile_gradient=smile_gradient,
                log_moving_average=previous,
                decay=decay,
            )
            loss = -bound.surrogate
        grads = tape.gradient(loss, critic.trainable_variables)
        optimizer.apply_gradients(zip(grads, critic.trainable_variables))
        if estimator == "mine":
            log_ma.assign(bound.log_moving_average)
            first.assign(False)
        return bound.value

    curve = []
    for step in range(int(steps)):
        idx = rng.choice(n_train, size=batch_size, replace=False)
        value = train_step(tf.constant(idx, tf.int32))
        if step % 50 == 0 or step == int(steps) - 1:
            curve.append(float(value))

    # Held-out report, in blocks; every off-diagonal pair of a block is a marginal sample.
    x_eval, z_eval = x[eval_idx], z[eval_idx]
    blocks = max(1, math.ceil(n_eval / _EVAL_BLOCK))
    edges = np.linspace(0, n_eval, blocks + 1).astype(int)
    values, weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi - lo < 2:
            continue
        matrix = _score_matrix(critic, tf.constant(x_eval[lo:hi]), tf.constant(z_eval[lo:hi]))
        joint, marginal = bounds_lib.split_scores(matrix)
        name = "dv" if estimator == "mine" else estimator
        bound = bounds_lib.evaluate_bound(name, joint, marginal, matrix=matrix, tau=tau, smile_gradient=smile_gradient)
        values.append(float(bound.value))
        weights.append(hi - lo)
    value = float(np.average(values, weights=weights))
    if not return_details:
        return value
    block = int(max(weights))
    return {
        "value": value,
        "estimator": estimator,
        "n_train": int(n_train),
        "n_eval": int(n_eval),
        "block_size": block,
        "log_k": math.log(block),
        "train_curve": curve,
    }
