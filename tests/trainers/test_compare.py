import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.trainers.test_transfer_cli import ENV
from tests.trainers.test_transfer_cli import _tiny_config
from trainers.compare import compare_main
from trainers.config import CompareConfig
from trainers.compare import summarize
from trainers.paper_results import PAPER_RESULTS


@pytest.mark.integration
def test_compare_writes_table_and_plot_records_failures_and_resumes(tmp_path, monkeypatch):
    from trainers.methods import MutualInformation

    base = _tiny_config(tmp_path)
    compare = CompareConfig(base=base, methods=("standard", "mi"), labeled=(8,), seeds=(0, 1))

    # A bad option is refused before any run now; a failure during training (here an
    # error raised by every mi run's stage 1) is recorded, and the others go on.
    def broken_pretrain(self, *args, **kwargs):
        raise RuntimeError("stage 1 broke in training")

    monkeypatch.setattr(MutualInformation, "pretrain", broken_pretrain)
    workdir = tmp_path / "cmp"
    log = []
    failures = compare_main(compare, str(workdir), log=log.append)
    assert failures == 2
    assert (workdir / "runs" / "mi_l8_s0" / "error.txt").read_text().count("stage 1 broke in training") >= 1
    with open(workdir / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["seed"], r["status"]) for r in rows] == [
        ("standard", "0", "ok"), ("standard", "1", "ok"), ("mi", "0", "failed"), ("mi", "1", "failed")]
    accs = [float(r["target_test_accuracy"]) for r in rows if r["status"] == "ok"]
    table = (workdir / "table.md").read_text()
    expected = f"{100 * np.mean(accs):.2f} +/- {100 * np.std(accs, ddof=1):.2f}"
    assert f"| standard | 8 | {expected} | 2 |" in table
    assert "| mi | 8 | n/a | 0 (2 failed) |" in table
    png = (workdir / "accuracy_vs_labeled.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # Rerun with the cause fixed: finished runs are skipped, failed ones redone.
    monkeypatch.undo()
    stamp = os.path.getmtime(workdir / "runs" / "standard_l8_s0" / "results.json")
    fixed = CompareConfig(base=base, methods=("standard", "mi"), labeled=(8,), seeds=(0, 1))
    log = []
    assert compare_main(fixed, str(workdir), log=log.append) == 0
    assert sum("finished earlier, skipped" in line for line in log) == 2
    assert sum(": running" in line for line in log) == 2
    assert os.path.getmtime(workdir / "runs" / "standard_l8_s0" / "results.json") == stamp
    assert "| mi | 8 | " in (workdir / "table.md").read_text()
    assert not (workdir / "runs" / "mi_l8_s0" / "error.txt").exists()  # the redone run succeeded


def test_summary_puts_the_papers_number_beside_ours():
    rows = [
        {"method": "lautum", "labeled": 100, "seed": s, "status": "ok", "target_test_accuracy": a}
        for s, a in enumerate([0.6, 0.7, 0.8])
    ]
    compare = CompareConfig(base=None, methods=("lautum",), labeled=(100,), seeds=(0, 1, 2), paper="mnist_notmnist")
    (entry,) = summarize(rows, compare)
    assert entry["mean"] == pytest.approx(0.7) and entry["std"] == pytest.approx(0.1)
    assert entry["paper"] == pytest.approx(0.6594)
    assert PAPER_RESULTS["cifar10_cifar100"][("mi", 500)] == pytest.approx(0.7282)
    assert len(PAPER_RESULTS["mnist_notmnist"]) == 21 + 12


def test_cli_refuses_a_bad_config_before_any_run(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_compare_config():\n    return {'base': 3}\n")
    for args, match in (
        (["--config", str(bad)], "Expected `base` to be a TransferConfig"),
        (["--config", str(tmp_path / "missing.py")], "Expected an existing .py compare config"),
        (["--labeled", "ten"], "Expected --labeled to be integers"),
    ):
        proc = subprocess.run([sys.executable, "-m", "trainers.compare", *args, "--workdir", str(tmp_path / "w")],
                              cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert match in proc.stderr
    assert not (tmp_path / "w" / "runs").exists()


def test_every_config_file_loads_and_names_registered_methods(monkeypatch):
    import glob

    import configs.compare_lautum_ablation as ablation

    from trainers.compare import load_compare_config
    from trainers.config import TransferConfig
    from trainers.config import load_config
    from trainers.methods import METHODS

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = sorted(glob.glob(os.path.join(root, "configs", "*.py")))
    compares = [f for f in files if os.path.basename(f).startswith("compare_")]
    assert len(compares) == 6
    for path in files:
        if path.endswith("compare_lautum_ablation.py"):
            monkeypatch.delenv("TFINFO_ABLATION", raising=False)
            with pytest.raises(ValueError, match="Expected TFINFO_ABLATION"):
                load_compare_config(path)
            tuned = load_compare_config(os.path.join(root, "configs", "compare_tuned.py"))
            for arm, change in ablation.ARMS.items():
                monkeypatch.setenv("TFINFO_ABLATION", arm)
                compare = load_compare_config(path)
                assert compare.methods == ("lautum",) and compare.base == tuned.base
                overrides = compare.method_overrides["lautum"]
                # The tuned Lautum run with exactly one setting changed, on seeds 0-4.
                assert overrides == {**tuned.method_overrides["lautum"], **change} and compare.seeds == tuple(range(5))
                tuned_run = tuned.base.replace(**tuned.method_overrides["lautum"])
                assert all(getattr(tuned_run, k) != v for k, v in change.items()), arm
                # Every arm is a valid TransferConfig.
                compare.base.replace(**overrides)
        elif path in compares:
            compare = load_compare_config(path)
            assert set(compare.methods) <= set(METHODS), path
            assert compare.paper in (None, "mnist_notmnist", "cifar10_cifar100")
        elif not path.endswith("__init__.py"):
            config = load_config(path)
            assert isinstance(config, TransferConfig) and config.method in METHODS, path


@pytest.mark.integration
def test_stage1_is_trained_once_per_method_and_seed_and_reused_exactly(tmp_path):
    import json

    import keras

    from trainers.pipeline import run_transfer
    from trainers.pipeline import stage1_key

    base = _tiny_config(tmp_path)
    # standard and te share stage 1 (plain CE on the source); two budgets each.
    compare = CompareConfig(base=base, methods=("standard", "te"), labeled=(8, 12), seeds=(0,))
    workdir = tmp_path / "cmp"
    assert compare_main(compare, str(workdir), log=lambda _: None) == 0
    assert sorted(os.listdir(workdir / "stage1")) == [stage1_key(base.replace(method="standard"))]
    with open(workdir / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["labeled"], r["stage1_reused"]) for r in rows] == [
        ("standard", "8", "False"), ("standard", "12", "True"), ("te", "8", "True"), ("te", "12", "True")]
    # The label budget and stage-2 settings do not enter the key; stage-1 settings do.
    assert stage1_key(base.replace(labeled=50, finetune_epochs=9)) == stage1_key(base)
    assert stage1_key(base.replace(learning_rate=0.5)) != stage1_key(base)
    assert stage1_key(base.replace(method="lautum_te")) == stage1_key(base.replace(method="lautum"))

    # A run from the cached stage 1 ends exactly where a run without the cache ends.
    config = base.replace(method="standard", labeled=12, seed=0)
    keras.backend.clear_session()
    fresh = run_transfer(config, str(tmp_path / "fresh"))
    keras.backend.clear_session()
    cached = run_transfer(config, str(tmp_path / "cached"), stage1_cache=str(workdir / "stage1"))
    assert cached["stage1"]["reused"] and not fresh["stage1"]["reused"]
    assert cached["target_test_accuracy"] == fresh["target_test_accuracy"]
    assert cached["history"]["finetune"] == fresh["history"]["finetune"]
    saved = json.loads((workdir / "runs" / "standard_l12_s0" / "results.json").read_text())
    assert saved["target_test_accuracy"] == fresh["target_test_accuracy"]


def test_paired_differences_pair_seeds_and_match_scipy():
    from scipy import stats

    from trainers.compare import paired_differences

    base = {0: 0.70, 1: 0.72, 2: 0.65, 3: 0.80, 4: 0.75}
    gain = {0: 0.03, 1: -0.01, 2: 0.05, 3: 0.02, 4: 0.04}
    rows = [{"method": "standard", "labeled": 50, "seed": s, "status": "ok", "target_test_accuracy": a,
             "source_test_accuracy_after_pretrain": 0.97} for s, a in base.items()]
    rows += [{"method": "lautum", "labeled": 50, "seed": s, "status": "ok", "target_test_accuracy": base[s] + g,
              "source_test_accuracy_after_pretrain": 0.95} for s, g in gain.items() if s != 4]
    rows.append({"method": "lautum", "labeled": 50, "seed": 4, "status": "failed"})  # unpaired: left out
    compare = CompareConfig(base=None, methods=("standard", "lautum"), labeled=(50,), seeds=tuple(range(5)))
    (entry,) = paired_differences(rows, compare)
    d = [gain[s] for s in range(4)]
    assert entry["n"] == 4 and entry["wins"] == 3
    assert entry["mean_diff"] == pytest.approx(np.mean(d))
    assert entry["t_test_p"] == pytest.approx(stats.ttest_rel([base[s] + gain[s] for s in range(4)],
                                                              [base[s] for s in range(4)]).pvalue)
    assert entry["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert entry["source_diff"] == pytest.approx(-0.02)
    lo, hi = entry["ci95"]
    assert lo < np.mean(d) < hi
    assert paired_differences(rows, CompareConfig(base=None, methods=("lautum",), labeled=(50,), baseline="standard")) == []


def test_pair_with_pairs_an_arm_with_another_workdirs_runs_seed_by_seed(tmp_path):
    from scipy import stats

    from trainers.compare import paired_across
    from trainers.compare import read_table
    from trainers.compare import summarize
    from trainers.compare import write_outputs

    tuned = {"standard": [0.70, 0.72, 0.65, 0.80, 0.75], "lautum": [0.71, 0.70, 0.66, 0.78, 0.77]}
    arm = [0.74, 0.69, 0.70, 0.79]  # seed 4 of the arm failed: 4 pairs
    other = CompareConfig(base=None, methods=("standard", "lautum"), labeled=(50,), seeds=tuple(range(5)))
    other_rows = [{"method": m, "labeled": 50, "seed": s, "status": "ok", "target_test_accuracy": a,
                   "source_test_accuracy_after_pretrain": 0.9 + 0.01 * s, "wall_time_s": 1.0}
                  for m, accs in tuned.items() for s, a in enumerate(accs)]
    write_outputs(other_rows, summarize(other_rows, other), other, str(tmp_path / "tuned"))
    rows = [{"method": "lautum", "labeled": 50, "seed": s, "status": "ok", "target_test_accuracy": a,
             "source_test_accuracy_after_pretrain": 0.95} for s, a in enumerate(arm)]
    rows.append({"method": "lautum", "labeled": 50, "seed": 4, "status": "failed"})
    compare = CompareConfig(base=None, methods=("lautum",), labeled=(50,), seeds=tuple(range(5)), baseline=None)

    read = read_table(str(tmp_path / "tuned"))  # the csv round trip: numbers back as numbers
    assert [r["target_test_accuracy"] for r in read] == pytest.approx([a for accs in tuned.values() for a in accs])
    paired = paired_across(rows, read, compare, "tuned")
    assert [e["baseline"] for e in paired] == ["standard [tuned]", "lautum [tuned]"]
    for entry, base in zip(paired, (tuned["standard"], tuned["lautum"])):
        d = np.subtract(arm, base[:4])
        assert entry["method"] == "lautum" and entry["n"] == 4
        assert entry["mean_diff"] == pytest.approx(d.mean())
        assert entry["wins"] == int((d > 0).sum())
        assert entry["t_test_p"] == pytest.approx(stats.ttest_rel(arm, base[:4]).pvalue)
        assert entry["source_diff"] == pytest.approx(0.95 - np.mean([0.9 + 0.01 * s for s in range(4)]))


def test_pair_with_a_missing_workdir_fails_before_any_run(tmp_path):
    compare = CompareConfig(base=None, methods=("no_such_method",), labeled=(50,), seeds=(0,))
    with pytest.raises(ValueError, match=r"Expected --pair_with to be a compare workdir with a table.csv\. Received: .*nowhere"):
        compare_main(compare, str(tmp_path / "w"), pair_with=str(tmp_path / "nowhere"))
    assert not (tmp_path / "w").exists()


def test_pair_with_refuses_runs_on_other_data_and_writes_its_table(tmp_path, monkeypatch):
    import json

    import trainers.compare as compare_module
    from trainers.compare import run_name
    from trainers.compare import summarize
    from trainers.compare import write_outputs

    def config(**change):
        return {"source": None, "target": None, "labeled": 50, "seed": 0, "num_classes": None,
                "architecture": "small", "image_size": 32, "channels": 3, "lautum_weight": 0.01, **change}

    other = CompareConfig(base=None, methods=("standard",), labeled=(50,), seeds=(0, 1))
    other_rows = [{"method": "standard", "labeled": 50, "seed": s, "status": "ok", "target_test_accuracy": 0.7 + s / 10,
                   "source_test_accuracy_after_pretrain": 0.9, "wall_time_s": 1.0} for s in (0, 1)]
    workdir = tmp_path / "other"
    write_outputs(other_rows, summarize(other_rows, other), other, str(workdir))
    for s in (0, 1):
        run = workdir / "runs" / run_name("standard", 50, s)
        run.mkdir(parents=True)
        run.joinpath("results.json").write_text(json.dumps({"config": config(seed=s, lautum_weight=0.0)}))
    arm = CompareConfig(base=None, methods=("lautum",), labeled=(50,), seeds=(0, 1), baseline=None)

    def fake_run_all(source):
        rows = [{"method": "lautum", "labeled": 50, "seed": s, "status": "ok", "target_test_accuracy": 0.75 + s / 10,
                 "source_test_accuracy_after_pretrain": 0.9, "wall_time_s": 1.0,
                 "config": config(seed=s, source=source)} for s in (0, 1)]
        return lambda compare, workdir, log=print: (rows, 0)

    # Same data, another lambda: paired, and the table is written.
    monkeypatch.setattr(compare_module, "run_all", fake_run_all(None))
    assert compare_main(arm, str(tmp_path / "arm"), log=lambda *_: None, pair_with=str(workdir)) == 0
    (entry,) = json.loads((tmp_path / "arm" / "paired_with.json").read_text())
    assert entry["baseline"] == "standard [other]" and entry["n"] == 2 and entry["mean_diff"] == pytest.approx(0.05)
    assert "| lautum - standard [other] | 50 | 2 | +5.00 |" in (tmp_path / "arm" / "paired_with.md").read_text()
    # Another source: refused, naming the field and both values.
    monkeypatch.setattr(compare_module, "run_all", fake_run_all("npz:other.npz"))
    with pytest.raises(ValueError, match=r"Expected --pair_with runs on the same data.*Received: lautum_l50_s0 "
                                         r"differs from its pair in other in source \('npz:other.npz' here, None there\)"):
        compare_main(arm, str(tmp_path / "arm2"), log=lambda *_: None, pair_with=str(workdir))
