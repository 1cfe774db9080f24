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
from typing import NamedTuple

import numpy as np

from .gaussian import entropy, log_density

__all__ = ["elbo_kl_form", "elbo_joint_form", "expected_log_prior", "nats_to_bits_per_dim",
           "iw_bound_forward", "iw_bound_backward", "free_bits_forward", "free_bits_backward"]


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
