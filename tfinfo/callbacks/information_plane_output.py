"""What the information plane's `i_x` and `i_y` are, per estimator, and its CSV and PNG outputs."""

import csv
import os

CSV_FIELDS = ("epoch", "layer", "i_x", "i_y", "estimator")

# `L` is the measured layer value: a layer's output computed with every `ZeroEntropyNoise`
# layer bypassed; for a `ZeroEntropyNoise` layer, its input `Z_hat`. `eps` is that
# layer's own zero-entropy noise (so `L + eps` is the model's `Z`), else measurement noise.
ESTIMATOR_DESCRIPTIONS = {
    "kde": {
        "i_x": "I(X; L + eps), upper bound: the pairwise-KL bound of Kolchinsky & Tracey on the Gaussian "
               "mixture centred on the layer values, X uniform on the measured samples (Saxe et al. 2018)",
        "i_y": "I(Y; L + eps), estimate, not a bound: H_KL(L + eps) - sum_y p(y) H_KL(L + eps | y), a difference "
               "of two pairwise-KL upper bounds; biased upward where the class mixtures overlap (1.2x to 2x the "
               "exact value of the finite mixture at moderate noise)",
        "short": ("I(X;L+eps)", "I(Y;L+eps)"),
        "axes": ("I(X; L + eps) [nats], pairwise-KL upper bound",
                 "I(Y; L + eps) [nats], difference of upper bounds (biased up)"),
        "note": "kde: I(X;.) is an upper bound, I(Y;.) a difference of upper bounds, biased upward",
    },
    "ksg": {
        "i_x": "I(X; L + eps), Kraskov (KSG) kNN estimate; one noise draw per sample, every coordinate "
               "of x and of L + eps standardized",
        "i_y": "I(Y; L + eps), Ross's discrete-continuous kNN estimate on the same noisy values",
        "short": ("I(X;L+eps)", "I(Y;L+eps)"),
        "axes": ("I(X; L + eps) [nats], KSG", "I(Y; L + eps) [nats], mixed KSG"),
        "note": "ksg: kNN estimates on one noise draw per sample",
    },
    "binning": {
        "i_x": "I(X; bin(L)) = H(bin(L)) for distinct inputs: the entropy of the binned layer, no noise "
               "(for a ZeroEntropyNoise layer the noise-free Z_hat is binned); depends on the bins",
        "i_y": "I(Y; bin(L)) = H(bin(L)) - H(bin(L) | Y), no noise",
        "short": ("I(X;bin(L))", "I(Y;bin(L))"),
        "axes": ("I(X; bin(L)) = H(bin(L)) [nats]", "I(Y; bin(L)) [nats]"),
        "note": "binning: entropies of the binned layer, set by the bins",
    },
    "mine": {
        "i_x": "I(X; L + eps), held-out Donsker-Varadhan lower bound of a MINE critic (the concat network on "
               "[x, L + eps], 2 x 256 ReLU) trained on N x noise_draws pairs",
        "i_y": "I(Y; L) (for a ZeroEntropyNoise layer I(Y; Z_hat + eps)), held-out DV bound of a concat critic "
               "on [onehot(y), L]",
        "short": ("I(X;L+eps)", "I(Y;L)"),
        "axes": ("I(X; L + eps) [nats], MINE (DV lower bound)", "I(Y; L) [nats], MINE (DV bound)"),
        "note": "mine: held-out DV bounds of trained concat critics",
    },
    "aa_mine": {
        "i_x": "I(X; L + eps), held-out Donsker-Varadhan lower bound of the architecture-aware critic of seed 003 "
               "(a copy of the layers up to L inside the critic), trained on N x noise_draws pairs",
        "i_y": "I(Y; L) (for a ZeroEntropyNoise layer I(Y; Z_hat + eps)), held-out DV bound of a concat critic "
               "on [onehot(y), L]",
        "short": ("I(X;L+eps)", "I(Y;L)"),
        "axes": ("I(X; L + eps) [nats], AA-MINE (DV lower bound)", "I(Y; L) [nats], MINE (DV bound)"),
        "note": "aa_mine: held-out DV bounds of trained critics",
    },
}
_GENERIC = {"i_x": "i_x of a user-supplied estimator", "i_y": "i_y of a user-supplied estimator",
            "short": ("i_x", "i_y"), "axes": ("i_x [nats]", "i_y [nats]"), "note": ""}


def describe_estimator(estimator):
    """What `i_x` and `i_y` are for a plane estimator.

    Args:
        estimator: an estimator name (`"kde"`, `"ksg"`, `"binning"`, `"mine"`,
            `"aa_mine"`) or anything else (a user-supplied estimator).

    Returns:
        A dict with `i_x` and `i_y` (sentences), `short` (two compact labels, e.g.
        `("I(X;L+eps)", "I(Y;L+eps)")`), `axes` (the two axis labels of the PNG) and
        `note` (one line on the estimator's biases, empty for an unknown estimator).

    Example:

    >>> describe_estimator("kde")["short"]
    ('I(X;L+eps)', 'I(Y;L+eps)')
    """
    return dict(ESTIMATOR_DESCRIPTIONS.get(estimator, _GENERIC))


def write_information_plane_csv(rows, path):
    """Writes rows with `CSV_FIELDS` (epoch, layer, i_x, i_y, estimator) atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in CSV_FIELDS})
    os.replace(tmp, path)


def plot_information_plane(rows, path, title="Information plane", axis_labels=None):
    """Plots one trajectory per layer (`i_x` horizontally, `i_y` vertically), points
    coloured by epoch, writes it to `path` (PNG) and returns the layers plotted.

    Args:
        rows: dicts with `CSV_FIELDS`.
        path: the PNG file.
        title: the plot title.
        axis_labels: `(x label, y label)`; default: what the rows' estimator computes
            (`describe_estimator(...)["axes"]`), generic when the rows mix estimators.

    Returns:
        The layers plotted, in order of first appearance.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if axis_labels is None:
        estimators = {row.get("estimator") for row in rows}
        axis_labels = describe_estimator(estimators.pop() if len(estimators) == 1 else None)["axes"]
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    epochs = [row["epoch"] for row in rows]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    norm = matplotlib.colors.Normalize(vmin=min(epochs), vmax=max(max(epochs), min(epochs) + 1))
    markers = "osD^v<>ph*"
    for i, layer in enumerate(layers):
        points = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["epoch"])
        xs, ys = [p["i_x"] for p in points], [p["i_y"] for p in points]
        ax.plot(xs, ys, color="0.7", linewidth=1, zorder=1)
        ax.scatter(xs, ys, c=[p["epoch"] for p in points], cmap="viridis", norm=norm,
                   marker=markers[i % len(markers)], edgecolors="k", linewidths=0.3, zorder=2, label=layer)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="epoch")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    ax.legend(title="layer", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return layers
