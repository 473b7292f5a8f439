"""Trains only the critics at the start of training, until a step count or a settled estimate."""

import keras
import numpy as np

SETTLE = "settle"


def check_warmup(value, name="critic_warmup"):
    """`value` as a warm-up setting: an int >= 0 (critic-only steps) or `"settle"`."""
    if value == SETTLE:
        return SETTLE
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise ValueError(f"Expected `{name}` to be an integer >= 0 or {SETTLE!r}. Received: {name}={value!r}")
    return int(value)


def estimate_settled(values, window, rtol, atol):
    """Whether the mean of the last `window` values is within `atol + rtol * |m|` of the
    mean `m` of the `window` values before them (False with fewer than `2 * window`)."""
    if len(values) < 2 * window:
        return False
    recent = float(np.mean(values[-window:]))
    previous = float(np.mean(values[-2 * window : -window]))
    return abs(recent - previous) <= atol + rtol * abs(previous)


class CriticWarmup(keras.callbacks.Callback):
    """Runs a `fit` as a critic warm-up: only the critics learn, the network is held fixed.

    Seed 003, appendix C: "we started by training both MINE discriminators separately
    until convergence", then trained the network while the critics followed. Given to a
    `fit` of an `InformationBottleneckModel` (or any model with `set_phase("critic")` and
    the per-step logs named in `monitor`), this callback switches the model to its
    critic phase at `on_train_begin` (each step updates the critics only, and logs their
    held-out estimates), records the estimate of every step in `estimates`, and ends the
    `fit` (`model.stop_training`) after `steps` steps, or, with `steps="settle"`, once
    every monitored estimate has settled (the mean of its last `window` steps within
    `atol + rtol * |m|` of the mean `m` of the `window` steps before), or after
    `max_steps` steps. `on_train_end` puts the model back in its "alternate" phase and
    sets `model.critics_warmed_up = True`.

    Give the warm-up `fit` enough epochs (`max_steps` always suffices: an epoch has at
    least one step); `InformationBottleneckModel.warm_up` does this. The same callback
    works with `trainers.distributed.fit`'s custom loop (it honours `stop_training` and
    retraces when the model replaces its train function).

    Per-step values are recovered from the logs, which hold the epoch's running means
    (`(n m_n - k m_k) / (n - k)` between two calls), so `steps_per_execution > 1` gives
    one value per call, averaged over its steps.

    Args:
        steps: critic-only model steps (an int >= 1) or `"settle"`.
        window: steps per window of the settling test (>= 1).
        rtol: relative tolerance of the settling test.
        atol: absolute tolerance (nats) of the settling test.
        max_steps: the most steps with `steps="settle"` (ignored otherwise).
        monitor: the log keys whose estimates must settle.

    Attributes:
        estimates: one dict per step (or call), `{"step": n, key: value, ...}`, `n`
            the steps done so far.
        settled: whether the estimates settled (None with a fixed `steps`).
        steps_done: critic-only steps run.

    Example:

    >>> warmup = CriticWarmup("settle", window=20)
    >>> model.fit(dataset, epochs=warmup.max_steps, callbacks=[warmup])  # critics only
    >>> model.fit(dataset, epochs=10)                                   # then alternate

    Reference:
        Elad et al., seed 003, appendix C (and Algorithm 1, the critic updates).
    """

    def __init__(self, steps=SETTLE, window=20, rtol=0.05, atol=0.02, max_steps=500, monitor=("i_x", "i_y")):
        super().__init__()
        steps = check_warmup(steps, "steps")
        if steps == 0:
            raise ValueError("Expected `steps` >= 1 or 'settle' (0 steps is no warm-up). Received: steps=0")
        for name, value in (("window", window), ("max_steps", max_steps)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Expected `{name}` to be an integer >= 1. Received: {name}={value!r}")
        for name, value in (("rtol", rtol), ("atol", atol)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or (
                    not float(value) >= 0):
                raise ValueError(f"Expected `{name}` to be a number >= 0. Received: {name}={value!r}")
        if isinstance(monitor, str) or not monitor:
            raise ValueError(f"Expected `monitor` to be a non-empty list of log keys. Received: monitor={monitor!r}")
        self.steps = steps
        self.window, self.max_steps = int(window), int(max_steps) if steps == SETTLE else int(steps)
        self.rtol, self.atol = float(rtol), float(atol)
        self.monitor = tuple(monitor)
        self.estimates, self.settled, self.steps_done = [], None, 0
        self._previous = (0, {})

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "set_phase"):
            raise ValueError(
                "Expected a model with a critic phase (`set_phase('critic')`, e.g. an InformationBottleneckModel). "
                f"Received: model of type {type(self.model).__name__}"
            )
        if not getattr(self, "_held", None):
            self.hold_network_state(self.model)
        self.estimates, self.settled, self.steps_done = [], None, 0
        self.model.set_phase("critic")

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = (0, {})  # the logs' running means restart every epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        missing = [key for key in self.monitor if key not in logs]
        if missing:
            raise ValueError(f"Expected the step logs to hold {list(self.monitor)}. Received: keys {sorted(logs)}")
        seen, before = self._previous
        count = int(batch) + 1
        means = {key: float(logs[key]) for key in self.monitor}
        step = {key: (count * means[key] - seen * before.get(key, 0.0)) / max(count - seen, 1) for key in means}
        self._previous = (count, means)
        self.steps_done += count - seen
        self.estimates.append({"step": self.steps_done, **step})
        if self.steps != SETTLE:
            done = self.steps_done >= self.steps
        else:
            self.settled = all(
                estimate_settled([e[key] for e in self.estimates], self.window, self.rtol, self.atol)
                for key in self.monitor
            )
            done = self.settled or self.steps_done >= self.max_steps
        if done:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.release(self.model)
        self.model.critics_warmed_up = True

    def hold_network_state(self, model):
        """Records the network's non-trainable state (e.g. batch-normalization moving
        statistics, which a training-mode forward pass updates) so that `release` puts
        it back: the warm-up leaves the network exactly as it was."""
        classifier = getattr(model, "classifier", model)
        self._held = [(v, v.numpy()) for v in classifier.non_trainable_variables]

    def release(self, model):
        """Puts the model back in its "alternate" phase and restores the state recorded by
        `hold_network_state` (safe to call twice, and after a failed warm-up)."""
        model.set_phase("alternate")
        for variable, value in getattr(self, "_held", []):
            variable.assign(value)
        self._held = []
