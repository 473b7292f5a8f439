"""Exact entropies and mutual information of discrete variables, and the binning estimator.

Everything is numpy, float64, in nats, and takes paired samples along axis 0.

**Discrete variables.** A variable is given per sample in one of two forms:

- *symbols*: a 1-D array (`(N,)`, any values that compare equal, e.g. labels or
  cluster indices) or a floating `(N, 1)` column, or an integer or boolean array of
  rank >= 2, whose rows (all non-batch axes flattened) are vector symbols: two samples
  carry the same symbol iff their rows are equal;
- *distributions*: a floating `(N, C)` array, `C >= 2`, whose row `n` is a probability
  vector, `p(z | x_n)` of a stochastic categorical encoder (or `p_hat(y | x_n)` for
  soft labels). Rows must be non-negative and sum to 1.

One-hot rows give the same result in both forms. The joint distribution is the
empirical one, `p(y, z) = 1/N sum_n p(y | x_n) p(z | x_n)` (`Y` and `Z` independent
given the sample, as in seed 004's model `p(x, y, z) = p_hat(x, y) p(z | x)`), which for
symbols is the table of pair frequencies. This is seed 004's section 5.4: for a
categorical `Z`, `p(y | z)` and hence the Decoder Uncertainty `H[Y | Z]` are computed
exactly from the data and the encoder (its footnote 13), like a confusion matrix.

**Binning** (Shwartz-Ziv & Tishby 2017). `binned_mutual_information` discretizes
continuous activations into equal-width bins and applies the discrete formulas to the
binned vectors. For a deterministic network and distinct inputs, `I(X; T) = H(T)`; for
labels, `I(Y; T) = H(T) - H(T | Y)`. Both are what the binned quantities are, not the
mutual information of the continuous activations, which is infinite (seed 003,
section 3; Saxe et al. 2018): the values depend on the number of bins and the range.

Which bins reproduce which paper:

- `bin_range=(-1, 1), num_bins=30`: Shwartz-Ziv & Tishby (2017), tanh units, 30 fixed
  bins on the whole tanh range, shared by every unit and epoch.
- `bin_width=0.5`: Saxe et al. (2018)'s code (`simplebinmi.bin_calc_information2`,
  bins `floor(t / 0.5)`): a fixed width and as many bins as the activations need, which
  is what makes the ReLU measurements comparable across epochs.
- `bin_range="layer"`: one range for the whole layer, the `[min, max]` of its
  activations at this measurement: bins shared by the units (the scale of a unit
  matters, as in both papers), but recomputed at every measurement.
- `bin_range="unit"` (the default of these functions, kept for compatibility): each unit
  cut at its own `[min, max]`. The result is then invariant to any increasing affine map
  of a single unit (rescaling one unit by 100 changes nothing), which neither paper did:
  a unit of tiny range gets as many bins as a unit of large range.
"""

import math
import numbers

import numpy as np

BIN_RANGES = ("unit", "layer")


def _as_array(value, name):
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:  # pragma: no cover - numpy accepts nearly anything
        raise ValueError(f"Expected `{name}` to be an array. Received: {type(value).__name__} ({error})") from None
    if array.ndim == 0:
        raise ValueError(f"Expected `{name}` to have a samples axis (axis 0). Received: {name}.shape=()")
    if array.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to have at least one sample. Received: {name}.shape={array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"Expected `{name}` to contain only finite values. Received: {name} with {bad} NaN or infinite value(s)"
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Expected `{name}` to be a numeric or boolean array. Received: dtype={array.dtype}")
    return array


def _symbols(array):
    """Integer codes `0..K-1` of the rows of `array` (1-D: its values)."""
    if array.ndim == 1:
        return np.unique(array, return_inverse=True)[1].reshape(-1)
    rows = array.reshape(array.shape[0], -1)
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def _variable(value, name):
    """`("symbols", codes)` or `("distributions", (N, C) float64 rows)`."""
    array = _as_array(value, name)
    if array.ndim == 2 and array.dtype.kind == "f" and array.shape[1] > 1:
        rows = array.astype(np.float64)
        if np.any(rows < 0) or not np.allclose(rows.sum(axis=1), 1.0, rtol=0.0, atol=1e-6):
            raise ValueError(
                f"Expected a floating (N, C) `{name}` to hold probability rows (non-negative, summing to 1); "
                "pass symbols as a 1-D or integer array. "
                f"Received: {name} with row sums in [{rows.sum(axis=1).min():.6g}, {rows.sum(axis=1).max():.6g}] "
                f"and minimum {rows.min():.6g}"
            )
        return "distributions", rows
    if array.ndim > 2 and array.dtype.kind == "f":
        raise ValueError(
            f"Expected `{name}` as 1-D symbols, integer vector symbols or (N, C) probability rows. "
            f"Received: a floating array of shape {array.shape}"
        )
    return "symbols", _symbols(array)


def _entropy_of_counts(counts):
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    return float(np.log(total) - np.sum(counts * np.log(counts)) / total)


def _entropy_of_table(p):
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _joint_table(y, z):
    """The empirical joint `p(y, z)` as a dense (K_y, K_z) float64 table (not both symbols)."""
    (kind_y, y), (kind_z, z) = y, z
    n = y.shape[0]
    if kind_y == "distributions" and kind_z == "distributions":
        return y.T @ z / n
    if kind_y == "symbols":
        joint = np.zeros((int(y.max()) + 1, z.shape[1]))
        np.add.at(joint, y, z)
        return joint / n
    joint = np.zeros((y.shape[1], int(z.max()) + 1))
    np.add.at(joint.T, z, y)
    return joint / n


def _paired(y, z, names=("y", "z")):
    y = _variable(y, names[0])
    z = _variable(z, names[1])
    if y[1].shape[0] != z[1].shape[0]:
        raise ValueError(
            f"Expected `{names[0]}` and `{names[1]}` with the same number of samples. "
            f"Received: {y[1].shape[0]} and {z[1].shape[0]}"
        )
    return y, z


def _entropies(y, z):
    """`(H[Y], H[Z], H[Y, Z])` in nats for two parsed variables."""
    if y[0] == "symbols" and z[0] == "symbols":
        # Counts of pairs, without a dense table (binned vectors can have ~N symbols each).
        pairs = y[1].astype(np.int64) * (int(z[1].max()) + 1) + z[1]
        return (
            _entropy_of_counts(np.bincount(y[1])),
            _entropy_of_counts(np.bincount(z[1])),
            _entropy_of_counts(np.unique(pairs, return_counts=True)[1]),
        )
    joint = _joint_table(y, z)
    return _entropy_of_table(joint.sum(axis=1)), _entropy_of_table(joint.sum(axis=0)), _entropy_of_table(joint)


def discrete_entropy(x):
    """Entropy `H[X]` in nats of a discrete variable (symbols or probability rows).

    For probability rows the marginal `p(x) = 1/N sum_n p(x | n)` is used.

    Args:
        x: symbols or `(N, C)` probability rows (see the module docstring).

    Returns:
        A float, `-sum_x p(x) ln p(x)`.

    Example:

    >>> round(discrete_entropy([0, 0, 1, 1]), 6)  # ln 2
    0.693147
    """
    kind, x = _variable(x, "x")
    if kind == "symbols":
        return _entropy_of_counts(np.bincount(x))
    return _entropy_of_table(x.mean(axis=0))


def conditional_entropy(y, z):
    """Exact conditional entropy `H[Y | Z]` in nats for a discrete (categorical) `Z`.

    Seed 004, section 5.4: with the empirical data distribution and a categorical
    encoder `p(z | x)`, `p(y | z) = sum_x p_hat(x, y) p(z | x) / sum_x p_hat(x) p(z | x)`
    (footnote 13) is exact, and so is the Decoder Uncertainty
    `H[Y | Z] = -sum_{y, z} p(y, z) ln p(y | z) = H[Y, Z] - H[Z]`; it is also the
    cross-entropy of the optimal decoder `p(y_hat | z) := p(Y = y_hat | z)`.

    Args:
        y: labels: symbols, or `(N, K)` probability rows for soft labels.
        z: the latent: symbols (a deterministic encoder's categories, or integer vector
            codes), or `(N, C)` rows `p(z | x_n)` of a stochastic categorical encoder.

    Returns:
        A float, `H[Y | Z]` in nats (0 when `Y` is a function of `Z`; `H[Y]` when they
        are independent).

    Example:

    >>> conditional_entropy([0, 1, 0, 1], [0, 1, 0, 1])
    0.0
    """
    y, z = _paired(y, z)
    _, h_z, h_yz = _entropies(y, z)
    return max(h_yz - h_z, 0.0)


def discrete_mutual_information(y, z):
    """Exact mutual information `I[Y; Z] = H[Y] + H[Z] - H[Y, Z]` in nats of discrete variables.

    Args:
        y: symbols or `(N, K)` probability rows (see the module docstring).
        z: symbols or `(N, C)` probability rows.

    Returns:
        A float, `I[Y; Z] >= 0` in nats (`H[Y] - H[Y | Z]`, section 5.4 and eq. 17 of
        seed 004).

    Example:

    >>> round(discrete_mutual_information([0, 1, 2, 3], [0, 0, 1, 1]), 6)  # ln 2
    0.693147
    """
    y, z = _paired(y, z)
    h_y, h_z, h_yz = _entropies(y, z)
    return max(h_y + h_z - h_yz, 0.0)


def bin_activations(activations, num_bins=30, bin_range="unit", bin_width=None):
    """Equal-width bin indices of every activation, as an `(N, D)` int array.

    Args:
        activations: `(N, ...)` real array; non-batch axes are flattened to `D` units.
        num_bins: number of equal-width bins (Shwartz-Ziv & Tishby use 30).
        bin_range: the interval that is cut into bins:
            `"unit"` (default): each unit's own `[min, max]` over the `N` samples;
            `"layer"`: the `[min, max]` of all the activations, one range for all units;
            `(low, high)`: a fixed interval, e.g. `(-1, 1)` for tanh units as in
            Shwartz-Ziv & Tishby; values outside it go to the first or last bin.
            A bin is `[low + k w, low + (k + 1) w)`, `w = (high - low) / num_bins`; the
            maximum falls in the last bin; a constant range puts everything in bin 0.
        bin_width: `None` (default: `num_bins` bins over `bin_range`), or a width
            `w > 0`: bins `[k w, (k + 1) w)` for every integer `k`, index `floor(t / w)`,
            unbounded in number (Saxe et al.'s code uses `w = 0.5`); `num_bins` and
            `bin_range` are then not used.

    Returns:
        The `(N, D)` int64 bin indices (`0..num_bins-1`, or `floor(t / bin_width)`).

    Example:

    >>> bin_activations(np.array([[0.0, 0.0], [1.0, 100.0]]), num_bins=2, bin_range="layer")
    array([[0, 0],
           [0, 1]])
    >>> bin_activations(np.array([[-0.2], [0.7]]), bin_width=0.5)
    array([[-1],
           [ 1]])
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral) or num_bins < 1:
        raise ValueError(f"Expected `num_bins` to be an integer >= 1. Received: num_bins={num_bins!r}")
    a = _as_array(activations, "activations")
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    if bin_width is not None:
        try:
            width = float(bin_width)
        except (TypeError, ValueError):
            width = float("nan")
        if isinstance(bin_width, bool) or not (math.isfinite(width) and width > 0):
            raise ValueError(
                f"Expected `bin_width` to be None or a finite number > 0. Received: bin_width={bin_width!r}"
            )
        return np.floor(a / width).astype(np.int64)
    bad_range = (
        f"Expected `bin_range` to be one of {BIN_RANGES} or a (low, high) pair. Received: bin_range={bin_range!r}"
    )
    if isinstance(bin_range, str):
        if bin_range not in BIN_RANGES:
            raise ValueError(bad_range)
        axis = 0 if bin_range == "unit" else None
        low, high = a.min(axis=axis), a.max(axis=axis)
    else:
        try:
            low, high = (float(v) for v in bin_range)
        except (TypeError, ValueError):
            raise ValueError(bad_range) from None
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"Expected a finite `bin_range` with low < high. Received: bin_range={bin_range!r}")
    width = np.asarray(high - low, dtype=np.float64)
    scaled = (a - low) / np.where(width > 0, width, 1.0) * num_bins
    return np.clip(np.floor(scaled), 0, num_bins - 1).astype(np.int64)


def binned_mutual_information(x_or_labels, activations, num_bins=30, bin_range="unit", bin_width=None):
    """Mutual information in nats between inputs or labels and binned activations.

    The binning estimator of Shwartz-Ziv & Tishby (2017): each activation is cut into
    `num_bins` equal-width bins (`bin_activations`), the vector of bin indices of a
    sample is one discrete symbol `T`, and the mutual information is the exact one of
    the discrete variables:

    - `x_or_labels` = the inputs `X` (rows; equal rows are the same input): `I(X; T)`.
      `T` is a function of `X`, so `I(X; T) = H(T)`, the entropy of the binned layer;
      with distinct inputs `H(X) = ln N` caps it.
    - `x_or_labels` = the labels `Y`: `I(Y; T) = H(T) - H(T | Y)`.

    Args:
        x_or_labels: `(N,)` labels, or `(N, ...)` inputs whose rows are the symbols.
        activations: `(N, ...)` activations of one layer.
        num_bins: number of equal-width bins per activation (default 30, as in the paper).
        bin_range: `"unit"`, `"layer"` or `(low, high)`; see `bin_activations` (and the
            module docstring for which choice reproduces which paper).
        bin_width: `None`, or a fixed bin width (replaces `num_bins` and `bin_range`).

    Returns:
        A float, the binned mutual information in nats.

    Example:

    >>> x = np.arange(4)[:, None] * 1.0  # 4 distinct inputs
    >>> t = np.array([[0.0], [0.1], [0.9], [1.0]])  # 2 bins -> T in {0, 0, 1, 1}
    >>> round(binned_mutual_information(x, t, num_bins=2), 6)  # H(T) = ln 2
    0.693147

    Reference:
        Shwartz-Ziv & Tishby, "Opening the black box of deep neural networks via
        information", 2017; Saxe et al., "On the information bottleneck theory of deep
        learning", 2018 (cited by seeds 003 and 004 for its dependence on the binning).
    """
    x = _as_array(x_or_labels, "x_or_labels")
    bins = bin_activations(activations, num_bins=num_bins, bin_range=bin_range, bin_width=bin_width)
    if x.shape[0] != bins.shape[0]:
        raise ValueError(
            "Expected `x_or_labels` and `activations` with the same number of samples. "
            f"Received: {x.shape[0]} and {bins.shape[0]}"
        )
    x_symbols = ("symbols", _symbols(x))
    t_symbols = ("symbols", _symbols(bins))
    h_x, h_t, h_xt = _entropies(x_symbols, t_symbols)
    return max(h_x + h_t - h_xt, 0.0)
