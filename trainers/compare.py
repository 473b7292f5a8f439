"""`tfinfo-compare`: methods x label budgets x seeds, resumable, into one table and a plot.

    tfinfo-compare --config configs/compare_embedded.py --workdir runs/compare

A compare config is a Python file whose `get_compare_config()` returns a
`CompareConfig` (or a dict of its fields). Each run is `tfinfo-transfer`'s two-stage
pipeline in `WORKDIR/runs/<method>_l<labeled>_s<seed>/`; a run whose `results.json`
exists is not redone, so an interrupted comparison resumes where it stopped. Stage 1
does not read the target labels, so it is trained once per method and seed (methods
sharing it, like `standard` and `te`, share it too) and kept in `WORKDIR/stage1/` for
every label budget. A run that
fails is recorded (`WORKDIR/runs/.../error.txt`) and the others go on; the exit code is
then 1. Outputs: `table.csv` (one row per run), `table.md` (mean +/- std over seeds per
method and budget, with the paper's number beside ours when the config names the
paper's experiment) and `accuracy_vs_labeled.png`. With `--pair_with OTHER_WORKDIR`,
every method is also paired seed by seed with every method of that earlier comparison
(`paired_with.md`, `paired_with.json`), e.g. an ablation arm with the runs it ablates.
"""

import csv
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
import traceback

from absl import app
from absl import flags

from trainers.config import CompareConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Compare config: a .py file with get_compare_config().")
flags.DEFINE_string("workdir", "runs/compare", "Output folder (runs/, table.csv, table.md, plot).")
flags.DEFINE_list("methods", None, "Override the config's methods (comma list).")
flags.DEFINE_list("labeled", None, "Override the config's label budgets (comma list).")
flags.DEFINE_list("seeds", None, "Override the config's seeds (comma list).")
flags.DEFINE_integer("pretrain_epochs", None, "Override stage-1 epochs of every run.")
flags.DEFINE_integer("finetune_epochs", None, "Override stage-2 epochs of every run (the TE methods: --te_epochs).")
flags.DEFINE_integer("te_epochs", None, "Override stage-2 epochs of the TE methods' runs.")
flags.DEFINE_string("pair_with", None,
                    "Another compare workdir: every method here is paired, seed by seed, with every "
                    "method there (e.g. an ablation arm with the runs it changes one setting of); "
                    "writes paired_with.md and paired_with.json.")


def load_compare_config(path):
    """Loads `get_compare_config()` from a Python file."""
    from trainers.config import TransferConfig

    if not path or not os.path.isfile(path) or not path.endswith(".py"):
        raise ValueError(f"Expected an existing .py compare config. Received: config={path!r}")
    spec = importlib.util.spec_from_file_location("tfinfo_compare_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_compare_config"):
        raise ValueError(f"Expected {path} to define get_compare_config(). Received: no such function")
    config = module.get_compare_config()
    if isinstance(config, dict):
        config = CompareConfig(**config)
    if not isinstance(config.base, TransferConfig):
        raise ValueError(f"Expected `base` to be a TransferConfig. Received: {type(config.base).__name__}")
    return config


def _is_failed_run_of_another_config(run_dir, config):
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(os.path.join(run_dir, "error.txt")) or not os.path.isfile(path):
        return False
    with open(path) as f:
        return json.load(f).get("config") != config.to_dict()


def run_name(method, labeled, seed):
    return f"{method}_l{labeled}_s{seed}"


def run_all(compare, workdir, log=print):
    """Runs every missing (method, budget, seed); returns the list of result rows."""
    import keras

    from trainers.methods import METHODS
    from trainers.pipeline import run_transfer

    unknown = [m for m in compare.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Expected methods among {sorted(METHODS)}. Received: {unknown}")
    if compare.paper is not None:
        from trainers.paper_results import PAPER_RESULTS

        if compare.paper not in PAPER_RESULTS:
            raise ValueError(f"Expected `paper` among {sorted(PAPER_RESULTS)} or None. Received: {compare.paper!r}")
    rows, failures = [], 0
    total = len(compare.methods) * len(compare.labeled) * len(compare.seeds)
    done = 0
    # Seed outermost, so that an interrupted comparison has whole seeds; budgets
    # innermost, so that a method's shared stage 1 is trained right before its reuses.
    for seed in compare.seeds:
        for method in compare.methods:
            for labeled in compare.labeled:
                done += 1
                name = run_name(method, labeled, seed)
                run_dir = os.path.join(workdir, "runs", name)
                results_path = os.path.join(run_dir, "results.json")
                if os.path.isfile(results_path):
                    log(f"[{done}/{total}] {name}: finished earlier, skipped")
                else:
                    config = compare.base.replace(
                        method=method, labeled=int(labeled), seed=int(seed),
                        **compare.method_overrides.get(method, {}),
                    )
                    if _is_failed_run_of_another_config(run_dir, config):
                        # This comparison owns the folder: a run that failed under an
                        # earlier config (e.g. the bad option now fixed) starts over.
                        shutil.rmtree(run_dir)
                    log(f"[{done}/{total}] {name}: running")
                    keras.backend.clear_session()
                    try:
                        run_transfer(config, run_dir, stage1_cache=os.path.join(workdir, "stage1"))
                    except Exception:  # a failed run is recorded; the comparison goes on
                        failures += 1
                        os.makedirs(run_dir, exist_ok=True)
                        with open(os.path.join(run_dir, "error.txt"), "w") as f:
                            f.write(traceback.format_exc())
                        log(f"[{done}/{total}] {name}: FAILED (see {run_dir}/error.txt)")
                        rows.append({"method": method, "labeled": labeled, "seed": seed, "status": "failed"})
                        continue
                with open(results_path) as f:
                    results = json.load(f)
                rows.append({
                    "method": method,
                    "labeled": int(labeled),
                    "seed": int(seed),
                    "status": "ok",
                    "target_test_accuracy": results["target_test_accuracy"],
                    "source_test_accuracy_after_pretrain": results.get("source_test_accuracy_after_pretrain"),
                    "wall_time_s": round(sum(results["wall_time_s"].values()), 1),
                    "stage1_reused": bool(results.get("stage1", {}).get("reused", False)),
                    "stage2_converged": results.get("stage2", {}).get("converged"),
                    "config": results.get("config"),
                })
    order = {m: i for i, m in enumerate(compare.methods)}
    rows.sort(key=lambda r: (order[r["method"]], int(r["labeled"]), int(r["seed"])))
    return rows, failures


def summarize(rows, compare):
    """Per (method, budget): mean, std (sample, over seeds), n, and the paper's number."""
    paper = {}
    if compare.paper is not None:
        from trainers.paper_results import PAPER_RESULTS

        paper = PAPER_RESULTS[compare.paper]
    summary = []
    for labeled in compare.labeled:
        for method in compare.methods:
            accs = [r["target_test_accuracy"] for r in rows
                    if r["method"] == method and r["labeled"] == labeled and r["status"] == "ok"]
            failed = sum(1 for r in rows if r["method"] == method and r["labeled"] == labeled and r["status"] != "ok")
            summary.append({
                "method": method,
                "labeled": int(labeled),
                "n": len(accs),
                "failed": failed,
                "mean": statistics.fmean(accs) if accs else None,
                "std": statistics.stdev(accs) if len(accs) > 1 else None,
                "paper": paper.get((method, int(labeled))),
            })
    return summary


def paired_differences(rows, compare):
    """Each method against `compare.baseline`, seed by seed, per budget.

    For every (method, budget), the seeds where both runs finished give paired
    differences `d = acc(method) - acc(baseline)` (same split, same initialization, same
    stage-2 data order). Returns one dict per pair with `n`, the mean and sample std of
    `d`, a 95% t interval, the paired t-test and Wilcoxon signed-rank p-values
    (two-sided; `None` below 2 pairs or when every difference is 0), the number of seeds
    where the method wins, and the mean stage-1 source-accuracy difference.
    """
    from scipy import stats

    baseline = compare.baseline
    if baseline is None or baseline not in compare.methods:
        return []
    ok = {(r["method"], int(r["labeled"]), int(r["seed"])): r for r in rows if r["status"] == "ok"}
    out = []
    for labeled in compare.labeled:
        for method in compare.methods:
            if method == baseline:
                continue
            seeds = sorted(s for (m, b, s) in ok if m == method and b == int(labeled) and (baseline, b, s) in ok)
            d = [ok[(method, int(labeled), s)]["target_test_accuracy"] - ok[(baseline, int(labeled), s)]["target_test_accuracy"]
                 for s in seeds]
            src = [(ok[(method, int(labeled), s)].get("source_test_accuracy_after_pretrain") or 0.0)
                   - (ok[(baseline, int(labeled), s)].get("source_test_accuracy_after_pretrain") or 0.0) for s in seeds]
            entry = {"method": method, "labeled": int(labeled), "baseline": baseline, "n": len(d),
                     "mean_diff": statistics.fmean(d) if d else None,
                     "std_diff": statistics.stdev(d) if len(d) > 1 else None,
                     "ci95": None, "t_test_p": None, "wilcoxon_p": None,
                     "wins": sum(1 for v in d if v > 0), "source_diff": statistics.fmean(src) if src else None}
            if len(d) > 1 and any(v != 0 for v in d):
                half = stats.t.ppf(0.975, len(d) - 1) * entry["std_diff"] / len(d) ** 0.5
                entry["ci95"] = (entry["mean_diff"] - half, entry["mean_diff"] + half)
                entry["t_test_p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
                entry["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
            out.append(entry)
    return out


def read_table(workdir):
    """The result rows of an earlier comparison, from its `table.csv`."""
    path = os.path.join(workdir, "table.csv")
    if not os.path.isfile(path):
        raise ValueError(f"Expected --pair_with to be a compare workdir with a table.csv. Received: {workdir!r}")
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {"method": r["method"], "labeled": int(r["labeled"]), "seed": int(r["seed"]), "status": r["status"]}
            if r["status"] == "ok":
                try:
                    row["target_test_accuracy"] = float(r["target_test_accuracy"])
                    source = r.get("source_test_accuracy_after_pretrain")
                    row["source_test_accuracy_after_pretrain"] = float(source) if source else None
                except ValueError:
                    raise ValueError(f"Expected numbers in the accuracy columns of {path}. Received: {r}") from None
                results = os.path.join(workdir, "runs", run_name(row["method"], row["labeled"], row["seed"]), "results.json")
                if os.path.isfile(results):
                    with open(results) as g:
                        row["config"] = json.load(g).get("config")
            rows.append(row)
    return rows


# Fields that define what a run is compared on: two runs paired seed by seed must agree
# on them (an ablation arm changes something else, e.g. a regularizer setting).
PAIRED_FIELDS = ("source", "target", "labeled", "seed", "num_classes", "architecture", "image_size", "channels")


def _check_pairable(rows, other_rows, other_name):
    """Refuses pairs of runs that differ in a `PAIRED_FIELDS` field (other data or network)."""
    theirs = {(r["labeled"], r["seed"]): r.get("config") for r in other_rows if r.get("config")}
    for row in rows:
        mine, other = row.get("config"), theirs.get((int(row["labeled"]), int(row["seed"])))
        if not mine or not other:
            continue
        differing = {k: (mine.get(k), other.get(k)) for k in PAIRED_FIELDS if mine.get(k) != other.get(k)}
        if differing:
            name = run_name(row["method"], row["labeled"], row["seed"])
            raise ValueError(
                f"Expected --pair_with runs on the same data and network as this comparison's "
                f"({', '.join(PAIRED_FIELDS)}). Received: {name} differs from its pair in {other_name} in "
                + ", ".join(f"{k} ({a!r} here, {b!r} there)" for k, (a, b) in differing.items()))


def paired_across(rows, other_rows, compare, other_name):
    """Every method of `rows` against every method of `other_rows`, seed by seed.

    `other_rows` come from another workdir (`read_table`); their methods are named
    `"<method> [<other_name>]"`, so that an arm's `lautum` and the `lautum` it ablates
    stay apart. Same entries as `paired_differences`. Runs that differ in a
    `PAIRED_FIELDS` field (their `config`, when the rows carry it) are refused.
    """
    _check_pairable(rows, other_rows, other_name)
    renamed = [{**r, "method": f"{r['method']} [{other_name}]"} for r in other_rows]
    out = []
    for baseline in dict.fromkeys(r["method"] for r in renamed):
        pair = dataclasses.replace(compare, methods=tuple(compare.methods) + (baseline,), baseline=baseline)
        out += paired_differences(rows + renamed, pair)
    return out


def paired_table(paired):
    """Markdown table of `paired_differences`."""
    lines = ["| method - baseline | labeled | pairs | mean diff (pts) | 95% CI (pts) | wins | t-test p | Wilcoxon p | source acc diff (pts) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in paired:
        ci = "n/a" if e["ci95"] is None else f"[{100 * e['ci95'][0]:+.2f}, {100 * e['ci95'][1]:+.2f}]"
        mean = "n/a" if e["mean_diff"] is None else f"{100 * e['mean_diff']:+.2f}"
        src = "n/a" if e["source_diff"] is None else f"{100 * e['source_diff']:+.2f}"
        p_t = "n/a" if e["t_test_p"] is None else f"{e['t_test_p']:.3g}"
        p_w = "n/a" if e["wilcoxon_p"] is None else f"{e['wilcoxon_p']:.3g}"
        lines.append(f"| {e['method']} - {e['baseline']} | {e['labeled']} | {e['n']} | {mean} | {ci} | "
                     f"{e['wins']}/{e['n']} | {p_t} | {p_w} | {src} |")
    return "\n".join(lines)


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def write_outputs(rows, summary, compare, workdir):
    os.makedirs(workdir, exist_ok=True)
    fields = ["method", "labeled", "seed", "status", "target_test_accuracy",
              "source_test_accuracy_after_pretrain", "wall_time_s", "stage1_reused", "stage2_converged"]
    with open(os.path.join(workdir, "table.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in fields})
    lines = ["| method | labeled | accuracy % (mean +/- std) | seeds |"
             + (" paper % |" if compare.paper else ""),
             "|---|---|---|---|" + ("---|" if compare.paper else "")]
    for s in summary:
        cell = "n/a" if s["mean"] is None else f"{_pct(s['mean'])} +/- {_pct(s['std'])}"
        seeds = f"{s['n']}" + (f" ({s['failed']} failed)" if s["failed"] else "")
        line = f"| {s['method']} | {s['labeled']} | {cell} | {seeds} |"
        if compare.paper:
            line += f" {_pct(s['paper'])} |"
        lines.append(line)
    unconverged = [f"{r['method']}_l{r['labeled']}_s{r['seed']}" for r in rows if r.get("stage2_converged") is False]
    if unconverged:
        from trainers.pipeline import CONVERGED_ACCURACY

        lines += ["", f"Stage 2 did not converge (labeled images fitted < {100 * CONVERGED_ACCURACY:.0f}%) "
                  f"in {len(unconverged)} runs: "
                  + ", ".join(unconverged) + "."]
    paired = paired_differences(rows, compare)
    if paired:
        lines += ["", paired_table(paired)]
        with open(os.path.join(workdir, "paired.json"), "w") as f:
            json.dump(paired, f, indent=1)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(summary, compare, os.path.join(workdir, "accuracy_vs_labeled.png"))
    return "\n".join(lines)


def _plot(summary, compare, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in compare.methods:
        points = [s for s in summary if s["method"] == method and s["mean"] is not None]
        if not points:
            continue
        ax.errorbar([s["labeled"] for s in points], [100 * s["mean"] for s in points],
                    yerr=[100 * (s["std"] or 0.0) for s in points], marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xticks(list(compare.labeled))
    ax.set_xticklabels([str(b) for b in compare.labeled])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the budgets are labeled
    ax.set_xlabel("labeled target images")
    ax.set_ylabel("target test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_main(compare, workdir, log=print, pair_with=None):
    """Runs the comparison and writes the outputs; returns the number of failed runs.

    `pair_with`: another compare workdir whose runs pair with these (`paired_across`),
    read before any run so that a wrong path fails first.
    """
    start = time.perf_counter()
    other_rows = read_table(pair_with) if pair_with else None
    rows, failures = run_all(compare, workdir, log=log)
    summary = summarize(rows, compare)
    table = write_outputs(rows, summary, compare, workdir)
    log(table)
    if other_rows is not None:
        other_name = os.path.basename(os.path.normpath(pair_with))
        paired = paired_across(rows, other_rows, compare, other_name)
        text = f"Paired with the runs of {pair_with} (same seeds: same splits and initializations):\n\n"
        text += paired_table(paired) + "\n"
        with open(os.path.join(workdir, "paired_with.md"), "w") as f:
            f.write(text)
        with open(os.path.join(workdir, "paired_with.json"), "w") as f:
            json.dump(paired, f, indent=1)
        log(text)
    log(f"tfinfo-compare: {len(rows)} runs ({failures} failed) in {time.perf_counter() - start:.0f}s; "
        f"outputs in {workdir}")
    return failures


def main(argv):
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        if FLAGS.config:
            compare = load_compare_config(FLAGS.config)
        else:
            from configs.compare_embedded import get_compare_config

            compare = get_compare_config()
        if FLAGS.methods:
            compare = dataclasses.replace(compare, methods=tuple(FLAGS.methods))
        for name in ("labeled", "seeds"):
            values = getattr(FLAGS, name)
            if values:
                try:
                    compare = dataclasses.replace(compare, **{name: tuple(int(v) for v in values)})
                except ValueError:
                    raise ValueError(f"Expected --{name} to be integers. Received: {values}") from None
        changes = {k: getattr(FLAGS, k) for k in ("pretrain_epochs", "finetune_epochs", "te_epochs") if getattr(FLAGS, k) is not None}
        if changes:
            compare = dataclasses.replace(compare, base=compare.base.replace(**changes))
        failures = compare_main(compare, FLAGS.workdir, pair_with=FLAGS.pair_with)
    except ValueError as error:
        print(f"tfinfo-compare: error: {error}", file=sys.stderr)
        return 2
    return 1 if failures else 0


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
