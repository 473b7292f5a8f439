"""Noise-regularized mutual information `I(X; L_i + eps)` of a deterministic network (seed 003)."""

import math

import keras
import numpy as np
import tensorflow as tf

from tfinfo.information.estimate import estimate_mutual_information

NOISE_REGULARIZED_CRITICS = ("aa_mine", "mine")

_FEATURE_BATCH = 512


def _feature_network(network, layer_index):
    """`F_i` (sharing the network's layers) from a model, a layer or a list of layers."""
    from tfinfo.critics import ArchitectureAwareCritic

    if isinstance(network, (list, tuple)):
        if not network or not all(isinstance(layer, keras.layers.Layer) for layer in network):
            raise ValueError(
                f"Expected `network` to be a Keras model, a layer or a non-empty list of layers. Received: {network!r}"
            )
        if layer_index is not None:
            if isinstance(layer_index, bool) or not isinstance(layer_index, (int, np.integer)) or not (
                1 <= int(layer_index) <= len(network)
            ):
                raise ValueError(
                    f"Expected `layer_index` to be None or an int in [1, {len(network)}]. "
                    f"Received: layer_index={layer_index!r}"
                )
            network = network[: int(layer_index)]
        return list(network)
    if isinstance(network, keras.Model):
        if layer_index is None:
            return network
        return ArchitectureAwareCritic.sub_network(network, layer_index)
    if isinstance(network, keras.layers.Layer):
        if layer_index not in (None, 1):
            raise ValueError(
                f"Expected `layer_index` None or 1 for a single layer. Received: layer_index={layer_index!r}"
            )
        return network
    raise ValueError(
        f"Expected `network` to be a Keras model, a layer or a non-empty list of layers. Received: network={network!r}"
    )


def _apply(feature_network, x):
    """`F_i(x)` in inference mode, in batches, as a float64 `(N, K)` array."""
    out = []
    for i in range(0, x.shape[0], _FEATURE_BATCH):
        t = tf.constant(x[i : i + _FEATURE_BATCH])
        if isinstance(feature_network, list):
            for layer in feature_network:
                t = layer(t, training=False)  # Keras drops `training` for layers without it
        else:
            t = feature_network(t, training=False)
        out.append(np.asarray(t, dtype=np.float64).reshape(int(t.shape[0]), -1))
    return np.concatenate(out, axis=0)


def noise_regularized_mutual_information(
    network,
    x,
    layer_index=None,
    noise_variance=1.0,
    critic="aa_mine",
    estimator="mine",
    steps=1000,
    batch_size=128,
    learning_rate=5e-4,
    holdout=0.5,
    hidden_units="small",
    activation="relu",
    train_copy=False,
    noise_draws=1,
    seed=0,
    return_details=False,
    **estimate_kwargs,
):
    """Estimates `I(X; L_i + eps)` in nats, `L_i = F_i(X)`, `eps ~ N(0, noise_variance I)`.

    `F_i` is layers `1..layer_index` of `network`. The noise exists only for the
    measurement (seed 003, section 3): `L_i` is computed by the deterministic network in
    inference mode, one noise vector is drawn per sample (seeded), and the pairs
    `(x, F_i(x) + eps)` are handed to `estimate_mutual_information`, which trains the
    critic on held-in pairs and reports the bound on held-out ones. With
    `critic="aa_mine"` the critic is an `ArchitectureAwareCritic` holding a copy of `F_i`
    (seed 003, section 4 and Algorithm 1); with `critic="mine"` it is the standard MINE
    statistics network, a `ConcatCritic` on `[x, F_i(x) + eps]`.

    Standard MINE for `I(Y; L_i)` (the other term of the noise-regularized IB Lagrangian)
    needs nothing new: `estimate_mutual_information(y_one_hot, l, estimator="mine",
    critic="concat")`.

    Differences from Algorithm 1: Algorithm 1 draws fresh `x` and fresh noise at every
    step; here the noise is drawn `noise_draws` times per sample up front, so the critic
    sees a fixed set of `N * noise_draws` joint pairs, and its marginal samples are all the
    off-diagonal pairs of a batch rather than a second independent batch. The reported
    value is the DV bound on the held-out pairs (`estimator="mine"` trains with MINE's
    moving-average gradient and reports plain DV).

    Args:
        network: the deterministic network: a Keras model (Sequential or functional), a
            layer, or a list of layers applied in order (layers taking flat inputs).
        x: input samples, `(N, ...)` as the network takes them.
        layer_index: `i`: `L_i` is the output of the `i`-th layer after the input (input
            layers not counted); `None` for the whole network.
        noise_variance: `sigma^2 > 0` of the white Gaussian noise added to `L_i`.
        critic: `"aa_mine"` (architecture-aware), `"mine"` (concat critic on
            `[x, L_i + eps]`), or a critic layer (e.g. a configured
            `ArchitectureAwareCritic` or `ConcatCritic`).
        estimator: the bound (`tfinfo.information.bounds.ESTIMATORS`); `"mine"` as in
            seed 003.
        steps, batch_size, learning_rate, holdout: as in `estimate_mutual_information`.
        hidden_units, activation: the critic's (head's) MLP; `"seed003"` is the paper's
            2 x 1500 LeakyReLU, `"small"` 2 x 256 ReLU. Ignored for a critic layer.
        train_copy: `ArchitectureAwareCritic`'s `train_copy` (default: a frozen copy).
        noise_draws: independent noise vectors per input sample (the pairs
            `(x, F_i(x) + eps_r)`, `r = 1..noise_draws`, all enter the sample set). With one
            draw a critic trained for many epochs memorizes the fixed noise of its held-in
            pairs and the held-out value falls (below zero for small MI); more draws
            approximate Algorithm 1's fresh noise per step. The split is per pair, so an
            `x` can be held in with one noise draw and held out with another: the estimate
            is then of `I(X; L_i + eps)` with `X` uniform on the given samples.
        seed: seeds the noise, the critic initialization, the split and the batches.
        return_details: return `estimate_mutual_information`'s dict, plus
            `noise_variance`, `critic`, `layer_index` and `feature_dim`.
        **estimate_kwargs: other `estimate_mutual_information` arguments (`tau`,
            `decay`, `standardize`, ...). `standardize` defaults to False for an
            architecture-aware critic (its copy of `F_i` must see raw `x`; the critic
            normalizes `F_i(x)` and `z` itself, see `ArchitectureAwareCritic.adapt`) and
            to True otherwise.

    Returns:
        The estimate in nats (a float), or a dict with `return_details`.

    Example:

    >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
    ...                         keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
    >>> mi = noise_regularized_mutual_information(net, x, layer_index=3, noise_variance=0.5,
    ...                                           critic="aa_mine", steps=2000)

    Reference:
        Seed 003 ("The effectiveness of layer-by-layer training using the information
        bottleneck principle"), sections 3-4, Algorithm 1, Figure 2.
    """
    from tfinfo.critics import ArchitectureAwareCritic
    from tfinfo.critics import ConcatCritic

    try:
        variance = float(noise_variance)
    except (TypeError, ValueError):
        variance = float("nan")
    if not (math.isfinite(variance) and variance > 0.0):
        raise ValueError(
            f"Expected `noise_variance` to be a finite number > 0. Received: noise_variance={noise_variance!r}"
        )
    is_layer = isinstance(critic, keras.layers.Layer)
    if not is_layer and critic not in NOISE_REGULARIZED_CRITICS:
        raise ValueError(
            f"Expected `critic` to be one of {NOISE_REGULARIZED_CRITICS} or a critic layer. Received: critic={critic!r}"
        )
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Expected `x` to be a numeric array. Received: {type(x).__name__} ({error})") from None
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"Expected `x` of shape (N, ...) with N >= 2. Received: shape={x.shape}")
    feature_network = _feature_network(network, layer_index)

    if isinstance(noise_draws, bool) or not isinstance(noise_draws, (int, np.integer)) or noise_draws < 1:
        raise ValueError(f"Expected `noise_draws` to be an int >= 1. Received: noise_draws={noise_draws!r}")
    features = _apply(feature_network, x)
    if noise_draws > 1:
        x = np.repeat(x, int(noise_draws), axis=0)
        features = np.repeat(features, int(noise_draws), axis=0)
    # A stream of its own: `default_rng(seed)` is what callers often draw their data from.
    rng = np.random.default_rng([int(seed), 0x4E015E])
    z = features + math.sqrt(variance) * rng.standard_normal(features.shape)

    keras.utils.set_random_seed(int(seed))
    if critic == "aa_mine":
        critic = ArchitectureAwareCritic(
            feature_network, hidden_units=hidden_units, activation=activation, train_copy=train_copy
        )
    elif critic == "mine":
        critic = ConcatCritic(hidden_units, activation=activation)
    aware = isinstance(critic, ArchitectureAwareCritic)
    x_flat = x.reshape(x.shape[0], -1)
    if aware:
        if not critic.built:
            critic.build(((None, x_flat.shape[1]), (None, z.shape[1])))
        critic.adapt(x_flat, z)
    estimate_kwargs.setdefault("standardize", not aware)
    result = estimate_mutual_information(
        x_flat,
        z,
        estimator=estimator,
        critic=critic,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        holdout=holdout,
        seed=seed,
        return_details=return_details,
        **estimate_kwargs,
    )
    if not return_details:
        return result
    return {
        **result,
        "noise_variance": variance,
        "critic": "aa_mine" if aware else critic.__class__.__name__,
        "layer_index": layer_index,
        "feature_dim": int(features.shape[1]),
    }
