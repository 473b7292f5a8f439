"""`tfinfo-transfer`: two-stage semi-supervised transfer (pre-train, fine-tune, export).

With no data flags it runs the embedded default (handwritten digits -> letters A-J).
Data flags change only the data: the training recipe is the same one default
(`TransferConfig()`), whatever data it is given.

  tfinfo-transfer --method lautum --labeled 100 --workdir runs/lautum
  tfinfo-transfer --source npz:src.npz --target npz:tgt.npz --method standard
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
flags.DEFINE_string("method", None, "standard | lautum | mi | lautum_mi | te | lautum_te | mmd | ctc (the registry).")
flags.DEFINE_integer("labeled", None, "Number of labeled target training images.")
flags.DEFINE_integer("seed", None, "Seed of split, data order and initialization.")
flags.DEFINE_string("workdir", "runs/transfer", "Output folder (results.json, export/).")
flags.DEFINE_string("source", None, "Source data spec: embedded | npz:PATH[:scale=1|255] | dir:PATH[:scale=1|255] | "
                    "tfds:NAME[:classes=..][:scale=1|255] (scale: the pixel range of float images).")
flags.DEFINE_string("target", None, "Target data spec (same forms as --source).")
flags.DEFINE_string("config", None, "Config file: .py with get_config() or .json of fields.")
flags.DEFINE_integer("pretrain_epochs", None, "Epochs of stage 1.")
flags.DEFINE_integer("finetune_epochs", None, "Epochs of stage 2 (the TE methods read --te_epochs when it is set).")
flags.DEFINE_integer("te_epochs", None, "Stage-2 epochs of the TE methods (te, lautum_te), over labeled + unlabeled images.")
flags.DEFINE_integer("batch_size", None, "Mini-batch size of both stages.")
flags.DEFINE_float("lautum_weight", None, "lambda of CE - lambda * L (true nats).")
flags.DEFINE_string("lautum_mode", None, "fast (default: exact value and gradient by rank-n updates) | exact (eigh every step).")
flags.DEFINE_string("lautum_precision", None, "float32 | float64: dtype of the Lautum covariance work.")
flags.DEFINE_string("lautum_proxy", None, "training | inference: the classifier's mode for the Jacobian proxy.")
flags.DEFINE_float("mi_weight", None, "lambda of CE + lambda * I(x_t; z_t) (nats).")
flags.DEFINE_string("mi_estimator", None, "smile | mine | dv | nwj | infonce | js.")
flags.DEFINE_integer("critic_steps", None, "Critic updates per classifier step.")
flags.DEFINE_string("critic_schedule", None, "step | epochs (whole epochs alternate).")
flags.DEFINE_string("architecture", None, "small | paper.")
flags.DEFINE_integer("probe_every", None, "Every N stage-1 epochs, log a linear probe's target accuracy (0 = off).")
flags.DEFINE_integer("verbose", None, "Keras verbosity 0, 1 or 2.")
flags.DEFINE_enum("strategy", "none", ["none", "mirrored", "multi_worker"],
                  "Distribution: none (one device), mirrored (local GPUs, or --devices logical CPUs), "
                  "multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG; a custom training loop).")
flags.DEFINE_integer("devices", None, "With --strategy mirrored: number of local devices (default: all GPUs, or 1 CPU).")
flags.DEFINE_enum("nonfinite_policy", None, ["stop", "skip"],
                  "A NaN/inf loss term: stop (error naming term and step) or skip (undo the step, count it).")
flags.DEFINE_bool("deterministic", False, "Op determinism: identical reruns, resumes and exports (about 15% slower).")

_OVERRIDES = (
    "method", "labeled", "seed", "source", "target", "pretrain_epochs", "finetune_epochs",
    "te_epochs", "batch_size", "lautum_weight", "lautum_mode", "lautum_precision", "lautum_proxy", "architecture", "verbose",
    "mi_weight", "mi_estimator", "critic_steps", "critic_schedule", "probe_every", "nonfinite_policy",
)


def build_config():
    """The base `TransferConfig`: --config (or the one default) with the flag overrides."""
    from trainers.config import config_from_flags

    return config_from_flags(FLAGS, _OVERRIDES)


def main(argv):
    from absl import logging as absl_logging

    from tfinfo.callbacks import NonFiniteTermError

    absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        from trainers.methods import METHODS
        from trainers.pipeline import run_transfer

        from trainers.distributed import make_strategy

        # First: logical CPUs and the multi-worker runtime must be set before any op.
        strategy = make_strategy(FLAGS.strategy, FLAGS.devices)
        config = build_config()
        if config.method not in METHODS:
            raise ValueError(
                f"Expected --method to be one of {sorted(METHODS)}. Received: method={config.method!r}"
            )
        results = run_transfer(config, FLAGS.workdir, strategy=strategy, deterministic=FLAGS.deterministic)
    except ValueError as error:
        print(f"tfinfo-transfer: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the environment (files, disk, permissions), not a bug
        print(f"tfinfo-transfer: error: Expected the files of this run to be readable and writable. "
              f"Received: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except NonFiniteTermError as error:
        print(f"tfinfo-transfer: error: {error} The checkpoints in {FLAGS.workdir} are kept: "
              "fix the cause and rerun the same command to resume.", file=sys.stderr)
        return 3
    wall = sum(results["wall_time_s"].values())
    print(
        f"tfinfo-transfer: method={results['method']} labeled={results['labeled']} "
        f"seed={results['seed']} target_test_accuracy={results['target_test_accuracy']:.4f} "
        f"stage2_converged={results.get('stage2', {}).get('converged')} "
        f"wall={wall:.0f}s results={os.path.join(FLAGS.workdir, 'results.json')}"
    )
    return 0


def _parse_flags(argv):
    """absl's flag parsing, with a bad flag value reported like any bad input (exit code 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"tfinfo-transfer: error: Expected valid flags (see --helpshort). Received: {error}",
              file=sys.stderr)
        sys.exit(2)


def run():
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
