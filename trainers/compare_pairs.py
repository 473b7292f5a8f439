"""Paired comparisons of `tfinfo-compare`'s runs: each method against the config's
baseline seed by seed (`paired_differences`), and against the runs of an earlier
comparison (`read_table`, `paired_across`), as numbers and as a Markdown table."""

import csv
import dataclasses
import json
import os
import statistics


def run_name(method, labeled, seed):
    return f"{method}_l{labeled}_s{seed}"


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
