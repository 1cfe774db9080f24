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

import numpy as np

from .gaussian import entropy, log_density

__all__ = ["elbo_kl_form", "elbo_joint_form", "expected_log_prior", "nats_to_bits_per_dim"]


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
