"""A float64 numpy re-implementation of LautumRegularizer's feature normalization and whitening."""

import numpy as np


def numpy_features(reg, x, w):
    """Whitened x and batch-normalized w of a batch, in float64 (the tests' reference)."""
    n = x.shape[0]
    x = x.reshape(n, -1).astype(np.float64)
    w = w.reshape(n, -1).astype(np.float64)
    xc = (x - reg.x_mean.numpy()) * reg.x_scale.numpy()
    xc -= xc.mean(0)
    wc = w - w.mean(0)
    var = (wc**2).mean(0)
    wn = wc / np.sqrt(var + 1e-6 * var.mean() + 1e-30)
    xt = np.linalg.solve(reg.x_whitener.numpy().astype(np.float64), xc.T).T
    return xt, wn
