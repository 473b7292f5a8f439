"""Variational lower bounds on mutual information from critic scores.

At the log density ratio `T*(x, z) = log p(x, z) / (p(x) p(z))` the bounds' population
values differ:
DV and MINE equal `I(X; Z)` (so does `T* + c` for any constant `c`); NWJ equals it at
`T*` exactly (written here with the `+1`, so that its optimum is `T*` rather than the
usual `1 + T*`); InfoNCE (invariant to adding any function of `x`) stays below
`log K` for `K` samples per batch, so it reaches `I` only when `K >> e^I`; the
Jensen-Shannon training objective bounds a JS divergence, not the MI, but its maximizer
is `T*` and `js_bound` reports NWJ of the same scores. SMILE at a finite `tau` is biased
at `T*`, in either direction (clipping `e^T` from above lowers its partition term,
from below raises it): it is not a lower bound, and is exact only as `tau -> inf`.

Inputs are critic scores: `joint` holds `T(x_i, z_i)` on samples of `p(x, z)`; `marginal`
holds `T(x_i, z_j)` on samples of `p(x) p(z)` (an in-batch shuffle, or all `i != j`
pairs). `infonce_bound` takes the full `K x K` score matrix `scores[i, j] = T(x_i, z_j)`,
whose diagonal is the joint; `split_scores` turns such a matrix into `(joint, marginal)`
for the other bounds.

Each bound returns a `Bound(value, surrogate)`. `value` is the number to report.
`value` keeps its own autodiff gradient; `surrogate` has the same forward value but the
gradient of the estimator's training objective, which for MINE, SMILE and JS differs from
the gradient of `value`: maximize `surrogate` to train a critic, minimize it to lower the information a
representation carries. All work is in float32 (or the inputs' float64), whatever the
mixed-precision policy, and every `log E[exp(.)]` is computed stably.

Reference:
    Belghazi et al. 2018 (MINE); Nguyen, Wainwright & Jordan 2010 (NWJ);
    van den Oord et al. 2018 (InfoNCE); Nowozin et al. 2016 and Hjelm et al. 2019 (JS);
    Poole et al. 2019, "On variational bounds of mutual information";
    Song & Ermon 2020, "Understanding the limitations of variational mutual information
    estimators" (SMILE).
"""

import collections
import math

import tensorflow as tf

Bound = collections.namedtuple("Bound", ["value", "surrogate"])
Bound.__doc__ = """A bound's reported `value` and its training `surrogate` (same forward value)."""

MineBound = collections.namedtuple("MineBound", ["value", "surrogate", "log_moving_average"])
MineBound.__doc__ = """`Bound` plus the updated log moving average of `E_marginal[exp(T)]`."""

SMILE_GRADIENTS = ("js", "dv")


def _as_float(x, name):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"Expected `{name}` to be floating-point scores. Received: dtype={x.dtype.name}")
    if x.dtype in (tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    return check_leading_size(tf.reshape(x, [-1]), 1, f"Expected at least 1 score in `{name}`. Received: {name}.size=")


def check_leading_size(t, minimum, message):
    """`t`, checked to have at least `minimum` entries along axis 0.

    Used for the bounds' scores and for the batches that critics score
    (`tfinfo.critics.critic_scores`).

    A static size is checked at once (`ValueError`, the size appended to `message`); a
    dynamic one by a `tf.debugging` assertion that runs in eager mode and inside
    `tf.function`. XLA (`jit_compile=True`) compiles the assertion but ignores it, so
    there only statically known sizes are refused.
    """
    size = t.shape[0]
    if size is not None:
        if size < minimum:
            raise ValueError(f"{message}{size}")
        return t
    check = tf.debugging.assert_greater_equal(tf.shape(t)[0], minimum, message=message)
    with tf.control_dependencies([check]):
        return tf.identity(t)


def _with_gradient_of(value, objective):
    """`value` in the forward pass, the gradient of `objective` in the backward pass."""
    return tf.stop_gradient(value) + (objective - tf.stop_gradient(objective))


def log_mean_exp(t, axis=None):
    """`log(mean(exp(t)))` computed stably (shift by the maximum).

    Args:
        t: a float tensor.
        axis: axes to reduce (default: all).

    Returns:
        The reduced tensor.
    """
    t = tf.convert_to_tensor(t)
    if axis is None:
        count = tf.cast(tf.size(t), t.dtype)
    else:
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(t), tf.reshape(axis, [-1]))), t.dtype)
    return tf.reduce_logsumexp(t, axis=axis) - tf.math.log(count)


def split_scores(scores):
    """Splits a `K x K` score matrix into `(diagonal, off-diagonal entries)`.

    The diagonal scores the `K` joint pairs, the `K (K - 1)` off-diagonal entries score
    pairs from the product of marginals.
    """
    scores = tf.convert_to_tensor(scores)
    if scores.shape.rank != 2 or (
        scores.shape[0] is not None and scores.shape[1] is not None and scores.shape[0] != scores.shape[1]
    ):
        raise ValueError(f"Expected `scores` to be a square K x K matrix. Received: shape={scores.shape}")
    scores = check_leading_size(
        scores, 2, "Expected a K x K score matrix with K >= 2 (its off-diagonal entries are the marginal samples). "
        "Received: K="
    )
    k = tf.shape(scores)[0]
    joint = tf.linalg.diag_part(scores)
    off = tf.logical_not(tf.cast(tf.eye(k), tf.bool))
    return joint, tf.boolean_mask(scores, off)


def dv_bound(joint, marginal):
    """Donsker-Varadhan: `E_p[T] - log E_q[exp(T)]`, with its plain (biased) gradient.

    Args:
        joint: scores `T(x_i, z_i)` on joint samples.
        marginal: scores `T(x_i, z_j)` on samples of the product of marginals.

    Returns:
        `Bound(value, surrogate)`; here `surrogate` is `value` itself.
    """
    joint = _as_float(joint, "joint")
    marginal = _as_float(marginal, "marginal")
    value = tf.reduce_mean(joint) - log_mean_exp(marginal)
    return Bound(value, value)


def mine_bound(joint, marginal, log_moving_average=None, decay=0.99):
    """Donsker-Varadhan value with MINE's bias-corrected gradient.

    The plain DV gradient of `log E_q[e^T]` is `E_q[e^T grad T] / E_q[e^T]` with a
    minibatch denominator, which biases it. MINE replaces the denominator by a moving
    average `m` of `E_q[e^T]` over batches (Belghazi et al. 2018, section 3.2), i.e. the
    surrogate's gradient is `E_p[grad T] - E_q[e^T grad T] / m`. `m` is kept in log
    space: `log m <- log(decay * m + (1 - decay) * batch mean)`.

    Args:
        joint: scores on joint samples.
        marginal: scores on marginal samples.
        log_moving_average: the current `log m` (a scalar), or `None` on the first
            batch (then `m` is this batch's mean and the gradient equals plain DV).
        decay: moving-average decay in `[0, 1)`.

    Returns:
        `MineBound(value, surrogate, log_moving_average)` with the updated `log m`, which
        the caller stores (e.g. in a non-trainable weight) for the next batch.
    """
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"Expected `decay` in [0, 1). Received: decay={decay}")
    joint = _as_float(joint, "joint")
    marginal = _as_float(marginal, "marginal")
    batch_log_mean = log_mean_exp(marginal)
    if log_moving_average is None:
        new_log_ma = batch_log_mean
    else:
        previous = tf.cast(tf.convert_to_tensor(log_moving_average), marginal.dtype)
        if decay == 0.0:
            new_log_ma = batch_log_mean
        else:
            new_log_ma = tf.reduce_logsumexp(
                tf.stack([previous + math.log(decay), batch_log_mean + math.log1p(-decay)])
            )
    new_log_ma = tf.stop_gradient(new_log_ma)
    value = tf.reduce_mean(joint) - batch_log_mean
    # d/dT of mean(exp(T - log m)) is e^T / (n m): the corrected second term.
    objective = tf.reduce_mean(joint) - tf.reduce_mean(tf.exp(marginal - new_log_ma))
    return MineBound(value, _with_gradient_of(value, objective), new_log_ma)


def smile_bound(joint, marginal, tau=5.0, gradient="js"):
    """SMILE: DV with `exp(T)` clipped to `[e^-tau, e^tau]` in the marginal term only.

    `value = E_p[T] - log E_q[clip(e^T, e^-tau, e^tau)]` (Song & Ermon 2020, eq. 17).
    Public ports disagree on the gradient, so it is explicit:

    - `"js"` (the authors' code): the critic is trained with the Jensen-Shannon
      objective of `js_bound`, whose maximizer is the log density ratio; only the
      reported value is the clipped DV.
    - `"dv"`: the gradient of `E_p[min(T, tau)] - log E_q[clip(e^T, e^-tau, e^tau)]`,
      i.e. of eq. 17 with the joint scores capped at `tau` too (joint scores above
      `tau` get no gradient, as clipped marginal scores already do). Eq. 17 itself is
      unbounded above as a function of the critic (`T = c` gives `c - tau` for
      `c > tau`: once the marginal term saturates at `tau`, its gradient vanishes and
      the joint term's pushes `T` up without limit; a critic trained on it reported
      thousands of nats on independent data). The capped objective is at most the DV
      bound of the critic `clip(T, -tau, tau)`, hence at most `I(X; Z)` for every
      critic, and equals eq. 17 (value and gradient) wherever no score exceeds `tau`.

    With `tau=None` (no clipping) `"dv"` is the plain DV gradient.

    Args:
        joint: scores on joint samples.
        marginal: scores on marginal samples.
        tau: clipping threshold (> 0); `None` or `inf` disables clipping (plain DV value).
        gradient: `"js"` or `"dv"`.

    Returns:
        `Bound(value, surrogate)`.
    """
    if gradient not in SMILE_GRADIENTS:
        raise ValueError(f"Expected `gradient` to be one of {SMILE_GRADIENTS}. Received: gradient={gradient!r}")
    if tau is not None and not float(tau) > 0:
        raise ValueError(f"Expected `tau` > 0 (or None for no clipping). Received: tau={tau}")
    joint = _as_float(joint, "joint")
    marginal = _as_float(marginal, "marginal")
    clipped = marginal
    if tau is not None and math.isfinite(float(tau)):
        clipped = tf.clip_by_value(marginal, -float(tau), float(tau))
    value = tf.reduce_mean(joint) - log_mean_exp(clipped)
    if gradient == "js":
        return Bound(value, _with_gradient_of(value, _js_divergence(joint, marginal)))
    if clipped is marginal:
        return Bound(value, value)
    objective = tf.reduce_mean(tf.minimum(joint, float(tau))) - log_mean_exp(clipped)
    return Bound(value, _with_gradient_of(value, objective))


def nwj_bound(joint, marginal):
    """NWJ (f-divergence / "MINE-f") bound: `1 + E_p[T] - E_q[exp(T)]`.

    Written with the `+1` so that the optimal critic is the log density ratio (Poole et
    al.'s `I_NWJ` evaluated at `T + 1`). Unbiased in minibatches, variance grows like
    `e^I`. `E_q[exp(T)]` is formed as `exp(log_mean_exp(T))` so that large scores give
    `-inf` rather than NaN.
    """
    joint = _as_float(joint, "joint")
    marginal = _as_float(marginal, "marginal")
    value = 1.0 + tf.reduce_mean(joint) - tf.exp(log_mean_exp(marginal))
    return Bound(value, value)


def _js_divergence(joint, marginal):
    """The f-GAN Jensen-Shannon objective `E_p[-softplus(-T)] - E_q[softplus(T)]`."""
    return -tf.reduce_mean(tf.nn.softplus(-joint)) - tf.reduce_mean(tf.nn.softplus(marginal))


def js_bound(joint, marginal):
    """Jensen-Shannon training (Hjelm et al. 2019) with an MI value from NWJ.

    The critic is trained on the f-GAN JS objective, whose optimum is again the log
    density ratio; the reported MI is then `nwj_bound` of the same scores (Poole et al.
    2019, section 2.3). `surrogate` carries the JS gradient.
    """
    joint = _as_float(joint, "joint")
    marginal = _as_float(marginal, "marginal")
    value = nwj_bound(joint, marginal).value
    return Bound(value, _with_gradient_of(value, _js_divergence(joint, marginal)))


def infonce_bound(scores):
    """InfoNCE: `mean_i [T(x_i, z_i) - log mean_j exp T(x_i, z_j)]` over a `K x K` matrix.

    Low variance, but never above `log K`: with `K` samples per batch it cannot report
    more than `log K` nats. Each row is normalized over `z`, so adding any function of
    `x` to the scores (`scores[i, :] += a(x_i)`) leaves it unchanged.

    Args:
        scores: `scores[i, j] = T(x_i, z_j)`; the diagonal holds the joint pairs.

    Returns:
        `Bound(value, surrogate)`; `surrogate` is `value`.
    """
    scores = tf.convert_to_tensor(scores)
    if scores.dtype in (tf.float16, tf.bfloat16):
        scores = tf.cast(scores, tf.float32)
    joint, _ = split_scores(scores)
    value = tf.reduce_mean(joint - log_mean_exp(scores, axis=1))
    return Bound(value, value)


ESTIMATORS = ("smile", "mine", "dv", "nwj", "infonce", "js")


def check_estimator(estimator, tau=5.0, smile_gradient="js", decay=0.99):
    """Validates an estimator name and its options; raises `ValueError` naming the argument."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"Expected `estimator` to be one of {ESTIMATORS}. Received: estimator={estimator!r}")
    if smile_gradient not in SMILE_GRADIENTS:
        raise ValueError(
            f"Expected `smile_gradient` to be one of {SMILE_GRADIENTS}. Received: smile_gradient={smile_gradient!r}"
        )
    if tau is not None and not float(tau) > 0:
        raise ValueError(f"Expected `tau` > 0 (or None for no clipping). Received: tau={tau}")
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"Expected `decay` in [0, 1). Received: decay={decay}")


def evaluate_bound(
    estimator,
    joint,
    marginal,
    matrix=None,
    tau=5.0,
    smile_gradient="js",
    log_moving_average=None,
    decay=0.99,
):
    """Evaluates the bound named `estimator` on critic scores.

    Args:
        estimator: one of `ESTIMATORS`.
        joint, marginal: scores as for the individual bounds.
        matrix: the `K x K` score matrix, required by `"infonce"`.
        tau, smile_gradient: SMILE's options.
        log_moving_average, decay: MINE's state and decay.

    Returns:
        A `MineBound` for `"mine"`, a `Bound` otherwise.
    """
    check_estimator(estimator, tau=tau, smile_gradient=smile_gradient, decay=decay)
    if estimator == "infonce":
        if matrix is None:
            raise ValueError(
                "Expected an all-pairs score matrix for estimator='infonce' (use marginal='all_pairs'). "
                "Received: matrix=None"
            )
        return infonce_bound(matrix)
    if estimator == "mine":
        return mine_bound(joint, marginal, log_moving_average=log_moving_average, decay=decay)
    if estimator == "smile":
        return smile_bound(joint, marginal, tau=tau, gradient=smile_gradient)
    return {"dv": dv_bound, "nwj": nwj_bound, "js": js_bound}[estimator](joint, marginal)
