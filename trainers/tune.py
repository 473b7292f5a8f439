"""`tfinfo-tune`: a Keras Tuner search over a transfer method's hyperparameters.

The objective is the accuracy on a validation split carved (class-balanced, seeded) out
of the labeled target images; stage 2 trains on the rest; the target test set is never
read. The base is the one default (`TransferConfig()`, the embedded recipe) or `--config`.

  tfinfo-tune --method lautum --max_trials 20 --directory runs/tune_lautum
  tfinfo-tune --config base.json --tuner bayesian \\
      --search "lautum_weight=log:1e-3:1e-1,pretrain_epochs=int:4:12"
  tfinfo-transfer --config runs/tune_lautum/best_config.json --workdir runs/best

`--search` entries are NAME=KIND:ARGS over TransferConfig fields, separated by commas:
log:LOW:HIGH (log-uniform), float:LOW:HIGH[:STEP], int:LOW:HIGH[:STEP], choice:A|B|C,
fixed:VALUE. They replace the method's default space (see
`trainers.tune_pipeline.default_search_space`); with --search_extend they override or add
to it. Rerunning the same command resumes the search in --directory (finished trials
are kept; a larger --max_trials adds trials). Writes DIRECTORY/tune_results.json (every
trial's hyperparameters, val_accuracy and status; the best) and
DIRECTORY/best_config.json (the base config with the best hyperparameters).
Exit codes: 0 done; 1 no trial completed (see tune_results.json); 2 bad arguments.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __name__ == "__main__" or os.path.basename(sys.argv[0]).startswith("tfinfo-"):  # the CLI, not an import
    from trainers import stderr_filter  # noqa: E402

    stderr_filter.install()  # before TensorFlow prints its start-up lines

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Base config file: .py with get_config() or .json of fields.")
flags.DEFINE_string("method", None, "standard | lautum | mi | lautum_mi | te | lautum_te | mmd | ctc (the registry).")
flags.DEFINE_string("source", None, "Source data spec: embedded | npz:PATH[:scale=1|255] | dir:PATH[:scale=1|255] | "
                    "tfds:NAME[:classes=..][:scale=1|255] (scale: the pixel range of float images).")
flags.DEFINE_string("target", None, "Target data spec (same forms as --source).")
flags.DEFINE_integer("labeled", None, "Number of labeled target training images (validation split included).")
flags.DEFINE_integer("seed", None, "Seed of the data, the validation split, the trials and the tuner.")
flags.DEFINE_integer("pretrain_epochs", None, "Base stage-1 epochs (the default space searches half to twice).")
flags.DEFINE_integer("finetune_epochs", None, "Base stage-2 epochs (the default space searches half to twice).")
flags.DEFINE_integer("te_epochs", None, "Base stage-2 epochs of the TE methods (searched like --finetune_epochs).")
flags.DEFINE_integer("verbose", None, "Keras verbosity of the fits (0, 1 or 2); 1 or more also shows Keras "
                                      "Tuner's trial tables.")
flags.DEFINE_string("directory", "runs/tune", "Search folder (Keras Tuner project, tune_results.json, "
                                              "best_config.json); rerun to resume.")
flags.DEFINE_string("tuner", "random", "random | bayesian.")
flags.DEFINE_integer("max_trials", 10, "Total trials of the search (earlier runs' included).")
flags.DEFINE_float("validation_fraction", 0.2, "Fraction of the labeled target images held out for the objective.")
flags.DEFINE_string("search", None, "Search space NAME=KIND:ARGS,... (default: the method's default space).")
flags.DEFINE_boolean("search_extend", False, "--search overrides/adds to the default space instead of replacing it.")
flags.DEFINE_integer("executions_per_trial", 1, "Trainings (seeds) averaged per trial.")
flags.DEFINE_integer("initial_points", None, "Random trials before the Bayesian tuner's Gaussian process "
                                             "(default: 3 x the number of dimensions).")
flags.DEFINE_boolean("base_first", True, "The first trial evaluates the base config's values.")
flags.DEFINE_boolean("tensorboard", True, "Write TensorBoard logs under DIRECTORY/trial_*/logs.")
flags.DEFINE_boolean("overwrite", False, "Delete an earlier search in --directory instead of resuming it.")

_OVERRIDES = ("method", "labeled", "seed", "source", "target", "pretrain_epochs", "finetune_epochs", "te_epochs",
              "verbose")


def build_config():
    """The base `TransferConfig`: --config (or the one default) with the flag overrides."""
    from trainers.config import config_from_flags

    return config_from_flags(FLAGS, _OVERRIDES)


def main(argv):
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from trainers.tune_pipeline import run_tune

    try:
        config = build_config()
        results = run_tune(
            config,
            FLAGS.directory,
            tuner=FLAGS.tuner,
            max_trials=FLAGS.max_trials,
            validation_fraction=FLAGS.validation_fraction,
            search_space=FLAGS.search,
            extend_search_space=FLAGS.search_extend,
            executions_per_trial=FLAGS.executions_per_trial,
            overwrite=FLAGS.overwrite,
            base_first=FLAGS.base_first,
            num_initial_points=FLAGS.initial_points,
            tensorboard=FLAGS.tensorboard,
            verbose=1 if config.verbose else 0,
            progress=lambda line: print(f"tfinfo-tune: {line}", flush=True),
        )
    except ValueError as error:
        print(f"tfinfo-tune: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the environment (files, disk, permissions), not a bug
        print(f"tfinfo-tune: error: Expected the files of this run to be readable and writable. "
              f"Received: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"tfinfo-tune: error: {error}", file=sys.stderr)
        return 1
    best = results["best"]
    print(
        f"tfinfo-tune: method={results['method']} tuner={results['tuner']} "
        f"trials={results['num_trials']} completed={results['num_completed']} "
        f"best_trial={best['trial_id']} best_val_accuracy={best['val_accuracy']:.4f} "
        f"wall={sum(results['wall_time_s'].values()):.0f}s best_config={results['best_config']}"
    )
    return 0


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
