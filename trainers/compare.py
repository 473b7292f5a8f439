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
import json
import os
import shutil
import statistics
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __name__ == "__main__" or os.path.basename(sys.argv[0]).startswith("tfinfo-"):  # the CLI, not an import
    from trainers import stderr_filter  # noqa: E402

    stderr_filter.install()  # before TensorFlow prints its start-up lines

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from trainers.compare_pairs import PAIRED_FIELDS  # noqa: F401 (part of this module's interface)
from trainers.compare_pairs import paired_across
from trainers.compare_pairs import paired_differences
from trainers.compare_pairs import paired_table
from trainers.compare_pairs import read_table
from trainers.compare_pairs import run_name
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
    from trainers.config import call_python_config

    if not path or not os.path.isfile(path) or not path.endswith(".py"):
        raise ValueError(f"Expected an existing .py compare config. Received: config={path!r}")
    config = call_python_config(path, "get_compare_config", "tfinfo_compare_config")
    if isinstance(config, dict):
        try:
            config = CompareConfig(**config)
        except TypeError as error:
            raise ValueError(f"Expected get_compare_config() in {path} to return the fields of a CompareConfig. "
                             f"Received: {error}") from None
    if not isinstance(config, CompareConfig):
        raise ValueError(f"Expected get_compare_config() in {path} to return a CompareConfig or a dict of its "
                         f"fields. Received: {type(config).__name__}")
    if not isinstance(config.base, TransferConfig):
        raise ValueError(f"Expected `base` to be a TransferConfig. Received: {type(config.base).__name__}")
    return config


def _distinct(values, name):
    """`values` as a tuple, refusing repeats: a run counted twice would fake a seed's weight."""
    values = tuple(values)
    if not values:
        raise ValueError(f"Expected at least one value in {name}. Received: {name}=()")
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"Expected distinct values in {name} (a repeated value would count the same run "
                         f"more than once). Received: {name}={list(values)}, repeating {repeated}")
    return values


def _run_configs(compare):
    """`{(seed, method, labeled): TransferConfig}` of every run, in run order, each one
    validated; repeated methods, budgets or seeds are refused."""
    from trainers.methods import METHODS

    methods = _distinct(compare.methods, "`methods`")
    labeled = _distinct(compare.labeled, "`labeled`")
    seeds = _distinct(compare.seeds, "`seeds`")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Expected methods among {sorted(METHODS)}. Received: {unknown}")
    if compare.paper is not None:
        from trainers.paper_results import PAPER_RESULTS

        if compare.paper not in PAPER_RESULTS:
            raise ValueError(f"Expected `paper` among {sorted(PAPER_RESULTS)} or None. Received: {compare.paper!r}")
    configs = {}
    for seed in seeds:
        for method in methods:
            for budget in labeled:
                try:
                    configs[(seed, method, budget)] = compare.base.replace(
                        method=method, labeled=budget, seed=seed, **compare.method_overrides.get(method, {}))
                except ValueError as error:
                    raise ValueError(f"{error} (run {run_name(method, budget, seed)} of the comparison's "
                                     "methods x labeled x seeds)") from None
    return configs


def _check_data(configs, workdir):
    """Loads the data once per data spec and checks every run still to do against it
    (label budget, batch size), so that no run trains before a later one is found bad."""
    from trainers.methods import get_method
    from trainers.pipeline import load_data
    from trainers.pipeline import split_data

    loaded = {}
    for (seed, method, labeled), config in configs.items():
        if os.path.isfile(os.path.join(workdir, "runs", run_name(method, labeled, seed), "results.json")):
            continue
        key = (config.source, config.target, config.num_classes, config.cache_dir)
        if key not in loaded:  # the sizes the checks read do not depend on the seed
            loaded[key] = load_data(config)
        try:
            get_method(method).check_data(split_data(config, loaded[key]), config)
        except ValueError as error:
            raise ValueError(f"{error} (run {run_name(method, labeled, seed)})") from None


def _is_failed_run_of_another_config(run_dir, config):
    from trainers.config import NON_IDENTITY_FIELDS
    from trainers.config import read_json_object

    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(os.path.join(run_dir, "error.txt")) or not os.path.isfile(path):
        return False
    try:
        earlier = read_json_object(path).get("config")
    except ValueError:
        return True  # a damaged run.json of a failed run: this comparison owns the folder
    if not isinstance(earlier, dict):
        return True
    return {k: v for k, v in earlier.items() if k not in NON_IDENTITY_FIELDS} != config.identity()


def run_all(compare, workdir, log=print):
    """Runs every missing (method, budget, seed); returns the list of result rows."""
    import keras

    from trainers.pipeline import run_transfer

    configs = _run_configs(compare)
    _check_data(configs, workdir)
    rows, failures = [], 0
    total = len(configs)
    done = 0
    # Seed outermost, so that an interrupted comparison has whole seeds; budgets
    # innermost, so that a method's shared stage 1 is trained right before its reuses.
    for (seed, method, labeled), config in configs.items():
        done += 1
        name = run_name(method, labeled, seed)
        run_dir = os.path.join(workdir, "runs", name)
        results_path = os.path.join(run_dir, "results.json")
        if os.path.isfile(results_path):
            log(f"[{done}/{total}] {name}: finished earlier, skipped")
        else:
            if _is_failed_run_of_another_config(run_dir, config):
                # This comparison owns the folder: a run that failed under an
                # earlier config (e.g. the bad option now fixed) starts over.
                shutil.rmtree(run_dir)
            log(f"[{done}/{total}] {name}: running")
            keras.backend.clear_session()
            try:
                run_transfer(config, run_dir, stage1_cache=os.path.join(workdir, "stage1"))
                if os.path.isfile(os.path.join(run_dir, "error.txt")):  # an earlier failure, now redone
                    os.remove(os.path.join(run_dir, "error.txt"))
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
            compare = dataclasses.replace(compare, methods=_distinct(FLAGS.methods, "--methods"))
        for name in ("labeled", "seeds"):
            values = getattr(FLAGS, name)
            if values:
                try:
                    values = tuple(int(v) for v in values)
                except ValueError:
                    raise ValueError(f"Expected --{name} to be integers. Received: {values}") from None
                compare = dataclasses.replace(compare, **{name: _distinct(values, f"--{name}")})
        changes = {k: getattr(FLAGS, k) for k in ("pretrain_epochs", "finetune_epochs", "te_epochs") if getattr(FLAGS, k) is not None}
        if changes:
            compare = dataclasses.replace(compare, base=compare.base.replace(**changes))
        failures = compare_main(compare, FLAGS.workdir, pair_with=FLAGS.pair_with)
    except ValueError as error:
        print(f"tfinfo-compare: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the environment (files, disk, permissions), not a bug
        print(f"tfinfo-compare: error: Expected the files of this run to be readable and writable. "
              f"Received: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    return 1 if failures else 0


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
