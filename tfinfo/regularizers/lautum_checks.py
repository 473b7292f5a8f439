"""The argument and input checks of `tfinfo.regularizers.lautum.LautumRegularizer`.

Each check raises a `ValueError` in the Keras style, naming the argument, what was
expected and what was received ("Expected `num_outputs` to be an integer >= 1.
Received: num_outputs='ten'"). Input shapes are checked where they are static (eager
calls, and traced functions with known shapes); a dimension unknown until run time is
left to TensorFlow's own shape errors.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

MODES = ("exact", "fast")
PRECISIONS = ("float64", "float32")


def check_integer(name, value, minimum, allow_none=False):
    """`value` as an int, if it is an integer (not a bool) >= `minimum` (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")
    return int(value)


def check_open_unit(name, value):
    """`value` as a float, if it is a real number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"Expected `{name}` in (0, 1). Received: {name}={value!r}")
    return float(value)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {choices}. Received: {name}={value!r}")
    return value


def check_constructor(num_outputs, ema_decay, mode, refresh_every, projection_dim, max_correlation,
                      precision, seed, input_shape_hint, cross_replica):
    """The constructor's arguments, checked and normalized, as a dict keyed by name."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"Expected `seed` to be an integer or None. Received: seed={seed!r}")
    if not isinstance(cross_replica, (bool, np.bool_)):
        raise ValueError(f"Expected `cross_replica` to be a bool. Received: cross_replica={cross_replica!r}")
    if input_shape_hint is not None:
        input_shape_hint = check_sample_shape("input_shape_hint", input_shape_hint)
    return {
        "num_outputs": check_integer("num_outputs", num_outputs, 1),
        "ema_decay": check_open_unit("ema_decay", ema_decay),
        "mode": check_choice("mode", mode, MODES),
        "refresh_every": check_integer("refresh_every", refresh_every, 1, allow_none=True),
        "projection_dim": check_integer("projection_dim", projection_dim, 1, allow_none=True),
        "max_correlation": check_open_unit("max_correlation", max_correlation),
        "precision": check_choice("precision", precision, PRECISIONS),
        "seed": None if seed is None else int(seed),
        "input_shape_hint": input_shape_hint,
        "cross_replica": bool(cross_replica),
    }


def check_sample_shape(name, shape):
    """A per-sample shape as a tuple of positive ints."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if not dims or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims):
        raise ValueError(
            f"Expected `{name}` to be a per-sample shape of positive integers, e.g. (28, 28, 1). "
            f"Received: {name}={shape!r}"
        )
    return tuple(int(d) for d in dims)


def build_sample_shape(input_shape):
    """The per-sample shape of x from `build`'s `input_shape`: `(N,) + shape` of x, or the
    pair of the shapes of x and w (which must agree)."""
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple, tf.TensorShape)) else None
    if shape and all(isinstance(s, (list, tuple, tf.TensorShape)) for s in shape):
        if len(shape) != 2:
            raise ValueError(
                "Expected the input shapes of a pair (x, w). "
                f"Received: {len(shape)} input shapes {[tuple(s) for s in shape]}"
            )
        x_shape, w_shape = (tf.TensorShape(s) for s in shape)
        if not x_shape.is_compatible_with(w_shape):
            raise ValueError(
                f"Expected `w` of the same shape as `x` {tuple(x_shape)}. Received: w.shape={tuple(w_shape)}"
            )
        shape = tuple(x_shape.merge_with(w_shape))
    if not shape or len(shape) < 2:
        raise ValueError(
            "Expected an input shape `(N,) + input_shape` with a sample axis. "
            f"Received: input_shape={input_shape!r}"
        )
    return check_sample_shape("input_shape[1:]", shape[1:])


def _describe(value):
    shape = getattr(value, "shape", None)
    kind = type(value).__name__
    return f"a {kind} of shape {tuple(shape)}" if shape is not None else f"a {kind}"


def check_pair(inputs, input_dim=None, names=("x", "w")):
    """`(x, w)` from `inputs` after checking the static shapes: a pair, x and w of the
    same shape `(N,) + sample shape` with `input_dim` features per sample (when the
    layer is built)."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        received = f"a {type(inputs).__name__} of {len(inputs)} elements" if isinstance(
            inputs, (list, tuple)) else _describe(inputs)
        raise ValueError(
            "Expected `inputs` to be a pair (x, w) of target inputs and their Jacobian proxies, "
            f"both of shape (N,) + input_shape. Received: {received}"
        )
    x, w = inputs
    x_name, w_name = names
    shapes = []
    for name, value in ((x_name, x), (w_name, w)):
        shape = getattr(value, "shape", None)
        if shape is None:
            try:
                shape = np.shape(value)
            except ValueError:  # ragged nested lists
                raise ValueError(f"Expected `{name}` to be a tensor. Received: {_describe(value)}") from None
        shape = tf.TensorShape(shape)
        if shape.rank is not None and shape.rank < 2:
            raise ValueError(
                f"Expected `{name}` of shape (N,) + input_shape (a sample axis first). "
                f"Received: {name}.shape={tuple(shape)}"
            )
        shapes.append(shape)
    x_shape, w_shape = shapes
    if input_dim is not None and x_shape.rank is not None and x_shape[1:].is_fully_defined():
        features = math.prod(x_shape[1:])
        if features != input_dim:
            raise ValueError(
                f"Expected `{x_name}` with {input_dim} features per sample (the size the layer was built or "
                f"adapted for). Received: {x_name}.shape={tuple(x_shape)} ({features} features per sample)"
            )
    if not x_shape.is_compatible_with(w_shape):
        raise ValueError(
            f"Expected `{w_name}` of the same shape as `{x_name}` {tuple(x_shape)}. "
            f"Received: {w_name}.shape={tuple(w_shape)}"
        )
    return x, w


def check_unlabeled(x_unlabeled, input_dim=None):
    """`x_unlabeled` as a numeric array `(N,) + sample shape`, N >= 2, with `input_dim`
    features per sample when the layer is built."""
    x = np.asarray(x_unlabeled)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise ValueError(f"Expected numeric `x_unlabeled`. Received: dtype={x.dtype}")
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(
            "Expected at least 2 unlabeled target inputs to estimate Sigma_x. "
            f"Received: x_unlabeled.shape={x.shape}"
        )
    features = math.prod(x.shape[1:])
    if input_dim is not None and features != input_dim:
        raise ValueError(
            f"Expected `x_unlabeled` with {input_dim} features per sample (the size the layer was built for). "
            f"Received: x_unlabeled.shape={x.shape} ({features} features per sample)"
        )
    return x


__all__ = [
    "MODES",
    "PRECISIONS",
    "build_sample_shape",
    "check_choice",
    "check_constructor",
    "check_integer",
    "check_open_unit",
    "check_pair",
    "check_sample_shape",
    "check_unlabeled",
]
