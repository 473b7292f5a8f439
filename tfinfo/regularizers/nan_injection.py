"""A test hook: make a regularizer's value NaN at one training call."""

import tensorflow as tf


class _CallCounter:
    """Holds the hook's counter outside Keras's tracking: the counter is not model state,
    so a step that `NonFiniteGuard("skip")` undoes does not rewind it (the next step is
    clean, as it would be with a new batch)."""

    def __init__(self):
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="nan_injection_calls")


def _poison(counter, at_call, outputs):
    hit = tf.equal(counter.calls, at_call)
    counter.calls.assign_add(1)
    factor = tf.where(hit, tf.constant(float("nan")), tf.constant(1.0))
    return tf.nest.map_structure(
        lambda t: t * tf.cast(factor, t.dtype) if t.dtype.is_floating else t, outputs
    )


def inject_nan_into_term(term, at_call):
    """Makes the `Penalty` of a `tfinfo.penalties.PenaltyTerm` NaN at its `at_call`-th
    call. `RegularizedTransferModel` calls `penalty` once per classifier step (critic
    updates call `critic_loss`, not `penalty`), so `at_call` counts training steps.
    Returns the term."""
    if isinstance(at_call, bool) or not isinstance(at_call, int) or at_call < 0:
        raise ValueError(f"Expected `at_call` to be an integer >= 0. Received: at_call={at_call!r}")
    counter = _CallCounter()
    inner = term.penalty

    def penalty(inputs):
        return _poison(counter, at_call, inner(inputs))

    term.penalty = penalty
    term._tfinfo_nan_counter = counter
    return term


def inject_nan(regularizer, at_call):
    """Makes every floating output of `regularizer` NaN on its `at_call`-th training call.

    For fault-injection tests of the non-finite handling: the value, and with it the
    loss and the gradients, become NaN exactly once, at a known step. Calls with
    `training` false are not counted. Returns the regularizer. In a
    `RegularizedTransferModel`, `inject_nan_into_term` counts steps instead of calls.

    Args:
        regularizer: a Keras layer (e.g. `LautumRegularizer`, `MMDRegularizer`) whose
            `call` takes `training`.
        at_call: 0-based index of the training call to poison.

    Example:

    >>> inject_nan(model.regularizer, at_call=3)  # the 4th training step reads NaN
    """
    if isinstance(at_call, bool) or not isinstance(at_call, int) or at_call < 0:
        raise ValueError(f"Expected `at_call` to be an integer >= 0. Received: at_call={at_call!r}")
    counter = _CallCounter()
    inner = regularizer.call

    def call(*args, training=None, **kwargs):
        outputs = inner(*args, training=training, **kwargs)
        if not training:
            return outputs
        return _poison(counter, at_call, outputs)

    regularizer.call = call
    regularizer._tfinfo_nan_counter = counter
    return regularizer
