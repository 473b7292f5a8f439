"""Measures I(X; L_i + eps) and I(Y; L_i) of chosen layers during training."""

import csv
import os

import keras
import numpy as np
import tensorflow as tf

INFORMATION_PLANE_ESTIMATORS = ("kde", "ksg", "binning", "mine", "aa_mine")
CSV_FIELDS = ("epoch", "layer", "i_x", "i_y", "estimator")


class InformationPlane(keras.callbacks.Callback):
    """Tracks each layer's position in the information plane, epoch by epoch.

    At the start of training (epoch 0) and after every `every_epochs` epochs, computes
    the activations `L_i` of the chosen layers on a fixed sample of inputs and measures

    - `i_x`: `I(X; L_i + eps)`, with `eps ~ N(0, noise_variance)` measurement noise that
      is used only here, never in the network (seed 003 section 3: for a deterministic
      network `I(X; L_i)` is infinite or constant, the noise makes it meaningful); and
    - `i_y`: `I(Y; L_i)` between the class label and the layer.

    Estimators (`estimator`):

    - `"kde"` (default): the pairwise-distance upper bound of Kolchinsky & Tracey on
      `I(X; L_i + eps)` for `X` uniform on the measured samples (the mixture of Gaussians
      centred on the layer values; Saxe et al. 2018), and `I(Y; L_i + eps)` from the same
      mixture entropies per class. No training, exact in both limits, `O(N^2)`.
    - `"ksg"`: Kraskov's kNN estimator for `i_x`, and its discrete-continuous variant
      (Ross, 2014) for `i_y`, both on `L_i + eps` (kNN estimators are undefined on the
      exact ties a ReLU layer produces; the noise removes them and `I(Y; L_i + eps)`
      is a lower bound of `I(Y; L_i)`). Every coordinate of `x` and of `L_i + eps` is
      standardized first (the max-norm distance mixes scales otherwise; MI is unchanged).
      No training; reliable for low-dimensional inputs and layers only.
    - `"binning"`: Shwartz-Ziv & Tishby's discretization into `num_bins` equal-width bins
      per unit (no noise; `I(X; T) = H(T)` for distinct inputs), for comparison with the
      information-plane literature. Its values depend on the bin count.
    - `"mine"`: a MINE critic on `(x, l + eps)` and on `(onehot(y), l)`.
    - `"aa_mine"`: the architecture-aware critic of seed 003 (a copy of layers 1..i of
      the network inside the critic) for `i_x`; MINE for `i_y`.
    - a callable `f(x, y, activations, layer_index) -> (i_x, i_y)` for anything else.

    Results go to `rows` (a list of dicts with `CSV_FIELDS`), to `logs` as
    `<layer>/i_x` and `<layer>/i_y` (so `History` and later callbacks see them), and
    optionally to `csv_path`, to TensorBoard scalars `information_plane/<layer>/i_x|i_y`
    under `log_dir`, and to a PNG plot written at the end of training.

    Args:
        x: inputs to measure on, shape `(N,) + input_shape` (a fixed subset is used).
        y: their integer labels, shape `(N,)`.
        layers: names of the classifier's layers to measure; `None` = every layer with a
            `kernel` (dense and convolution layers), in order.
        estimator: one of `INFORMATION_PLANE_ESTIMATORS` or a callable (see above).
        noise_variance: variance of the measurement noise of `i_x` (ignored by binning).
        every_epochs: measure after every this many epochs.
        num_samples: at most this many samples of `x` are used (seeded subset).
        num_bins: bins per unit for `"binning"`.
        k: neighbours for `"ksg"`.
        mine_steps: critic training steps for `"mine"` and `"aa_mine"`.
        csv_path: optional CSV file (rewritten at every measurement).
        log_dir: optional TensorBoard log directory.
        png_path: optional PNG file of the information plane, written at train end.
        seed: seed of the subset, the noise and the critics.

    Example:

    >>> plane = InformationPlane(x_test, y_test, estimator="ksg", csv_path="plane.csv",
    ...                          png_path="plane.png")
    >>> model.fit(x_train, y_train, epochs=20, callbacks=[plane])

    Reference:
        Seed 003 (noise-regularized mutual information, sections 3-4); R. Shwartz-Ziv and
        N. Tishby, "Opening the black box of deep neural networks via information" (2017);
        seed 004 (Kirsch et al.), section 5.
    """

    def __init__(self, x, y, layers=None, estimator="kde", noise_variance=0.1, every_epochs=1,
                 num_samples=1000, num_bins=30, k=3, mine_steps=500, csv_path=None, log_dir=None,
                 png_path=None, seed=0):
        super().__init__()
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 2 or len(x) < 2:
            raise ValueError(f"Expected `x` with a sample axis and at least 2 samples. Received: x.shape={x.shape}")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"Expected `y` to be {len(x)} integer labels. Received: shape={y.shape}, dtype={y.dtype}"
            )
        if not callable(estimator) and estimator not in INFORMATION_PLANE_ESTIMATORS:
            raise ValueError(
                f"Expected `estimator` to be one of {INFORMATION_PLANE_ESTIMATORS} or a callable. "
                f"Received: estimator={estimator!r}"
            )
        if not float(noise_variance) > 0:
            raise ValueError(f"Expected `noise_variance` > 0. Received: noise_variance={noise_variance}")
        for name, value, low in (("every_epochs", every_epochs, 1), ("num_samples", num_samples, 2),
                                 ("num_bins", num_bins, 2), ("k", k, 1), ("mine_steps", mine_steps, 1)):
            if int(value) < low:
                raise ValueError(f"Expected `{name}` >= {low}. Received: {name}={value}")
        rng = np.random.default_rng(seed)
        if len(x) > num_samples:
            keep = np.sort(rng.permutation(len(x))[: int(num_samples)])
            x, y = x[keep], y[keep]
        self.x, self.y = x.astype(np.float32), y
        self._x_flat = self.x.reshape(len(self.x), -1).astype(np.float64)  # once, not per layer and epoch
        self.layers = None if layers is None else list(layers)
        self.estimator = estimator
        self.noise_variance = float(noise_variance)
        self.every_epochs = int(every_epochs)
        self.num_bins, self.k, self.mine_steps = int(num_bins), int(k), int(mine_steps)
        self.csv_path, self.log_dir, self.png_path = csv_path, log_dir, png_path
        self.seed = int(seed)
        self.rows = []
        self._writer = None
        self._rng = np.random.default_rng(seed + 1)

    @property
    def estimator_name(self):
        return getattr(self.estimator, "__name__", "callable") if callable(self.estimator) else self.estimator

    def _classifier(self):
        return getattr(self.model, "classifier", self.model)

    def _layer_names(self, classifier):
        if self.layers is not None:
            names = [layer.name for layer in classifier.layers]
            missing = [n for n in self.layers if n not in names]
            if missing:
                raise ValueError(f"Expected `layers` among the classifier's layers {names}. Received: {missing}")
            return self.layers
        return [layer.name for layer in classifier.layers if hasattr(layer, "kernel")]

    def measure(self, epoch):
        """Measures every layer now, records the rows for `epoch` and returns them."""
        classifier = self._classifier()
        names = self._layer_names(classifier)
        probe = keras.Model(classifier.inputs, [classifier.get_layer(n).output for n in names])
        outputs = probe.predict(self.x, batch_size=256, verbose=0)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        rows = []
        for index, (name, activations) in enumerate(zip(names, outputs)):
            activations = np.asarray(activations, np.float64).reshape(len(self.x), -1)
            i_x, i_y = self._estimate(activations, index, names)
            rows.append({"epoch": int(epoch), "layer": name, "i_x": float(i_x), "i_y": float(i_y),
                         "estimator": self.estimator_name})
        self.rows.extend(rows)
        self._write(rows)
        return rows

    def _estimate(self, activations, index, names):
        x_flat = self._x_flat
        if callable(self.estimator):
            return self.estimator(self.x, self.y, activations, index)
        if self.estimator == "kde":
            from tfinfo.information.mixture import mixture_label_information
            from tfinfo.information.mixture import mixture_mutual_information

            return (mixture_mutual_information(activations, self.noise_variance),
                    mixture_label_information(self.y, activations, self.noise_variance))
        noisy = activations + np.sqrt(self.noise_variance) * self._rng.standard_normal(activations.shape)
        if self.estimator == "ksg":
            from tfinfo.information.ksg import ksg_mutual_information
            from tfinfo.information.ksg import mixed_ksg_mutual_information

            x_std, noisy = _standardized(x_flat), _standardized(noisy)
            return (ksg_mutual_information(x_std, noisy, k=self.k),
                    mixed_ksg_mutual_information(self.y, noisy, k=self.k))
        if self.estimator == "binning":
            from tfinfo.information.discrete import binned_mutual_information

            # Every sample is its own input symbol: I(X; T) = H(T) for distinct inputs.
            return (binned_mutual_information(np.arange(len(self.y)), activations, num_bins=self.num_bins),
                    binned_mutual_information(self.y, activations, num_bins=self.num_bins))
        from tfinfo.information.estimate import estimate_mutual_information

        onehot = np.eye(int(self.y.max()) + 1)[self.y]
        i_y = estimate_mutual_information(onehot, activations, estimator="mine", steps=self.mine_steps,
                                          seed=self.seed)
        if self.estimator == "mine":
            i_x = estimate_mutual_information(x_flat, noisy, estimator="mine", steps=self.mine_steps,
                                              seed=self.seed)
        else:
            from tfinfo.information.noise_regularized import noise_regularized_mutual_information

            classifier = self._classifier()
            # noise_regularized counts layers after the input from 1.
            body = [layer.name for layer in classifier.layers if not isinstance(layer, keras.layers.InputLayer)]
            i_x = noise_regularized_mutual_information(
                classifier, self.x, layer_index=body.index(names[index]) + 1, noise_variance=self.noise_variance,
                critic="aa_mine", steps=self.mine_steps, seed=self.seed)
        return i_x, i_y

    def _write(self, rows):
        if self.csv_path:
            write_information_plane_csv(self.rows, self.csv_path)
        if self.log_dir:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                for row in rows:
                    tf.summary.scalar(f"information_plane/{row['layer']}/i_x", row["i_x"], step=row["epoch"])
                    tf.summary.scalar(f"information_plane/{row['layer']}/i_y", row["i_y"], step=row["epoch"])
            self._writer.flush()

    def on_train_begin(self, logs=None):
        if not any(row["epoch"] == 0 for row in self.rows):
            self.measure(0)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs:
            return
        for row in self.measure(epoch + 1):
            if logs is not None:
                logs[f"{row['layer']}/i_x"] = row["i_x"]
                logs[f"{row['layer']}/i_y"] = row["i_y"]

    def on_train_end(self, logs=None):
        if self.png_path and self.rows:
            plot_information_plane(self.rows, self.png_path, title=f"Information plane ({self.estimator_name})")


def _standardized(a):
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)


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


def plot_information_plane(rows, path, title="Information plane"):
    """Plots one trajectory per layer (I(X; L) horizontally, I(Y; L) vertically), points
    coloured by epoch, writes it to `path` (PNG) and returns the layers plotted."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
    ax.set_xlabel("I(X; L + eps) [nats]")
    ax.set_ylabel("I(Y; L) [nats]")
    ax.set_title(title)
    ax.legend(title="layer", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return layers
