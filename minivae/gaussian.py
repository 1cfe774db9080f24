r"""Diagonal Gaussians: the encoder's posterior $q(z \mid x) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$.

The encoder outputs $\mu$ and ``log_var`` $= \log \sigma^2$ (never $\sigma$, never
$\log\sigma$). One helper, :func:`std`, turns ``log_var`` into $\sigma$ for the
sampler and the densities; the KLs need $\sigma^2 - 1$, which they compute as
``expm1(log_var)`` for accuracy (the tests check both readings agree:
samples drawn through :func:`std` have variance $e^{\text{log\_var}}$, and the
closed-form KL matches a Monte Carlo KL through the sampler).

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
    r"""$\bar\mu = \sum_s \bar z_s$, $\ \overline{\log\sigma^2} = \sum_s \bar z_s \odot \epsilon_s \odot \sigma / 2$.

    dz of eps's shape -> dmu (N, K), dlog_var (N, K), deps (eps's shape).
    ($\partial\sigma/\partial\log\sigma^2 = \sigma/2$.)
    """
    ### BEGIN SOLUTION task_reparam
    lead = tuple(range(dz.ndim - 2))  # the sample axis, if any
    dmu = dz.sum(axis=lead)
    dlog_var = (dz * cache.eps).sum(axis=lead) * (0.5 * cache.sigma)
    return dmu, dlog_var, dz * cache.sigma
    ### END SOLUTION


class KLCache(NamedTuple):
    mu: np.ndarray          # (N, K)
    var_m1: np.ndarray      # (N, K)  sigma^2 - 1


def kl_std_normal_forward(mu: np.ndarray, log_var: np.ndarray):
    r"""$\mathrm{KL}(\mathcal N(\mu, \sigma^2) \| \mathcal N(0, I)) = \tfrac12 \sum_k (\mu_k^2 + \sigma_k^2 - 1 - \log\sigma_k^2)$.

    mu, log_var (N, K) -> kl (N,), in nats. $\sigma^2 - 1$ is computed as
    ``expm1(log_var)``: with $\sigma^2$ first and 1 subtracted after, rounding
    near $\sigma^2 = 1$ could make the KL slightly negative; $e^v - 1 - v \ge 0$
    holds for the rounded values too.
    """
    ### BEGIN SOLUTION task_kl
    var_m1 = np.expm1(log_var)  # (N, K)  sigma^2 - 1
    kl = 0.5 * np.sum(mu * mu + (var_m1 - log_var), axis=-1)  # (N,)
    return kl, KLCache(mu, var_m1)
    ### END SOLUTION


def kl_std_normal_backward(dkl: np.ndarray, cache: KLCache):
    r"""$\bar\mu = \overline{\mathrm{KL}}\,\mu$, $\ \overline{\log\sigma^2} = \overline{\mathrm{KL}}\,(\sigma^2 - 1)/2$.

    dkl (N,) -> dmu (N, K), dlog_var (N, K).
    """
    ### BEGIN SOLUTION task_kl
    d = dkl[..., None]  # (N, 1)
    return d * cache.mu, d * 0.5 * cache.var_m1
    ### END SOLUTION


class KLDiagCache(NamedTuple):
    diff: np.ndarray       # (N, K)  mu_q - mu_p
    ratio_m1: np.ndarray   # (N, K)  sigma_q^2 / sigma_p^2 - 1
    inv_var_p: np.ndarray  # (N, K)  1 / sigma_p^2


def kl_diag_forward(mu_q, log_var_q, mu_p, log_var_p):
    r"""$\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \| \mathcal N(\mu_p, \sigma_p^2))
    = \tfrac12 \sum_k \big(\log\sigma_{p,k}^2 - \log\sigma_{q,k}^2
    + (\sigma_{q,k}^2 + (\mu_{q,k} - \mu_{p,k})^2) / \sigma_{p,k}^2 - 1\big)$.

    All four (N, K) (broadcastable) -> kl (N,). Written with
    $\delta = \log\sigma_q^2 - \log\sigma_p^2$ as
    $\tfrac12\sum_k (e^{\delta_k} - 1 - \delta_k + (\mu_{q,k}-\mu_{p,k})^2/\sigma_{p,k}^2)$, so that
    KL(q, q) is exactly 0 and rounding never makes it negative. With $\mu_p = 0$,
    $\log\sigma_p^2 = 0$ it equals :func:`kl_std_normal_forward`.
    """
    ### BEGIN SOLUTION task_kl
    diff = mu_q - mu_p
    delta = log_var_q - log_var_p
    ratio_m1 = np.expm1(delta)  # sigma_q^2 / sigma_p^2 - 1
    inv_var_p = np.square(std(-np.asarray(log_var_p)))
    kl = 0.5 * np.sum(ratio_m1 - delta + diff * diff * inv_var_p, axis=-1)
    return kl, KLDiagCache(diff, ratio_m1, inv_var_p)
    ### END SOLUTION


def kl_diag_backward(dkl: np.ndarray, cache: KLDiagCache):
    r"""Gradients to both sides' parameters.

    $\bar\mu_q = -\bar\mu_p = \overline{\mathrm{KL}}\, (\mu_q - \mu_p)/\sigma_p^2$,
    $\overline{\log\sigma_q^2} = \overline{\mathrm{KL}}\, \tfrac12(\sigma_q^2/\sigma_p^2 - 1)$,
    $\overline{\log\sigma_p^2} = \overline{\mathrm{KL}}\, \tfrac12(1 - (\sigma_q^2 + (\mu_q-\mu_p)^2)/\sigma_p^2)$.

    dkl (N,) -> dmu_q, dlog_var_q, dmu_p, dlog_var_p, each (N, K) (not reduced
    over broadcast axes).
    """
    ### BEGIN SOLUTION task_kl
    d = dkl[..., None]  # (N, 1)
    dmu_q = d * cache.diff * cache.inv_var_p
    dlv_q = d * 0.5 * cache.ratio_m1
    dlv_p = -d * 0.5 * (cache.ratio_m1 + cache.diff * cache.diff * cache.inv_var_p)
    return dmu_q, dlv_q, -dmu_q, dlv_p
    ### END SOLUTION


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
