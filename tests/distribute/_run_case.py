"""Runs one distribution case in modes and saves what one training epoch did.

Run as a fresh process (logical CPU devices must be configured before any TF op):

    python tests/distribute/_run_case.py MODULE:FUNCTION MODES OUT.npz

`MODULE:FUNCTION(jit_compile)` builds, compiles and returns `(model, dataset)` or
`(model, dataset, callbacks)`, trained for one epoch; it is
called inside the mode's strategy scope and under its dtype policy. MODES is a comma
list of `single`, `mirrored` (two logical CPUs), `xla` (`jit_compile=True`),
`mixed_float16`, `mixed_bfloat16`. OUT.npz receives, per mode, the initial and final
value of every model variable, the epoch's logs, and the largest difference between
the replicas' copies of any variable; and the same for the variables of the model's
`optimizer` and, if any, `critic_optimizer` (slots, iterations; under `mixed_float16`
those of the `LossScaleOptimizer` wrappers).
"""

import importlib
import json
import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

EPOCHS = 1


def _replica_spread(variable):
    values = getattr(variable.value, "values", None)
    if not values or len(values) < 2:
        return 0.0
    first = values[0].numpy()
    return max(float(np.max(np.abs(np.asarray(v.numpy(), np.float64) - first), initial=0.0)) for v in values[1:])


def _optimizer_variables(model):
    variables = []
    for attr in ("optimizer", "critic_optimizer"):
        optimizer = getattr(model, attr, None)
        if optimizer is not None:
            variables += list(optimizer.variables)
    return variables


def run(factory, mode):
    keras.backend.clear_session()  # the same layer names in every mode
    keras.mixed_precision.set_global_policy(mode if mode.startswith("mixed_") else "float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mode == "mirrored" else tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        built = factory(jit_compile=(mode == "xla"))
    model, dataset, callbacks = (tuple(built) + ([],))[:3]
    initial = [np.array(w.numpy()) for w in model.weights]
    history = model.fit(dataset, epochs=EPOCHS, verbose=0, callbacks=list(callbacks)).history
    final = [np.array(w.numpy()) for w in model.weights]
    logs = {k: float(v[-1]) for k, v in history.items()}
    spread = max((_replica_spread(w) for w in model.weights), default=0.0)
    names = [w.path for w in model.weights]
    slots = _optimizer_variables(model)
    optimizer = {
        "final": [np.array(v.numpy()) for v in slots],
        "names": [v.path for v in slots],
        "replica_spread": max((_replica_spread(v) for v in slots), default=0.0),
    }
    keras.mixed_precision.set_global_policy("float32")
    return initial, final, logs, spread, names, optimizer


def main(spec, modes, out):
    module, function = spec.split(":")
    factory = getattr(importlib.import_module(module), function)
    arrays, meta = {}, {}
    for mode in modes.split(","):
        initial, final, logs, spread, names, optimizer = run(factory, mode)
        for i, (a, b) in enumerate(zip(initial, final)):
            arrays[f"{mode}/initial/{i}"] = a
            arrays[f"{mode}/final/{i}"] = b
        for i, a in enumerate(optimizer["final"]):
            arrays[f"{mode}/optimizer/{i}"] = a
        meta[mode] = {
            "logs": logs,
            "replica_spread": spread,
            "names": names,
            "optimizer_names": optimizer["names"],
            "optimizer_replica_spread": optimizer["replica_spread"],
        }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:4])
