"""Seed 003 Figure 2: noise-regularized MI of a random MLP's last layer, standard MINE vs AA-MINE.

Setting (seed 003, section 4 and Figure 2): a 784-512-512-10 ReLU MLP with random
(Glorot-uniform, Keras's default) weights, never trained; `L = F_3(X)` its last layer
(10 logits); `I(X; L + eps)`, `eps ~ N(0, sigma^2 I)`, for `sigma^2` in
{0.01, 0.1, 0.5, 1, 2}, estimated with

- standard MINE: a concat critic `T(x, z) = MLP([x, z])` on the raw 784-dim input and the
  noisy logits (`critic="mine"`), and
- AA-MINE: `ArchitectureAwareCritic`, a frozen copy of the MLP followed by the same head on
  `[F_3(x), z]` (`critic="aa_mine"`),

both trained with MINE's moving-average gradient and reported as the DV bound on
held-out pairs, through `tfinfo.information.noise_regularized_mutual_information`
(which calls `estimate_mutual_information`). Every (critic, variance) entry starts from a
fresh critic with the same seed; the noise draw is the same for both critics.

Inputs: the paper measured MNIST (it names no other input for Figure 2). Offline, the
default `--input digits` uses the 1,797 real handwritten digits of the embedded default
source (scikit-learn's 8x8 digits, resized into 28x28 like MNIST), flattened to 784
values in [0, 1]; `--input normal` draws `--samples` standard-normal 784-vectors instead
(unlimited samples; the true MI then grows without bound as sigma^2 -> 0).

The paper's discriminator head is 2 x 1500 LeakyReLU (`--hidden seed003`); the CPU default
is 2 x 128 ReLU, which keeps the all-pairs training (a batch of B gives B^2 head rows)
affordable. The paper's Figure 2 expectation, checked in `checks`: the AA-MINE estimate
decreases strictly as sigma^2 grows, and exceeds standard MINE's at the smallest sigma^2.

Two float64 references per variance go with the curves (neither is what a held-out
estimator converges to exactly, both bracket it sensibly): `gaussian_upper_bound`
`1/2 logdet(I + Cov(L) / sigma^2)`, an upper bound on `I(X; L + eps)` for any input
distribution with the measured `Cov(L)`; and `empirical_mixture`, the exact MI when `X` is
uniform on the samples (Monte Carlo over the noise; at most `log N`).

Prints progress to stderr and one JSON object on the last line of stdout.

Usage: python bench/aa_mine.py [--quick] [--steps N] [--variances 0.01,0.1,0.5,1,2]
    [--critics aa_mine,mine] [--hidden 128,128|small|seed003] [--input digits|normal]
    [--batch-size B] [--lr LR] [--train-copy] [--seed S]
"""

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfinfo.critics import CRITIC_PRESETS  # noqa: E402
from tfinfo.information.noise_regularized import noise_regularized_mutual_information  # noqa: E402

DEFAULT_VARIANCES = (0.01, 0.1, 0.5, 1.0, 2.0)
DEFAULT_CRITICS = ("aa_mine", "mine")
FULL_STEPS = 1500
QUICK_STEPS = 200
WIDTHS = (784, 512, 512, 10)


def build_mlp(seed):
    """The paper's 784-512-512-10 ReLU MLP with random (untrained) weights."""
    keras.utils.set_random_seed(int(seed))
    return keras.Sequential(
        [
            keras.Input((WIDTHS[0],)),
            keras.layers.Dense(WIDTHS[1], activation="relu", name="dense_1"),
            keras.layers.Dense(WIDTHS[2], activation="relu", name="dense_2"),
            keras.layers.Dense(WIDTHS[3], name="logits"),
        ],
        name="mlp_784_512_512_10",
    )


def load_inputs(kind, samples, seed):
    if kind == "digits":
        from tfinfo.data.embedded import load_embedded

        splits = load_embedded("source", seed=0, image_size=28)
        x = np.concatenate([splits.x_train, splits.x_test]).astype(np.float32) / 255.0
        return x.reshape(x.shape[0], -1), "embedded digits (scikit-learn 1,797, 28x28, [0, 1]), flattened"
    rng = np.random.default_rng(seed + 1)
    return rng.standard_normal((samples, WIDTHS[0])).astype(np.float32), f"{samples} x N(0, I_784)"


def references(features, variance, seed, draws=4, chunk=256):
    """Two float64 references for `I(X; L + eps)`, `L` the `(N, K)` features of the samples.

    `gaussian_upper_bound`: `1/2 logdet(I + Cov(L) / sigma^2)`; since `h(L + eps)` is at
    most the entropy of a Gaussian with the same covariance, no input distribution with
    this `Cov(L)` carries more. `empirical_mixture`: the exact MI (Monte Carlo over the
    noise, `draws` passes) when `X` is uniform on the `N` samples, i.e. `L + eps` a mixture
    of `N` Gaussians: `E[log N(z; l_i, s^2) - log (1/N) sum_j N(z; l_j, s^2)]`; at most `log N`.
    """
    from scipy.special import logsumexp

    n, k = features.shape
    cov = np.cov(features.T).reshape(k, k)
    upper = 0.5 * np.linalg.slogdet(np.eye(k) + cov / variance)[1]
    rng = np.random.default_rng(seed + 7)
    total = 0.0
    for _ in range(draws):
        eps = math.sqrt(variance) * rng.standard_normal(features.shape)
        z = features + eps
        for lo in range(0, n, chunk):
            d2 = ((z[lo : lo + chunk, None, :] - features[None, :, :]) ** 2).sum(-1)
            own = -(eps[lo : lo + chunk] ** 2).sum(-1) / (2.0 * variance)
            total += float(np.sum(own - (logsumexp(-d2 / (2.0 * variance), axis=1) - math.log(n))))
    return {"gaussian_upper_bound": float(upper), "empirical_mixture": total / (draws * n)}


def parse_hidden(text):
    if text in CRITIC_PRESETS:
        return text
    try:
        units = tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be a preset {sorted(CRITIC_PRESETS)} or a comma list of ints")
    if not units or min(units) < 1:
        raise argparse.ArgumentTypeError("--hidden must hold positive ints")
    return units


def _num(v, digits=4):
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def compute_checks(curves, variances):
    checks = {}
    aa = curves.get("aa_mine")
    order = sorted(variances)
    if aa is not None and len(order) >= 2:
        values = [aa[f"{v:g}"] for v in order]
        checks["aa_mine_strictly_decreasing"] = all(
            a is not None and b is not None and a > b for a, b in zip(values[:-1], values[1:])
        )
    else:
        checks["aa_mine_strictly_decreasing"] = None
    if aa is not None and "mine" in curves:
        key = f"{order[0]:g}"
        a, m = aa[key], curves["mine"][key]
        checks["aa_mine_above_mine_at_smallest_variance"] = None if a is None or m is None else bool(a > m)
    else:
        checks["aa_mine_above_mine_at_smallest_variance"] = None
    checks["all_finite"] = all(v is not None for c in curves.values() for v in c.values())
    return checks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} critic steps per entry")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"critic training steps per (critic, variance); default {FULL_STEPS} "
                             f"({QUICK_STEPS} with --quick)")
    parser.add_argument("--variances", default=",".join(f"{v:g}" for v in DEFAULT_VARIANCES),
                        help="comma list of noise variances sigma^2")
    parser.add_argument("--critics", default=",".join(DEFAULT_CRITICS), help="comma list of aa_mine, mine")
    parser.add_argument("--hidden", type=parse_hidden, default=(128, 128),
                        help="critic head: comma list of widths or a preset (small, seed003, seed002)")
    parser.add_argument("--activation", default="relu", help="head activation (ignored for a preset)")
    parser.add_argument("--input", choices=("digits", "normal"), default="digits")
    parser.add_argument("--samples", type=int, default=4000, help="samples for --input normal")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--noise-draws", type=int, default=10,
                        help="noise draws per input sample (Algorithm 1 redraws the noise every step)")
    parser.add_argument("--mine-decay", type=float, default=0.99)
    parser.add_argument("--train-copy", action="store_true",
                        help="train AA-MINE's copy of the MLP with its head (default: a frozen copy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    steps = args.steps or (QUICK_STEPS if args.quick else FULL_STEPS)
    if steps < 1:
        parser.error("--steps must be >= 1")
    try:
        variances = [float(v) for v in args.variances.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--variances must be a comma list of numbers, got {args.variances!r}")
    if not variances or min(variances) <= 0:
        parser.error("--variances must be positive")
    critics = [c.strip() for c in args.critics.split(",") if c.strip()]
    if not critics or any(c not in DEFAULT_CRITICS for c in critics):
        parser.error(f"--critics must be a comma list of {DEFAULT_CRITICS}, got {args.critics!r}")

    start_all = time.perf_counter()
    x, input_note = load_inputs(args.input, args.samples, args.seed)
    network = build_mlp(args.seed)
    logits = np.asarray(network.predict(x, batch_size=512, verbose=0), np.float64)
    print(f"inputs {x.shape}; logits std per unit {np.round(logits.std(axis=0), 3).tolist()}",
          file=sys.stderr, flush=True)

    refs = {f"{v:g}": {k: _num(r) for k, r in references(logits, v, args.seed).items()} for v in variances}
    print(f"references (nats): {refs}", file=sys.stderr, flush=True)

    curves, entries = {}, {}
    for critic in critics:
        curves[critic], entries[critic] = {}, {}
        for variance in variances:
            t0 = time.perf_counter()
            details = noise_regularized_mutual_information(
                network,
                x,
                layer_index=3,
                noise_variance=variance,
                critic=critic,
                estimator="mine",
                steps=steps,
                batch_size=args.batch_size,
                learning_rate=args.lr,
                holdout=args.holdout,
                hidden_units=args.hidden,
                activation=args.activation,
                train_copy=args.train_copy,
                noise_draws=args.noise_draws,
                decay=args.mine_decay,
                seed=args.seed,
                return_details=True,
            )
            wall = time.perf_counter() - t0
            value = _num(details["value"])
            key = f"{variance:g}"
            curves[critic][key] = value
            entries[critic][key] = {
                "estimate": value,
                "train_curve_tail": [_num(v, 3) for v in details["train_curve"][-5:]],
                "wall_s": round(wall, 1),
            }
            print(f"{critic:>8s} sigma^2={variance:g}: {value} nats [{wall:.1f}s]", file=sys.stderr, flush=True)

    report = {
        "benchmark": "aa_mine_figure2",
        "config": {
            "network": "784-512-512-10 ReLU MLP, random Glorot-uniform weights (untrained), L = last layer",
            "input": input_note,
            "n_samples": int(x.shape[0]),
            "noise_variances": variances,
            "critics": {
                "aa_mine": "ArchitectureAwareCritic: copy of the MLP "
                + ("(trained with the head)" if args.train_copy else "(frozen)")
                + " + head on [F(x), z]",
                "mine": "ConcatCritic: head on [x, z] (x standardized)",
            },
            "head_hidden_units": list(args.hidden) if isinstance(args.hidden, tuple) else args.hidden,
            "head_activation": args.activation,
            "estimator": "mine (moving-average gradient, decay %g); reported: DV on held-out pairs" % args.mine_decay,
            "marginals": "all off-diagonal pairs of each batch / held-out block",
            "steps": steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "holdout": args.holdout,
            "noise_draws": args.noise_draws,
            "seed": args.seed,
            "quick": bool(args.quick),
        },
        "curves_nats": curves,
        "references_nats": refs,
        "entries": entries,
        "checks": compute_checks(curves, variances),
        "wall_s": round(time.perf_counter() - start_all, 1),
    }
    print(json.dumps(report, allow_nan=False))


if __name__ == "__main__":
    main()
