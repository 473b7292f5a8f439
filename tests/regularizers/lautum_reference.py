"""A float64 numpy re-implementation of LautumRegularizer: features, moving covariance, value, gradient.

The tests' reference: dense float64 solves and SVDs, no rank-n updates, no TensorFlow.
"""

import numpy as np
import scipy.linalg


def w_scale(w):
    """Per-feature scale of the batch normalization of w: `sqrt(var + 1e-6 mean(var))`."""
    w = w.reshape(w.shape[0], -1).astype(np.float64)
    var = ((w - w.mean(0)) ** 2).mean(0)
    return np.sqrt(var + 1e-6 * var.mean() + 1e-30)


def numpy_features(reg, x, w):
    """Whitened x and batch-normalized w of a batch, in float64 (the tests' reference)."""
    n = x.shape[0]
    x = x.reshape(n, -1).astype(np.float64)
    w = w.reshape(n, -1).astype(np.float64)
    xc = (x - reg.x_mean.numpy()) * reg.x_scale.numpy()
    xc -= xc.mean(0)
    wc = w - w.mean(0)
    wn = wc / w_scale(w)
    xt = np.linalg.solve(reg.x_whitener.numpy().astype(np.float64), xc.T).T
    return xt, wn


def np_lautum(jxx, jxw, jww, max_correlation=None):
    """Lautum information of N(0, J) in nats; with a bound, each rho clamped at it."""
    k = jxx.shape[0]
    if max_correlation is None:
        joint = np.block([[jxx, jxw], [jxw.T, jww]])
        diag = np.block([[jxx, np.zeros_like(jxw)], [np.zeros_like(jxw.T), jww]])
        _, ld_j = np.linalg.slogdet(joint)
        _, ld_d = np.linalg.slogdet(diag)
        return 0.5 * (np.trace(np.linalg.solve(joint, diag)) - 2 * k + ld_j - ld_d)
    lx, lw = np.linalg.cholesky(jxx), np.linalg.cholesky(jww)
    c = np.linalg.solve(lx, jxw) @ np.linalg.inv(lw).T
    lam = np.minimum(np.linalg.svd(c, compute_uv=False) ** 2, max_correlation**2)
    return float(np.sum(0.5 * np.log1p(-lam) + lam / (1 - lam)))


class Reference:
    """float64 numpy re-implementation of the layer's statistics, step by step."""

    def __init__(self, reg):
        self.reg = reg
        k = reg.feature_dim
        self.jxx, self.jxw, self.jww = np.eye(k), np.zeros((k, k)), np.eye(k)
        self.prior = 1.0
        self.t = 0

    def omega(self, t, n):
        return max(1.0 / (t + self.reg.feature_dim / n), 1.0 - self.reg.ema_decay)

    def _after(self, x, w):
        xt, wn = numpy_features(self.reg, x, w)
        n, t = len(x), self.t + 1
        om = self.omega(t, n)
        jxx = (1 - om) * self.jxx + om * xt.T @ xt / n
        jxw = (1 - om) * self.jxw + om * xt.T @ wn / n
        jww = (1 - om) * self.jww + om * wn.T @ wn / n
        prior = (1 - om) * self.prior
        # Every refresh_every (200) steps the identity weight is topped up to its floor.
        a, k = self.reg.ema_decay, self.reg.feature_dim
        floor = k / (k + n * (1 + a) / (1 - a))
        if t % (self.reg.refresh_every or 200) == 0 and prior < floor:
            jxx = jxx + (floor - prior) * np.eye(k)
            jww = jww + (floor - prior) * np.eye(k)
            prior = floor
        return (jxx, jxw, jww), prior

    def blocks_after(self, x, w):
        return self._after(x, w)[0]

    def value_after(self, x, w, bounded=True):
        bound = self.reg.max_correlation if bounded else None
        return np_lautum(*self.blocks_after(x, w), max_correlation=bound)

    def step(self, x, w):
        (self.jxx, self.jxw, self.jww), self.prior = self._after(x, w)
        self.t += 1

    def gradient(self, x, w, eps=1e-5):
        """Central differences of the bounded value after this batch, with respect to w."""
        grad = np.zeros(w.size)
        flat = w.astype(np.float64).ravel()
        for i in range(flat.size):
            up, down = flat.copy(), flat.copy()
            up[i] += eps
            down[i] -= eps
            grad[i] = (self.value_after(x, up.reshape(w.shape)) - self.value_after(x, down.reshape(w.shape))) / (2 * eps)
        return grad

    def analytic_after(self, x, w):
        """Value, max canonical correlation and w-gradient of the (unbounded) value after
        this batch, by the closed-form derivative in float64 (no finite differences:
        fit for D in the hundreds).

        `L(J) = 1/2 [tr(J^-1 D) - 2k + logdet J - logdet D]` with `D = bd(J)` has
        `dL/dJ = G = 1/2 [J^-1 - J^-1 D J^-1 + bd(J^-1) - D^-1]`; the batch enters
        `J = (1 - omega) J_prev + omega / n Z^T Z`, so `dL/dZ = 2 omega / n Z G`; the
        w-part goes back through the per-column normalization
        `wn = (w - mean) / sqrt(var + eps)`: `dL/dw = (g - mean(g) - wn mean(g wn)) / s`
        (eps's own tiny dependence on the variances, 1e-6 relative, is left out).
        """
        n = x.shape[0]
        k = self.reg.feature_dim
        xt, wn = numpy_features(self.reg, x, w)
        (jxx, jxw, jww), _ = self._after(x, w)
        joint = np.block([[jxx, jxw], [jxw.T, jww]])
        chol, info = scipy.linalg.lapack.dpotrf(joint, lower=1)
        assert info == 0, info
        j_inv, info = scipy.linalg.lapack.dpotri(chol, lower=1)  # the lower triangle of J^-1
        assert info == 0, info
        j_inv = np.tril(j_inv) + np.tril(j_inv, -1).T
        cx, cw = scipy.linalg.cho_factor(jxx, lower=True), scipy.linalg.cho_factor(jww, lower=True)
        ld_j = 2.0 * np.sum(np.log(np.diag(chol)))
        ld_x, ld_w = (2.0 * np.sum(np.log(np.diag(c[0]))) for c in (cx, cw))
        # tr(J^-1 D) with D = bd(J): the diagonal blocks only.
        trace = np.sum(j_inv[:k, :k] * jxx) + np.sum(j_inv[k:, k:] * jww)
        value = 0.5 * (trace - 2 * k + ld_j - ld_x - ld_w)
        # Z G[:, w] without forming G: G = 1/2 [J^-1 - J^-1 D J^-1 + bd(J^-1) - D^-1].
        z = np.concatenate([xt, wn], axis=1)
        y = z @ j_inv
        zg_w = 0.5 * (
            y[:, k:]
            - (y[:, :k] @ jxx) @ j_inv[:k, k:]
            - (y[:, k:] @ jww) @ j_inv[k:, k:]
            + wn @ j_inv[k:, k:]
            - scipy.linalg.cho_solve(cw, wn.T).T
        )
        t = self.t + 1
        omega = self.omega(t, n)
        g_wn = 2.0 * omega / n * zg_w
        grad = (g_wn - g_wn.mean(0) - wn * (g_wn * wn).mean(0)) / w_scale(w)
        # rho_max^2 = 1 - 1 / lambda_max(J_ww (J^-1)_ww) (the Schur complement).
        lw = np.tril(cw[0])  # cho_factor leaves the other triangle unspecified
        top = scipy.linalg.eigh(lw.T @ j_inv[k:, k:] @ lw, eigvals_only=True, subset_by_index=[k - 1, k - 1])[0]
        rho = float(np.sqrt(max(1.0 - 1.0 / top, 0.0)))
        return float(value), rho, grad.ravel()
