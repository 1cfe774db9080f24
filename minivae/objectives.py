r"""The evidence lower bound, written two ways.

For an encoder $q(z\mid x) = \mathcal N(\mu, \sigma^2)$, a prior $p(z) = \mathcal N(0, I)$
and a decoder $p(x \mid z)$, with $z_s = \mu + \sigma\epsilon_s$, $s = 1..S$:

$$ \mathrm{ELBO}_\beta(x) = \underbrace{\tfrac1S \textstyle\sum_s \log p(x\mid z_s)}_{\text{reconstruction}}
   - \beta\, \underbrace{\mathrm{KL}(q(z\mid x)\,\|\,p(z))}_{\text{closed form}} $$

and, for $\beta = 1$, the same bound as

$$ \mathrm{ELBO}(x) = \tfrac1S \textstyle\sum_s \big[\log p(x \mid z_s) + \log p(z_s)\big] + H(q(z\mid x)). $$

The two agree in expectation over $\epsilon$, since
$\mathbb E_q[\log p(z)] + H(q) = -\mathrm{KL}(q\|p)$; their per-draw difference is
$\tfrac1S\sum_s \log p(z_s) - \mathbb E_q[\log p(z)]$, zero-mean Monte Carlo noise.
Everything is in nats per example: sums over data and latent dimensions, never
means over pixels. Taught in lesson 4.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from . import gaussian
from .gaussian import entropy, log_density

__all__ = ["Terms", "TermGrads", "Objective", "OBJECTIVES", "elbo_loss", "iwae_loss",
           "elbo_kl_form", "elbo_joint_form", "expected_log_prior", "nats_to_bits_per_dim",
           "iw_bound_forward", "iw_bound_backward", "free_bits_forward", "free_bits_backward"]


class Terms(NamedTuple):
    """Per-example pieces of the ELBO for one batch (what the model's forward pass computes)."""
    log_px_z: np.ndarray  # (S, N)     log p(x | z_s)
    kl: np.ndarray        # (N,)       KL(q(z|x) || N(0, I))
    mu: np.ndarray        # (N, K)
    log_var: np.ndarray   # (N, K)
    z: np.ndarray         # (S, N, K)


class TermGrads(NamedTuple):
    """The gradients of a loss to the pieces of the ELBO: what an objective hands back to
    the model's backward pass."""
    log_px_z: np.ndarray   # (S, N)
    z: np.ndarray | float  # (S, N, K): through terms other than the decoder (0.0 when there are none)
    mu: np.ndarray         # (N, K)
    log_var: np.ndarray    # (N, K)


def elbo_kl_form(log_px_z: np.ndarray, kl: np.ndarray, beta: float = 1.0) -> np.ndarray:
    r"""$\tfrac1S\sum_s \log p(x\mid z_s) - \beta\,\mathrm{KL}$.  log_px_z (S, N), kl (N,) -> (N,)."""
    return log_px_z.mean(axis=0) - beta * kl


def elbo_joint_form(log_px_z: np.ndarray, z: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    r"""$\tfrac1S\sum_s [\log p(x\mid z_s) + \log \mathcal N(z_s; 0, I)] + H(q)$.

    log_px_z (S, N), z (S, N, K), log_var (N, K) -> (N,).
    """
    log_pz = log_density(z, 0.0, np.zeros_like(log_var))  # (S, N)
    return (log_px_z + log_pz).mean(axis=0) + entropy(log_var)


def expected_log_prior(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    r"""$\mathbb E_{q}[\log\mathcal N(z; 0, I)] = -\tfrac12\sum_k(\log 2\pi + \mu_k^2 + \sigma_k^2)$, exactly.

    mu, log_var (N, K) -> (N,). With :func:`minivae.gaussian.entropy` it gives
    $-\mathrm{KL}$ in closed form: the identity behind the two ELBO forms.
    """
    return -0.5 * np.sum(math.log(2 * math.pi) + mu * mu + np.exp(log_var), axis=-1)


def nats_to_bits_per_dim(nats: np.ndarray | float, dims: int) -> np.ndarray | float:
    r"""$\text{bits/dim} = \text{nats} / (D \ln 2)$."""
    return nats / (dims * math.log(2))


# ---------------------------------------------------------------- the IWAE bound
class IWCache(NamedTuple):
    weights: np.ndarray  # (S, N) normalized importance weights


def iw_bound_forward(log_w: np.ndarray):
    r"""$\mathcal L_S = \log \tfrac1S \sum_s w_s$ from log-weights $\log w_s = \log p(x, z_s) - \log q(z_s \mid x)$.

    log_w (S, N) -> bound (N,). Log-sum-exp shifted by the max: no overflow.
    With S = 1 it is the single-sample ELBO.
    """
    m = log_w.max(axis=0)                      # (N,)
    e = np.exp(log_w - m)                      # (S, N)
    total = e.sum(axis=0)
    return m + np.log(total / len(log_w)), IWCache(e / total)


def iw_bound_backward(dbound: np.ndarray, cache: IWCache):
    r"""$\partial \mathcal L_S / \partial \log w_s = \tilde w_s = w_s / \sum_{s'} w_{s'}$.

    The gradient of the IWAE bound is the importance-weighted average of the
    per-sample gradients $\nabla \log w_s$ (Burda et al. 2015, eq. 13).
    dbound (N,) -> dlog_w (S, N).
    """
    return dbound * cache.weights


# ---------------------------------------------------------------- free bits
class FreeBitsCache(NamedTuple):
    active: np.ndarray  # (K,) 1.0 where the batch-mean KL exceeds the floor, else 0.0
    n: int


def free_bits_forward(kl_dims: np.ndarray, floor: float):
    r"""The KL term with free bits (Kingma et al. 2016): $\sum_k \max(\lambda, \tfrac1N \sum_n \mathrm{KL}_{n,k})$.

    kl_dims (N, K): per-example, per-dimension KL -> scalar. A dimension whose
    batch-average KL is below the floor $\lambda$ costs a constant $\lambda$ and
    receives no gradient: its first $\lambda$ nats are free, so the encoder is
    not pushed to collapse it to the prior.
    """
    mean_k = kl_dims.mean(axis=0)              # (K,)
    active = (mean_k > floor).astype(kl_dims.dtype)
    return float(np.maximum(mean_k, floor).sum()), FreeBitsCache(active, len(kl_dims))


def free_bits_backward(dvalue: float, cache: FreeBitsCache):
    r"""$\partial / \partial \mathrm{KL}_{n,k} = [\bar{\mathrm{KL}}_k > \lambda] / N$.  -> (N, K)."""
    return np.broadcast_to(dvalue * cache.active / cache.n, (cache.n, len(cache.active)))


# ---------------------------------------------------------------- the training objectives
def elbo_loss(t: Terms, kl_cache: gaussian.KLCache, beta: float = 1.0, free_bits: float = 0.0):
    r"""$L = \frac1N\sum_n \big[-\frac1S\sum_s \log p(x_n\mid z_{s,n}) + \beta\,\mathrm{KL}_n\big]$ and its gradients.

    With ``free_bits`` $= \lambda > 0$ the KL term is $\sum_k \max(\lambda, \overline{\mathrm{KL}}_k)$
    (:func:`free_bits_forward`). Returns (loss, :class:`TermGrads`); ``kl_cache`` is the
    cache of :func:`minivae.gaussian.kl_std_normal_forward` for ``t.kl``.
    """
    S, N = t.log_px_z.shape
    dtype = t.log_px_z.dtype
    dlog_px_z = np.full((S, N), -1.0 / (S * N), dtype=dtype)  # dL / dlog p(x | z_s)
    if not free_bits:
        dmu, dlog_var = gaussian.kl_std_normal_backward(np.full(N, beta / N, dtype=dtype), kl_cache)
        kl_term = beta * float(t.kl.mean())
    else:
        kl_dims, dims_cache = gaussian.kl_std_normal_forward(t.mu[..., None], t.log_var[..., None])  # (N, K)
        value, fb_cache = free_bits_forward(kl_dims, free_bits)
        dmu, dlog_var = gaussian.kl_std_normal_backward(free_bits_backward(beta, fb_cache), dims_cache)
        kl_term, dmu, dlog_var = beta * value, dmu[..., 0], dlog_var[..., 0]  # (N, K) each
    return -float(t.log_px_z.mean()) + kl_term, TermGrads(dlog_px_z, 0.0, dmu, dlog_var)


def iwae_loss(t: Terms, kl_cache=None, beta: float = 1.0, free_bits: float = 0.0):
    r"""$L = -\frac1N\sum_n \mathcal L_S(x_n)$, the importance-weighted bound with the S samples of z
    (Burda et al. 2015), and its gradients: to $\log p(x\mid z_s)$, and to z, mu and log_var
    through $\log p(z_s) - \log q(z_s \mid x)$. Neither beta nor free bits apply (ignored here;
    ``VAE.loss_and_grads`` refuses them)."""
    N = t.log_px_z.shape[1]
    zeros = np.zeros_like(t.log_var)
    log_pz, pz_cache = gaussian.log_density_forward(t.z, zeros, zeros)            # (S, N)
    log_qz, qz_cache = gaussian.log_density_forward(t.z, t.mu, t.log_var)         # (S, N)
    bound, iw_cache = iw_bound_forward(t.log_px_z + log_pz - log_qz)              # (N,)
    dlog_w = iw_bound_backward(np.full(N, -1.0 / N, dtype=t.log_px_z.dtype), iw_cache)  # (S, N)
    dz_p = gaussian.log_density_backward(dlog_w, pz_cache)[0]
    dz_q, dmu_q, dlv_q = gaussian.log_density_backward(-dlog_w, qz_cache)           # (S, N, K) each
    return -float(bound.mean()), TermGrads(dlog_w, dz_p + dz_q, dmu_q.sum(0), dlv_q.sum(0))


class Objective(NamedTuple):
    """A training objective: its loss and gradients from the ELBO's pieces."""
    loss: Callable      # (terms, kl_cache, beta, free_bits) -> (loss, TermGrads)
    takes_beta: bool    # whether beta != 1, KL warm-up and free bits make sense for it


#: name -> Objective: the names accepted by ``VAE.loss_and_grads(objective=...)`` and ``--objective``.
OBJECTIVES = {"elbo": Objective(elbo_loss, True), "iwae": Objective(iwae_loss, False)}
