"""The two-stage pipeline behind `tfinfo-transfer`."""

import hashlib
import json
import logging
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tfinfo.architectures import FEATURES_LAYER
from tfinfo.architectures import build_classifier
from tfinfo.callbacks import TransferabilityProbe
from tfinfo.data import check_compatible
from tfinfo.data import harmonize
from tfinfo.data import labeled_unlabeled_split
from tfinfo.data import load_spec
from trainers.methods import TransferData
from trainers.methods import get_method
from trainers.checkpoint import load_stage1
from trainers.checkpoint import save_stage1
from trainers.runner import Runner
from trainers.workdir import RESULTS_FILE
from trainers.workdir import RUN_FILE
from trainers.workdir import WorkdirLock
from trainers.workdir import check_run
from trainers.workdir import check_writable
from trainers.workdir import write_error
from trainers.workdir import write_json

log = logging.getLogger("tfinfo")


def _check_labels(y, num_classes, name):
    bad = (y < 0) | (y >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"Expected {name} labels in 0..{num_classes - 1}. "
            f"Received: labels containing {sorted(set(np.asarray(y)[bad].tolist()))[:5]}"
        )


def load_data(config):
    """Loads, validates and harmonizes the source and target sets of `config`.

    Returns:
        `(source, target, num_classes, skipped_files)`; `split_data` makes the run's
        `TransferData` of it for a label budget.
    """
    source = load_spec(config.source, role="source", seed=config.seed, cache_dir=config.cache_dir)
    target = load_spec(config.target, role="target", seed=config.seed, cache_dir=config.cache_dir)
    skipped = {"source": int(source.skipped_files), "target": int(target.skipped_files)}
    check_compatible(source, target)
    source, target = harmonize(source, target)
    num_classes = config.num_classes or max(source.num_classes, target.num_classes)
    if num_classes < 2:
        raise ValueError("Expected at least 2 classes in the source and target sets (a classifier of one class "
                         f"learns nothing). Received: num_classes={num_classes} (source={config.source!r}, "
                         f"target={config.target!r})")
    for split, name in ((source, "source"), (target, "target")):
        _check_labels(split.y_train, num_classes, f"{name} training")
        _check_labels(split.y_test, num_classes, f"{name} test")
    if len(target.x_test) == 0:
        raise ValueError("Expected at least one target test image. Received: an empty test split")
    return source, target, num_classes, skipped


def split_data(config, loaded):
    """The `TransferData` of `config` (its label budget and seed) from `load_data`'s result."""
    source, target, num_classes, skipped = loaded
    x_lab, y_lab, x_unlab, _ = labeled_unlabeled_split(
        target.x_train, target.y_train, config.labeled, num_classes=num_classes, seed=config.seed
    )
    return TransferData(
        x_source=source.x_train,
        y_source=source.y_train,
        x_source_test=source.x_test,
        y_source_test=source.y_test,
        x_labeled=x_lab,
        y_labeled=y_lab,
        x_unlabeled=x_unlab,
        x_target_train=target.x_train,
        x_target_test=target.x_test,
        y_target_test=target.y_test,
        num_classes=num_classes,
        skipped_files=skipped,
    )


def prepare_data(config):
    """Loads, validates and splits the source and target sets of `config`."""
    return split_data(config, load_data(config))


def export_classifier(classifier, path):
    """Writes a SavedModel whose `serving_default` takes raw uint8 images (N, H, W, C)."""
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    spec = tf.TensorSpec((None,) + tuple(classifier.input_shape[1:]), tf.uint8, name="images")
    archive.add_endpoint(
        name="serve",
        fn=lambda images: classifier(tf.cast(images, tf.float32), training=False),
        input_signature=[spec],
    )
    archive.write_out(path, verbose=False)


def _accuracy(classifier, x, y, batch_size):
    logits = classifier.predict(x.astype(np.float32), batch_size=max(batch_size, 256), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


# Stage 2 has converged when the classifier fits its labeled images: at least this
# accuracy on them in inference mode.
CONVERGED_ACCURACY = 0.99


def stage2_convergence(classifier, data, config, history):
    """Whether stage 2 converged, with the facts behind it (`results.json["stage2"]`).

    The criterion is the classifier's accuracy on the labeled target images it was
    fine-tuned on, in inference mode, against `CONVERGED_ACCURACY`; the last epoch's
    training loss and accuracy (with dropout and noise on) are recorded beside it. An
    unconverged stage 2 is logged as a warning that says what to raise.
    """
    labeled_accuracy = _accuracy(classifier, data.x_labeled, data.y_labeled, config.batch_size)
    curves = {k: v for k, v in (history or {}).items() if isinstance(v, list) and v}
    last = {k: float(v[-1]) for k, v in curves.items()}
    facts = {
        "converged": bool(labeled_accuracy >= CONVERGED_ACCURACY),
        "labeled_accuracy": labeled_accuracy,
        "final_train_loss": last.get("loss"),
        "final_train_accuracy": last.get("accuracy"),
        "epochs": max((len(v) for v in curves.values()), default=0),
    }
    if not facts["converged"]:
        loss = facts["final_train_loss"]
        field = get_method(config.method).finetune_epochs_field(config)
        log.warning(
            "tfinfo: stage 2 did not converge: the classifier fits %.1f%% of its %d labeled images "
            "(inference mode; converged means >= %.0f%%), final training loss %s after %d epochs. "
            "Raise --%s (now %d) or the finetune_learning_rate (now %g).",
            100 * labeled_accuracy, len(data.y_labeled), 100 * CONVERGED_ACCURACY,
            "n/a" if loss is None else f"{loss:.3f}", facts["epochs"], field, getattr(config, field),
            config.finetune_learning_rate,
        )
    return facts


# Fields that only stage 2 reads: runs differing only in these share their stage 1.
STAGE2_FIELDS = frozenset({
    "method", "labeled", "finetune_epochs", "finetune_learning_rate", "te_momentum",
    "te_max_weight", "te_rampup_epochs", "te_epochs", "te_unlabeled", "verbose", "cache_dir", "probe_every",
})


def stage1_key(config):
    """Names the stage 1 of `config`: its method's `stage1` plus a digest of every
    field stage 1 may read. Two configs with the same key pre-train identically."""
    method = get_method(config.method)
    fields = {k: v for k, v in config.to_dict().items() if k not in STAGE2_FIELDS}
    if config.probe_every:  # the probe's numbers in the stage-1 history read the labeled set
        fields.update(probe_every=config.probe_every, labeled=config.labeled)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{method.stage1}_s{config.seed}_{digest}"


def reseed_stage2(classifier, seed):
    """Puts every random state stage 2 reads where it would be after a fresh start, so
    stage 2 is the same whether stage 1 ran in this process or was loaded."""
    keras.utils.set_random_seed(seed)
    layers = list(classifier.layers)
    while layers:
        layer = layers.pop()
        layers.extend(getattr(layer, "layers", []))  # nested models
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:  # dropout and noise layers: restart their counter
            state = generator.state
            state.assign(keras.ops.convert_to_tensor([state.numpy()[0], 0], dtype=state.dtype))


def config_classifier(config, data):
    """The classifier `config` describes, for the geometry and classes of `data`."""
    return build_classifier(
        config.architecture,
        input_shape=data.x_source.shape[1:],
        num_classes=data.num_classes,
        image_size=config.image_size,
        channels=config.channels,
        dropout=config.dropout,
        noise_stddev=config.noise_stddev,
        seed=config.seed,
    )


def run_transfer(config, workdir, stage1_cache=None, strategy=None, deterministic=False):
    """Runs stage 1 and stage 2 of `config.method`, evaluates, exports and writes results.

    Resumable: every epoch of every stage is checkpointed under `workdir/checkpoints/`
    and stage 1's result under `workdir/stage1/`; running the same config with the same
    workdir again continues where the earlier process stopped, and a finished run is
    returned as it is. TensorBoard logs go to `workdir/tensorboard/`.

    Nothing is written before everything is checked: the config's values (on
    construction, and again here), the workdir (`trainers.workdir.check_writable`), the
    data and what the method needs of it (`Method.check_data`), and `run.json`, whose
    identity (`TransferConfig.identity`: without `verbose` and `cache_dir`) a rerun must
    match. Then the workdir is locked (`WORKDIR/run.lock`, released at the end, also on
    an error). A stage 1 whose checksum does not match is trained again, never reused.

    Args:
        config: a `TransferConfig`.
        workdir: output folder; receives `results.json`, `classifier.keras`, `export/`.
        stage1_cache: optional folder of finished stage-1 runs keyed by `stage1_key`:
            a stage 1 found there is loaded instead of trained, one trained here is
            stored there. `tfinfo-compare` uses it to pre-train once per method and
            seed for all label budgets. Stage 2 is re-seeded either way, so a run gives
            the same result with or without the cache.
        strategy: a `tf.distribute.Strategy` (see `trainers.distributed.make_strategy`)
            to build and train the models in; `None` is the default (one device).
            `config.batch_size` is the global batch.
        deterministic: enable TensorFlow's op determinism (bit-identical reruns and
            resumes, about 15% slower).

    Returns:
        The results dictionary written to `workdir/results.json`.
    """
    config.validate()  # a config changed after its construction is checked again
    method = get_method(config.method)
    check_writable(workdir)
    if stage1_cache:
        check_writable(stage1_cache, flag="the stage-1 cache")
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    start = time.perf_counter()
    data = prepare_data(config)
    method.check_data(data, config)
    data_s = time.perf_counter() - start
    # Everything is checked: only now is anything written.
    finished = check_run(workdir, config.identity())
    if finished is not None:
        log.warning("tfinfo: %s already holds the finished run of this configuration; not redone", workdir)
        return finished
    created = not os.path.exists(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise write_error(workdir, error) from None
    try:
        with WorkdirLock(workdir):
            finished = check_run(workdir, config.identity())  # again, now that no other run can start
            if finished is not None:
                return finished
            if not os.path.exists(os.path.join(workdir, RUN_FILE)):
                write_json(os.path.join(workdir, RUN_FILE), {"config": config.to_dict()})
            return _run_locked(method, config, data, data_s, workdir, stage1_cache, strategy, deterministic)
    finally:
        if created and os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)  # nothing was written: leave no trace


def _run_locked(method, config, data, data_s, workdir, stage1_cache, strategy, deterministic):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        results = _train(method, config, data, workdir, stage1_cache)
    classifier = results.pop("classifier")
    for name, save in (("classifier.keras", classifier.save),
                       ("export", lambda path: export_classifier(classifier, path))):
        try:
            save(os.path.join(workdir, name))
        except OSError as error:
            raise write_error(os.path.join(workdir, name), error) from None
    results["wall_time_s"]["data"] = data_s
    results["num_replicas"] = int(strategy.num_replicas_in_sync)
    results["deterministic"] = bool(deterministic)
    write_json(os.path.join(workdir, RESULTS_FILE), results)
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    return results


def _train(method, config, data, workdir, stage1_cache):
    """Both stages inside the strategy's scope; returns the results and the classifier."""
    classifier = config_classifier(config, data)
    key = stage1_key(config)
    folder = os.path.join(stage1_cache, key) if stage1_cache else os.path.join(workdir, "stage1")
    stage1 = load_stage1(classifier, folder)
    reused = stage1 is not None
    resumed, skipped = {}, {}
    if not reused:
        start = time.perf_counter()
        callbacks = []
        if config.probe_every:
            callbacks.append(TransferabilityProbe(
                data.x_labeled, data.y_labeled, data.x_target_test, data.y_target_test,
                every_epochs=config.probe_every, feature_layer=FEATURES_LAYER,
            ))
        runner = Runner(workdir, "stage1", callbacks=callbacks, verbose=config.verbose,
                        nonfinite_policy=config.nonfinite_policy)
        history = method.pretrain(classifier, data, config, runner=runner)
        resumed["stage1"] = runner.resumed_from
        skipped["stage1"] = runner.skipped
        stage1 = {
            "key": key,
            "history": history,
            "pretrain_s": time.perf_counter() - start,
            "source_test_accuracy": _accuracy(classifier, data.x_source_test, data.y_source_test, config.batch_size),
        }
        save_stage1(classifier, folder, stage1)
    pretrain_history, pretrain_s, source_acc = stage1["history"], stage1["pretrain_s"], stage1["source_test_accuracy"]
    reseed_stage2(classifier, config.seed + 1)
    start = time.perf_counter()
    runner = Runner(workdir, "stage2", verbose=config.verbose, nonfinite_policy=config.nonfinite_policy)
    finetune_history = method.finetune(classifier, data, config, runner=runner)
    resumed["stage2"] = runner.resumed_from
    skipped["stage2"] = runner.skipped
    finetune_s = time.perf_counter() - start
    stage2 = stage2_convergence(classifier, data, config, finetune_history)
    target_acc = _accuracy(classifier, data.x_target_test, data.y_target_test, config.batch_size)
    return {
        "method": config.method,
        "labeled": config.labeled,
        "seed": config.seed,
        "target_test_accuracy": target_acc,
        "source_test_accuracy_after_pretrain": source_acc,
        "num_classes": data.num_classes,
        "num_source_train": int(len(data.x_source)),
        "num_unlabeled_target": int(len(data.x_unlabeled)),
        "num_target_test": int(len(data.x_target_test)),
        "image_shape": list(data.x_source.shape[1:]),
        "skipped_files": data.skipped_files,
        "wall_time_s": {"pretrain": pretrain_s, "finetune": finetune_s},
        "stage1": {"key": key, "reused": reused},
        "stage2": stage2,
        "resumed_from_epoch": resumed,
        "nonfinite": {
            "policy": config.nonfinite_policy,
            "skipped_steps": sum(fit["steps"] for stage in skipped.values() for fit in stage.values()),
            "fits": skipped,
        },
        "history": {"pretrain": pretrain_history, "finetune": finetune_history},
        "config": config.to_dict(),
        "classifier": classifier,
    }
