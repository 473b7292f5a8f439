"""Staircase benchmark of variational MI estimators (Poole et al. 2019; Song & Ermon 2020).

Data: 20-dimensional correlated Gaussians, `x ~ N(0, I_20)`, `z = rho x + sqrt(1 - rho^2)
eps`, with `rho` set per level so that the true MI `-10 log(1 - rho^2)` is 2, 4, 6, 8 and
10 nats. Every step draws a fresh batch of 64 (infinite data, as in the papers).

For each estimator one critic is trained through the whole staircase (the same critic and
Adam state continue from level to level, as in the papers; `--fresh-per-level` restarts
them) on the all-pairs score matrix of each batch: the diagonal holds the joint scores,
the `64 * 63` off-diagonal entries the marginal ones. The reported number per level is
the mean training-batch value over the last half of the level's steps, with its standard
deviation, bias, relative error and the count of non-finite steps. Non-finite values are
never dropped: a level with any NaN/inf step reports `estimate: null` and
`nonfinite_steps > 0`. All estimators see the same data stream and the same critic
initialization (same seed).

Estimators: `smile` (= `smile_tau5`, JS gradient as in the authors' code), `smile_tau<T>`
(e.g. `smile_tau1`, `smile_tauinf`), a `_dv` suffix for SMILE's clipped-DV gradient
(e.g. `smile_tau5_dv`), and `mine`, `dv`, `nwj`, `infonce`, `js`
(`tfinfo.information.bounds`). InfoNCE cannot exceed `log 64`; its entries carry that cap.

Prints progress to stderr and one JSON object on the last line of stdout, with a
`checks` dict (e.g. `smile_tau5_within_15pct_up_to_6_nats`).

Usage: python bench/mi_estimators.py [--quick] [--estimators smile,mine,dv,nwj,infonce,js]
    [--levels 2,4,6,8,10] [--steps-per-level N] [--critic {separable,concat}] [--seed S]
"""

import argparse
import json
import math
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfinfo.critics import ConcatCritic  # noqa: E402
from tfinfo.critics import SeparableCritic  # noqa: E402
from tfinfo.information import bounds as bounds_lib  # noqa: E402

DIM = 20
DEFAULT_LEVELS = (2.0, 4.0, 6.0, 8.0, 10.0)
DEFAULT_ESTIMATORS = ("smile_tau5", "smile_tau1", "smile_tauinf", "mine", "dv", "nwj", "infonce", "js")
FULL_STEPS = 4000
QUICK_STEPS = 800
CHUNK = 200  # steps per traced call (one progress line each)
WITHIN = 0.15
CHECK_LEVELS = (2.0, 4.0, 6.0)
CRITIC_SPECS = {
    # As in both papers: 2 hidden layers of 256 ReLU; separable embeddings of 32.
    "separable": {"class": "SeparableCritic", "hidden_units": [256, 256], "embedding_dim": 32},
    "concat": {"class": "ConcatCritic", "hidden_units": [256, 256]},
}


def rho_for(mi, dim=DIM):
    """Per-coordinate correlation giving `-dim / 2 * log(1 - rho^2) = mi` nats."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


NOTES = {
    "smile": "value: DV with exp(T) clipped to [e^-tau, e^tau] in the marginal term; gradient as smile_gradient",
    "mine": "value: DV on the batch; gradient: MINE's moving-average bias correction (mine_decay)",
    "dv": "value and gradient: plain Donsker-Varadhan",
    "nwj": "value and gradient: NWJ, 1 + E_p[T] - E_q[e^T]",
    "infonce": "value and gradient: InfoNCE over the 64 x 64 matrix; cannot exceed log(batch_size)",
    "js": "value: NWJ of the critic; gradient: f-GAN Jensen-Shannon",
}


def parse_estimator(name, default_tau):
    """`'smile'`, `'smile_tau5'`, `'smile_tauinf_dv'`, `'mine'`, ... -> (key, spec dict)."""
    name = name.strip().lower()
    if name in bounds_lib.ESTIMATORS and name != "smile":
        return name, {"estimator": name, "tau": None, "smile_gradient": None}
    match = re.fullmatch(r"smile(?:_tau([0-9.]+|inf))?(_dv|_js)?", name)
    if not match:
        raise ValueError(
            f"Expected estimators from {bounds_lib.ESTIMATORS} or smile_tau<T>[_dv]. Received: {name!r}"
        )
    tau_text, grad = match.group(1), (match.group(2) or "_js")[1:]
    tau = default_tau if tau_text is None else (math.inf if tau_text == "inf" else float(tau_text))
    if not tau > 0:
        raise ValueError(f"Expected SMILE tau > 0. Received: {name!r}")
    tau_key = "inf" if math.isinf(tau) else f"{tau:g}"
    key = f"smile_tau{tau_key}" + ("_dv" if grad == "dv" else "")
    return key, {"estimator": "smile", "tau": tau, "smile_gradient": grad}


def make_critic(kind):
    spec = CRITIC_SPECS[kind]
    if kind == "concat":
        critic = ConcatCritic(tuple(spec["hidden_units"]))
    else:
        critic = SeparableCritic(hidden_units=tuple(spec["hidden_units"]), embedding_dim=spec["embedding_dim"])
    critic.build(((None, DIM), (None, DIM)))
    return critic


class StaircaseTrainer:
    """One critic, its Adam state, MINE's moving average and a seeded data stream."""

    def __init__(self, spec, critic_kind, batch_size, learning_rate, decay, seed):
        keras.utils.set_random_seed(int(seed))  # same critic init for every estimator
        self.critic = make_critic(critic_kind)
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.critic.trainable_variables)
        self.generator = tf.random.Generator.from_seed(int(seed))  # same data for every estimator
        self.log_ma = tf.Variable(0.0, trainable=False)
        self.first = tf.Variable(True, trainable=False)
        estimator = spec["estimator"]
        tau = spec["tau"] if spec["tau"] is not None else 5.0
        tau = None if math.isinf(tau) else tau
        smile_gradient = spec["smile_gradient"] or "js"
        batch = int(batch_size)

        @tf.function
        def run_steps(rho, n):
            values = tf.TensorArray(tf.float32, size=n)
            for i in tf.range(n):
                x = self.generator.normal([batch, DIM])
                z = rho * x + tf.sqrt(1.0 - rho * rho) * self.generator.normal([batch, DIM])
                with tf.GradientTape() as tape:
                    matrix = self.critic.score_matrix(x, z)
                    joint, marginal = bounds_lib.split_scores(matrix)
                    previous = tf.where(self.first, tf.stop_gradient(bounds_lib.log_mean_exp(marginal)), self.log_ma)
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
                grads = tape.gradient(loss, self.critic.trainable_variables)
                self.optimizer.apply_gradients(zip(grads, self.critic.trainable_variables))
                if estimator == "mine":
                    self.log_ma.assign(bound.log_moving_average)
                    self.first.assign(False)
                values = values.write(i, bound.value)
            return values.stack()

        self._run_steps = run_steps

    def run(self, rho, steps):
        out = []
        done = 0
        while done < steps:
            n = min(CHUNK, steps - done)
            out.append(self._run_steps(tf.constant(rho, tf.float32), tf.constant(n, tf.int32)).numpy())
            done += n
        return np.concatenate(out).astype(np.float64)


def _num(v, digits=4):
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def summarize(values, truth, cap=None):
    """Level summary over the last half of `values` (a level's per-step training values)."""
    window = values[len(values) // 2 :]
    finite = np.isfinite(window)
    nonfinite = int(np.sum(~finite))
    all_finite = nonfinite == 0
    bad_steps = np.flatnonzero(~np.isfinite(values))
    mean = float(np.mean(window)) if all_finite else None
    std = float(np.std(window)) if all_finite else None
    entry = {
        "truth": truth,
        "estimate": _num(mean),
        "std": _num(std),
        "bias": _num(mean - truth) if mean is not None else None,
        "rel_error": _num((mean - truth) / truth) if mean is not None else None,
        "finite": bool(all_finite),
        "nonfinite_steps": nonfinite,
        "window_steps": int(len(window)),
        # Diagnostics that never stand in for `estimate`: mean over the finite steps only,
        # the level's first non-finite step (0-based, over the whole level), the median, and
        # the largest finite training value of the whole level.
        "finite_only_mean": _num(float(np.mean(window[finite]))) if finite.any() else None,
        "first_nonfinite_step": int(bad_steps[0]) if bad_steps.size else None,
        "median": _num(float(np.median(window))) if all_finite else None,
        "max_step_value": _num(float(np.max(values[np.isfinite(values)]))) if np.isfinite(values).any() else None,
    }
    if cap is not None:
        entry["cap_nats"] = round(cap, 6)
        entry["capped_truth"] = round(min(truth, cap), 6)
        entry["bias_vs_capped_truth"] = _num(mean - min(truth, cap)) if mean is not None else None
    return entry


def compute_checks(results, levels, batch_size):
    checks = {}
    smile = results.get("smile_tau5")
    wanted = CHECK_LEVELS
    name = "smile_tau5_within_15pct_up_to_6_nats"
    if smile is None or any(_level_key(lv) not in smile["levels"] for lv in wanted):
        checks[name] = None  # not evaluated: smile_tau5 or a level <= 6 nats was not run
    else:
        checks[name] = all(
            smile["levels"][_level_key(lv)]["rel_error"] is not None
            and abs(smile["levels"][_level_key(lv)]["rel_error"]) <= WITHIN
            for lv in wanted
        )
    checks["all_entries_reported"] = all(
        set(r["levels"]) == {_level_key(lv) for lv in levels} for r in results.values()
    )
    if "infonce" in results:
        cap = math.log(batch_size)
        checks["infonce_never_exceeds_log_batch"] = all(
            e["max_step_value"] is None or e["max_step_value"] <= cap + 1e-6
            for e in results["infonce"]["levels"].values()
        )
    checks["nonfinite_entries"] = sorted(
        f"{k}@{lv}" for k, r in results.items() for lv, e in r["levels"].items() if not e["finite"]
    )
    return checks


def _level_key(mi):
    return f"{mi:g}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps per level (CI size)")
    parser.add_argument("--steps-per-level", type=int, default=None,
                        help=f"default {FULL_STEPS} ({QUICK_STEPS} with --quick)")
    parser.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS),
                        help="comma list: smile (=smile_tau5), smile_tau<T>[_dv], mine, dv, nwj, infonce, js")
    parser.add_argument("--levels", default=",".join(f"{lv:g}" for lv in DEFAULT_LEVELS),
                        help="comma list of true MI levels in nats")
    parser.add_argument("--critic", choices=sorted(CRITIC_SPECS), default="separable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--tau", type=float, default=5.0, help="SMILE tau for a bare 'smile'")
    parser.add_argument("--mine-decay", type=float, default=0.99)
    parser.add_argument("--fresh-per-level", action="store_true",
                        help="restart critic and optimizer at every level (default: continue, as in the papers)")
    args = parser.parse_args(argv)

    steps = args.steps_per_level or (QUICK_STEPS if args.quick else FULL_STEPS)
    if steps < 2:
        parser.error("--steps-per-level must be >= 2")
    if args.batch_size < 2:
        parser.error("--batch-size must be >= 2")
    try:
        levels = [float(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--levels must be a comma list of numbers, got {args.levels!r}")
    if not levels or min(levels) <= 0:
        parser.error("--levels must be positive")
    specs = {}
    for name in args.estimators.split(","):
        if not name.strip():
            continue
        try:
            key, spec = parse_estimator(name, args.tau)
        except ValueError as error:
            parser.error(str(error))
        specs[key] = spec
    if not specs:
        parser.error("--estimators is empty")

    cap = math.log(args.batch_size)
    start_all = time.perf_counter()
    results = {}
    for key, spec in specs.items():
        start = time.perf_counter()
        trainer = None
        entry = {**{k: v for k, v in spec.items() if v is not None}, "note": NOTES[spec["estimator"]], "levels": {}}
        if spec["tau"] is not None:
            entry["tau"] = None if math.isinf(spec["tau"]) else spec["tau"]
        for mi in levels:
            if trainer is None or args.fresh_per_level:
                trainer = StaircaseTrainer(spec, args.critic, args.batch_size, args.lr, args.mine_decay, args.seed)
            t0 = time.perf_counter()
            values = trainer.run(rho_for(mi), steps)
            level = summarize(values, mi, cap=cap if spec["estimator"] == "infonce" else None)
            level["wall_s"] = round(time.perf_counter() - t0, 1)
            entry["levels"][_level_key(mi)] = level
            est = "null" if level["estimate"] is None else f"{level['estimate']:.3f}"
            std = "null" if level["std"] is None else f"{level['std']:.3f}"
            print(f"{key:>14s} MI={mi:g}: estimate {est} (std {std}, nonfinite {level['nonfinite_steps']}) "
                  f"[{level['wall_s']}s]", file=sys.stderr, flush=True)
        entry["wall_s"] = round(time.perf_counter() - start, 1)
        results[key] = entry

    report = {
        "benchmark": "mi_staircase",
        "config": {
            "dim": DIM,
            "levels_nats": levels,
            "steps_per_level": steps,
            "window": (
                "last half of each level's steps; training-batch values, each computed on a fresh "
                "batch before that batch's update"
            ),
            "batch_size": args.batch_size,
            "critic": args.critic,
            "critic_spec": CRITIC_SPECS[args.critic],
            "marginals": "all off-diagonal pairs of the batch score matrix",
            "critic_across_levels": (
                "fresh per level" if args.fresh_per_level else "continues (same critic and Adam state)"
            ),
            "optimizer": "adam",
            "lr": args.lr,
            "seed": args.seed,
            "smile_default_tau": args.tau,
            "smile_gradient_default": "js",
            "mine_decay": args.mine_decay,
            "infonce_cap_nats": round(cap, 6),
            "quick": bool(args.quick),
            "data": "fresh samples every step; x ~ N(0, I), z = rho x + sqrt(1 - rho^2) eps",
        },
        "results": results,
        "checks": compute_checks(results, levels, args.batch_size),
        "wall_s": round(time.perf_counter() - start_all, 1),
    }
    print(json.dumps(report, allow_nan=False))


if __name__ == "__main__":
    main()
