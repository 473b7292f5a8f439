"""How far apart two float32 runs of one stage-1 epoch end when only the rounding differs.

Run as a script (it configures two logical CPUs before TensorFlow starts). Trains the
CLI's small CNN (dropout and input noise off, Adam 1e-3, batch 50, the first 28 global
batches of the embedded source digits) for one epoch:

- `one`: one device;
- `mirrored`: `MirroredStrategy` over two logical CPUs (each replica sums half a batch);
- `reordered_<k>`: one device, with the rows of every batch permuted (the same batches and
  mathematically the same gradients; only the order of the float32 sums changes).

Prints JSON: for each run against `one`, the largest per-tensor relative distance
`||w - w_one|| / ||w_one||`. Argument: the cache folder of the embedded data.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from tfinfo.architectures import build_classifier  # noqa: E402
from tfinfo.data.embedded import load_embedded  # noqa: E402
from trainers.distributed import fit  # noqa: E402

BATCH, STEPS = 50, 28


def _train(strategy, x, y):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_classifier("small", input_shape=x.shape[1:], dropout=0.0, noise_stddev=0.0, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fit(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), 1)
    return [v.numpy().astype(np.float64) for v in model.weights]


def _distance(a, b):
    return max(float(np.linalg.norm(p - q) / np.linalg.norm(p)) for p, q in zip(a, b))


def main(cache_dir):
    splits = load_embedded("source", seed=0, cache_dir=cache_dir)
    x = np.asarray(splits.x_train[: BATCH * STEPS], np.float32)
    y = np.asarray(splits.y_train[: BATCH * STEPS], np.int64)
    one = _train(tf.distribute.get_strategy(), x, y)
    out = {"mirrored": _distance(one, _train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), x, y))}
    for k in (1, 2):
        rng = np.random.default_rng(k)
        rows = np.concatenate([start + rng.permutation(BATCH) for start in range(0, len(x), BATCH)])
        out[f"reordered_{k}"] = _distance(one, _train(tf.distribute.get_strategy(), x[rows], y[rows]))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
