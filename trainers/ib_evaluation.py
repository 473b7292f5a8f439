"""Deterministic test accuracy and export of a `tfinfo-ib` classifier with zero-entropy noise.

A `surrogate_*` classifier keeps its `ZeroEntropyNoise` layer at inference (the paper's
model `p(y | x) = E_{p(z | x)} p(y | z)`), so one `predict` is one random draw. Here the
test accuracy is that of the mean softmax over `draws` noise draws from a seed of their
own (a copy of the classifier whose noise layers start from that seed), which is the
same number however often, and from whichever saved copy, it is computed.
"""

import json
import os

EXPORT_NOISE = ("inference", "training_only")
_BATCH = 256


def _copy(classifier, *, training_only, seed):
    """An unshared copy of `classifier` (same weights) whose `ZeroEntropyNoise` layers have
    `training_only` and fresh generators seeded `seed + i` (i-th noise layer; `seed=None`:
    each layer's own seed)."""
    import keras

    from tfinfo.layers import ZeroEntropyNoise

    order = {layer.name: i for i, layer in enumerate(l for l in classifier.layers if isinstance(l, ZeroEntropyNoise))}

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, ZeroEntropyNoise):
            config.update(training_only=training_only)
            if seed is not None:
                config.update(seed=int(seed) + order[layer.name])
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(classifier, clone_function=clone)
    for layer in classifier.layers:
        if layer.weights:
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy


def _noise_layers(classifier):
    from tfinfo.layers import zero_entropy_noise_layers

    nested = [layer.name for layer in zero_entropy_noise_layers(classifier)]
    top = [layer.name for layer in zero_entropy_noise_layers(classifier) if layer in classifier.layers]
    if nested != top:
        raise ValueError("Expected the ZeroEntropyNoise layers among the classifier's own layers (not in nested "
                         f"models). Received: {sorted(set(nested) - set(top))} nested")
    return top


def _probabilities(model, x):
    import numpy as np
    from scipy import special

    logits = np.asarray(model.predict(x, batch_size=_BATCH, verbose=0), np.float64)
    return special.softmax(logits, axis=-1)


def evaluate_classifier(classifier, x, y, draws=10, seed=0):
    """Test accuracy of a logits classifier, the same on every call.

    Args:
        classifier: a functional `keras.Model` from inputs to logits, with or without
            `ZeroEntropyNoise` layers (whatever their `training_only`).
        x, y: test inputs and integer labels.
        draws: noise draws averaged (with noise layers).
        seed: seed of the draws (the classifier's own noise generators are not used).

    Returns:
        A dict: `test_accuracy` (argmax of the mean softmax over `draws` noise draws, or
        of one pass without noise layers), `test_accuracy_noise_free` (with the noise
        layers bypassed, `Z = Z_hat`, as the classifier exported with
        `export_noise="training_only"` predicts), `noise_layers`, `eval_draws`, `eval_seed`.

    Example:

    >>> evaluate_classifier(classifier, x_test, y_test, draws=10, seed=0)["test_accuracy"]
    0.91
    """
    import numpy as np

    y = np.asarray(y)
    noise = _noise_layers(classifier)
    if not noise:
        accuracy = float(np.mean(np.argmax(_probabilities(classifier, x), -1) == y))
        return {"test_accuracy": accuracy, "test_accuracy_noise_free": accuracy, "noise_layers": [],
                "eval_draws": 1, "eval_seed": None}
    noisy = _copy(classifier, training_only=False, seed=seed)
    mean = sum(_probabilities(noisy, x) for _ in range(int(draws))) / int(draws)
    clean = _probabilities(_copy(classifier, training_only=True, seed=seed), x)
    return {"test_accuracy": float(np.mean(np.argmax(mean, -1) == y)),
            "test_accuracy_noise_free": float(np.mean(np.argmax(clean, -1) == y)),
            "noise_layers": noise, "eval_draws": int(draws), "eval_seed": int(seed)}


def describe_evaluation(evaluation, export_noise):
    """What the accuracies of `evaluate_classifier` and the exported classifier are.

    Args:
        evaluation: `evaluate_classifier`'s dict.
        export_noise: `"inference"` or `"training_only"` (see `export_classifier`).

    Returns:
        A dict of sentences: `test_accuracy`, `test_accuracy_noise_free` and
        `classifier.keras` (what the saved file predicts).

    Example:

    >>> describe_evaluation(evaluation, "training_only")["classifier.keras"]
    'classifier.keras adds the noise of bottleneck_noise only in training ...'
    """
    if not evaluation["noise_layers"]:
        return {"test_accuracy": "accuracy of one deterministic pass (no noise layer)",
                "test_accuracy_noise_free": "the same (no noise layer)",
                "classifier.keras": "the trained classifier (deterministic; no noise layer)"}
    layers = ", ".join(evaluation["noise_layers"])
    export = {
        "inference": f"classifier.keras keeps the noise of {layers} at inference (training_only=False, the paper's "
                     "model): one predict is one random draw; average the softmax over draws, or re-evaluate with "
                     "trainers.ib_evaluation.evaluate_workdir",
        "training_only": f"classifier.keras adds the noise of {layers} only in training (training_only=True): "
                         "predict is deterministic, Z = Z_hat, with test_accuracy_noise_free",
    }[export_noise]
    return {"test_accuracy": f"accuracy of the mean softmax over {evaluation['eval_draws']} draws of the noise of "
                             f"{layers} (seed {evaluation['eval_seed']}): the model p(y|x) = E_z p(y|z)",
            "test_accuracy_noise_free": f"accuracy with {layers} bypassed (Z = Z_hat)",
            "classifier.keras": export}


def export_classifier(classifier, path, export_noise="inference"):
    """Saves a classifier with its `ZeroEntropyNoise` layers on or off at inference.

    Args:
        classifier: a functional `keras.Model`.
        path: the `.keras` file.
        export_noise: `"inference"`: saved as it is (noise layers that add noise in
            inference, the paper's model `p(y | x) = E_z p(y | z)`: `predict` is one random
            draw); `"training_only"`: a copy whose noise layers have
            `training_only=True` (same weights and seeds): `predict` is deterministic,
            `Z = Z_hat`, and fine-tuning still trains with the noise.

    Example:

    >>> export_classifier(classifier, "runs/ib/classifier.keras", "training_only")
    """
    from tfinfo.layers import ZeroEntropyNoise

    if export_noise not in EXPORT_NOISE:
        raise ValueError(f"Expected `export_noise` to be one of {list(EXPORT_NOISE)}. "
                         f"Received: export_noise={export_noise!r}")
    if export_noise == "training_only" and any(isinstance(layer, ZeroEntropyNoise) for layer in classifier.layers):
        classifier = _copy(classifier, training_only=True, seed=None)
    classifier.save(path)


def evaluate_workdir(workdir):
    """Re-evaluates a finished `tfinfo-ib` run: loads `classifier.keras` and the test split
    named by `results.json`'s config, and returns `evaluate_classifier`'s dict (with the
    run's `eval_draws` and seed; equal to the run's `test_accuracy` and
    `test_accuracy_noise_free`, whichever `export_noise` saved the file)."""
    import keras
    import numpy as np

    import tfinfo.layers  # noqa: F401  (registers ZeroEntropyNoise for loading)
    from tfinfo.data import load_spec

    with open(os.path.join(workdir, "results.json")) as f:
        config = json.load(f)["config"]
    splits = load_spec(config["data"], role="source", seed=config["seed"])
    classifier = keras.models.load_model(os.path.join(workdir, "classifier.keras"))
    return evaluate_classifier(classifier, np.asarray(splits.x_test, np.float32), np.asarray(splits.y_test, np.int64),
                               draws=config.get("eval_draws", 10), seed=config["seed"])
