"""Distribution strategies for the trainers, and a `fit` that works under all of them.

`make_strategy(name)` builds the strategy named on the command line (`none`,
`mirrored` or `multi_worker`). `fit(model, dataset, epochs)` trains like
`model.fit` and returns a `keras.callbacks.History`:

- under the default strategy and `MirroredStrategy` it is `model.fit`;
- under `MultiWorkerMirroredStrategy` it runs its own loop, because Keras 3's `fit`
  fails there (keras-team/keras#20585). Measured with Keras 3.15.1 / TF 2.21 and two
  workers: `fit` reduces the first distributed batch with an eager
  `strategy.reduce("MEAN", batch)` (`_maybe_symbolic_build`), which raises
  "Attempt to convert a value (PerReplica...) to a Tensor"; `evaluate` fails the
  same way, `predict` works. Its per-step logs would next be reduced with
  `strategy.reduce("MEAN", v, axis=0)` on scalars (tensorflow/tensorflow#72388).

The multi-worker loop (the route, for the README):

1. The model's state is built as `fit` builds it under a strategy
   (`Model._symbolic_build` under `strategy.scope()`, here from the dataset's
   `element_spec` rather than from a distributed batch), so no variable is created
   inside the traced step. The model, its optimizers and all their variables must
   have been created under `strategy.scope()`; `fit` checks it.
2. The dataset is distributed with `strategy.experimental_distribute_dataset`. Its
   batches are GLOBAL batches: tf.data splits each one into `num_replicas_in_sync`
   per-replica batches (equal when the batch size is a multiple of the replica
   count) and, with auto-sharding by `DATA` (set here when the dataset leaves the
   policy at `AUTO`), worker `i` keeps the `i`-th. Every worker runs the whole input
   pipeline, so shuffles must be seeded (they are in `tfinfo.data`). `DATA` rather
   than `FILE` sharding, and splitting global batches rather than
   `distribute_datasets_from_function` with per-replica batching, make a step's data
   exactly the global batch one device would see, for any dataset the trainers
   build (the datasets are built once, as for `model.fit`); the price, every worker
   reading all the data, is negligible for in-memory arrays. The loop also creates
   the dataset's iterators exactly as `model.fit` does on one device (one extra,
   unused iterator after each complete epoch of known length), so a seeded
   reshuffling dataset gives every epoch the order it has under `model.fit`.
3. One `tf.function` runs `strategy.run(model.train_step, args=(batch,))`. Keras 3's
   TensorFlow optimizer sums the gradients over all replicas of all workers inside
   `apply_gradients` (`TFOptimizer._all_reduce_sum_gradients`, a collective
   all-reduce), and compiled losses are divided by `num_replicas_in_sync`, so a step
   applies one device's gradient of the global batch: the two-worker test compares
   the weights with one device's to 1e-5. The step is retraced whenever the model
   replaces `model.train_function` (`make_train_function(force=True)`, as
   `MutualInformationTransferModel.set_phase` does).
4. Keras metrics are `ON_READ` variables: inside `train_step` each replica reads its
   OWN partial result (checked: the two workers' `result()` differ). The loop reads
   `model.metrics` again in cross-replica context (an all-reduce of their totals
   and counts), which gives the global-batch values on every worker; log entries
   that are not metric results are averaged over the replicas.
5. Callbacks run through a `keras.callbacks.CallbackList` in the order of `fit`
   (`set_model`, `on_train_begin`, `on_epoch_begin`, `on_train_batch_begin/end`,
   `on_epoch_end(epoch, logs)`, `on_train_end`), metrics are reset every epoch,
   `model.stop_training` is honoured and `BackupAndRestore`'s resume epoch is
   used. Callbacks run on every worker: those writing files (TensorBoard,
   checkpoints, CSV logs) need a directory per worker, or a throw-away one on the
   workers that are not the chief (`is_chief`).

Known differences from one device (all strategies, Keras's own behaviour): every
replica draws the same random numbers from a Keras `SeedGenerator` (dropout masks,
input noise), so the replicas' halves of a batch get identical masks; and `model.fit`
under a non-default strategy creates one more dataset iterator before training than
on one device, so the `mirrored` route sees a reshuffling dataset's epochs in other
orders than `none` (and than `multi_worker`, which follows `none`).
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multi_worker")


def configure_logical_cpus(n):
    """Splits the CPU into `n` logical devices, for `MirroredStrategy` on a CPU-only box.

    TensorFlow shows one CPU device whatever the number of cores; `MirroredStrategy`
    over several CPU replicas needs logical devices, and they can only be configured
    before TensorFlow initializes its runtime, i.e. before any op runs (creating a
    tensor or a variable, listing logical devices). Call this first thing in the
    program. Calling it again with the same `n` is a no-op.

    Args:
        n: number of logical CPU devices (>= 1).

    Returns:
        The list of logical CPU device names.

    Raises:
        ValueError: for `n` < 1.
        RuntimeError: when the runtime is already initialized with a different count.
    """
    if int(n) != n or int(n) < 1:
        raise ValueError(f"Expected `n` to be an integer >= 1. Received: n={n!r}")
    n = int(n)
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if (len(current) if current else 1) != n:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError as error:
            raise RuntimeError(
                f"Expected `configure_logical_cpus({n})` to run before TensorFlow initializes its devices "
                "(before any op: call it at program start, before building models or datasets). "
                f"Received: a runtime already initialized with {len(tf.config.list_logical_devices('CPU'))} "
                f"logical CPU device(s) ({error})"
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _check_tf_config(raw):
    """Parses and validates `TF_CONFIG` for `MultiWorkerMirroredStrategy`; returns it."""
    expected = (
        'Expected the environment variable TF_CONFIG to be a JSON object like {"cluster": {"worker": '
        '["host:port", ...]}, "task": {"type": "worker", "index": 0}} (optionally with a "chief" task). '
    )
    if not raw:
        raise ValueError(expected + "Received: TF_CONFIG unset or empty")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(expected + f"Received: TF_CONFIG={raw!r} (invalid JSON: {error})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    problem = None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        problem = 'no "cluster" or "task" object'
    elif not set(cluster) <= {"chief", "worker", "evaluator"} or not ({"chief", "worker"} & set(cluster)):
        problem = f"cluster jobs {sorted(cluster)} (only 'chief' and 'worker', with at least one of them)"
    elif not all(
        isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
        for hosts in cluster.values()
    ):
        problem = 'a job whose addresses are not a non-empty list of "host:port" strings'
    elif task.get("type") not in cluster:
        problem = f"task type {task.get('type')!r} not in the cluster"
    elif not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(cluster[task["type"]]):
        problem = f"task index {task.get('index')!r} out of range for {len(cluster[task['type']])} address(es)"
    if problem:
        raise ValueError(expected + f"Received: TF_CONFIG={raw!r} ({problem})")
    return config


def make_strategy(name, devices=None):
    """Builds the `tf.distribute` strategy named `name`.

    Args:
        name: `"none"` (the default strategy: one device, `tf.distribute.get_strategy()`),
            `"mirrored"` (`MirroredStrategy` over local devices: the GPUs if any, else
            CPU devices) or `"multi_worker"` (`MultiWorkerMirroredStrategy`, the cluster
            read from the `TF_CONFIG` environment variable).
        devices: for `"mirrored"`, use the first `devices` local devices (default: all
            GPUs, or the one CPU). On a CPU-only machine more than one device means
            logical CPUs: they are configured here if TensorFlow has not initialized its
            runtime yet, else call `configure_logical_cpus(devices)` at program start.
            Must be None for the other strategies.

    Returns:
        A `tf.distribute.Strategy`. Build and compile models under its `scope()`.

    Raises:
        ValueError: for an unknown name, a bad `devices`, or a missing or invalid
            `TF_CONFIG` for `"multi_worker"`.
        RuntimeError: when the logical CPUs or the multi-worker runtime can no longer
            be configured because TensorFlow already ran ops.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Expected strategy to be one of {STRATEGIES}. Received: strategy={name!r}")
    if devices is not None:
        if name != "mirrored":
            raise ValueError(
                f"Expected devices=None for strategy {name!r} (only 'mirrored' takes a device count). "
                f"Received: devices={devices!r}"
            )
        if isinstance(devices, bool) or int(devices) != devices or int(devices) < 1:
            raise ValueError(f"Expected `devices` to be an integer >= 1. Received: devices={devices!r}")
        devices = int(devices)
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            if devices is not None and devices > len(gpus):
                raise ValueError(
                    f"Expected `devices` <= the {len(gpus)} local GPU(s). Received: devices={devices}"
                )
            names = [d.name for d in tf.config.list_logical_devices("GPU")]
        else:
            configured = tf.config.get_logical_device_configuration(tf.config.list_physical_devices("CPU")[0])
            if devices is not None and devices > (len(configured) if configured else 1):
                configure_logical_cpus(devices)
            names = [d.name for d in tf.config.list_logical_devices("CPU")]
            if devices is not None and devices > len(names):
                raise ValueError(
                    f"Expected `devices` <= the {len(names)} logical CPU device(s). Received: devices={devices}"
                )
        return tf.distribute.MirroredStrategy(names[: devices or len(names)])
    _check_tf_config(os.environ.get("TF_CONFIG"))
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        raise RuntimeError(
            "Expected make_strategy('multi_worker') to run before TensorFlow initializes its runtime "
            f"(call it at program start, before any op). Received: {error}"
        ) from None


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` (experimental alias included)."""
    return isinstance(
        strategy, (tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.experimental.MultiWorkerMirroredStrategy)
    )


def is_chief(strategy=None):
    """Whether this process is the chief: the only one that should write shared files.

    True for single-process strategies; under `MultiWorkerMirroredStrategy`, true for
    the `chief` task, or worker 0 when the cluster has no chief.

    Args:
        strategy: a `tf.distribute.Strategy` (default: the current one).

    Returns:
        A bool.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _check_created_in_scope(model, strategy):
    """Raises if the model, its variables or its optimizers were not built under `strategy`."""
    where = "under `strategy.scope()`: build, compile (and `adapt`) the model inside `with strategy.scope():`"
    owner = getattr(model, "_distribute_strategy", None)
    if owner is not strategy:
        raise ValueError(
            f"Expected the model to be created {where}. Received: a model created under "
            f"{type(owner).__name__ if owner is not None else 'no strategy'}"
        )
    optimizers = [v for v in vars(model).values() if isinstance(v, keras.optimizers.Optimizer)]
    if getattr(model, "optimizer", None) is None:
        raise ValueError("Expected the model to be compiled with an optimizer before training. Received: no optimizer")
    for optimizer in {id(o): o for o in [model.optimizer, *optimizers]}.values():
        owner = getattr(optimizer, "_distribution_strategy", None)
        if owner is not strategy:
            raise ValueError(
                f"Expected the optimizer {optimizer.name!r} to be created {where}. Received: an optimizer "
                f"created under {type(owner).__name__ if owner is not None else 'no strategy'}"
            )
    stray = [
        v.path
        for v in [*model.variables, *(v for o in [model.optimizer, *optimizers] for v in o.variables)]
        if not strategy.extended.variable_created_in_scope(getattr(v, "value", v))
    ]
    if stray:
        raise ValueError(
            f"Expected every variable to be created {where}. Received: {len(stray)} variable(s) created "
            f"outside it, e.g. {stray[:3]}"
        )


def _prepare_dataset(dataset):
    options = tf.data.Options()
    if dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.AUTO:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
    return dataset


def _metric_results(model):
    """`model.get_metrics_result()` with nested dicts flattened, as `fit` logs them."""
    results = {}
    for metric in model.metrics:
        value = metric.result()
        if isinstance(value, dict):
            results.update(value)
        else:
            results[metric.name] = value
    return results


def _make_step(model, strategy):
    """The traced step: one `strategy.run` of `train_step` and the cross-replica logs."""

    def reduce(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
        return value

    def step(batch):
        outputs = strategy.run(model.train_step, args=(batch,))
        if not isinstance(outputs, dict):
            return tf.nest.map_structure(reduce, outputs)
        # The step's results are per-replica reads of ON_READ metric variables; read
        # the metrics again here, in cross-replica context, for the global values.
        metrics = _metric_results(model)
        return {key: metrics[key] if key in metrics else reduce(value) for key, value in outputs.items()}

    if model.run_eagerly:
        return step
    return tf.function(step, reduce_retracing=True, jit_compile=bool(model.jit_compile))


def _multi_worker_fit(model, dataset, epochs, callbacks, verbose, strategy, initial_epoch=0, steps_per_epoch=None):
    _check_created_in_scope(model, strategy)
    dataset = _prepare_dataset(dataset)
    with strategy.scope():
        # What `fit` does in `_maybe_symbolic_build`, minus the eager reduce of a
        # distributed batch that fails under this strategy: build the compiled loss,
        # metrics and optimizer from symbolic inputs, outside the traced step.
        model._symbolic_build(data_batch=dataset.element_spec)
        distributed = strategy.experimental_distribute_dataset(dataset)
    _check_created_in_scope(model, strategy)
    cardinality = int(dataset.cardinality())
    steps = steps_per_epoch or (cardinality if cardinality >= 0 else None)
    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(
            list(callbacks),
            add_history=True,
            add_progbar=bool(verbose) and is_chief(strategy),
            verbose=verbose,
            epochs=epochs,
            steps=steps,
            model=model,
        )
    # Models that change what `train_step` traces (e.g. the critic phase of
    # `MutualInformationTransferModel`) rebuild Keras's train function with
    # `make_train_function(force=True)`: follow it, retracing our step whenever
    # `model.train_function` is replaced (Keras's own function is never called here).
    model.make_train_function()
    traced_for, step = None, None
    model.stop_training = False
    callbacks.on_train_begin()
    # `BackupAndRestore` restores the weights in `on_train_begin` and sets the epoch to
    # resume from, which `fit` reads then.
    initial_epoch = getattr(model, "_initial_epoch", None) or initial_epoch
    logs, training_logs = {}, None
    # With `steps_per_epoch`, as in `fit`: one iterator over a (repeated) dataset,
    # `steps_per_epoch` batches of it per epoch.
    stream = iter(distributed) if steps_per_epoch else None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        with strategy.scope():
            batches = (next(stream) for _ in range(steps_per_epoch)) if stream is not None else distributed
            for index, batch in enumerate(batches):
                callbacks.on_train_batch_begin(index)
                if step is None or model.train_function is not traced_for:
                    traced_for, step = model.train_function, _make_step(model, strategy)
                logs = step(batch)
                callbacks.on_train_batch_end(index, logs)
                if model.stop_training:
                    break
            else:
                if stream is None and steps is not None:
                    # `fit`'s epoch iterator creates (and drops) one more iterator at
                    # the end of a complete epoch of known length; creating it draws
                    # the next seeds of a reshuffling dataset, so do the same to see
                    # the batches `fit` would see in the later epochs.
                    iter(distributed)
            metrics = _metric_results(model)  # cross-replica: the whole epoch, all workers
        if isinstance(logs, dict) and set(logs) == set(metrics):
            logs = metrics
        epoch_logs = dict(logs) if isinstance(logs, dict) else {}
        callbacks.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if model.stop_training:
            break
    if epochs > 0 and isinstance(model.optimizer, keras.optimizers.Optimizer):
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=training_logs)
    return model.history


def fit(model, dataset, epochs, callbacks=(), verbose=0, strategy=None, initial_epoch=0, steps_per_epoch=None):
    """Trains `model` on `dataset` for `epochs` epochs, under any of our strategies.

    Under the default strategy this is `model.fit(dataset, epochs=epochs,
    callbacks=callbacks, verbose=verbose)`. Under `MirroredStrategy` (where `fit`
    would shuffle differently) and `MultiWorkerMirroredStrategy` (where Keras 3's `fit`
    fails, keras-team/keras#20585), it runs a custom loop with the same semantics: global
    batches split across the replicas, gradients summed across workers by the
    optimizer, callbacks called in `fit`'s order, metrics reset every epoch, logs of
    the global batch, `model.stop_training` and `BackupAndRestore` honoured (see the
    module docstring).
    `steps_per_execution` is ignored there (one `strategy.run` per step).

    Every worker must call `fit` with the same model, the same dataset (same seeds)
    and the same callbacks. For a result equal to one device's, make the global batch
    a multiple of `strategy.num_replicas_in_sync` (e.g. `drop_remainder=True`):
    compiled losses are per-replica means divided by the number of replicas.

    Args:
        model: a compiled `keras.Model` (custom `train_step` allowed), created and
            compiled under `strategy.scope()`.
        dataset: a finite `tf.data.Dataset` of GLOBAL batches (what one device would
            train on); an epoch is one pass over it.
        epochs: number of epochs (>= 0).
        callbacks: `keras.callbacks.Callback` instances.
        verbose: 0 (silent) or 1/2 (progress bar, on the chief only under multi-worker).
        strategy: the strategy the model was created under (default: the model's own,
            `model.distribute_strategy`).
        steps_per_epoch: batches per epoch (as `model.fit`'s): with a repeated dataset,
            one iterator runs through all epochs.
        initial_epoch: epoch to start from (as `model.fit`'s); a
            `keras.callbacks.BackupAndRestore` that finds a backup overrides it.

    Returns:
        A `keras.callbacks.History`; `history.history` maps each log key to its
        per-epoch values (Python floats).

    Raises:
        ValueError: for a bad argument, or a model, optimizer or variable not created
            under `strategy.scope()`.
    """
    for name, value in (("epochs", epochs), ("initial_epoch", initial_epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"Expected `{name}` to be an integer >= 0. Received: {name}={value!r}")
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"Expected `dataset` to be a tf.data.Dataset. Received: {type(dataset).__name__}")
    if strategy is None:
        strategy = model.distribute_strategy
    # Under a strategy Keras's `fit` peeks at a batch through an extra iterator, which
    # advances `shuffle(reshuffle_each_iteration=True)`: a mirrored run would train on
    # another order than one device. The custom loop opens one iterator.
    if not (is_multi_worker(strategy) or isinstance(strategy, tf.distribute.MirroredStrategy)):
        if strategy is not model.distribute_strategy:
            raise ValueError(
                "Expected the model to be created under `strategy.scope()` of the strategy passed to `fit`. "
                f"Received: strategy={type(strategy).__name__}, model created under "
                f"{type(model.distribute_strategy).__name__}"
            )
        # shuffle=False: the dataset shuffles itself (Keras ignores `shuffle` for a
        # tf.data.Dataset, and warns on every fit when it is left at True).
        return model.fit(
            dataset, epochs=int(epochs), callbacks=list(callbacks), verbose=verbose, initial_epoch=int(initial_epoch),
            steps_per_epoch=steps_per_epoch, shuffle=False,
        )
    return _multi_worker_fit(model, dataset, int(epochs), callbacks, verbose, strategy, int(initial_epoch),
                             steps_per_epoch)
