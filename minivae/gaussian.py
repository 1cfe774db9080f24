r"""Diagonal Gaussians: the encoder's posterior $q(z \mid x) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$.

The encoder outputs $\mu$ and ``log_var`` $= \log \sigma^2$ (never $\sigma$, never
$\log\sigma$). One helper, :func:`std`, turns ``log_var`` into $\sigma$ for the
sampler and the densities (the tests check both readings agree: samples drawn
through :func:`std` have variance $e^{\text{log\_var}}$, and the closed-form KL
matches a Monte Carlo KL through the sampler).

* reparameterization $z = \mu + \sigma \odot \epsilon$, $\epsilon \sim \mathcal N(0, I)$ passed in
  (lesson 3);
* closed-form $\mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, I))$ and the KL
  between two diagonal Gaussians (lesson 2);
* log-density and entropy (lesson 4).

Every function sums over the last axis (the latent dimension $K$).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "LOG_2PI", "LOG_VAR_LIMIT", "std", "clamp_log_var_forward", "clamp_log_var_backward",
    "reparameterize_forward", "reparameterize_backward",
    "kl_std_normal_forward", "kl_std_normal_backward",
    "kl_diag_forward", "kl_diag_backward",
    "log_density_forward", "log_density_backward", "log_density", "entropy",
]

LOG_2PI = float(np.log(2 * np.pi))


LOG_VAR_LIMIT = 30.0


class ClampCache(NamedTuple):
    inside: np.ndarray  # (..., K) bool: where the input lay within the limits


def clamp_log_var_forward(raw: np.ndarray):
    r"""$\log\sigma^2 = \mathrm{clip}(r, -L, L)$ with $L$ = ``LOG_VAR_LIMIT`` = 30: the safe range.

    Every log-variance a network outputs (the encoder's, and the decoder's for
    "gaussian_learned") passes through this clip. It keeps $\sigma^2 \in [10^{-13}, 10^{13}]$,
    so $\sigma$, $1/\sigma^2$, the KL's $e^{\log\sigma^2}$ and their products with values
    of order $10^{12}$ stay finite even in float32 (largest value $3.4\times10^{38}$): a
    diverging layer shows up as a large loss, not as an overflow to inf and NaN.
    Trained models stay far inside (the MNIST models here: $\log\sigma^2$ within
    $[-7, 0.1]$ on the test set), where the clip is the identity and changes nothing.
    raw (..., K) -> log_var (..., K).
    """
    inside = np.abs(raw) <= LOG_VAR_LIMIT  # NaN is outside: it stays NaN and is caught downstream
    return np.clip(raw, -LOG_VAR_LIMIT, LOG_VAR_LIMIT), ClampCache(inside)


def clamp_log_var_backward(dlog_var: np.ndarray, cache: ClampCache) -> np.ndarray:
    r"""$\bar r = \overline{\log\sigma^2}\,[\,|r| \le L\,]$: the clip passes the gradient inside
    the range and blocks it outside (a unit pushed past $\pm L$ stops moving; only a
    diverging run gets there). dlog_var (..., K) -> draw (..., K)."""
    return dlog_var * cache.inside


def std(log_var: np.ndarray) -> np.ndarray:
    r"""$\sigma = \exp(\tfrac12 \log \sigma^2)$."""
    return np.exp(0.5 * log_var)


class ReparamCache(NamedTuple):
    eps: np.ndarray    # (S, N, K)
    sigma: np.ndarray  # (N, K)


def reparameterize_forward(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray):
    r"""$z = \mu + \sigma \odot \epsilon$ with $\sigma = e^{\log\sigma^2 / 2}$.

    mu, log_var (N, K); eps (N, K) or (S, N, K), S samples per example
    -> z of eps's shape. The noise is an argument so that a gradient check can
    hold it fixed.
    """
    sigma = std(log_var)  # (N, K)
    return mu + sigma * eps, ReparamCache(eps, sigma)


def reparameterize_backward(dz: np.ndarray, cache: ReparamCache):
    r"""The gradients of $L$ to mu, log_var and eps, given $\bar z = \partial L / \partial z$.

    dz of eps's shape, (N, K) or (S, N, K) -> dmu (N, K), dlog_var (N, K), deps (eps's
    shape). With S samples, each of mu and log_var feeds every sample's z.
    """
    ### BEGIN SOLUTION task_reparam
    # z_s = mu + sigma * eps_s with sigma = exp(log_var / 2), so dz_s/dmu = 1,
    # dz_s/dlog_var = eps_s * sigma / 2 and dz_s/deps_s = sigma; mu and log_var feed every sample
    lead = tuple(range(dz.ndim - 2))  # the sample axis, if any
    dmu = dz.sum(axis=lead)
    dlog_var = (dz * cache.eps).sum(axis=lead) * (0.5 * cache.sigma)
    deps = dz * cache.sigma
    ### END SOLUTION
    return dmu, dlog_var, deps


class KLCache(NamedTuple):
    mu: np.ndarray          # (..., K)  the inputs of the forward pass
    log_var: np.ndarray     # (..., K)


def kl_std_normal_forward(mu: np.ndarray, log_var: np.ndarray):
    r"""$\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2) \,\|\, \mathcal N(0, I))$ in closed form, in nats.

    mu, log_var (..., K) -> kl (...,), summed over the last axis, and a KLCache. Never
    negative, also after rounding; exactly 0 at mu = 0, log_var = 0.
    """
    ### BEGIN SOLUTION task_kl
    # KL = E_q[log q - log p] = 1/2 sum_k (mu_k^2 + sigma_k^2 - 1 - log sigma_k^2). sigma^2 - 1 comes from
    # expm1(log_var): with sigma^2 first and 1 subtracted after, rounding near sigma^2 = 1 could make the
    # KL slightly negative, while e^v - 1 - v >= 0 holds for the rounded values too.
    var_m1 = np.expm1(log_var)  # (..., K)  sigma^2 - 1
    kl = 0.5 * np.sum(mu * mu + (var_m1 - log_var), axis=-1)  # (...,)
    ### END SOLUTION
    return kl, KLCache(mu, log_var)


def kl_std_normal_backward(dkl: np.ndarray, cache: KLCache):
    r"""The gradients of $L$ to mu and log_var, given $\overline{\mathrm{KL}} = \partial L / \partial \mathrm{KL}$.

    dkl (...,), one value per KL -> dmu (..., K), dlog_var (..., K), for any leading shape.
    """
    ### BEGIN SOLUTION task_kl
    # dKL/dmu_k = mu_k and dKL/dlog sigma_k^2 = (sigma_k^2 - 1) / 2
    d = dkl[..., None]  # (..., 1): one factor per KL value
    dmu = d * cache.mu
    dlog_var = d * 0.5 * np.expm1(cache.log_var)
    ### END SOLUTION
    return dmu, dlog_var


class KLDiagCache(NamedTuple):
    mu_q: np.ndarray        # (..., K)  the inputs of the forward pass
    log_var_q: np.ndarray
    mu_p: np.ndarray
    log_var_p: np.ndarray


def kl_diag_forward(mu_q, log_var_q, mu_p, log_var_p):
    r"""$\mathrm{KL}(\mathcal N(\mu_q, \mathrm{diag}\,\sigma_q^2) \,\|\, \mathcal N(\mu_p, \mathrm{diag}\,\sigma_p^2))$ in closed form, in nats.

    All four (..., K) (broadcastable) -> kl (...,), summed over the last axis, and a
    KLDiagCache. Exactly 0 when q = p and never negative, also after rounding; with
    $\mu_p = 0$, $\log\sigma_p^2 = 0$ it equals :func:`kl_std_normal_forward`.
    """
    ### BEGIN SOLUTION task_kl
    # KL = 1/2 sum_k (log sigma_p^2 - log sigma_q^2 + (sigma_q^2 + (mu_q - mu_p)^2) / sigma_p^2 - 1),
    # written with delta = log sigma_q^2 - log sigma_p^2 as 1/2 sum_k (e^delta - 1 - delta + diff^2 / sigma_p^2):
    # KL(q, q) is then exactly 0, and rounding never makes it negative
    diff = mu_q - mu_p
    delta = log_var_q - log_var_p
    kl = 0.5 * np.sum(np.expm1(delta) - delta + diff * diff * np.exp(-np.asarray(log_var_p)), axis=-1)
    ### END SOLUTION
    return kl, KLDiagCache(mu_q, log_var_q, mu_p, log_var_p)


def kl_diag_backward(dkl: np.ndarray, cache: KLDiagCache):
    r"""The gradients of $L$ to both sides' parameters, given $\overline{\mathrm{KL}}$.

    dkl (...,) -> dmu_q, dlog_var_q, dmu_p, dlog_var_p, each of the broadcast shape
    (..., K) (not reduced over broadcast axes: a caller that broadcast an input sums).
    """
    ### BEGIN SOLUTION task_kl
    # d/dmu_q = -d/dmu_p = (mu_q - mu_p) / sigma_p^2, d/dlog sigma_q^2 = (sigma_q^2 / sigma_p^2 - 1) / 2,
    # d/dlog sigma_p^2 = (1 - (sigma_q^2 + (mu_q - mu_p)^2) / sigma_p^2) / 2
    d = dkl[..., None]  # (..., 1)
    diff = cache.mu_q - cache.mu_p
    ratio_m1 = np.expm1(cache.log_var_q - cache.log_var_p)  # sigma_q^2 / sigma_p^2 - 1
    inv_var_p = np.exp(-np.asarray(cache.log_var_p))
    dmu_q = d * diff * inv_var_p
    dlv_q = d * 0.5 * ratio_m1
    dlv_p = -d * 0.5 * (ratio_m1 + diff * diff * inv_var_p)
    ### END SOLUTION
    return dmu_q, dlv_q, -dmu_q, dlv_p


class LogDensityCache(NamedTuple):
    u: np.ndarray        # (..., K)  standardized residual (z - mu) / sigma
    inv_std: np.ndarray  # (..., K)  1 / sigma


def log_density_forward(z: np.ndarray, mu: np.ndarray, log_var: np.ndarray):
    r"""$\log \mathcal N(z; \mu, \sigma^2) = -\tfrac12 \sum_k (\log 2\pi + \log\sigma_k^2 + (z_k - \mu_k)^2/\sigma_k^2)$.

    z (..., K), mu and log_var broadcastable to it -> logp (...,), in nats.
    """
    inv_std = std(-np.asarray(log_var))
    u = (z - mu) * inv_std
    logp = -0.5 * np.sum(LOG_2PI + log_var + u * u, axis=-1)
    return logp, LogDensityCache(u, inv_std)


def log_density_backward(dlogp: np.ndarray, cache: LogDensityCache):
    r"""$\bar z = -\bar\mu = -\overline{\log p}\,(z - \mu)/\sigma^2$,
    $\ \overline{\log\sigma^2} = \overline{\log p}\, \tfrac12 ((z-\mu)^2/\sigma^2 - 1)$.

    dlogp (...,) -> dz, dmu, dlog_var, each of the broadcast shape (..., K)
    (the caller sums over any axis it broadcast).
    """
    d = dlogp[..., None]
    dz = -d * cache.u * cache.inv_std
    return dz, -dz, d * 0.5 * (cache.u * cache.u - 1)


def log_density(z: np.ndarray, mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """:func:`log_density_forward` without the cache: (..., K) -> (...,)."""
    return log_density_forward(z, mu, log_var)[0]


def entropy(log_var: np.ndarray) -> np.ndarray:
    r"""$H(\mathcal N(\mu, \sigma^2)) = \tfrac12 \sum_k (\log 2\pi e + \log\sigma_k^2)$.  (..., K) -> (...,)."""
    return 0.5 * np.sum(LOG_2PI + 1 + log_var, axis=-1)
