"""Measures I(X; L_i + eps) and I(Y; L_i (+ eps)) of chosen layers during training."""

import math

import keras
import numpy as np
import tensorflow as tf

from tfinfo.callbacks.information_plane_output import CSV_FIELDS  # noqa: F401  (re-exported)
from tfinfo.callbacks.information_plane_output import describe_estimator
from tfinfo.callbacks.information_plane_output import plot_information_plane
from tfinfo.callbacks.information_plane_output import write_information_plane_csv
from tfinfo.layers.zero_entropy_noise import ZeroEntropyNoise
from tfinfo.layers.zero_entropy_noise import inference_noise_off

INFORMATION_PLANE_ESTIMATORS = ("kde", "ksg", "binning", "mine", "aa_mine")
__all__ = ["CSV_FIELDS", "INFORMATION_PLANE_ESTIMATORS", "InformationPlane", "plot_information_plane",
           "write_information_plane_csv"]


class InformationPlane(keras.callbacks.Callback):
    """Tracks each layer's position in the information plane, epoch by epoch.

    At the start of training (epoch 0) and after every `every_epochs` epochs, computes
    the value `L` of the chosen layers on a fixed sample of inputs and measures `i_x`,
    the information `L + eps` keeps about the input, and `i_y`, about the label.

    What `L` and `eps` are (seed 003 section 3; seed 004 sections 6.1 and 7.3):

    - a deterministic layer: `L` is its output and `eps ~ N(0, noise_variance I)` is
      measurement noise, used only here, never in the network (for a deterministic
      network `I(X; L)` is infinite or constant; the noise makes it meaningful);
    - a `ZeroEntropyNoise` layer (the `Z = Z_hat + eps` of seed 004's surrogate
      objectives): `L` is its input `Z_hat` and `eps` its own noise, of variance
      `1 / (2 pi e)`, so `L + eps` is the regularized `Z` itself (the `noise_variance`
      argument is not used for it). Default `layers` include these layers.
    - a layer after a `ZeroEntropyNoise` layer (e.g. the logits): `L` is computed with
      the noise layers bypassed (`Z_hat` passed on: the layer of the noise-free
      classifier, for an affine head the mean `E[L | x]`), then measured like a
      deterministic layer; so every estimator sees a deterministic `L`.

    Estimators (`estimator`; `describe_estimator(name)` has the same in one sentence
    each, and labels the PNG's axes):

    - `"kde"` (default): `i_x` is the pairwise-KL upper bound of Kolchinsky & Tracey on
      `I(X; L + eps)` for `X` uniform on the measured samples (the mixture of Gaussians
      centred on the layer values; Saxe et al. 2018). `i_y` is
      `H_KL(L + eps) - sum_y p(y) H_KL(L + eps | y)` from the same mixture entropies per
      class: a difference of two upper bounds, not a bound, biased upward where the
      class mixtures overlap (1.2x to 2x the exact `I(Y; L + eps)` of the finite
      mixture at moderate noise). No training, exact in both limits, `O(N^2)`.
    - `"ksg"`: Kraskov's kNN estimator of `I(X; L + eps)` and its discrete-continuous
      variant (Ross, 2014) of `I(Y; L + eps)`, on one noise draw per sample (kNN
      estimators are undefined on the exact ties a ReLU layer produces). Every
      coordinate of `x` and of `L + eps` is standardized first (MI is unchanged). No
      training; reliable for low-dimensional inputs and layers only.
    - `"binning"`: no noise: `I(X; bin(L)) = H(bin(L))` for distinct inputs and
      `I(Y; bin(L))`, with `num_bins` equal-width bins over `bin_range`, or bins of
      width `bin_width` (see `tfinfo.information.discrete`: `bin_range=(-1, 1)` with 30
      bins is Shwartz-Ziv & Tishby's tanh setting, `bin_width=0.5` Saxe et al.'s code).
      For a `ZeroEntropyNoise` layer the noise-free `Z_hat` is binned (the bins stand in
      for the noise, as for every layer), so its row equals the row of the layer below.
    - `"mine"`: `i_x` is the held-out Donsker-Varadhan bound of a MINE critic, the
      concat network on `[x, L + eps]` (`ConcatCritic("small")`), trained for
      `mine_steps` steps on `N * noise_draws` pairs (`noise_draws` noise vectors per
      sample, so the critic cannot memorize one fixed noise draw); `i_y` is the same with
      a concat critic on `[onehot(y), L]` (`I(Y; L)`, seed 003's label term; for a
      `ZeroEntropyNoise` layer on `Z_hat + eps`, `noise_draws` draws per sample).
    - `"aa_mine"`: `i_x` with the architecture-aware critic of seed 003 (a copy of the
      layers up to `L` inside the critic), also on `N * noise_draws` pairs; `i_y` as
      for `"mine"`. Both critic estimators hold out `N / 2` pairs for the reported value.
    - a callable `f(x, y, activations, layer_index) -> (i_x, i_y)` for anything else;
      it receives the deterministic `L` (see `layer_noise` for each layer's `eps`).

    Results go to `rows` (a list of dicts with `CSV_FIELDS`), to `logs` as
    `<layer>/i_x` and `<layer>/i_y` (so `History` and later callbacks see them), and
    optionally to `csv_path`, to TensorBoard scalars `information_plane/<layer>/i_x|i_y`
    under `log_dir`, and to a PNG plot written at the end of training. `layer_noise`
    maps each measured layer to `{"measured": ..., "noise_variance": ...}` (what `L`
    and `eps` were, for reports).

    Args:
        x: inputs to measure on, shape `(N,) + input_shape` (a fixed subset is used).
        y: their integer labels, shape `(N,)`.
        layers: names of the classifier's layers to measure; `None` = every layer with a
            `kernel` (dense and convolution layers) and every `ZeroEntropyNoise` layer,
            in order.
        estimator: one of `INFORMATION_PLANE_ESTIMATORS` or a callable (see above).
        noise_variance: variance of the measurement noise of the deterministic layers
            (not used by binning, nor for a `ZeroEntropyNoise` layer).
        every_epochs: measure after every this many epochs.
        num_samples: at most this many samples of `x` are used (seeded subset).
        num_bins: bins per unit for `"binning"`.
        bin_range: the interval `"binning"` cuts into `num_bins` bins: `"layer"`
            (default: the `[min, max]` of the whole layer at each measurement), `"unit"`
            (each unit's own `[min, max]`: invariant to rescaling a unit), or a fixed
            `(low, high)`, e.g. `(-1, 1)` for tanh units.
        bin_width: `None`, or a fixed bin width for `"binning"` (bins `floor(L / w)`,
            as many as needed; replaces `num_bins` and `bin_range`).
        k: neighbours for `"ksg"`.
        mine_steps: critic training steps for `"mine"` and `"aa_mine"`.
        noise_draws: noise vectors per sample for `"mine"` and `"aa_mine"` (default 10,
            as in the AA-MINE benchmark; one draw lets the critic memorize the noise).
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
        A. M. Saxe et al., "On the information bottleneck theory of deep learning" (2018);
        seed 004 (Kirsch et al.), sections 5, 6.1 and 7.3.
    """

    def __init__(self, x, y, layers=None, estimator="kde", noise_variance=0.1, every_epochs=1,
                 num_samples=1000, num_bins=30, bin_range="layer", bin_width=None, k=3, mine_steps=500,
                 noise_draws=10, csv_path=None, log_dir=None, png_path=None, seed=0):
        super().__init__()
        from tfinfo.information.discrete import bin_activations

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
                                 ("num_bins", num_bins, 2), ("k", k, 1), ("mine_steps", mine_steps, 1),
                                 ("noise_draws", noise_draws, 1)):
            if isinstance(value, bool) or int(value) != value or int(value) < low:
                raise ValueError(f"Expected `{name}` >= {low}. Received: {name}={value}")
        bin_activations(np.zeros((1, 1)), num_bins=int(num_bins), bin_range=bin_range, bin_width=bin_width)
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
        self.bin_range = bin_range if isinstance(bin_range, str) else tuple(float(v) for v in bin_range)
        self.bin_width = None if bin_width is None else float(bin_width)
        self.noise_draws = int(noise_draws)
        self.csv_path, self.log_dir, self.png_path = csv_path, log_dir, png_path
        self.seed = int(seed)
        self.rows = []
        self.layer_noise = {}
        self._writer = None
        self._rng = np.random.default_rng(seed + 1)

    @property
    def estimator_name(self):
        return getattr(self.estimator, "__name__", "callable") if callable(self.estimator) else self.estimator

    def describe(self):
        """What this plane's `i_x` and `i_y` are: `describe_estimator(...)`'s `i_x`, `i_y`,
        `note`, plus `estimator`, the binning or critic settings, and `layers`
        (`layer_noise`: per measured layer, what `L` and `eps` were)."""
        info = describe_estimator(self.estimator_name)
        out = {"estimator": self.estimator_name, "i_x": info["i_x"], "i_y": info["i_y"], "note": info["note"]}
        if self.estimator == "binning":
            out.update(num_bins=self.num_bins, bin_range=self.bin_range, bin_width=self.bin_width)
        elif self.estimator in ("mine", "aa_mine"):
            out.update(critic_steps=self.mine_steps, noise_draws=self.noise_draws)
        elif self.estimator == "ksg":
            out.update(k=self.k)
        out["layers"] = {name: dict(value) for name, value in self.layer_noise.items()}
        return out

    def _classifier(self):
        return getattr(self.model, "classifier", self.model)

    def _layer_names(self, classifier):
        if self.layers is not None:
            names = [layer.name for layer in classifier.layers]
            missing = [n for n in self.layers if n not in names]
            if missing:
                raise ValueError(f"Expected `layers` among the classifier's layers {names}. Received: {missing}")
            return self.layers
        return [layer.name for layer in classifier.layers
                if hasattr(layer, "kernel") or isinstance(layer, ZeroEntropyNoise)]

    def _target(self, layer):
        """(tensor measured, variance of eps, whether eps is the model's own noise); records
        what was measured in `layer_noise`."""
        binning = self.estimator == "binning"
        if isinstance(layer, ZeroEntropyNoise):
            measured = ("Z_hat, the input of this ZeroEntropyNoise layer, binned (no noise)" if binning else
                        "Z = Z_hat + eps: Z_hat is the input of this ZeroEntropyNoise layer, eps its own noise")
            variance, tensor, own = float(layer.variance), layer.input, True
        else:
            measured = ("the layer's output with any ZeroEntropyNoise layer bypassed, binned (no noise)" if binning
                        else "L + eps: the layer's output with any ZeroEntropyNoise layer bypassed, eps measurement "
                             "noise")
            variance, tensor, own = self.noise_variance, layer.output, False
        self.layer_noise[layer.name] = {"measured": measured, "noise_variance": None if binning else variance}
        return tensor, variance, own

    def measure(self, epoch):
        """Measures every layer now, records the rows for `epoch` and returns them."""
        classifier = self._classifier()
        names = self._layer_names(classifier)
        rows = []
        # Every layer on the noise-free path: a ZeroEntropyNoise layer passes Z_hat on, and
        # its noise is added by the estimators with the layer's own variance.
        with inference_noise_off(classifier):
            targets = [self._target(classifier.get_layer(n)) for n in names]
            probe = keras.Model(classifier.inputs, [tensor for tensor, _, _ in targets])
            outputs = probe.predict(self.x, batch_size=256, verbose=0)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for index, (name, activations, target) in enumerate(zip(names, outputs, targets)):
                activations = np.asarray(activations, np.float64).reshape(len(self.x), -1)
                i_x, i_y = self._estimate(activations, index, classifier, *target)
                rows.append({"epoch": int(epoch), "layer": name, "i_x": float(i_x), "i_y": float(i_y),
                             "estimator": self.estimator_name})
        self.rows.extend(rows)
        self._write(rows)
        return rows

    def _estimate(self, activations, index, classifier, tensor, variance, model_noise):
        if callable(self.estimator):
            return self.estimator(self.x, self.y, activations, index)
        if self.estimator == "kde":
            from tfinfo.information.mixture import mixture_label_information
            from tfinfo.information.mixture import mixture_mutual_information

            return (mixture_mutual_information(activations, variance),
                    mixture_label_information(self.y, activations, variance))
        if self.estimator == "binning":
            from tfinfo.information.discrete import binned_mutual_information

            bins = dict(num_bins=self.num_bins, bin_range=self.bin_range, bin_width=self.bin_width)
            # Every sample is its own input symbol: I(X; T) = H(T) for distinct inputs.
            return (binned_mutual_information(np.arange(len(self.y)), activations, **bins),
                    binned_mutual_information(self.y, activations, **bins))
        if self.estimator == "ksg":
            from tfinfo.information.ksg import ksg_mutual_information
            from tfinfo.information.ksg import mixed_ksg_mutual_information

            noisy = activations + math.sqrt(variance) * self._rng.standard_normal(activations.shape)
            x_std, noisy = _standardized(self._x_flat), _standardized(noisy)
            return (ksg_mutual_information(x_std, noisy, k=self.k),
                    mixed_ksg_mutual_information(self.y, noisy, k=self.k))
        return self._critic_estimates(activations, classifier, tensor, variance, model_noise)

    def _critic_estimates(self, activations, classifier, tensor, variance, model_noise):
        from tfinfo.information.estimate import estimate_mutual_information
        from tfinfo.information.noise_regularized import noise_regularized_mutual_information

        # The noise draws multiply the held-in pairs; N / 2 pairs are held out, as with one draw.
        holdout = 0.5 / self.noise_draws
        i_x = noise_regularized_mutual_information(
            keras.Model(classifier.inputs, tensor), self.x, noise_variance=variance,
            critic="mine" if self.estimator == "mine" else "aa_mine", steps=self.mine_steps,
            noise_draws=self.noise_draws, holdout=holdout, seed=self.seed)
        onehot = np.eye(int(self.y.max()) + 1)[self.y]
        if model_noise:  # the layer's value is Z = Z_hat + eps: I(Y; Z) on noise_draws draws per sample
            onehot = np.repeat(onehot, self.noise_draws, axis=0)
            activations = np.repeat(activations, self.noise_draws, axis=0)
            activations = activations + math.sqrt(variance) * self._rng.standard_normal(activations.shape)
        i_y = estimate_mutual_information(onehot, activations, estimator="mine", critic="concat",
                                          steps=self.mine_steps, holdout=holdout if model_noise else 0.5,
                                          seed=self.seed)
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
