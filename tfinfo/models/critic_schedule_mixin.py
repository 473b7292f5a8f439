"""The critic schedule of `InformationBottleneckModel`: batches per critic step, phases, warm-up."""

import inspect

import keras

from tfinfo.callbacks.critic_warmup import SETTLE
from tfinfo.callbacks.critic_warmup import CriticWarmup

PHASES = ("alternate", "critic")
# `fit` arguments a warm-up run takes from the `fit` it precedes.
_WARMUP_FIT_ARGUMENTS = ("shuffle", "sample_weight", "steps_per_epoch")


class CriticScheduleMixin:
    """Phases and critic warm-up for a model whose `train_step` alternates critic and
    network updates (`InformationBottleneckModel`).

    The model sets `critic_steps`, `critic_batches` ("fresh" or "reuse"),
    `critic_warmup` (an int >= 0 or "settle"), `_phase = "alternate"`,
    `critics_warmed_up = False` and `warmup_history = []`, implements
    `_check_compiled()`, and reads `self._phase` in `train_step` (at trace time).

    The warm-up runs once per model object: `critics_warmed_up` is not saved, so a
    model loaded from a file (its critics restored) warms them up again on `fit`.

    Example:

    >>> model = InformationBottleneckModel(net, critic_steps=10, critic_warmup="settle")
    >>> model.compile(optimizer="adam")
    >>> model.fit(x, y, batch_size=model.batch_size_for(100), epochs=5)  # warm-up, then 5 epochs
    >>> [(e["step"], e["i_x"]) for e in model.warmup_history][-3:]

    Reference:
        Elad et al., seed 003, Algorithm 1 and appendix C.
    """

    # -- the schedule -------------------------------------------------------------------

    def batch_size_for(self, step_batch_size):
        """The batch `fit` must receive for every critic update and the network step to
        see minibatches of `step_batch_size` rows: `(critic_steps + 1) * step_batch_size`
        with `critic_batches="fresh"`, `step_batch_size` with "reuse"."""
        if isinstance(step_batch_size, bool) or int(step_batch_size) != step_batch_size or step_batch_size < 2:
            raise ValueError(f"Expected `step_batch_size` to be an integer >= 2. "
                             f"Received: step_batch_size={step_batch_size!r}")
        return int(step_batch_size) * (self.critic_steps + 1 if self.critic_batches == "fresh" else 1)

    def _check_last_batch(self, x, batch_size, validation_split):
        """Refuses array inputs whose last batch is too small to split into parts of 2."""
        parts = self.critic_steps + 1 if self.critic_batches == "fresh" else 1
        shape = getattr(x, "shape", None)
        if parts == 1 or shape is None or not len(shape) or shape[0] is None:
            return
        rows = int(shape[0]) - int(int(shape[0]) * float(validation_split or 0.0))
        batch = int(batch_size or 32)
        last = rows % batch
        if 0 < last < 2 * parts:
            raise ValueError(
                f"Expected the last batch to hold 0 or at least 2 * (critic_steps + 1) = {2 * parts} rows with "
                "critic_batches='fresh' (every critic update and the network step take their own part of >= 2 "
                f"rows): use another `batch_size`, drop {last} rows, or pass a tf.data.Dataset with "
                f"drop_remainder=True. Received: {rows} training rows, batch_size={batch}, a last batch of {last}")

    @property
    def phase(self):
        """"alternate" (critics, then the network) or "critic" (critics only)."""
        return self._phase

    def set_phase(self, phase):
        """Selects what `train_step` updates: "alternate" or "critic" (the warm-up phase:
        the critics only, with the held-out estimates logged, the network unchanged).

        The phase is read when the step is traced (optimizer updates under a distribution
        strategy synchronize the replicas and cannot sit inside a graph conditional), so
        a change rebuilds the train function. Call it eagerly (e.g. from a callback).
        """
        if phase not in PHASES:
            raise ValueError(f"Expected `phase` to be one of {PHASES}. Received: phase={phase!r}")
        if phase != self._phase:
            self._phase = phase
            if getattr(self, "train_function", None) is not None:
                self.make_train_function(force=True)

    def warm_up(self, x=None, y=None, batch_size=None, steps=None, verbose=0, **kwargs):
        """Trains the critics alone on `(x, y)` before the network follows them.

        A `fit` with the `CriticWarmup` callback: `steps` (default: `critic_warmup`, or
        `"settle"` when that is 0) critic-only steps, each as a training step without
        the network update (with `critic_batches="fresh"`, `critic_steps` critic
        updates on their own parts of the batch and the estimate on the last part).

        Args:
            x, y, batch_size: as for `fit` (the data must be iterable again: arrays, a
                `tf.data.Dataset`, a `PyDataset`).
            steps: an int >= 1 or `"settle"`.
            verbose: `fit`'s verbosity.
            **kwargs: `shuffle`, `sample_weight`, `steps_per_epoch` or `CriticWarmup`
                arguments (`window`, `rtol`, `atol`, `max_steps`).

        Returns:
            The `CriticWarmup` callback (`estimates`: per-step held-out `i_x`, `i_y`);
            its estimates are also kept in `warmup_history`.
        """
        self._check_compiled()
        if steps is None:
            steps = self.critic_warmup or SETTLE
        fit_kwargs = {k: kwargs.pop(k) for k in _WARMUP_FIT_ARGUMENTS if k in kwargs}
        callback = CriticWarmup(steps, **kwargs)
        # An epoch has at least one step, so `max_steps` epochs always suffice.
        callback.hold_network_state(self)
        try:
            super().fit(x, y, batch_size=batch_size, epochs=callback.max_steps, verbose=verbose,
                        callbacks=[callback], **fit_kwargs)
        finally:  # also when the warm-up raises: the next `fit` must train the network
            callback.release(self)
        self.warmup_history = list(callback.estimates)
        return callback

    def fit(self, *args, **kwargs):
        """`Model.fit`; with `critic_warmup`, preceded (once per model) by `warm_up` on
        the same `x`, `y`, `batch_size` (and `shuffle`, `sample_weight`,
        `steps_per_epoch`): the warm-up steps do not count in `epochs`."""
        given = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        self._check_last_batch(given.get("x"), given.get("batch_size"), given.get("validation_split"))
        if self.critic_warmup and not self.critics_warmed_up:
            self.warm_up(given.get("x"), given.get("y"), batch_size=given.get("batch_size"),
                         **{k: given[k] for k in _WARMUP_FIT_ARGUMENTS if k in given})
        return super().fit(*args, **kwargs)

