"""`tfinfo-ib`: train an MLP with an information-bottleneck objective and measure its
information plane.

With no `--data` it uses the embedded default's source digits.

  tfinfo-ib --objective ib_layerwise --workdir runs/ib
  tfinfo-ib --objective surrogate_cond_logvar --gamma 0.01 --estimator binning

Writes `WORKDIR/results.json` (test accuracy, final information quantities per layer,
and in `information_description` what `i_x` and `i_y` are for the estimator),
`WORKDIR/information_plane.csv` (epoch, layer, i_x, i_y, estimator),
`WORKDIR/information_plane.png` and `WORKDIR/classifier.keras`.

With a `surrogate_*` objective the MLP has a `ZeroEntropyNoise` layer,
`bottleneck_noise`: the plane measures its `Z = Z_hat + eps` at the noise's own variance
`1/(2 pi e)`; `test_accuracy` is that of the mean softmax over `--eval_draws` seeded noise
draws (and `test_accuracy_noise_free` with the noise bypassed), the same on every
re-evaluation (`trainers.ib_evaluation.evaluate_workdir`); `--export_noise` chooses
whether `classifier.keras` keeps the noise at inference.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __name__ == "__main__" or os.path.basename(sys.argv[0]).startswith("tfinfo-"):  # the CLI, not an import
    from trainers import stderr_filter  # noqa: E402

    stderr_filter.install()  # before TensorFlow prints its start-up lines

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from trainers.ib_pipeline import OBJECTIVES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("objective", "ce", "One of " + ", ".join(OBJECTIVES) + ".")
flags.DEFINE_string("workdir", "runs/ib", "Output folder.")
flags.DEFINE_string("data", None, "Data spec (embedded | npz:PATH[:scale=1|255] | dir:PATH[:scale=1|255] | "
                                  "tfds:NAME[:classes=..][:scale=1|255]); "
                                  "default: the embedded source digits.")
flags.DEFINE_list("hidden", ["256", "128"], "Hidden layer widths of the MLP (ReLU).")
flags.DEFINE_integer("epochs", 10, "Training epochs (per layer for ib_layerwise).")
flags.DEFINE_integer("readout_epochs", 30, "Epochs of the linear readout (ib_layerwise).")
flags.DEFINE_integer("batch_size", 100, "Mini-batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the network (seed 003: 1e-3).")
flags.DEFINE_float("critic_learning_rate", 1e-4, "Adam learning rate of the MINE critics (seed 003: 1e-4).")
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight of the kernels (ce_weight_decay).")
flags.DEFINE_float("alpha", 1.0, "Weight of CE (ib_end_to_end).")
flags.DEFINE_float("beta", 1.0, "Weight of -I(Y; Y_hat) (ib_end_to_end); bottleneck weight of I(X; L_i + eps) "
                                "for ib_layerwise is --gamma.")
flags.DEFINE_float("gamma", 1e-3, "Weight of I(X; L + eps) (ib objectives) or of the surrogate.")
flags.DEFINE_float("noise_variance", 2.0, "Variance of the measurement noise of I(X; L + eps) (seed 003: 2).")
flags.DEFINE_enum("critic_batches", "fresh", ["fresh", "reuse"],
                  "IB objectives: fresh (seed 003 Algorithm 1: each critic update and the network step get their "
                  "own minibatch of --batch_size rows) | reuse (all updates of a step on one batch).")
flags.DEFINE_string("critic_warmup", "settle", "IB objectives: critic-only steps before the network follows (and "
                                               "before each layer's stage): settle (until the estimates settle, at "
                                               "most 500) | N (0: none).")
flags.DEFINE_string("x_critic", "aa_mine", "Critic of I(X; L + eps) in the ib objectives: aa_mine (seed 003) | mine.")
flags.DEFINE_integer("critic_steps", 10, "Critic updates per network update (ib objectives; seed 003: 10).")
flags.DEFINE_string("estimator", "kde", "Information-plane estimator: kde | ksg | binning | mine | aa_mine.")
flags.DEFINE_float("plane_noise_variance", None, "Measurement noise variance of the plane's deterministic layers "
                                                "(default --noise_variance); surrogate_*'s bottleneck_noise layer is "
                                                "measured with its own variance 1/(2 pi e).")
flags.DEFINE_integer("plane_samples", 1000, "Test samples the information plane is measured on.")
flags.DEFINE_integer("plane_every", 1, "Measure the plane every this many epochs.")
flags.DEFINE_integer("plane_bins", 30, "Bins per unit of the binning estimator (Shwartz-Ziv & Tishby: 30).")
flags.DEFINE_string("plane_bin_range", "layer", "Binning range: layer (the layer's [min, max]) | unit (each unit's "
                                                "own) | LOW,HIGH (fixed; -1,1 = Shwartz-Ziv & Tishby's tanh bins) | "
                                                "width:W (fixed bin width; width:0.5 = Saxe et al.'s code).")
flags.DEFINE_integer("plane_noise_draws", 10, "Noise draws per sample of the mine and aa_mine plane estimators.")
flags.DEFINE_integer("eval_draws", 10, "Noise draws averaged (mean softmax) for the test accuracy (surrogate_*).")
flags.DEFINE_string("export_noise", "inference", "surrogate_*: whether classifier.keras adds its zero-entropy noise "
                                                 "at inference (inference, the paper's model) or only in training "
                                                 "(training_only: deterministic predictions).")
flags.DEFINE_integer("seed", 0, "Seed of initialization, shuffles, noise and critics.")
flags.DEFINE_integer("verbose", 0, "Keras verbosity.")
flags.DEFINE_enum("strategy", "none", ["none", "mirrored", "multi_worker"],
                  "Distribution: none, mirrored (local GPUs or --devices logical CPUs), multi_worker (TF_CONFIG).")
flags.DEFINE_integer("devices", None, "With --strategy mirrored: number of local devices.")


_NUMERIC_FLAGS = ("epochs", "readout_epochs", "batch_size", "learning_rate", "critic_learning_rate", "weight_decay",
                  "alpha", "beta", "gamma", "noise_variance", "critic_steps", "plane_noise_variance",
                  "plane_samples", "plane_every", "plane_bins", "plane_noise_draws", "eval_draws", "seed")


def main(argv):
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from trainers.distributed import make_strategy
    from trainers.ib_pipeline import check_ib_flags
    from trainers.ib_pipeline import run_ib

    from tfinfo.callbacks.information_plane import INFORMATION_PLANE_ESTIMATORS
    from tfinfo.callbacks.information_plane_output import describe_estimator

    numeric = {name: FLAGS[name].value for name in _NUMERIC_FLAGS}
    numeric.update(plane_bin_range=FLAGS.plane_bin_range, export_noise=FLAGS.export_noise,
                   critic_batches=FLAGS.critic_batches, critic_warmup=FLAGS.critic_warmup)
    try:
        # Every flag first: nothing is trained, created or written for a bad one.
        check_ib_flags(FLAGS.workdir, FLAGS.objective, FLAGS.hidden, INFORMATION_PLANE_ESTIMATORS,
                       strategy=FLAGS.strategy, devices=FLAGS.devices, verbose=FLAGS.verbose,
                       x_critic=FLAGS.x_critic, estimator=FLAGS.estimator, **numeric)
        strategy = make_strategy(FLAGS.strategy, FLAGS.devices)  # before any op
        results = run_ib(FLAGS.workdir, FLAGS.objective, data=FLAGS.data, hidden=FLAGS.hidden,
                         x_critic=FLAGS.x_critic, estimator=FLAGS.estimator, verbose=FLAGS.verbose,
                         strategy=strategy, **numeric)
    except ValueError as error:
        print(f"tfinfo-ib: error: {error}", file=sys.stderr)
        return 2
    description = results["information_description"]
    label_x, label_y = describe_estimator(description["estimator"])["short"]

    def labels(layer):  # a zero-entropy noise layer's row is Z = Z_hat + eps, whatever the estimator
        measured = description["layers"].get(layer, {}).get("measured", "")
        if measured.startswith("Z = Z_hat + eps"):
            return "I(X;Z)", "I(Y;Z)"
        return label_x, label_y

    layers = ", ".join(f"{k}: {labels(k)[0]}={v['i_x']:.2f} {labels(k)[1]}={v['i_y']:.2f}"
                       for k, v in results["information"].items())
    note = f" ({description['note']})" if description["note"] else ""
    print(f"tfinfo-ib: objective={results['objective']} test_accuracy={results['test_accuracy']:.4f} "
          f"wall={results['wall_time_s']:.0f}s [{layers}]{note} results={os.path.join(FLAGS.workdir, 'results.json')}")
    return 0


def _parse_flags(argv):
    """absl's flag parsing, with a bad flag value reported like any bad input (exit code 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"tfinfo-ib: error: Expected valid flags (see --helpshort). Received: {error}", file=sys.stderr)
        sys.exit(2)


def run():
    """Console-script entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
