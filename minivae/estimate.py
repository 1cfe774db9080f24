r"""Estimating $\log p(x)$ and gradients of expectations by Monte Carlo.

**Importance sampling.** For any proposal $r(z)$ with samples $z_s \sim r$,
$w_s = p(x, z_s) / r(z_s)$ has $\mathbb E[w_s] = p(x)$, and

$$ \mathcal L_S = \mathbb E\Big[\log \tfrac1S \textstyle\sum_{s=1}^S w_s\Big] \le \log p(x), $$

the importance-weighted bound (Burda, Grosse & Salakhutdinov 2015): $\mathcal L_1$
is the ELBO, $\mathcal L_S$ increases with $S$ and tends to $\log p(x)$. With the
encoder as proposal, $r = q(z \mid x)$, $S = 5000$ gives the log-likelihood
estimate of the literature. With the prior as proposal, $w_s = p(x \mid z_s)$: the
"naive" Monte Carlo estimate, whose variance is enormous because almost no
prior sample explains a given $x$.

Everything is computed from log-weights with a running log-sum-exp, in chunks
of at most ``rows`` decoder evaluations, so memory stays bounded whatever
$S$ and $N$, with the Monte Carlo standard error of $\log \hat p(x)$.

**Gradient estimators** of $\nabla_\phi \mathbb E_{q_\phi}[f(z)]$ for a Gaussian
$q_\phi = \mathcal N(\mu, \sigma^2)$: the score function (REINFORCE)
$f(z)\,\nabla_\phi \log q_\phi(z)$ and the reparameterization
$\nabla_z f(z)\, \partial z / \partial \phi$ with $z = \mu + \sigma\epsilon$. Both are
unbiased; their variances differ by orders of magnitude. Taught in lessons 3 and 9.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple

import numpy as np

from . import parallel
from .gaussian import (log_density, log_density_backward, log_density_forward,
                       reparameterize_backward, reparameterize_forward)
from .vae import VAE

__all__ = ["LogLikelihood", "log_weights", "block_generators", "estimate_log_px", "score_function_grad",
           "reparam_grad"]


class LogLikelihood(NamedTuple):
    """Per-example importance-sampled estimates, all (N,), in nats."""
    log_px: np.ndarray  # log (1/S) sum_s w_s: the estimate of log p(x), = the IW bound's sample
    se: np.ndarray      # its Monte Carlo standard error (delta method)
    ess: np.ndarray     # effective sample size (sum w)^2 / sum w^2, in [1, S]


def log_weights(vae: VAE, x: np.ndarray, eps: np.ndarray, proposal: str = "posterior",
                c: np.ndarray | None = None) -> np.ndarray:
    r"""$\log w_s = \log p(x \mid z_s) + \log p(z_s) - \log r(z_s)$ for the given noise.

    x (N, D), eps (S, N, K) standard normal [, context c (N, C)] -> log w (S, N).
    ``proposal="posterior"``: $z = \mu + \sigma\epsilon$ from the encoder, $r = q(z\mid x)$.
    ``proposal="prior"``: $z = \epsilon$, $r = p(z)$, so $\log w = \log p(x \mid z)$.
    """
    if proposal == "posterior":
        mu, log_var = vae.encode(x, c)                                # (N, K) each
        z = reparameterize_forward(mu, log_var, eps)[0]               # (S, N, K)
        log_r = log_density(z, mu, log_var)                           # (S, N)
        log_pz = log_density(z, 0.0, np.zeros_like(log_var))
    elif proposal == "prior":
        z, log_r, log_pz = eps, 0.0, 0.0
    else:
        raise ValueError(f"proposal must be 'posterior' or 'prior', got {proposal!r}")
    return vae.log_px_z(x, z, c) + log_pz - log_r


def block_generators(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` generators, one per block of examples, all derived from one draw of ``rng``:
    block k's noise depends only on ``rng`` and k, never on which thread computes it."""
    base = int(rng.integers(2**63))
    return [np.random.default_rng([base, k]) for k in range(n)]


def estimate_log_px(vae: VAE, x: np.ndarray, S: int, rng: np.random.Generator,
                    proposal: str = "posterior", rows: int = 8192,
                    progress: Callable[[int], None] | None = None,
                    c: np.ndarray | None = None, threads: int | None = None) -> LogLikelihood:
    r"""Importance-sampled $\log p(x)$ with $S$ samples per example, in chunks.

    x (N, D) [, context c (N, C)] -> :class:`LogLikelihood` of (N,) arrays. At most ``rows`` latent
    samples are decoded at once (peak memory about ``rows`` x D x 3 floats of
    the model's dtype per thread), so any S and N fit; the log-weights are accumulated
    with a running maximum so no exponential overflows. ``progress(n)`` is
    called with the number of examples finished so far.

    Blocks of examples are independent: they run on ``threads`` worker threads (default:
    the machine's cores; :mod:`minivae.parallel`), each block with its own noise
    (:func:`block_generators`) and the BLAS on one thread, so the result is the same, to
    the last bit, whatever the number of threads. ``threads=0`` runs the blocks in this
    thread with the BLAS as it is set: the same noise, but the last bits of the products
    then depend on the BLAS's threads.
    """
    if S < 1:
        raise ValueError(f"S must be >= 1, got {S}")
    x = vae._as_x(x)
    N, K = len(x), vae.z_dim
    n_ex = max(1, rows // S)              # examples per chunk
    s_chunk = min(S, rows)                # samples per chunk
    out = LogLikelihood(np.empty(N), np.empty(N), np.empty(N))
    starts = range(0, N, n_ex)
    generators = block_generators(rng, len(starts))

    def block(k: int) -> None:
        """The estimate for examples i .. i + n_ex, written into ``out`` (its own slice)."""
        i, gen = starts[k], generators[k]
        xb = x[i:i + n_ex]                # (n, D)
        cb = None if c is None else c[i:i + n_ex]
        n = len(xb)
        m = np.full(n, -np.inf)           # running max of log w
        s1 = np.zeros(n)                  # sum exp(log w - m)
        s2 = np.zeros(n)                  # sum exp(2 (log w - m))
        for j in range(0, S, s_chunk):
            s = min(s_chunk, S - j)
            eps = gen.standard_normal((s, n, K), dtype=vae.dtype)  # (s, n, K)
            ### BEGIN SOLUTION task_iw
            # the sums of w and w^2 kept in units of exp(m), m the largest log-weight so far
            lw = log_weights(vae, xb, eps, proposal, cb).astype(np.float64)  # (s, n)
            m_new = np.maximum(m, lw.max(axis=0))
            scale = np.exp(m - m_new)     # rescale the old sums to the new max
            e = np.exp(lw - m_new)        # (s, n)
            s1 = s1 * scale + e.sum(axis=0)
            s2 = s2 * scale * scale + (e * e).sum(axis=0)
            m = m_new
            ### END SOLUTION
        ### BEGIN SOLUTION task_iw
        # the delta method: sd(log mean w) ~ sd(w) / (sqrt(S) mean w)
        mean_w = s1 / S                    # in units of exp(m)
        var_w = np.maximum(s2 / S - mean_w ** 2, 0.0)
        out.log_px[i:i + n] = m + np.log(mean_w)
        out.se[i:i + n] = np.sqrt(var_w / S) / mean_w
        out.ess[i:i + n] = s1 * s1 / s2
        ### END SOLUTION

    workers = 1 if threads == 0 else parallel.threads(threads)
    wave = 8 * workers                    # blocks between two progress reports
    with parallel.pinned() if threads != 0 else contextlib.nullcontext():
        for first in range(0, len(starts), wave):
            ks = range(first, min(first + wave, len(starts)))
            parallel.pool_map(block, ks, workers)
            if progress is not None:
                progress(min(N, starts[ks[-1]] + n_ex))
    return out


# ---------------------------------------------------------------- gradient estimators
def score_function_grad(f: Callable[[np.ndarray], np.ndarray], mu: np.ndarray, log_var: np.ndarray,
                        eps: np.ndarray, baseline: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-sample REINFORCE estimates of $\nabla_{\mu, \log\sigma^2} \mathbb E_q[f(z)]$.

    $(f(z_s) - b)\,\nabla \log q(z_s)$ with $z_s = \mu + \sigma\epsilon_s$; $b$ is a
    constant baseline (unbiased for any constant). mu, log_var (K,); eps (S, K);
    f maps (S, K) -> (S,). Returns (dmu (S, K), dlog_var (S, K)), one row per
    sample: average over rows for the estimate, take their spread for its variance.
    """
    z, _ = reparameterize_forward(mu, log_var, eps)                    # (S, K)
    _, cache = log_density_forward(z, mu, log_var)
    fz = f(z) - baseline                                              # (S,)
    _, dmu, dlog_var = log_density_backward(np.ones(len(eps), z.dtype), cache)  # d log q / d(mu, log_var)
    return fz[:, None] * dmu, fz[:, None] * dlog_var


def reparam_grad(grad_f: Callable[[np.ndarray], np.ndarray], mu: np.ndarray, log_var: np.ndarray,
                 eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-sample reparameterization estimates: $\nabla_z f(z_s)$ pushed through $z = \mu + \sigma\epsilon$.

    grad_f maps z (S, K) -> df/dz (S, K). Returns (dmu (S, K), dlog_var (S, K)).
    """
    # each sample is its own row, so the backward returns one gradient per sample
    rows = np.broadcast_to(mu, eps.shape), np.broadcast_to(log_var, eps.shape)  # (S, K) each
    z, cache = reparameterize_forward(*rows, eps)                         # (S, K)
    dmu, dlog_var, _ = reparameterize_backward(grad_f(z), cache)
    return dmu, dlog_var
