"""Which layers of a network compute differently in training and in inference mode."""

import inspect

import keras

# Layers whose `call` takes `training` but computes the same in both modes.
_MODE_FREE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Resizing, keras.layers.CenterCrop)
_RATE_ATTRIBUTES = {keras.layers.Dropout: "rate", keras.layers.GaussianDropout: "rate",
                    keras.layers.GaussianNoise: "stddev"}


def _inactive(layer):
    """A dropout or noise layer with rate (stddev) 0."""
    for cls, attribute in _RATE_ATTRIBUTES.items():
        if isinstance(layer, cls):
            return float(getattr(layer, attribute, 1.0) or 0.0) == 0.0
    return False


def mode_dependent_layers(network):
    """Names of the layers of `network` (nested models included) that may compute
    differently with `training=True` and `training=False`.

    A layer counts when its `call` takes a `training` argument (dropout, batch
    normalization, noise, random augmentation, recurrent layers with dropout, ...),
    except layers known to ignore it (`Dense`, `EinsumDense`, `Resizing`, `CenterCrop`)
    and dropout or noise layers with rate (stddev) 0. Unknown layers taking `training`
    count: the answer errs on the side of "mode-dependent".

    Args:
        network: a Keras model.

    Returns:
        A list of layer names, in the network's layer order.
    """
    names = []
    for layer in getattr(network, "layers", []):
        if isinstance(layer, keras.Model):
            names += mode_dependent_layers(layer)
        elif isinstance(layer, keras.layers.InputLayer) or isinstance(layer, _MODE_FREE) or _inactive(layer):
            continue
        elif "training" in inspect.signature(layer.call).parameters:
            names.append(layer.name)
    return names
