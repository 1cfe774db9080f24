r"""Models whose $\log p(x)$ and posterior are known exactly, to check every estimate against.

**The linear-Gaussian model (probabilistic PCA).** With a row-vector latent
$z \in \mathbb R^{1\times K}$, weights $W$ (K, D) and bias $b$ (D,),

$$ p(z) = \mathcal N(0, I_K), \qquad p(x \mid z) = \mathcal N(zW + b,\ s^2 I_D)
   \quad\Longrightarrow\quad p(x) = \mathcal N(x;\ b,\ W^\top W + s^2 I_D), $$

and the posterior is Gaussian with precision $\Lambda = I_K + WW^\top / s^2$:

$$ p(z \mid x) = \mathcal N\big(m,\ \Lambda^{-1}\big), \qquad m = (x - b)\,W^\top \Lambda^{-1} / s^2 . $$

This is exactly the decoder of ``VAE(hidden=(), likelihood="gaussian", obs_scale=s)``.
For a diagonal $q = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$ the ELBO has a closed form,

$$ \mathrm{ELBO}(q) = -\tfrac D2 \log 2\pi s^2
   - \frac{\lVert x - \mu W - b\rVert^2 + \sum_k \sigma_k^2 \lVert W_k\rVert^2}{2s^2}
   - \mathrm{KL}(q \,\|\, \mathcal N(0, I)), $$

so the identity $\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q \,\|\, p(z\mid x))$ can be
checked to rounding error for any $q$. Among diagonal $q$ the ELBO is largest at
$\mu = m$, $\sigma_k^2 = 1 / \Lambda_{kk}$ (the mean-field solution, which
underestimates the posterior variance); its gap
$\tfrac12(\sum_k \log\Lambda_{kk} - \log\det\Lambda)$ is zero exactly when $WW^\top$
is diagonal, i.e. when the rows of $W$ are orthogonal.

**Quadrature.** For any decoder with $K \le 2$ the integral
$p(x) = \int p(x \mid z)\, p(z)\, dz$ is computed on a regular grid: the midpoint
rule with $n$ cells of width $h = 2\ell / n$ per axis over $[-\ell, \ell]^K$,

$$ \log p(x) \approx \log \sum_g \exp\big(\log p(x \mid z_g) + \log p(z_g) + K \log h\big). $$

For a smooth integrand that is negligible at the border the rule converges
geometrically in $n$ (roughly like $e^{-2\pi^2\sigma^2 / h^2}$ for a posterior of width
$\sigma$), so doubling $n$ shows how many digits are right.

Taught in lessons 4 (the ELBO identity) and 9 (importance sampling against the truth).
"""
from __future__ import annotations

import math

import numpy as np

from .gaussian import LOG_2PI, kl_std_normal_forward, log_density
from .vae import VAE

__all__ = ["ppca_log_px", "ppca_posterior", "ppca_optimal_encoder", "gaussian_elbo_linear",
           "kl_diag_full", "ppca_from_vae", "quadrature_log_px", "quadrature_posterior_moments",
           "QUADRATURE_N", "QUADRATURE_LIMIT"]

#: default grid points per axis of :func:`quadrature_log_px`, by latent dimension K.
QUADRATURE_N = {1: 2001, 2: 401}
#: default half-width of the grid, in prior standard deviations: outside it the
#: prior holds $2\Phi(-8) \approx 10^{-15}$ of its mass per axis.
QUADRATURE_LIMIT = 8.0


def _f64(*arrays):
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def _inverse_from_cholesky(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""For $A = LL^\top$: ($L^{-1}$, $A^{-1} = L^{-\top}L^{-1}$), both (K, K)."""
    L_inv = np.linalg.solve(L, np.eye(len(L)))  # (K, K)
    return L_inv, L_inv.T @ L_inv


# ---------------------------------------------------------------- linear-Gaussian model
def _ppca_posterior(x, W, b, s):
    """Posterior mean (N, K), covariance (K, K) and log det of the precision."""
    x, W, b = _f64(x, W, b)
    s2 = float(s) ** 2
    K = W.shape[0]
    precision = np.eye(K) + W @ W.T / s2               # (K, K)  Lambda
    L = np.linalg.cholesky(precision)
    cov = _inverse_from_cholesky(L)[1]                 # (K, K)  Lambda^{-1}
    mean = (x - b) @ W.T @ cov / s2                    # (N, K)
    return mean, cov, 2 * np.sum(np.log(np.diag(L)))


def ppca_posterior(x: np.ndarray, W: np.ndarray, b: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    r"""The exact posterior $p(z \mid x) = \mathcal N(m, \Lambda^{-1})$ of the linear-Gaussian model.

    $\Lambda = I + WW^\top/s^2$ and $m = (x - b)W^\top\Lambda^{-1}/s^2$ (completing the
    square in $-\lVert x - b - zW\rVert^2 / 2s^2 - \lVert z\rVert^2/2$ for a row vector $z$).
    x (N, D), W (K, D), b (D,) -> mean (N, K), cov (K, K); the covariance does
    not depend on x.
    """
    mean, cov, _ = _ppca_posterior(x, W, b, s)
    return mean, cov


def ppca_log_px(x: np.ndarray, W: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    r"""Exact $\log p(x) = \log\mathcal N(x;\ b,\ W^\top W + s^2 I)$, (N,), in nats.

    The D x D covariance is never formed. With the Cholesky factor of the K x K
    precision $\Lambda$, the determinant lemma gives
    $\log\det(W^\top W + s^2 I) = D \log s^2 + \log\det\Lambda$, and the quadratic
    form is the minimum over $z$ of $\lVert x - b - zW\rVert^2/s^2 + \lVert z\rVert^2$,
    attained at the posterior mean $m$:

    $$ \log p(x) = -\tfrac12\Big[D\log 2\pi s^2 + \log\det\Lambda
       + \frac{\lVert x - b - mW\rVert^2}{s^2} + \lVert m\rVert^2\Big]. $$

    A sum of non-negative terms, so nothing cancels even when $s$ is small; and
    an error $\delta$ in $m$ changes the minimum only by $O(\delta^2)$.
    x (N, D), W (K, D), b (D,) -> (N,).
    """
    x, W, b = _f64(x, W, b)
    s2 = float(s) ** 2
    D = W.shape[1]
    mean, _, log_det_precision = _ppca_posterior(x, W, b, s)
    r = x - b - mean @ W                                         # (N, D)
    quad = np.sum(r * r, axis=-1) / s2 + np.sum(mean * mean, axis=-1)  # (N,)
    return -0.5 * (D * (LOG_2PI + math.log(s2)) + log_det_precision + quad)


def ppca_optimal_encoder(W: np.ndarray, b: np.ndarray, s: float) -> dict[str, np.ndarray]:
    r"""The linear encoder whose diagonal $q(z \mid x)$ maximizes the ELBO of every x.

    The best diagonal Gaussian in $\mathrm{KL}(q \,\|\, \mathcal N(m, \Lambda^{-1}))$ has the
    posterior's mean $m$ and variances $\sigma_k^2 = 1/\Lambda_{kk}$, both reachable by a
    linear encoder: $\mu = xA - bA$ with $A = W^\top\Lambda^{-1}/s^2$ (D, K), and a
    constant ``log_var`` $= -\log\Lambda_{kk}$. Returns the parameters of
    ``VAE(hidden=())``'s encoder by name (``"enc.mu.W"`` (D, K), ``"enc.mu.b"`` (K,),
    ``"enc.log_var.W"`` (D, K), ``"enc.log_var.b"`` (K,)); copy them in with
    ``vae.params[name][...] = value``. When the rows of $W$ are orthogonal this $q$ is
    the exact posterior.
    """
    W, b = _f64(W, b)
    s2 = float(s) ** 2
    D, K = W.shape[1], W.shape[0]
    precision = np.eye(K) + W @ W.T / s2              # (K, K)
    cov = _inverse_from_cholesky(np.linalg.cholesky(precision))[1]
    A = W.T @ cov / s2                                # (D, K)
    return {"enc.mu.W": A, "enc.mu.b": -b @ A,
            "enc.log_var.W": np.zeros((D, K)), "enc.log_var.b": -np.log(np.diag(precision))}


def gaussian_elbo_linear(x: np.ndarray, W: np.ndarray, b: np.ndarray, s: float,
                         mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    r"""The ELBO of the linear-Gaussian model for $q = \mathcal N(\mu, \mathrm{diag}\,e^{\text{log\_var}})$, exactly.

    $\mathbb E_q\lVert x - zW - b\rVert^2 = \lVert x - \mu W - b\rVert^2 + \sum_k \sigma_k^2 \lVert W_k\rVert^2$
    (the cross term vanishes because $\mathbb E_q[z - \mu] = 0$), so

    $$ \mathrm{ELBO} = -\tfrac D2\log 2\pi s^2 - \frac{\lVert x - \mu W - b\rVert^2
       + \sum_k\sigma_k^2\lVert W_k\rVert^2}{2s^2} - \mathrm{KL}(q\,\|\,\mathcal N(0, I)). $$

    x (N, D), W (K, D), b (D,), mu and log_var (N, K) -> (N,), in nats: the
    limit of ``VAE.elbo`` as the number of noise samples grows.
    """
    x, W, b, mu, log_var = _f64(x, W, b, mu, log_var)
    s2 = float(s) ** 2
    D = W.shape[1]
    r = x - mu @ W - b                                           # (N, D)
    spread = np.exp(log_var) @ np.sum(W * W, axis=1)             # (N,)  sum_k sigma_k^2 |W_k|^2
    expected_log_px_z = -0.5 * D * (LOG_2PI + math.log(s2)) - (np.sum(r * r, axis=-1) + spread) / (2 * s2)
    return expected_log_px_z - kl_std_normal_forward(mu, log_var)[0]


def kl_diag_full(mu_q: np.ndarray, log_var_q: np.ndarray, mean_p: np.ndarray, cov_p: np.ndarray) -> np.ndarray:
    r"""$\mathrm{KL}(\mathcal N(\mu_q, \mathrm{diag}\,\sigma_q^2) \,\|\, \mathcal N(m_p, \Sigma_p))$ with a full $\Sigma_p$.

    $$ \tfrac12\Big[\sum_k \sigma_{q,k}^2 (\Sigma_p^{-1})_{kk} - K
       + (\mu_q - m_p)\Sigma_p^{-1}(\mu_q - m_p)^\top + \log\det\Sigma_p - \sum_k\log\sigma_{q,k}^2\Big], $$

    with $\Sigma_p = LL^\top$ (Cholesky): the quadratic form is $\lVert L^{-1}(\mu_q - m_p)^\top\rVert^2$
    and $\log\det\Sigma_p = 2\sum_k \log L_{kk}$. mu_q, log_var_q (N, K); mean_p
    (N, K) or (K,); cov_p (K, K), shared by all examples -> (N,), in nats. For a
    diagonal $\Sigma_p$ it equals :func:`minivae.gaussian.kl_diag_forward`.
    """
    mu_q, log_var_q, mean_p, cov_p = _f64(mu_q, log_var_q, mean_p, cov_p)
    K = cov_p.shape[0]
    L = np.linalg.cholesky(cov_p)
    L_inv, precision = _inverse_from_cholesky(L)                # (K, K) each
    u = (mu_q - mean_p) @ L_inv.T                                # (N, K)
    trace = np.exp(log_var_q) @ np.diag(precision)               # (N,)
    log_det_ratio = 2 * np.sum(np.log(np.diag(L))) - np.sum(log_var_q, axis=-1)
    return 0.5 * (trace - K + np.sum(u * u, axis=-1) + log_det_ratio)


def ppca_from_vae(vae: VAE) -> tuple[np.ndarray, np.ndarray, float]:
    r"""The linear-Gaussian model a ``VAE(hidden=(), likelihood="gaussian")`` decodes with.

    Returns (W (K, D), b (D,), s) as float64 copies: $W$ = ``dec.out.W``,
    $b$ = ``dec.out.b``, $s$ = ``obs_scale``. Raises ValueError for any other VAE.
    """
    if vae.hidden != () or vae.likelihood_name != "gaussian":
        raise ValueError("the linear-Gaussian model needs VAE(hidden=(), likelihood='gaussian'), "
                         f"got hidden={vae.hidden}, likelihood={vae.likelihood_name!r}")
    W = np.array(vae.params["dec.out.W"], dtype=np.float64)  # (K, D)
    b = np.array(vae.params["dec.out.b"], dtype=np.float64)  # (D,)
    return W, b, vae.obs_scale


# ---------------------------------------------------------------- quadrature
def _grid(K: int, n: int, limit: float) -> tuple[np.ndarray, float]:
    """Cell centres (n**K, K) of the midpoint rule on [-limit, limit]^K and the log cell volume."""
    h = 2.0 * limit / n
    axis = -limit + h * (np.arange(n) + 0.5)                               # (n,)
    z = np.stack(np.meshgrid(*[axis] * K, indexing="ij"), axis=-1).reshape(-1, K)  # (n**K, K)
    return z, K * math.log(h)


def _quadrature(vae: VAE, x, n: int | None, limit: float, rows: int):
    r"""The grid's weights $w_g = p(x \mid z_g)\,p(z_g)\,h^K$, accumulated chunk by chunk.

    Returns $\log \sum_g w_g$ (N,) and the $w$-weighted means of $z$ and $z^2$ over the grid,
    (N, K) each. Each chunk contributes its own log-sum and weighted means, which join the
    running ones in proportion to the chunk's share of the total weight: no exponential
    overflows, whatever the log-weights.
    """
    K = vae.z_dim
    if K not in (1, 2):
        raise ValueError(f"quadrature needs a latent dimension of 1 or 2, got z_dim={K}")
    n = QUADRATURE_N[K] if n is None else int(n)
    if n < 1 or not limit > 0:
        raise ValueError(f"need n >= 1 and limit > 0, got n={n}, limit={limit}")
    x = vae._as_x(x)
    N = len(x)
    z, log_cell = _grid(K, n, float(limit))
    log_prior = log_density(z, 0.0, np.zeros(K)) + log_cell                # (G,)
    log_total = np.full(N, -np.inf)                                        # log sum_g w_g so far
    mean_z, mean_z2 = np.zeros((N, K)), np.zeros((N, K))                   # weighted means so far
    step = max(1, rows // N)                                               # grid points per chunk
    for i in range(0, len(z), step):
        zc = z[i:i + step]                                                 # (G, K)
        out = vae._decoder_forward(zc.astype(vae.dtype))[0]                # (G, P)
        log_px_z = vae.likelihood.forward(x, out[:, None, :])[0]           # (G, N)
        lw = log_px_z.astype(np.float64) + log_prior[i:i + step, None]     # (G, N)
        top = lw.max(axis=0)                                               # (N,)
        w = np.exp(lw - top)                                               # (G, N), at most 1
        w_sum = w.sum(axis=0)                                              # (N,), at least 1
        chunk = top + np.log(w_sum)                                        # the chunk's log sum
        new_total = np.logaddexp(log_total, chunk)
        share = np.exp(chunk - new_total)[:, None]                         # (N, 1) of the weight so far
        mean_z += share * ((w.T @ zc) / w_sum[:, None] - mean_z)
        mean_z2 += share * ((w.T @ (zc * zc)) / w_sum[:, None] - mean_z2)
        log_total = new_total
    return log_total, mean_z, mean_z2


def quadrature_log_px(vae: VAE, x: np.ndarray, n: int | None = None, limit: float = QUADRATURE_LIMIT,
                      rows: int = 8192) -> np.ndarray:
    r"""$\log p(x) = \log\int p(x\mid z)\,p(z)\,dz$ by the midpoint rule, for any decoder with $K \in \{1, 2\}$.

    x (N, D) -> (N,), in nats, float64. ``n`` grid points per axis (default
    :data:`QUADRATURE_N`: 2001 for K = 1, 401 for K = 2, cell width 0.008 and
    0.04) over $[-\ell, \ell]^K$ with $\ell$ = ``limit``. The result is accurate to
    about $10^{-6}$ or better when the posterior's standard deviation is at least
    a cell width or so; compare with ``2 * n`` to be sure. The grid is decoded
    once per chunk of grid points and scored against every example, at most
    ``rows`` (grid point, example) pairs at a time (peak memory about ``rows`` x D
    x 3 floats, as in :func:`minivae.estimate.estimate_log_px`). Raises
    ValueError for other K.
    """
    return _quadrature(vae, x, n, limit, rows)[0]


def quadrature_posterior_moments(vae: VAE, x: np.ndarray, n: int | None = None,
                                 limit: float = QUADRATURE_LIMIT,
                                 rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and per-dimension variance of the exact posterior $p(z \mid x)$, on the same grid.

    $\mathbb E[z_k \mid x] = \sum_g w_g z_{g,k} / \sum_g w_g$ and
    $\mathrm{Var}[z_k\mid x] = \sum_g w_g z_{g,k}^2 / \sum_g w_g - \mathbb E[z_k\mid x]^2$, with
    $w_g = p(x\mid z_g)\,p(z_g)$. x (N, D) -> mean (N, K), var (N, K). What a
    perfect diagonal encoder's $\mu$ would aim for (its ELBO-optimal variance is
    smaller when the posterior is correlated).
    """
    _, mean, mean_z2 = _quadrature(vae, x, n, limit, rows)                 # (N, K) each
    return mean, np.maximum(mean_z2 - mean * mean, 0.0)
