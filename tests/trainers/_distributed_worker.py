"""Models, data and a worker process for `test_distributed.py`.

Imported by the test for the single-process reference runs, and run as a script for
the distributed ones:

    python _distributed_worker.py multi_worker OUT.json plain,mmd  # with TF_CONFIG set
    python _distributed_worker.py mirrored OUT.json plain,mmd      # two logical CPUs

The script configures the environment (and, for `mirrored`, the logical CPUs) before
TensorFlow runs any op, trains the named models of `RUNS` with `trainers.distributed.fit`
and writes, per run, the initial and final weights, the history and the metric
results each local replica sees, as JSON.
"""

import functools
import json
import os
import sys
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FEATURES = 6
NUM_CLASSES = 3
NUM_EXAMPLES = 64
BATCH = 16  # global batch: 8 examples per replica with two replicas
EPOCHS = 2


def _sgd(learning_rate=0.05):
    """SGD with momentum: an update linear in the gradient, so float rounding (the
    replicas sum their halves of a batch in another order than one device) stays at
    rounding level; Adam's first steps (about `lr * sign(g)`) amplify it on parameters
    whose gradient is near zero (measured: 3e-2 relative on the CNN after 8 steps)."""
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


def vectors(seed=0, n=NUM_EXAMPLES):
    """Source vectors whose class shifts one coordinate, labels, and shifted target vectors."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    x[np.arange(n), labels] += 2.0
    target = (rng.normal(size=(n, FEATURES)) * 1.5 + 0.7).astype(np.float32)
    return x, labels, target


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp():
    """A functional classifier with a `features` layer (what the transfer models wrap)."""
    inputs = keras.Input((FEATURES,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", kernel_initializer=keras.initializers.HeNormal(0))(inputs)
    features = keras.layers.Dense(8, activation="tanh", kernel_initializer=keras.initializers.HeNormal(1),
                                  name="features")(hidden)
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer=keras.initializers.HeNormal(2))(features)
    return keras.Model(inputs, logits)


def build_plain(adam=False):
    """A plain functional classifier compiled with a loss and an accuracy metric."""
    keras.utils.set_random_seed(0)
    model = _mlp()
    optimizer = keras.optimizers.Adam(1e-2) if adam else _sgd()
    model.compile(optimizer=optimizer, loss=_loss(), metrics=["accuracy"])
    return model


def dataset_plain(reshuffle=True):
    """Reshuffled every epoch (seeded): workers must agree on the order, and the custom
    loop must draw the epochs' orders as `model.fit` does."""
    x, y, _ = vectors()
    data = tf.data.Dataset.from_tensor_slices((x, y))
    return data.shuffle(len(x), seed=1, reshuffle_each_iteration=reshuffle).batch(BATCH)


def build_mmd():
    """An `MMDTransferModel` (custom `train_step`, MMD term all-gathered across replicas)."""
    from tfinfo.models import MMDTransferModel
    from tfinfo.regularizers import MMDRegularizer

    keras.utils.set_random_seed(0)
    model = MMDTransferModel(_mlp(), MMDRegularizer(), mmd_weight=1.0)
    model.compile(optimizer=_sgd(), loss=_loss())
    return model


def dataset_mmd(reshuffle=True):
    x, y, target = vectors()
    data = tf.data.Dataset.from_tensor_slices(((x, target), y))
    return data.shuffle(len(x), seed=2, reshuffle_each_iteration=reshuffle).batch(BATCH, drop_remainder=True)


def build_mi():
    """A `MutualInformationTransferModel`: a critic with its own optimizer, trained in the
    same step (or in epochs of its own under `CriticSchedule`)."""
    from tfinfo.critics import ConcatCritic
    from tfinfo.models import MutualInformationTransferModel
    from tfinfo.regularizers import MutualInformationRegularizer

    keras.utils.set_random_seed(0)
    regularizer = MutualInformationRegularizer(ConcatCritic((16, 16)), estimator="smile", seed=0)
    model = MutualInformationTransferModel(_mlp(), regularizer, mi_weight=0.1, critic_steps=1)
    model.adapt(vectors()[2])
    model.compile(
        optimizer=_sgd(), critic_optimizer=keras.optimizers.Adam(1e-3), loss=_loss()
    )
    return model


IMAGE_SHAPE = (12, 12, 1)


def images(seed=0, n=80):
    """uint8 source images whose class is the brighter quadrant, labels, and target images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n).astype(np.int32)
    x = rng.uniform(0, 120, size=(n,) + IMAGE_SHAPE)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        x[i, 6 * r : 6 * r + 6, 6 * c : 6 * c + 6] += 120.0
    target = 255.0 - 0.6 * rng.uniform(0, 200, size=(n,) + IMAGE_SHAPE)
    return x.astype(np.uint8), labels, target.astype(np.uint8)


def build_mmd_cnn():
    """The `mmd` method's stage 1 as the trainers build it (CNN, `transfer_dataset`),
    minus the noise and dropout, whose random draws differ between one device and
    several replicas, and with SGD (see `_sgd`)."""
    from tfinfo.architectures import build_classifier
    from tfinfo.models import MMDTransferModel
    from tfinfo.regularizers import MMDRegularizer

    keras.utils.set_random_seed(0)
    classifier = build_classifier(
        "small", input_shape=IMAGE_SHAPE, num_classes=4, image_size=12, noise_stddev=0.0, dropout=0.0, seed=0
    )
    model = MMDTransferModel(classifier, MMDRegularizer(), mmd_weight=1.0)
    model.compile(optimizer=_sgd(1e-3), loss=_loss())
    return model


def dataset_mmd_cnn():
    from tfinfo.data import transfer_dataset

    x, y, target = images()
    return transfer_dataset(x, y, target, batch_size=40, seed=2)


class Run(typing.NamedTuple):
    build: typing.Callable
    dataset: typing.Callable
    epochs: int = EPOCHS


RUNS = {
    "plain": Run(build_plain, dataset_plain),
    "plain_adam": Run(functools.partial(build_plain, adam=True), dataset_plain),
    "mmd": Run(build_mmd, dataset_mmd),
    # One epoch of two steps: the CNN's LeakyReLU and max-pooling are not smooth, and a
    # pre-activation within rounding of a kink changes its derivative outright. Measured
    # under two replicas, the weights' relative distance to one device's grows 2.6e-6,
    # 2.4e-6, 3.0e-6, 6.5e-6, 1.2e-5, 1.9e-5, then 1.3e-3 at the 7th step.
    "mmd_cnn": Run(build_mmd_cnn, dataset_mmd_cnn, epochs=1),
    "mi": Run(build_mi, dataset_mmd),
    # The same order every epoch: `model.fit` under a non-default strategy creates one
    # more iterator than on one device (Keras 3.15), so the epochs' orders of a
    # reshuffling dataset differ between the two.
    "plain_fixed_order": Run(build_plain, functools.partial(dataset_plain, reshuffle=False)),
    "mmd_fixed_order": Run(build_mmd, functools.partial(dataset_mmd, reshuffle=False)),
}


def weights_of(model):
    return [np.asarray(w, np.float64).tolist() for w in model.get_weights()]


def local_metric_results(model, strategy):
    """The metric results each local replica reads inside a step (its own partial sums)."""

    def read():
        return {m.name: m.result() for m in model.metrics if not isinstance(m.result(), dict)}

    per_replica = strategy.run(tf.function(read))
    return {
        key: [float(v) for v in strategy.experimental_local_results(value)] for key, value in per_replica.items()
    }


def main(argv):
    mode, out_path = argv[1], argv[2]
    names = argv[3].split(",")
    from trainers import distributed

    if mode == "mirrored":
        distributed.configure_logical_cpus(2)  # before any op
        strategy = distributed.make_strategy("mirrored", devices=2)
    else:
        strategy = distributed.make_strategy("multi_worker")
    results = {
        "num_replicas": strategy.num_replicas_in_sync,
        "is_chief": distributed.is_chief(strategy),
        "runs": {},
    }
    for name in names:
        run = RUNS[name]
        with strategy.scope():
            model = run.build()
        initial = weights_of(model)
        history = distributed.fit(model, run.dataset(), epochs=run.epochs, strategy=strategy)
        results["runs"][name] = {
            "initial": initial,
            "weights": weights_of(model),
            "history": history.history,
            "local_metrics": local_metric_results(model, strategy),
        }
    with open(out_path + ".tmp", "w") as f:
        json.dump(results, f)
    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main(sys.argv)
