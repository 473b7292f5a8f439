"""Checks of the numeric constructor arguments that the models share."""

import math
import numbers

import tensorflow as tf


def check_number(name, value, low, high=None, low_inclusive=True, high_inclusive=True):
    """`float(value)` if `value` is a finite real number in the stated interval.

    Args:
        name: the argument's name, for the error message.
        value: the value to check (a bool is not a number here).
        low: the lower end of the interval.
        high: the upper end, or None for no upper end.
        low_inclusive: whether `low` itself is allowed.
        high_inclusive: whether `high` itself is allowed.

    Raises:
        ValueError: "Expected ... Received: name=value" when `value` is not a finite
            number in the interval.
    """
    lo = "[" if low_inclusive else "("
    hi = "inf)" if high is None else (f"{high}]" if high_inclusive else f"{high})")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"Expected `{name}` to be a finite number in {lo}{low}, {hi}. Received: {name}={value!r}")
    too_low = value < low if low_inclusive else value <= low
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(f"Expected `{name}` in {lo}{low}, {hi}. Received: {name}={value!r}")
    return float(value)


def check_integer(name, value, low=1, allow_none=False):
    """`int(value)` if `value` is an integer >= `low` (or None when `allow_none`).

    Raises:
        ValueError: "Expected ... Received: name=value" otherwise (a bool is not an
            integer here).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        extra = " or None" if allow_none else ""
        raise ValueError(f"Expected `{name}` to be an integer >= {low}{extra}. Received: {name}={value!r}")
    return int(value)


def batch_images(x):
    """The images of an `(x, index)` pair, or `x` itself."""
    return x[0] if isinstance(x, (tuple, list)) else x


def global_batch(*tensors):
    """The tensors of the global batch (all-gathered along axis 0 across replicas, in
    replica order; gradients flow back to each replica's rows), or the tensors as they
    are outside a replica context with several replicas."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return tensors
    return tuple(context.all_gather(t, axis=0) for t in tensors)
