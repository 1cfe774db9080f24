r"""Expectation-maximization for a Gaussian mixture, read as coordinate ascent on the ELBO.

The model has a discrete latent $c \in \{1..C\}$: $p(c) = \pi_c$ and
$p(x \mid c) = \mathcal N(x;\ \mu_c, \Sigma_c)$, with $\Sigma_c$ full (D, D) or diagonal.
For any distribution $q(c)$ over the components of one data point,

$$ \log p(x) = \underbrace{\sum_c q(c)\,\big[\log p(x, c) - \log q(c)\big]}_{\mathrm{ELBO}(q,\ \theta)}
   + \mathrm{KL}\big(q(c) \,\|\, p(c \mid x)\big), \qquad \log p(x, c) = \log\pi_c + \log\mathcal N(x; \mu_c, \Sigma_c), $$

the same identity as a VAE's, with a sum in place of the integral. EM maximizes
$\sum_n \mathrm{ELBO}(q_n, \theta)$ by turns:

* **E-step**, over $q$ with $\theta$ fixed: $q_n(c) = p(c \mid x_n)$, the responsibilities.
  The KL becomes 0, so the bound touches $\log p(x_n)$.
* **M-step**, over $\theta$ with $q$ fixed: the ELBO is a sum of weighted Gaussian
  log-likelihoods and its maximizer is in closed form (:func:`m_step`).

Neither step can lower the ELBO, and after each E-step the ELBO *is* the
log-likelihood, so $\log p(x \mid \theta_{t+1}) \ge \mathrm{ELBO}(q_t, \theta_{t+1}) \ge
\mathrm{ELBO}(q_t, \theta_t) = \log p(x \mid \theta_t)$: the log-likelihood never decreases.

**Hard EM** restricts $q$ to one-hot distributions. The best one-hot $q_n$ puts all
its mass on $\arg\max_c p(c \mid x_n)$, its entropy is 0, and its ELBO is
$\log p(x_n, c_n) \le \log p(x_n)$, an equality only when the posterior is already
one-hot: the gap never closes. With equal weights and one shared spherical
covariance, hard EM is k-means.

A VAE is the case where the E-step cannot be done exactly: $q(z \mid x)$ comes from an
encoder, the gap stays open, and both steps become gradient steps on the same ELBO.

Shapes: data ``x`` (N, D); responsibilities ``q`` (N, C), rows summing to 1.
Everything is float64 and in nats. Taught in lesson 10.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .gaussian import LOG_2PI, log_density

__all__ = ["GaussianMixture", "COVARIANCES", "log_joint", "log_likelihood", "e_step", "hard_e_step",
           "elbo", "m_step", "init_mixture", "EMTrace", "fit"]

#: the covariance structures :func:`m_step` can fit.
COVARIANCES = ("full", "diag")


class GaussianMixture(NamedTuple):
    r"""The parameters $\theta$ of a mixture of C Gaussians in D dimensions."""
    weights: np.ndarray  # (C,)  mixing proportions pi_c >= 0, summing to 1
    means: np.ndarray    # (C, D)
    covs: np.ndarray     # (C, D, D) full covariances, or (C, D) diagonal variances

    @property
    def covariance(self) -> str:
        """"full" for (C, D, D) covariances, "diag" for (C, D) variances."""
        return "full" if self.covs.ndim == 3 else "diag"


def _as_x(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"x must be a finite (N, D) array, got shape {x.shape}")
    return x


def _check_q(q, n: int) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != n:
        raise ValueError(f"q must have shape (N, C) with N = {n}, got {q.shape}")
    if np.any(q < 0) or not np.allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-9):
        raise ValueError("each row of q must be a distribution: entries >= 0 summing to 1")
    return q


_COLLAPSED = ("the covariance of component {} is not positive definite: the component has collapsed "
              "onto too few points (its likelihood is unbounded there); pass reg > 0 to m_step/fit, "
              "or start from another initialization")


def log_joint(x: np.ndarray, gmm: GaussianMixture) -> np.ndarray:
    r"""$\log p(x_n, c) = \log\pi_c + \log\mathcal N(x_n;\ \mu_c, \Sigma_c)$.  x (N, D) -> (N, C).

    Full covariances go through their Cholesky factors $\Sigma_c = L_cL_c^\top$:
    with $u = L_c^{-1}(x - \mu_c)$,
    $\log\mathcal N = -\tfrac12\big(D\log 2\pi + 2\sum_d \log L_{c,dd} + \lVert u\rVert^2\big)$.
    Diagonal ones use :func:`minivae.gaussian.log_density` with $\log\sigma^2$.
    A component of weight 0 gives $-\infty$ (it can explain nothing). A singular
    covariance (a component collapsed onto fewer than D + 1 points, where the
    likelihood has no maximum) raises ValueError.
    """
    x = _as_x(x)
    means = np.asarray(gmm.means, dtype=np.float64)                     # (C, D)
    covs = np.asarray(gmm.covs, dtype=np.float64)
    if gmm.covariance == "diag":
        if np.any(covs <= 0):
            raise ValueError(_COLLAPSED.format(int(np.argwhere(covs <= 0)[0, 0])))
        log_pdf = log_density(x[:, None, :], means, np.log(covs))      # (N, C)
    else:
        D = x.shape[1]
        try:
            L = np.linalg.cholesky(covs)                               # (C, D, D)
        except np.linalg.LinAlgError:
            bad = [c for c in range(len(covs)) if np.linalg.eigvalsh(covs[c])[0] <= 0]
            raise ValueError(_COLLAPSED.format(bad[0] if bad else "?")) from None
        diff = (x[None, :, :] - means[:, None, :]).transpose(0, 2, 1)  # (C, D, N)
        u = np.linalg.solve(L, diff)                                   # (C, D, N)  L^{-1}(x - mu)
        log_det = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)  # (C,)
        log_pdf = -0.5 * (D * LOG_2PI + log_det[None, :] + np.sum(u * u, axis=1).T)  # (N, C)
    with np.errstate(divide="ignore"):
        log_pi = np.log(np.asarray(gmm.weights, dtype=np.float64))    # (C,), -inf for weight 0
    return log_pdf + log_pi


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """log sum_c exp(a[:, c]) for a (N, C), shifted by the row maximum: no overflow."""
    m = a.max(axis=1, keepdims=True)                                   # (N, 1)
    return (m + np.log(np.exp(a - m).sum(axis=1, keepdims=True)))[:, 0]  # (N,)


def log_likelihood(x: np.ndarray, gmm: GaussianMixture) -> np.ndarray:
    r"""$\log p(x_n) = \log\sum_c \pi_c\,\mathcal N(x_n;\ \mu_c, \Sigma_c)$.  x (N, D) -> (N,), in nats."""
    return _logsumexp(log_joint(x, gmm))


def e_step(x: np.ndarray, gmm: GaussianMixture) -> np.ndarray:
    r"""The responsibilities $q_n(c) = p(c \mid x_n) = \pi_c\mathcal N(x_n; \mu_c, \Sigma_c) / p(x_n)$.

    x (N, D) -> q (N, C), rows summing to 1: the maximizer of the ELBO over all
    $q$, where $\mathrm{ELBO}(q, \theta) = \log p(x)$.
    """
    lj = log_joint(x, gmm)                                             # (N, C)
    return np.exp(lj - _logsumexp(lj)[:, None])


def hard_e_step(x: np.ndarray, gmm: GaussianMixture) -> np.ndarray:
    r"""The best one-hot $q$: all mass on $\arg\max_c p(c \mid x_n)$.  x (N, D) -> q (N, C) of 0s and 1s.

    Among one-hot distributions the ELBO is $\log p(x_n, c)$, so this maximizes it;
    it is still below $\log p(x_n)$ by $-\log p(c_n \mid x_n) \ge 0$.
    """
    lj = log_joint(x, gmm)                                             # (N, C)
    return np.eye(lj.shape[1])[lj.argmax(axis=1)]


def elbo(x: np.ndarray, gmm: GaussianMixture, q: np.ndarray) -> np.ndarray:
    r"""$\mathrm{ELBO}(q_n, \theta) = \sum_c q_n(c)\big[\log p(x_n, c) - \log q_n(c)\big]$, per data point.

    x (N, D), q (N, C) -> (N,), in nats; terms with $q_n(c) = 0$ count 0
    ($0\log 0 = 0$, whatever $\log p(x_n, c)$ is). Equals
    $\log p(x_n) - \mathrm{KL}(q_n \,\|\, p(c \mid x_n)) \le \log p(x_n)$.
    """
    x = _as_x(x)
    q = _check_q(q, len(x))
    lj = log_joint(x, gmm)                                             # (N, C)
    if q.shape != lj.shape:
        raise ValueError(f"q has {q.shape[1]} components, the mixture {lj.shape[1]}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * (lj - np.log(q)), 0.0)             # (N, C)
    return terms.sum(axis=1)


def m_step(x: np.ndarray, q: np.ndarray, covariance: str = "full", reg: float = 0.0) -> GaussianMixture:
    r"""The parameters that maximize $\sum_n \mathrm{ELBO}(q_n, \theta)$ for fixed $q$, in closed form.

    With $N_c = \sum_n q_{nc}$, the ELBO is, up to terms without $\theta$,
    $\sum_c N_c\log\pi_c + \sum_{n,c} q_{nc}\log\mathcal N(x_n; \mu_c, \Sigma_c)$: a
    Lagrange multiplier for $\sum_c\pi_c = 1$ and the weighted Gaussian maximum
    likelihood give

    $$ \pi_c = \frac{N_c}{N}, \qquad \mu_c = \frac1{N_c}\sum_n q_{nc}\,x_n, \qquad
       \Sigma_c = \frac1{N_c}\sum_n q_{nc}\,(x_n - \mu_c)(x_n - \mu_c)^\top $$

    (``"diag"`` keeps the diagonal of $\Sigma_c$, which maximizes the ELBO among
    diagonal covariances). x (N, D), q (N, C) -> :class:`GaussianMixture`.

    A component with $N_c = 0$ gets weight 0; its ELBO terms are all 0 whatever its
    mean and covariance, which are then set to those of the whole data set. ``reg``
    adds $\mathrm{reg}\cdot I$ to every covariance, a guard against a component
    collapsing onto a few points; with ``reg > 0`` the step is no longer the exact
    maximizer, and the guarantee that it never lowers the ELBO holds only for
    ``reg = 0``.
    """
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}")
    if not (math.isfinite(reg) and reg >= 0):
        raise ValueError(f"reg must be a number >= 0, got {reg!r}")
    x = _as_x(x)
    q = _check_q(q, len(x))
    N, D = x.shape
    Nc = q.sum(axis=0)                                                 # (C,)
    empty = Nc <= 0
    safe = np.where(empty, 1.0, Nc)                                    # (C,), no division by 0
    means = (q.T @ x) / safe[:, None]                                  # (C, D)
    means[empty] = x.mean(axis=0)
    diff = x[None, :, :] - means[:, None, :]                           # (C, N, D)
    wdiff = q.T[:, :, None] * diff                                     # (C, N, D)  q_nc (x_n - mu_c)
    if covariance == "full":
        covs = np.einsum("cnd,cne->cde", wdiff, diff) / safe[:, None, None]  # (C, D, D)
        covs = 0.5 * (covs + covs.transpose(0, 2, 1))                  # exactly symmetric
        covs[empty] = np.cov(x, rowvar=False, bias=True).reshape(D, D)
        covs += reg * np.eye(D)
    else:
        covs = np.sum(wdiff * diff, axis=1) / safe[:, None]            # (C, D)
        covs[empty] = x.var(axis=0)
        covs += reg
    return GaussianMixture(Nc / N, means, covs)


def init_mixture(x: np.ndarray, n_components: int, rng: np.random.Generator,
                 covariance: str = "full") -> GaussianMixture:
    r"""A starting point for EM: k-means++ means, the data's covariance for all, equal weights.

    k-means++ (Arthur & Vassilvitskii 2007) picks the first mean uniformly among
    the data points and each next one with probability proportional to the squared
    distance to the nearest mean picked so far, so the means start spread out.
    x (N, D) -> :class:`GaussianMixture` with C = ``n_components``.
    """
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}")
    x = _as_x(x)
    N, D = x.shape
    if int(n_components) != n_components or not 1 <= n_components <= N:
        raise ValueError(f"n_components must be an integer in [1, N = {N}], got {n_components!r}")
    C = int(n_components)
    means = np.empty((C, D))                                           # (C, D)
    means[0] = x[rng.integers(N)]
    d2 = np.sum((x - means[0]) ** 2, axis=1)                           # (N,) squared distance to nearest mean
    for c in range(1, C):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(N, 1.0 / N)
        means[c] = x[rng.choice(N, p=p)]
        d2 = np.minimum(d2, np.sum((x - means[c]) ** 2, axis=1))
    if covariance == "full":
        covs = np.broadcast_to(np.cov(x, rowvar=False, bias=True).reshape(D, D), (C, D, D)).copy()
    else:
        covs = np.broadcast_to(x.var(axis=0), (C, D)).copy()
    return GaussianMixture(np.full(C, 1.0 / C), means, covs)


class EMTrace(NamedTuple):
    r"""What :func:`fit` records, each a mean over the data points, in nats.

    Iteration t starts from $\theta_t$: the E-step gives $q_t$, the M-step $\theta_{t+1}$.
    """
    log_lik: np.ndarray   # (T+1,) log p(x | theta_t) for t = 0..T
    elbo_e: np.ndarray    # (T,)   ELBO(q_t, theta_t): after the E-step (= log_lik[t] for soft EM)
    elbo_m: np.ndarray    # (T,)   ELBO(q_t, theta_{t+1}): after the M-step


def fit(x: np.ndarray, gmm: GaussianMixture, n_iter: int, hard: bool = False,
        reg: float = 0.0) -> tuple[GaussianMixture, EMTrace]:
    r"""Run ``n_iter`` iterations of soft EM (``hard=False``) or hard EM from ``gmm``.

    Each iteration is :func:`e_step` (or :func:`hard_e_step`) then :func:`m_step`,
    keeping ``gmm``'s covariance structure. x (N, D) -> (the final mixture,
    :class:`EMTrace`). For soft EM ``trace.log_lik`` never decreases (with
    ``reg = 0``); for hard EM the ELBO never decreases and stays below it.
    """
    x = _as_x(x)
    if int(n_iter) != n_iter or n_iter < 0:
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
    log_lik, elbo_e, elbo_m = [float(log_likelihood(x, gmm).mean())], [], []
    for _ in range(int(n_iter)):
        q = hard_e_step(x, gmm) if hard else e_step(x, gmm)            # (N, C)
        elbo_e.append(float(elbo(x, gmm, q).mean()))
        gmm = m_step(x, q, gmm.covariance, reg)
        elbo_m.append(float(elbo(x, gmm, q).mean()))
        log_lik.append(float(log_likelihood(x, gmm).mean()))
    return gmm, EMTrace(np.array(log_lik), np.array(elbo_e), np.array(elbo_m))
