"""Cost of a Lautum or MI pre-transfer step relative to a plain CE step (seed 000, 4.1-4.2).

For each case `<model>_d<D>_<mode>` (small/paper CNN, 28x28x1 or 32x32x3 raw inputs,
exact/fast Lautum mode) this times, in one process and interleaved:
  - `ce_step`: one CE training step on a source batch;
  - `lautum_step`: one `LautumTransferModel.train_step` (CE + double backprop +
    covariance work), plus in fast mode the periodic refactorization (Cholesky of the
    joint covariance and an eigendecomposition, timed alone) divided by its period;
    `ratio` is `lautum_step / ce_step`;
  - `cov_share`: share of the Lautum step spent in the regularizer (the regularizer call
    timed alone on a fixed Jacobian batch, plus the amortized refactorization).
Fast mode is exact at every step (rank-n updates of the inverse covariance); its cost
does not depend on the step, so the timed steps stand for the whole run.
For each case `mi_<model>_d<D>_k<K>` it times, interleaved, `ce_step` and `mi_step`: one
`MutualInformationTransferModel.train_step` with K critic steps (concat critic "small",
SMILE) before the classifier step. The issue's target is `mi_step / ce_step <= 2.5` for
the small CNN at D = 784 with one critic step.
Prints progress to stderr and one JSON object on the last line of stdout, with the
median and min of the per-repetition ratios.

Usage: python bench/step_cost.py [--quick] [--cases small_d784_exact,mi_small_d784_k1] [--precision float64]
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfinfo.architectures import build_classifier  # noqa: E402
from tfinfo.critics import ConcatCritic  # noqa: E402
from tfinfo.models import LautumTransferModel  # noqa: E402
from tfinfo.models import MutualInformationTransferModel  # noqa: E402
from tfinfo.regularizers import LautumRegularizer  # noqa: E402
from tfinfo.regularizers import MutualInformationRegularizer  # noqa: E402

SHAPES = {784: (28, 28, 1), 3072: (32, 32, 3)}


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
        times.append(time.perf_counter() - start)
    return times


def _inputs(dim, batch):
    shape = SHAPES[dim]
    rng = np.random.default_rng(0)
    x_unlabeled = rng.integers(0, 256, size=(max(4 * dim // 3, 600),) + shape).astype(np.uint8)
    xs = tf.constant(rng.uniform(0, 255, size=(batch,) + shape), tf.float32)
    xt = tf.constant(x_unlabeled[:batch], tf.float32)
    ys = tf.constant(rng.integers(0, 10, size=batch), tf.int32)
    return shape, x_unlabeled, xs, xt, ys


def _ce_step(arch, shape, xs, ys):
    ce_model = build_classifier(arch, input_shape=shape, seed=0)
    ce_model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return tf.function(lambda: ce_model.train_step((xs, ys)))


def run_mi_case(arch, dim, critic_steps, batch, repeats):
    shape, x_unlabeled, xs, xt, ys = _inputs(dim, batch)
    ce_step = _ce_step(arch, shape, xs, ys)
    reg = MutualInformationRegularizer(ConcatCritic("small"), estimator="smile", seed=0)
    model = MutualInformationTransferModel(
        build_classifier(arch, input_shape=shape, seed=0), reg, mi_weight=0.01, critic_steps=critic_steps
    )
    model.adapt(x_unlabeled)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mi_step = tf.function(lambda: model.train_step(((xs, xt), ys)))
    for fn in (ce_step, mi_step):  # trace + warm up
        _timed(fn, 2)
    ratios, ce_times, mi_times = [], [], []
    for _ in range(repeats):
        ce = statistics.median(_timed(ce_step, 5))
        mi = statistics.median(_timed(mi_step, 5))
        ratios.append(mi / ce)
        ce_times.append(ce)
        mi_times.append(mi)
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ce_step_s": statistics.median(ce_times),
        "mi_step_s": statistics.median(mi_times),
        "critic_steps": critic_steps,
        "batch": batch,
    }


def run_case(arch, dim, mode, batch, repeats, refresh_every, precision):
    shape, x_unlabeled, xs, xt, ys = _inputs(dim, batch)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ce_step = _ce_step(arch, shape, xs, ys)

    reg = LautumRegularizer(mode=mode, refresh_every=refresh_every, input_shape_hint=shape, precision=precision)
    period = reg.effective_refresh_every
    model = LautumTransferModel(build_classifier(arch, input_shape=shape, seed=0), reg, 0.01)
    model.adapt(x_unlabeled)
    model.compile(optimizer="adam", loss=loss_fn)
    lautum_step = tf.function(lambda: model.train_step(((xs, xt), ys)))

    _, w = model.jacobian_proxy(xt)
    reg_call = tf.function(lambda: reg((xt, w), training=True))

    def refactorize():
        reg._refactorize()
        return reg.closed_form(reg.x_ema, reg.cross_ema, reg.w_ema)[0]

    refresh = tf.function(refactorize) if mode == "fast" else None
    for fn in (ce_step, lautum_step, reg_call) + ((refresh,) if refresh else ()):  # trace + warm up
        _timed(fn, 2)
    # Off the refactorization steps (the timed calls advance the step counter).
    reg.step.assign(1)
    ratios, shares, ce_times, lautum_times, refresh_times = [], [], [], [], []
    for _ in range(repeats):
        ce = statistics.median(_timed(ce_step, 3))
        la = statistics.median(_timed(lautum_step, 3))
        cov = statistics.median(_timed(reg_call, 3))
        amortized = statistics.median(_timed(refresh, 1)) / period if refresh else 0.0
        reg.step.assign(1)
        ratios.append((la + amortized) / ce)
        shares.append((cov + amortized) / (la + amortized))
        ce_times.append(ce)
        lautum_times.append(la + amortized)
        refresh_times.append(amortized * period)
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "cov_share_median": statistics.median(shares),
        "ce_step_s": statistics.median(ce_times),
        "lautum_step_s": statistics.median(lautum_times),
        "refresh_every": period,
        "precision": precision,
        "refactorization_s": statistics.median(refresh_times) if refresh else None,
        "batch": batch,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cases only, fewer repeats")
    parser.add_argument("--cases", default="", help="comma-separated case names")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="float32", choices=("float32", "float64"),
                        help="dtype of the Lautum covariance work (layer default float32)")
    parser.add_argument("--refresh-every", type=int, default=None, help="fast mode's refactorization period (layer default 200)")
    args = parser.parse_args(argv)
    cases = [(a, d, m) for a in ("small", "paper") for d in (784, 3072) for m in ("exact", "fast", "k1", "k5")]
    if args.quick:
        cases = [c for c in cases if c[0] == "small" and c[1] == 784]
    names = {c: (f"mi_{c[0]}_d{c[1]}_{c[2]}" if c[2].startswith("k") else f"{c[0]}_d{c[1]}_{c[2]}") for c in cases}
    if args.cases:
        wanted = set(args.cases.split(","))
        unknown = wanted - set(names.values())
        if unknown:
            parser.error(f"Expected --cases among {sorted(names.values())}. Received: {sorted(unknown)}")
        cases = [c for c in cases if names[c] in wanted]
    results = {}
    for arch, dim, mode in cases:
        name = names[(arch, dim, mode)]
        start = time.perf_counter()
        repeats = 2 if args.quick else args.repeats
        if mode.startswith("k"):
            results[name] = run_mi_case(arch, dim, int(mode[1:]), args.batch, repeats)
        else:
            results[name] = run_case(arch, dim, mode, args.batch, repeats, args.refresh_every, args.precision)
        results[name]["bench_wall_s"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
