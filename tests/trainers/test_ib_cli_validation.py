"""Bad flags of `tfinfo-ib`: exit code 2 and "Expected `--flag` ... Received: ..." before
any training or file writing (the workdir is not created, an existing one is untouched).

The cases run the real CLI code (absl flags parsed, `trainers.ib.main`) one after another
in one fresh process (`tests.cli_driver`: TensorFlow is imported once, and `trainers.ib`'s flags
stay away from the other trainers' flags, which share names); two run as
`python -m trainers.ib` to check the process exit code itself.
"""

import os
import subprocess
import sys

import pytest

from tests.cli_driver import run_cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

# A short, cheap run: an input that slipped through would train quickly and then write.
_COMMON = ["--objective", "ce", "--hidden", "4", "--epochs", "1", "--plane_samples", "50", "--verbose", "0"]

# (id, flags, expected message): every message names the flag, what is expected and
# what was received.
_CASES = [
    ("batch_size_0", ["--batch_size", "0"], "Expected `--batch_size` to be an integer >= 2. Received: --batch_size=0"),
    ("batch_size_1", ["--batch_size", "1"], "Expected `--batch_size` to be an integer >= 2. Received: --batch_size=1"),
    ("batch_size_neg", ["--batch_size", "-5"], "Expected `--batch_size` to be an integer >= 2. Received: --batch_size=-5"),
    ("critic_batches", ["--critic_batches", "new"], "Expected valid flags (see --helpshort). Received: flag "
                                                    "--critic_batches=new"),
    ("critic_warmup_word", ["--critic_warmup", "converge"], "Expected `--critic_warmup` to be 'settle' or an integer "
                                                            ">= 0. Received: --critic_warmup='converge'"),
    ("critic_warmup_neg", ["--critic_warmup=-3"], "Expected `--critic_warmup` to be 'settle' or an integer >= 0. "
                                                  "Received: --critic_warmup='-3'"),
    ("epochs_0", ["--epochs", "0"], "Expected `--epochs` to be an integer >= 1. Received: --epochs=0"),
    ("readout_epochs_0", ["--readout_epochs", "0"], "Expected `--readout_epochs` to be an integer >= 1. "
                                                    "Received: --readout_epochs=0"),
    ("critic_steps_0", ["--critic_steps", "0"], "Expected `--critic_steps` to be an integer >= 1. "
                                                "Received: --critic_steps=0"),
    ("plane_samples_1", ["--plane_samples", "1"], "Expected `--plane_samples` to be an integer >= 2. "
                                                  "Received: --plane_samples=1"),
    ("plane_every_0", ["--plane_every", "0"], "Expected `--plane_every` to be an integer >= 1. "
                                              "Received: --plane_every=0"),
    ("seed_neg", ["--seed", "-1"], "Expected `--seed` to be an integer >= 0. Received: --seed=-1"),
    ("seed_huge", ["--seed", str(2**40)], "Expected `--seed` to be an integer < 2**32. Received: --seed=1099511627776"),
    ("verbose_5", ["--verbose", "5"], "Expected `--verbose` to be 0, 1 or 2. Received: --verbose=5"),
    ("lr_0", ["--learning_rate", "0"], "Expected `--learning_rate` to be a finite number > 0. "
                                       "Received: --learning_rate=0.0"),
    ("lr_nan", ["--learning_rate", "nan"], "Expected `--learning_rate` to be a finite number > 0. "
                                           "Received: --learning_rate=nan"),
    ("critic_lr_neg", ["--critic_learning_rate", "-1e-4"], "Expected `--critic_learning_rate` to be a finite number > 0"),
    ("weight_decay_neg", ["--weight_decay", "-1"], "Expected `--weight_decay` to be a finite number >= 0. "
                                                   "Received: --weight_decay=-1.0"),
    ("alpha_neg", ["--alpha", "-1"], "Expected `--alpha` to be a finite number >= 0. Received: --alpha=-1.0"),
    ("beta_inf", ["--beta", "inf"], "Expected `--beta` to be a finite number >= 0. Received: --beta=inf"),
    ("gamma_neg", ["--gamma", "-0.1"], "Expected `--gamma` to be a finite number >= 0. Received: --gamma=-0.1"),
    ("noise_0", ["--noise_variance", "0"], "Expected `--noise_variance` to be a finite number > 0. "
                                           "Received: --noise_variance=0.0"),
    # 0 used to fall back to --noise_variance silently.
    ("plane_noise_0", ["--plane_noise_variance", "0"], "Expected `--plane_noise_variance` to be a finite number > 0. "
                                                       "Received: --plane_noise_variance=0.0"),
    ("eval_draws_0", ["--eval_draws", "0"], "Expected `--eval_draws` to be an integer >= 1. Received: --eval_draws=0"),
    ("plane_bins_1", ["--plane_bins", "1"], "Expected `--plane_bins` to be an integer >= 2. Received: --plane_bins=1"),
    ("plane_noise_draws_0", ["--plane_noise_draws", "0"], "Expected `--plane_noise_draws` to be an integer >= 1. "
                                                          "Received: --plane_noise_draws=0"),
    ("export_noise", ["--export_noise", "off"], "Expected `--export_noise` to be one of ['inference', "
                                                "'training_only']. Received: --export_noise='off'"),
    ("bin_range_word", ["--plane_bin_range", "global"], "Expected `--plane_bin_range` to be layer, unit, LOW,HIGH "
                                                        "(finite, LOW < HIGH) or width:W (W > 0), e.g. -1,1 or "
                                                        "width:0.5. Received: --plane_bin_range='global'"),
    ("bin_range_order", ["--plane_bin_range=1,-1"], "Expected `--plane_bin_range` to be layer, unit, LOW,HIGH "
                                                    "(finite, LOW < HIGH) or width:W (W > 0), e.g. -1,1 or width:0.5. "
                                                    "Received: --plane_bin_range='1,-1'"),
    ("bin_range_three", ["--plane_bin_range=0,1,2"], "Received: --plane_bin_range='0,1,2'"),
    ("bin_width_0", ["--plane_bin_range", "width:0"], "Expected `--plane_bin_range` to be layer, unit, LOW,HIGH "
                                                      "(finite, LOW < HIGH) or width:W (W > 0), e.g. -1,1 or "
                                                      "width:0.5. Received: --plane_bin_range='width:0'"),
    ("bin_width_inf", ["--plane_bin_range", "width:inf"], "Received: --plane_bin_range='width:inf'"),
    ("objective", ["--objective", "vib"], "Expected `--objective` to be one of ['ce', "),
    ("x_critic", ["--x_critic", "nwj"], "Expected `--x_critic` to be one of ['mine', 'aa_mine']. "
                                        "Received: --x_critic='nwj'"),
    ("estimator", ["--estimator", "histogram"], "Expected `--estimator` to be one of ['kde', "),
    ("hidden_x", ["--hidden", "32,x"], "Expected `--hidden` to be positive integers, e.g. 256,128. "
                                       "Received: --hidden='32,x'"),
    ("hidden_0", ["--hidden", "32,0"], "Expected `--hidden` to be positive integers"),
    ("hidden_empty", ["--hidden", ""], "Expected `--hidden` to be positive integers"),
    ("devices_0", ["--strategy", "mirrored", "--devices", "0"], "Expected `--devices` to be an integer >= 1. "
                                                                "Received: --devices=0"),
    ("devices_none", ["--devices", "2"], "Expected `--devices` only with --strategy mirrored. Received: --devices=2"),
    ("data", ["--data", "npz:/nonexistent/x.npz"], "Expected `--data` to be a data spec that loads. "
                                                   "Received: --data='npz:/nonexistent/x.npz'"),
    ("data_spec", ["--data", "ftp:x"], "Expected `--data` to be a data spec that loads. Received: --data='ftp:x'"),
    ("not_an_int", ["--batch_size", "ten"], "Expected valid flags (see --helpshort). Received: flag --batch_size=ten"),
]


def _snapshot(path):
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return open(path, "rb").read()
    state = {}
    for folder, _, files in os.walk(path):
        state[os.path.relpath(folder, path) + "/"] = None
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                state[os.path.relpath(os.path.join(folder, name), path)] = f.read()
    return state


@pytest.fixture(scope="module")
def driven(tmp_path_factory):
    """Runs every case (each with a new workdir, plus one existing workdir and one that
    is a file) in one process; returns (results, workdirs, snapshots before)."""
    root = tmp_path_factory.mktemp("ib_flags")
    cases, workdirs = [], {}
    for case_id, argv, _ in _CASES:
        workdirs[case_id] = str(root / case_id / "run")
        cases.append({"id": case_id, "argv": [*_COMMON, "--workdir", workdirs[case_id], *argv]})
    existing = root / "existing"
    (existing / "tensorboard").mkdir(parents=True)
    (existing / "results.json").write_text('{"objective": "ce", "test_accuracy": 0.42}')
    (existing / "tensorboard" / "events").write_bytes(os.urandom(64))
    workdirs["existing"] = str(existing)
    cases.append({"id": "existing", "argv": [*_COMMON, "--workdir", str(existing), "--batch_size", "0"]})
    a_file = root / "a_file"
    a_file.write_text("not a folder")
    workdirs["workdir_file"] = str(a_file)
    cases.append({"id": "workdir_file", "argv": [*_COMMON, "--workdir", str(a_file)]})
    before = {case_id: _snapshot(path) for case_id, path in workdirs.items()}
    return run_cases("trainers.ib", "tfinfo-ib", cases, root), workdirs, before


@pytest.mark.parametrize("case_id,argv,message", _CASES, ids=[c[0] for c in _CASES])
def test_bad_flag_exits_2_naming_the_flag_and_writes_nothing(driven, case_id, argv, message):
    results, workdirs, before = driven
    result = results[case_id]
    assert result["code"] == 2 and message in result["stderr"], result["stderr"][-2000:]
    assert result["stderr"].startswith("tfinfo-ib: error: Expected ")
    assert "Traceback" not in result["stderr"]
    assert before[case_id] is None and not os.path.exists(workdirs[case_id])  # not even created
    assert not os.path.exists(os.path.dirname(workdirs[case_id]))


def test_an_existing_workdir_is_left_as_it_was(driven):
    results, workdirs, before = driven
    assert results["existing"]["code"] == 2 and "Expected `--batch_size`" in results["existing"]["stderr"]
    assert _snapshot(workdirs["existing"]) == before["existing"]


def test_a_workdir_that_is_a_file_is_refused(driven):
    results, workdirs, before = driven
    result = results["workdir_file"]
    assert result["code"] == 2, result["stderr"][-2000:]
    assert "Expected `--workdir` to be a folder (new or existing). Received: --workdir=" in result["stderr"]
    assert _snapshot(workdirs["workdir_file"]) == before["workdir_file"]


@pytest.mark.parametrize("argv,message", [
    (["--batch_size", "0"], "Expected `--batch_size` to be an integer >= 2. Received: --batch_size=0"),
    (["--epochs", "x"], "Expected valid flags (see --helpshort). Received: flag --epochs=x"),
])
def test_the_process_exit_code_is_2(tmp_path, argv, message):
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "trainers.ib", *_COMMON, "--workdir", str(workdir), *argv],
                          cwd=str(tmp_path), env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not workdir.exists()


@pytest.mark.parametrize("text,parsed", [
    ("layer", ("layer", None)), ("unit", ("unit", None)), ("-1,1", ((-1.0, 1.0), None)),
    (" 0, 2.5 ", ((0.0, 2.5), None)), ("width:0.5", ("layer", 0.5)),
])
def test_good_bin_ranges_parse_to_the_plane_s_arguments(text, parsed):
    from trainers.ib_pipeline import parse_bin_range

    assert parse_bin_range(text) == parsed


@pytest.mark.parametrize("text,parsed", [("settle", "settle"), ("0", 0), (" 25 ", 25), (7, 7)])
def test_critic_warmup_parses(text, parsed):
    from trainers.ib_pipeline import parse_critic_warmup

    assert parse_critic_warmup(text) == parsed
