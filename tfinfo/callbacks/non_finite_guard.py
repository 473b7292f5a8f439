"""Stops, or skips and counts, training steps whose loss or regularizer is not finite."""

import math

import keras
import tensorflow as tf

# Per logged term: what usually makes it non-finite, said in the error.
_CAUSES = {
    "lautum": "the Lautum covariances lost their conditioning (a canonical correlation near 1, or a "
              "degenerate input-gradient covariance): lower lautum_weight, raise ema_decay, or use projection_dim",
    "mi": "the MI critic diverged (the Donsker-Varadhan log-mean-exp overflowed): lower mi_weight or "
          "critic_learning_rate, or use mi_estimator='smile' with a smaller mi_tau",
    "critic_loss": "the critic diverged: lower critic_learning_rate or use mi_estimator='smile'",
    "mmd": "the MMD kernels overflowed on exploding features: lower mmd_weight or the learning rate",
    "consistency": "Temporal Ensembling's targets became non-finite: lower te_max_weight or the learning rate",
    "ce": "the classifier diverged: lower the learning rate, or check the inputs' scale",
}
_DEFAULT_CAUSE = "a diverging term: lower its weight or the learning rate"
POLICIES = ("stop", "skip")


class NonFiniteTermError(RuntimeError):
    """A loss or regularizer value became NaN or infinite (policy `"stop"`)."""


def training_state_variables(model, include_metrics=False):
    """Every variable training changes: the model's (weights, non-trainable state, seed
    generators), its optimizers' (`optimizer`, `critic_optimizer`) and, with
    `include_metrics`, its metrics'. Deduplicated, in a stable order."""
    groups = [model.variables] + ([model.metrics_variables] if include_metrics else [])
    for attr in ("optimizer", "critic_optimizer"):
        optimizer = getattr(model, attr, None)
        if optimizer is not None:
            groups.append(optimizer.variables)
    variables, seen = [], set()
    for group in groups:
        for v in group:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
    return variables


class NonFiniteGuard(keras.callbacks.Callback):
    """Watches every logged term of every training step for NaN and infinity.

    Policy `"stop"`: at the first non-finite term the fit stops with a
    `NonFiniteTermError` naming the term(s), the epoch, the batch and the global step,
    and the likely cause. Checkpoints written so far are kept, so a rerun after the fix
    resumes from the last finished epoch.

    Policy `"skip"`: the model's `train_step` is wrapped so that a step producing any
    non-finite log, weight, optimizer slot or state variable is undone (every variable
    is put back as it was before the step, trackers included) and counted; training
    goes on. `skipped_steps` and `skipped_terms` (per term) hold the counts, the
    epoch logs get `skipped_steps` (that epoch's), and a line names the term and the step. `"skip"` snapshots every variable
    each step; it runs on one device only (under a distribution strategy use `"stop"`).

    Args:
        policy: `"stop"` or `"skip"`.
        max_skipped: with `"skip"`, stop anyway (as `"stop"` would) once this many
            steps were skipped; `None` never stops.

    Example:

    >>> guard = tfinfo.callbacks.NonFiniteGuard("skip")
    >>> model.fit(data, epochs=3, callbacks=[guard])
    >>> guard.skipped_steps, guard.skipped_terms
    """

    def __init__(self, policy="stop", max_skipped=None):
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"Expected policy to be one of {POLICIES}. Received: policy={policy!r}")
        self.policy = policy
        self.max_skipped = max_skipped
        self.skipped_steps = 0
        self.skipped_terms = {}
        self.events = []
        self._epoch = 0
        self._step = 0
        self._skipped_at_epoch_start = 0

    def set_model(self, model):
        super().set_model(model)
        if self.policy == "skip" and not getattr(model, "_tfinfo_skips_non_finite", False):
            if tf.distribute.has_strategy() and model.distribute_strategy.num_replicas_in_sync > 1:
                raise ValueError(
                    "Expected NonFiniteGuard(policy='stop') under a distribution strategy. "
                    "Received: policy='skip' with "
                    f"{model.distribute_strategy.num_replicas_in_sync} replicas"
                )
            _wrap_train_step(model)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        logs = logs if logs is not None else {}
        flags = {k[len(_FLAG):]: logs.pop(k) for k in list(logs) if k.startswith(_FLAG)}
        if self.policy == "skip":
            bad = [k for k, v in flags.items() if float(v) > 0]
            if bad:
                self.skipped_steps += 1
                for k in bad:
                    self.skipped_terms[k] = self.skipped_terms.get(k, 0) + 1
                self.events.append({"epoch": self._epoch, "batch": int(batch), "step": self._step, "terms": bad})
                print(f"tfinfo: skipped step {self._step} (epoch {self._epoch}, batch {batch}): "
                      f"non-finite {', '.join(bad)}")
                if self.max_skipped is not None and self.skipped_steps > self.max_skipped:
                    self._stop(bad, batch)
            return
        bad = [k for k, v in logs.items() if _is_number(v) and not math.isfinite(float(v))]
        if bad:
            self._stop(bad, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._skipped_at_epoch_start = self.skipped_steps

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for k in [k for k in logs if k.startswith(_FLAG)]:
            logs.pop(k)
        if self.policy == "skip":  # per epoch, so that the history (and checkpoints) carry it
            logs["skipped_steps"] = float(self.skipped_steps - self._skipped_at_epoch_start)

    def _stop(self, bad, batch):
        terms = [k for k in bad if k != "loss"] or bad  # the total is non-finite because a term is
        causes = "; ".join(f"{k}: {_CAUSES.get(k, _DEFAULT_CAUSE)}" for k in terms)
        diagnostics = _diagnostics(self.model)
        self.events.append({"epoch": self._epoch, "batch": int(batch), "step": self._step, "terms": terms})
        self.model.stop_training = True
        raise NonFiniteTermError(
            f"Expected finite loss terms. Received: non-finite {', '.join(terms)} at step {self._step} "
            f"(epoch {self._epoch}, batch {batch}). Likely cause: {causes}.{diagnostics}"
        )


_FLAG = "nonfinite_"


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _diagnostics(model):
    """Numbers that tell why: the Lautum bound and canonical correlation, if present."""
    facts = []
    for layer in _sublayers(model):
        for name in ("max_canonical_correlation", "bound_active", "shrinkage"):
            variable = getattr(layer, name, None)
            if variable is not None and hasattr(variable, "numpy"):
                try:
                    facts.append(f"{layer.name}.{name}={float(variable.numpy()):.6g}")
                except (TypeError, ValueError):
                    pass
    return f" State: {', '.join(facts)}." if facts else ""


def _sublayers(model):
    stack, seen = [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(getattr(layer, "layers", []) or [])
        for attr in ("regularizer", "lautum_regularizer", "critic", "classifier"):
            child = getattr(layer, attr, None)
            if isinstance(child, keras.layers.Layer):
                stack.append(child)


def _wrap_train_step(model):
    """Makes `model.train_step` undo and flag steps with a non-finite log or variable."""
    inner = model.train_step

    def train_step(data):
        variables = training_state_variables(model, include_metrics=True)
        before = [tf.identity(v) for v in variables]
        logs = inner(data)
        flags = {k: tf.logical_not(tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))))
                 for k, v in logs.items() if tf.as_dtype(v.dtype).is_floating}
        broken = tf.reduce_any([tf.logical_not(tf.reduce_all(tf.math.is_finite(v)))
                                for v in variables if tf.as_dtype(v.dtype).is_floating] + list(flags.values()))
        for v, old in zip(variables, before):
            v.assign(tf.where(broken, old, v))
        # The restored trackers give the logs of the last good step.
        restored = model.get_metrics_result()
        out = {k: tf.where(broken, tf.cast(restored[k], v.dtype), v) if k in restored and k in flags else v
               for k, v in logs.items()}
        out.update({_FLAG + k: tf.cast(tf.logical_and(broken, f), tf.float32) for k, f in flags.items()})
        any_flag = tf.reduce_any(list(flags.values())) if flags else tf.constant(False)
        out[_FLAG + "state"] = tf.cast(tf.logical_and(broken, tf.logical_not(any_flag)), tf.float32)
        return out

    model.train_step = train_step
    model.train_function = None  # rebuilt around the wrapped step
    model._tfinfo_skips_non_finite = True
