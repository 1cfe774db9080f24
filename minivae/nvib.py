r"""The Nonparametric Variational Information Bottleneck (NVIB) in miniature.

James Henderson and Fabio Fehr, *A VAE for Transformers with Nonparametric
Variational Information Bottleneck*, ICLR 2023 (arXiv:2207.13529).

A transformer encoder outputs a *set* of vectors whose size varies with the input.
NVIB reads that set as a mixture distribution and makes it the latent of a VAE:
each of the $n$ vectors becomes a Gaussian component $\mathcal N(\mu_i, \sigma_i^2)$ with a
pseudo-count $\alpha_i > 0$, and a prior component $\mathcal N(0, I)$ with pseudo-count
$\alpha_0$ is added. The latent is the posterior of a Dirichlet process,

$$ F = \sum_{i=0}^{n} \pi_i\, \delta_{z_i}, \qquad (\pi_0, \ldots, \pi_n) \sim \mathrm{Dir}(\alpha_0, \ldots, \alpha_n),
   \qquad z_i \sim \mathcal N(\mu_i, \sigma_i^2), $$

so the number of components with non-negligible weight is itself learned. The
decoder reads $F$ with **denoising attention**: a query $u$ is a noisy observation
of a vector drawn from $F$, and the output is its posterior mean. This module has:

* scaled dot-product attention, the reference (:func:`attention_forward`);
* denoising attention (:func:`denoising_attention_forward`), with the limits in
  which it *is* dot-product attention, derived in its docstring;
* the NVIB layer (:func:`nvib_forward`): prior component, Gaussian
  reparameterization and an approximate Dirichlet reparameterization in
  training, the deterministic mean mixture in evaluation;
* the two KL regularizers: the Gaussian KL weighted by the expected weights
  $\alpha_i / \sum_j\alpha_j$ (:func:`kl_gaussian_weighted_forward`) and the KL between
  Dirichlets (:func:`kl_dirichlet_forward`, with $\log\Gamma$ and $\psi$ from
  :mod:`minivae.special`).

Every op is a forward/backward pair with an immutable cache and is checked
against finite differences in ``tests/test_nvib.py``. Taught in lesson 13; the set
autoencoder built from these ops is :mod:`minivae.setae`.

Departures from the published code, each a simplification: the Gaussian KL
is summed over the latent dimension (the house convention) rather than
averaged; the Dirichlet KL is the exact KL between the posterior and a
symmetric prior Dirichlet rather than the published "expected-$K$" version
(which replaces every $\alpha_i$ by their mean); and the Gamma samples behind the
Dirichlet sample use the rejection-free Marsaglia–Tsang transform (documented at
:func:`log_gamma_sample_forward`) instead of implicit reparameterization gradients.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import gaussian
from .special import digamma, lgamma, trigamma

__all__ = [
    "softmax", "attention_forward", "attention_backward",
    "default_query_var", "denoising_attention_forward", "denoising_attention_backward",
    "log_gamma_sample_forward", "log_gamma_sample_backward",
    "dirichlet_sample_forward", "dirichlet_sample_backward",
    "DPPosterior", "dp_posterior", "NVIBNoise", "draw_noise", "nvib_forward", "nvib_backward",
    "kl_gaussian_weighted_forward", "kl_gaussian_weighted_backward",
    "kl_dirichlet_forward", "kl_dirichlet_backward", "EVAL_THRESHOLD",
]


def _t(a: np.ndarray) -> np.ndarray:
    """Swap the last two axes: (..., A, B) -> (..., B, A)."""
    return np.swapaxes(a, -1, -2)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""$\mathrm{softmax}(a)_i = e^{a_i - \max a} / \sum_j e^{a_j - \max a}$; entries of $-\infty$ get weight 0."""
    a = logits - np.max(logits, axis=axis, keepdims=True)
    e = np.exp(a)
    return e / np.sum(e, axis=axis, keepdims=True)


def _softmax_backward(dp: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""$\bar a = p \odot (\bar p - \sum_j p_j \bar p_j)$, the softmax's Jacobian-vector product."""
    return p * (dp - np.sum(p * dp, axis=axis, keepdims=True))


# ---------------------------------------------------------------- scaled dot-product attention

class AttentionCache(NamedTuple):
    q: np.ndarray      # (..., T, d)
    k: np.ndarray      # (..., n, d)
    v: np.ndarray      # (..., n, e)
    attn: np.ndarray   # (..., T, n)  softmax weights
    scale: float       # 1 / sqrt(d)


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray):
    r"""Scaled dot-product attention, $y = \mathrm{softmax}(q k^\top / \sqrt d)\, v$ (Vaswani et al. 2017).

    q (..., T, d), k (..., n, d), v (..., n, e) with equal leading axes -> y (..., T, e).
    The weights are ``cache.attn`` (..., T, n); each row sums to 1.
    """
    q, k, v = (np.asarray(a) for a in (q, k, v))
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"attention needs q (..., T, d), k (..., n, d), v (..., n, e) with the same number "
                         f"of axes, got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape} "
                         "(need q (..., T, d), k (..., n, d), v (..., n, e))")
    scale = 1.0 / np.sqrt(q.shape[-1])
    attn = softmax(q @ _t(k) * scale)  # (..., T, n)
    return attn @ v, AttentionCache(q, k, v, attn, scale)


def attention_backward(dy: np.ndarray, cache: AttentionCache):
    r"""$\bar v = A^\top \bar y$, $\bar S = A \odot (\bar A - \mathrm{rowsum}(A \odot \bar A))$ with
    $\bar A = \bar y v^\top$, then $\bar q = \bar S k / \sqrt d$, $\bar k = \bar S^\top q / \sqrt d$.

    dy (..., T, e) -> dq (..., T, d), dk (..., n, d), dv (..., n, e).
    """
    q, k, v, attn, scale = cache
    dS = _softmax_backward(dy @ _t(v), attn) * scale  # (..., T, n)
    return dS @ k, _t(dS) @ q, _t(attn) @ dy


# ---------------------------------------------------------------- denoising attention

def default_query_var(d: int) -> float:
    r"""$\sigma_u^2 = \sqrt d$: the query variance that turns the $1/\sqrt d$ of dot-product attention
    into the Gaussian's $1/\sigma_u^2$ (the published choice)."""
    return float(np.sqrt(d))


class DenoisingCache(NamedTuple):
    u: np.ndarray        # (..., T, d)  queries
    z: np.ndarray        # (..., n, d)  component means
    var: np.ndarray      # (..., n, d)  component variances (broadcast to d)
    w: np.ndarray        # (..., n, d)  1 / (var + query_var)
    resp: np.ndarray     # (..., T, n)  posterior responsibilities r_ti
    lik: np.ndarray      # (..., T, n)  r_ti / pi_i, finite even where pi_i = 0
    rb: np.ndarray       # (..., T, d)  sum_i r_ti var_i / (var_i + query_var)
    a: np.ndarray        # (..., n, d)  query_var z_i / (var_i + query_var)
    b: np.ndarray        # (..., n, d)  var_i / (var_i + query_var)
    query_var: float
    scalar_var: bool     # var was given per component, (..., n)


def _check_mixture(u, z, var, pi):
    u, z, var, pi = (np.asarray(a, dtype=np.result_type(a, 0.5)) for a in (u, z, var, pi))
    if u.ndim < 2 or z.ndim != u.ndim:
        raise ValueError(f"denoising attention needs queries u (..., T, d) and means z (..., n, d) with the "
                         f"same number of axes, got u {u.shape}, z {z.shape}")
    if u.shape[:-2] != z.shape[:-2] or u.shape[-1] != z.shape[-1]:
        raise ValueError(f"queries u {u.shape} and means z {z.shape} must agree on the leading axes and on d")
    if pi.shape != z.shape[:-1]:
        raise ValueError(f"weights pi must have shape {z.shape[:-1]} (one per component), got {pi.shape}")
    if var.shape not in (z.shape, z.shape[:-1]):
        raise ValueError(f"variances must have shape {z.shape} (per dimension) or {z.shape[:-1]} "
                         f"(one per component), got {var.shape}")
    if np.any(var < 0) or np.any(pi < 0):
        raise ValueError("variances and weights must be >= 0")
    if not np.all(np.any(pi > 0, axis=-1)):
        raise ValueError("every mixture needs at least one component with positive weight")
    return u, z, var, pi


def denoising_attention_forward(u: np.ndarray, z: np.ndarray, var: np.ndarray, pi: np.ndarray,
                                query_var: float | None = None):
    r"""Attention as Bayesian denoising of the query under a Gaussian mixture.

    The latent is the mixture $F = \sum_i \pi_i \mathcal N(z_i, \mathrm{diag}\,\sigma_i^2)$. A query is a
    noisy observation $u = v + \eta$ of a vector $v \sim F$, with $\eta \sim \mathcal N(0, \sigma_u^2 I)$.
    The output is the posterior mean $\mathbb E[v \mid u]$. By Bayes' rule, with $s_i = \sigma_i^2 + \sigma_u^2$:

    $$ r_i(u) = p(i \mid u) = \mathrm{softmax}_i\Big(\log\pi_i - \tfrac12\sum_k\big[\log s_{ik} + (u_k - z_{ik})^2/s_{ik}\big]\Big), $$
    $$ \mathbb E[v \mid u, i] = \frac{\sigma_u^2\, z_i + \sigma_i^2\, u}{\sigma_i^2 + \sigma_u^2}, \qquad
       y(u) = \sum_i r_i(u)\, \frac{\sigma_u^2\, z_i + \sigma_i^2\, u}{\sigma_i^2 + \sigma_u^2} $$

    (all products elementwise in $k$). The responsibilities are attention weights,
    the component means are the values, and a wide component hands the query back.

    **The dot-product limit.** With $\sigma_i^2 = 0$, $s_{ik} = \sigma_u^2$ and
    $(u - z_i)^2 = u^2 - 2u\cdot z_i + z_i^2$; the $u^2$ and $\log s$ terms are the same for every $i$
    and cancel in the softmax:

    $$ y(u) = \sum_i \mathrm{softmax}_i\Big(\frac{u \cdot z_i}{\sigma_u^2} - \frac{\lVert z_i\rVert^2}{2\sigma_u^2} + \log\pi_i\Big)\, z_i . $$

    With $\sigma_u^2 = \sqrt d$ (the default) this is scaled dot-product attention with keys
    = values = $z_i$, *plus* the bias $\log\pi_i - \lVert z_i\rVert^2/(2\sqrt d)$. It is exactly
    $\mathrm{softmax}(u\cdot z_i/\sqrt d)$-weighted attention when (a) the weights are equal and the keys
    have equal norms, or (b) $\pi_i \propto \exp(\lVert z_i\rVert^2 / (2\sqrt d))$, which cancels the norm
    term. Other limits: $\sigma_u^2 \to 0$ gives the nearest component (hard attention),
    $\sigma_u^2 \to \infty$ the mixture mean $\sum_i\pi_i z_i/\sum_i\pi_i$, and $\sigma_i^2 \to \infty$ returns $u$.

    u (..., T, d) queries; z (..., n, d) means; var (..., n, d) or (..., n) variances
    $\sigma_i^2 \ge 0$ (0 is allowed: point atoms); pi (..., n) weights $\ge 0$, not
    necessarily normalized (a zero weight removes a component); query_var
    $\sigma_u^2 > 0$, default $\sqrt d$. Leading axes of u and z must be equal.
    -> y (..., T, d). The responsibilities are ``cache.resp`` (..., T, n).
    """
    u, z, var_in, pi = _check_mixture(u, z, var, pi)
    d = u.shape[-1]
    q = default_query_var(d) if query_var is None else float(query_var)
    if not q > 0:
        raise ValueError(f"query_var must be > 0, got {query_var!r}")
    scalar_var = var_in.shape == z.shape[:-1]
    var_ = np.broadcast_to(var_in[..., None], z.shape) if scalar_var else var_in  # (..., n, d)
    w = 1.0 / (var_ + q)                                                          # (..., n, d)
    quad = (u * u) @ _t(w) - 2 * u @ _t(z * w) + np.sum(z * z * w, axis=-1)[..., None, :]  # (..., T, n)
    ell = 0.5 * np.sum(np.log(w), axis=-1)[..., None, :] - 0.5 * quad             # log N(u; z_i, s_i) + c
    with np.errstate(divide="ignore"):
        logits = np.log(pi)[..., None, :] + ell                                   # (..., T, n)
    top = np.max(logits, axis=-1, keepdims=True)
    lse = top + np.log(np.sum(np.exp(logits - top), axis=-1, keepdims=True))      # (..., T, 1)
    lik = np.exp(ell - lse)                                                       # (..., T, n)
    resp = pi[..., None, :] * lik                                                 # (..., T, n)
    a = q * z * w                                                                 # (..., n, d)
    b = var_ * w                                                                  # (..., n, d)
    rb = resp @ b                                                                 # (..., T, d)
    y = resp @ a + u * rb
    return y, DenoisingCache(u, z, var_, w, resp, lik, rb, a, b, q, scalar_var)


def denoising_attention_backward(dy: np.ndarray, cache: DenoisingCache):
    r"""Gradients of :func:`denoising_attention_forward` for all five inputs.

    With $w_i = 1/s_i$, $a_i = \sigma_u^2 z_i w_i$, $b_i = \sigma_i^2 w_i$, the output is
    $y = R a + u \odot (R b)$, $R$ the (T, n) responsibilities, so
    $\bar R = \bar y a^\top + (\bar y \odot u) b^\top$, $\bar a = R^\top \bar y$, $\bar b = R^\top(\bar y\odot u)$,
    and the softmax gives $\bar\ell_{ti} = r_{ti}(\bar r_{ti} - \sum_j r_{tj}\bar r_{tj})$. The logit
    $\ell_{ti} = \log\pi_i + \tfrac12\sum_k[\log w_{ik} - (u_{tk} - z_{ik})^2 w_{ik}]$ then gives

    $$ \bar u_t \mathrel{+}= \sum_i \bar\ell_{ti} (z_i - u_t) w_i, \quad
       \bar z_i \mathrel{+}= \sum_t \bar\ell_{ti} (u_t - z_i) w_i, \quad
       \bar w_i \mathrel{+}= \tfrac12\sum_t \bar\ell_{ti}\big(1/w_i - (u_t - z_i)^2\big), $$

    and $\bar\pi_i = \sum_t \bar\ell_{ti} / \pi_i$, computed as $\sum_t (r_{ti}/\pi_i)(\bar r_{ti} - \sum_j r_{tj}\bar r_{tj})$
    with $r_{ti}/\pi_i$ = ``cache.lik``, which stays finite where $\pi_i = 0$. Finally
    $s = \sigma^2 + \sigma_u^2$ and $w = 1/s$ give $\bar s = -w^2 \bar w$, added to $\bar\sigma^2$ and, summed, to $\bar\sigma_u^2$.

    dy (..., T, d) -> du (..., T, d), dz (..., n, d), dvar (var's shape), dpi (..., n),
    dquery_var (a float).
    """
    u, z, var, w, resp, lik, rb, a, b, q, scalar_var = cache
    dr = dy @ _t(a) + (dy * u) @ _t(b)                            # (..., T, n)
    g = dr - np.sum(resp * dr, axis=-1, keepdims=True)            # (..., T, n)
    dl = resp * g                                                 # d logits
    dpi = np.sum(lik * g, axis=-2)                                # (..., n)
    c = np.sum(dl, axis=-2)[..., None]                            # (..., n, 1)
    Gu = _t(dl) @ u                                               # (..., n, d)
    Gu2 = _t(dl) @ (u * u)                                        # (..., n, d)
    du = dy * rb - u * (dl @ w) + dl @ (z * w)                    # (..., T, d)
    da = _t(resp) @ dy                                            # (..., n, d)
    db = _t(resp) @ (dy * u)                                      # (..., n, d)
    dz = w * Gu - z * w * c + q * w * da
    dw = 0.5 * c / w - 0.5 * (Gu2 - 2 * z * Gu + z * z * c) + q * z * da + var * db
    ds = -w * w * dw
    dvar = w * db + ds
    dq = float(np.sum(z * w * da) + np.sum(ds))
    return du, dz, (dvar.sum(axis=-1) if scalar_var else dvar), dpi, dq


# ---------------------------------------------------------------- Gamma and Dirichlet samples

GAMMA_T_MIN = 1e-3  # lower clip of Marsaglia-Tsang's 1 + c*eps (reached with prob. < 1e-2)


class GammaCache(NamedTuple):
    alpha: np.ndarray  # (...,)
    d: np.ndarray      # (...,)  alpha + 1 - 1/3
    c: np.ndarray      # (...,)  1 / sqrt(9 d)
    t: np.ndarray      # (...,)  1 + c eps, clipped below at GAMMA_T_MIN
    inside: np.ndarray  # (...,) bool: the clip was not active
    eps: np.ndarray    # (...,)
    log_u: np.ndarray  # (...,)  log of the uniform noise


def log_gamma_sample_forward(log_alpha: np.ndarray, eps: np.ndarray, unif: np.ndarray):
    r"""$\log\gamma$ for an approximate reparameterized sample $\gamma \sim \mathrm{Gamma}(\alpha, 1)$.

    Two steps, both differentiable in $\alpha$ for fixed noise:

    1. **Marsaglia–Tsang without rejection** for shape $a = \alpha + 1 \ge 1$: with
       $d = a - \tfrac13$, $c = 1/\sqrt{9d}$ and $\epsilon \sim \mathcal N(0, 1)$, $\gamma' = d\,(1 + c\epsilon)^3$.
       Marsaglia and Tsang (2000) accept this proposal with probability above 0.95
       for $a \ge 1$; skipping the rejection step makes it approximate: its mean is
       exactly $a$, its variance $a + 0.11 + 0.02/d$ instead of $a$. (This is the
       Wilson–Hilferty cube-of-a-normal approximation. $1 + c\epsilon$ is clipped at
       $10^{-3}$ for $\epsilon < -3\sqrt d$, probability below 1% for every $\alpha$.)
    2. **Shape boost**, exact: if $\gamma' \sim \mathrm{Gamma}(\alpha + 1)$ and $U \sim \mathrm U(0, 1)$ then
       $\gamma' U^{1/\alpha} \sim \mathrm{Gamma}(\alpha)$ (Marsaglia and Tsang; Naesseth et al. 2017
       use it for reparameterization). It carries small $\alpha$, where the Gamma
       piles up at 0.

    So $\log\gamma = \log d + 3\log(1 + c\epsilon) + \log(U)/\alpha$, in log space throughout so
    that tiny $\alpha$ cannot underflow $\gamma$ to 0.
    log_alpha, eps, unif: (...,) each (unif in (0, 1)) -> log_gamma (...,).
    """
    alpha = np.exp(log_alpha)
    d = alpha + (1.0 - 1.0 / 3.0)
    c = 1.0 / np.sqrt(9.0 * d)
    t_raw = 1.0 + c * eps
    inside = t_raw > GAMMA_T_MIN
    t = np.where(inside, t_raw, GAMMA_T_MIN)
    log_u = np.log(unif)
    log_gamma = np.log(d) + 3.0 * np.log(t) + log_u / alpha
    return log_gamma, GammaCache(alpha, d, c, t, inside, np.asarray(eps), log_u)


def log_gamma_sample_backward(dlog_gamma: np.ndarray, cache: GammaCache):
    r"""$\partial\log\gamma/\partial\alpha = 1/d - \tfrac32\, c\,\epsilon / (d\,t) - \log U / \alpha^2$ (the middle term
    only where the clip is inactive), since $\partial c/\partial d = -c/(2d)$; times $\alpha$ for $\log\alpha$.
    Also $\partial/\partial\epsilon = 3c/t$ and $\partial/\partial U = 1/(U\alpha)$.

    dlog_gamma (...,) -> dlog_alpha, deps, dunif, each (...,).
    """
    alpha, d, c, t, inside, eps, log_u = cache
    dmid = np.where(inside, 3.0 / t, 0.0)                        # d(3 log t)/dt
    dalpha = 1.0 / d - dmid * eps * c / (2.0 * d) - log_u / (alpha * alpha)
    deps = dlog_gamma * dmid * c
    dunif = dlog_gamma * np.exp(-log_u) / alpha
    return dlog_gamma * dalpha * alpha, deps, dunif


class DirichletCache(NamedTuple):
    gamma: GammaCache
    pi: np.ndarray  # (..., m)


def dirichlet_sample_forward(log_alpha: np.ndarray, eps: np.ndarray, unif: np.ndarray):
    r"""An approximate reparameterized sample $\pi \sim \mathrm{Dir}(\alpha_1, \ldots, \alpha_m)$.

    Normalized independent Gammas are Dirichlet: $\pi_i = \gamma_i / \sum_j \gamma_j$, i.e.
    $\pi = \mathrm{softmax}(\log\gamma)$ with $\log\gamma$ from :func:`log_gamma_sample_forward`.
    log_alpha, eps, unif (..., m) -> pi (..., m), rows summing to 1.
    """
    log_gamma, gcache = log_gamma_sample_forward(log_alpha, eps, unif)
    pi = softmax(log_gamma)
    return pi, DirichletCache(gcache, pi)


def dirichlet_sample_backward(dpi: np.ndarray, cache: DirichletCache):
    r"""Softmax backward, then :func:`log_gamma_sample_backward`.
    dpi (..., m) -> dlog_alpha, deps, dunif (..., m) each."""
    return log_gamma_sample_backward(_softmax_backward(dpi, cache.pi), cache.gamma)


# ---------------------------------------------------------------- the NVIB layer

EVAL_THRESHOLD = 0.1  # pseudo-counts below this are dropped in evaluation (as in the published code)


class DPPosterior(NamedTuple):
    """The parameters of the Dirichlet-process posterior; index 0 of the component axis is the prior."""
    mu: np.ndarray       # (N, n+1, K)  component means (the prior's: 0)
    log_var: np.ndarray  # (N, n+1, K)  component log-variances (the prior's: 0)
    alpha: np.ndarray    # (N, n+1)     pseudo-counts (the prior's: alpha0)


def dp_posterior(mu: np.ndarray, log_var: np.ndarray, log_alpha: np.ndarray, alpha0: float = 1.0) -> DPPosterior:
    r"""The $n + 1$ components of the posterior: $\mathcal N(0, I)$ with pseudo-count $\alpha_0$, then the encoder's
    $\mathcal N(\mu_i, e^{\log\sigma_i^2})$ with $\alpha_i = e^{\log\alpha_i}$. mu, log_var (N, n, K), log_alpha (N, n)."""
    mu, log_var, log_alpha = _check_layer(mu, log_var, log_alpha)
    N, _, K = mu.shape
    zeros = np.zeros((N, 1, K), mu.dtype)
    return DPPosterior(np.concatenate([zeros, mu], axis=1), np.concatenate([zeros, log_var], axis=1),
                       np.concatenate([np.full((N, 1), float(alpha0)), np.exp(log_alpha)], axis=1))


class NVIBNoise(NamedTuple):
    """The noise of one training pass; the prior component is index 0 of every array."""
    eps: np.ndarray        # (N, n+1, K)  standard normal, for the Gaussian samples
    gamma_eps: np.ndarray  # (N, n+1)     standard normal, for the Gamma samples
    unif: np.ndarray       # (N, n+1)     uniform on (0, 1), for the Gamma shape boost


def draw_noise(rng: np.random.Generator, N: int, n: int, K: int, dtype=np.float64) -> NVIBNoise:
    """Fresh :class:`NVIBNoise` for N sets of n vectors with K latent dimensions."""
    unif = rng.uniform(size=(N, n + 1))
    unif = np.where(unif > 0, unif, 0.5)  # uniform() may return exactly 0
    return NVIBNoise(rng.standard_normal((N, n + 1, K)).astype(dtype),
                     rng.standard_normal((N, n + 1)).astype(dtype), unif.astype(dtype))


class NVIBCache(NamedTuple):
    train: bool
    reparam: gaussian.ReparamCache | None  # of the n vectors' samples, flattened to (N*n, K) (training)
    var: np.ndarray | None         # (N, n, K) their variances (evaluation)
    dirichlet: DirichletCache | None
    pi: np.ndarray                 # (N, n+1)
    kept: np.ndarray | None        # (N, n+1) bool: above the threshold (evaluation)


def _check_layer(mu, log_var, log_alpha):
    mu, log_var, log_alpha = (np.asarray(a) for a in (mu, log_var, log_alpha))
    if mu.ndim != 3 or log_var.shape != mu.shape:
        raise ValueError(f"mu and log_var must both be (N, n, K), got {mu.shape} and {log_var.shape}")
    if log_alpha.shape != mu.shape[:2]:
        raise ValueError(f"log_alpha must be (N, n) = {mu.shape[:2]}, one pseudo-count per vector, "
                         f"got {log_alpha.shape}")
    return mu, log_var, log_alpha


def nvib_forward(mu: np.ndarray, log_var: np.ndarray, log_alpha: np.ndarray,
                 noise: NVIBNoise | None = None, alpha0: float = 1.0,
                 threshold: float = EVAL_THRESHOLD):
    r"""The NVIB latent: a mixture over $n + 1$ components, sampled (training) or its mean (evaluation).

    Component 0 is the prior, $\mathcal N(0, I)$ with pseudo-count $\alpha_0$; components
    $1..n$ are the encoder's vectors, $\mathcal N(\mu_i, e^{\log\sigma_i^2})$ with $\alpha_i = e^{\log\alpha_i}$.
    The Dirichlet-process posterior has weights $\pi \sim \mathrm{Dir}(\alpha_0, \alpha_1, \ldots, \alpha_n)$.

    * **Training** (``noise`` given): one sample of the random mixture, as point
      atoms: $z_i = \mu_i + \sigma_i\epsilon_i$ (the prior's atom $z_0 = \epsilon_0$), variances 0,
      and $\pi$ from :func:`dirichlet_sample_forward`.
    * **Evaluation** (``noise=None``): deterministic. The means $\mu_i$ with their
      variances $\sigma_i^2$, and the expected weights $\alpha_i/\sum_j\alpha_j$ after dropping the
      components with $\alpha_i <$ ``threshold``.

    Read by :func:`denoising_attention_forward`, the two agree where they should:
    a point atom at $z$ is the $\sigma^2 \to 0$ limit of a component at $z$.
    mu, log_var (N, n, K); log_alpha (N, n); noise arrays (N, n+1, K), (N, n+1), (N, n+1)
    -> (z (N, n+1, K), var (N, n+1, K), pi (N, n+1)).
    """
    mu, log_var, log_alpha = _check_layer(mu, log_var, log_alpha)
    N, n, K = mu.shape
    if not alpha0 > 0:
        raise ValueError(f"alpha0 must be > 0, got {alpha0!r}")
    log_alpha_all = np.concatenate([np.full((N, 1), np.log(alpha0), log_alpha.dtype), log_alpha], axis=1)
    if noise is not None:
        noise = NVIBNoise(*(np.asarray(a) for a in noise))
        want = ((N, n + 1, K), (N, n + 1), (N, n + 1))
        if tuple(a.shape for a in noise) != want:
            raise ValueError(f"noise must have shapes {want} (prior component included), "
                             f"got {tuple(a.shape for a in noise)}")
        flat = (N * n, K)  # the reparameterization of lesson 3, one row per vector
        z_n, reparam = gaussian.reparameterize_forward(mu.reshape(flat), log_var.reshape(flat),
                                                       noise.eps[:, 1:].reshape(flat))       # (N*n, K)
        z = np.concatenate([noise.eps[:, :1], z_n.reshape(N, n, K)], axis=1)               # (N, n+1, K)
        pi, dcache = dirichlet_sample_forward(log_alpha_all, noise.gamma_eps, noise.unif)
        return (z, np.zeros_like(z), pi), NVIBCache(True, reparam, None, dcache, pi, None)
    var = np.exp(log_var)                                                    # (N, n, K)
    z = np.concatenate([np.zeros((N, 1, K), mu.dtype), mu], axis=1)          # (N, n+1, K)
    var_all = np.concatenate([np.ones((N, 1, K), mu.dtype), var], axis=1)    # (N, n+1, K)
    alpha = np.exp(log_alpha_all)
    kept = alpha >= threshold
    kept[:, 0] = True                                                        # the prior always stays
    pi = np.where(kept, alpha, 0.0)
    pi = pi / pi.sum(axis=1, keepdims=True)                                  # (N, n+1)
    return (z, var_all, pi), NVIBCache(False, None, var, None, pi, kept)


def nvib_backward(dout: tuple, cache: NVIBCache):
    r"""(dz, dvar, dpi) -> dmu, dlog_var (N, n, K), dlog_alpha (N, n). The noise is held fixed.

    Training: $\bar\mu$, $\overline{\log\sigma^2}$ through the reparameterization
    (:func:`minivae.gaussian.reparameterize_backward`),
    and $\overline{\log\alpha}$ from :func:`dirichlet_sample_backward`; the returned variances are
    the constant 0. Evaluation: $\bar\mu = \bar z$, $\overline{\log\sigma^2} = \overline{\sigma^2}\,\sigma^2$ and,
    for $\pi_i = \alpha_i [\alpha_i \ge \tau] / \sum_j \alpha_j[\alpha_j \ge \tau]$,
    $\overline{\log\alpha_i} = \pi_i(\bar\pi_i - \sum_j\pi_j\bar\pi_j)$ (the threshold is piecewise constant).
    The prior component's entries (index 0) have no parameters and are dropped.
    """
    dz, dvar, dpi = dout
    if cache.train:
        shape = dz[:, 1:].shape                                              # (N, n, K)
        dmu, dlog_var, _ = gaussian.reparameterize_backward(dz[:, 1:].reshape(-1, shape[-1]), cache.reparam)
        dmu, dlog_var = dmu.reshape(shape), dlog_var.reshape(shape)
        dlog_alpha = dirichlet_sample_backward(dpi, cache.dirichlet)[0]
    else:
        dmu = dz[:, 1:]
        dlog_var = dvar[:, 1:] * cache.var
        dlog_alpha = _softmax_backward(dpi, cache.pi)
    return dmu, dlog_var, dlog_alpha[:, 1:]


# ---------------------------------------------------------------- the two KL terms

class KLGaussWCache(NamedTuple):
    each: gaussian.KLCache  # of the components' KLs to N(0, I)
    kl_each: np.ndarray  # (N, n)     KL of each component to N(0, I)
    weight: np.ndarray   # (N, n)     alpha_i / sum_j alpha_j (prior's alpha0 included)
    kl: np.ndarray       # (N,)


def kl_gaussian_weighted_forward(mu: np.ndarray, log_var: np.ndarray, log_alpha: np.ndarray,
                                 alpha0: float = 1.0):
    r"""The Gaussian part of the NVIB KL: $\sum_{i=1}^n \frac{\alpha_i}{A}\,\mathrm{KL}(\mathcal N(\mu_i, \sigma_i^2)\,\|\,\mathcal N(0, I))$,
    $A = \alpha_0 + \sum_{j=1}^n\alpha_j$.

    Each component's KL is weighted by its expected mixture weight $\mathbb E[\pi_i] = \alpha_i/A$ (the
    prior component's own KL is 0). Per component the closed form of lesson 2
    (:func:`minivae.gaussian.kl_std_normal_forward`). mu, log_var (N, n, K), log_alpha (N, n) -> kl (N,).
    """
    mu, log_var, log_alpha = _check_layer(mu, log_var, log_alpha)
    kl_each, kcache = gaussian.kl_std_normal_forward(mu, log_var)           # (N, n)
    alpha = np.exp(log_alpha)
    weight = alpha / (alpha0 + alpha.sum(axis=1, keepdims=True))             # (N, n)
    kl = np.sum(weight * kl_each, axis=1)                                    # (N,)
    return kl, KLGaussWCache(kcache, kl_each, weight, kl)


def kl_gaussian_weighted_backward(dkl: np.ndarray, cache: KLGaussWCache):
    r"""$\overline{\mathrm{KL}_i} = \overline{\mathrm{KL}}\,\alpha_i/A$ into lesson 2's backward, and
    $\partial\mathrm{KL}/\partial\log\alpha_i = \frac{\alpha_i}{A}(\mathrm{KL}_i - \mathrm{KL})$ (the weights' softmax-like Jacobian).
    dkl (N,) -> dmu, dlog_var (N, n, K), dlog_alpha (N, n)."""
    d_each = dkl[:, None] * cache.weight                                      # (N, n)
    dmu, dlog_var = gaussian.kl_std_normal_backward(d_each, cache.each)
    dlog_alpha = dkl[:, None] * cache.weight * (cache.kl_each - cache.kl[:, None])
    return dmu, dlog_var, dlog_alpha


class KLDirCache(NamedTuple):
    alpha: np.ndarray  # (..., m)
    beta: np.ndarray   # (..., m)
    dA: np.ndarray     # (..., 1)  A - B, the difference of the totals
    psi_a: np.ndarray  # (..., m)  psi(alpha_i)
    psi_A: np.ndarray  # (..., 1)  psi(sum alpha)
    psi_b: np.ndarray  # (..., m)  psi(beta_i)
    psi_B: np.ndarray  # (..., 1)  psi(sum beta)


def kl_dirichlet_forward(alpha: np.ndarray, beta: np.ndarray):
    r"""$\mathrm{KL}(\mathrm{Dir}(\alpha)\,\|\,\mathrm{Dir}(\beta))$, with $A = \sum_i\alpha_i$, $B = \sum_i\beta_i$:

    $$ \mathrm{KL} = \log\Gamma(A) - \sum_i\log\Gamma(\alpha_i) - \log\Gamma(B) + \sum_i\log\Gamma(\beta_i)
       + \sum_i(\alpha_i - \beta_i)\big(\psi(\alpha_i) - \psi(A)\big), $$

    from $\mathbb E_{\mathrm{Dir}(\alpha)}[\log\pi_i] = \psi(\alpha_i) - \psi(A)$. It is 0 at $\alpha = \beta$ (exactly: every
    term cancels) and positive elsewhere. With a small symmetric prior, $\beta_i = b < \tfrac12$,
    Stirling's series shows its sparsity pressure: for large $\alpha_i$ the KL grows like
    $\sum_i(\tfrac12 - b)\log\alpha_i$, so one large pseudo-count costs less than several
    medium ones carrying the same total. alpha, beta (..., m) positive (broadcastable) -> kl (...,).
    """
    alpha, beta = np.broadcast_arrays(np.asarray(alpha, np.float64), np.asarray(beta, np.float64))
    if alpha.ndim < 1:
        raise ValueError("kl_dirichlet needs arrays (..., m) of pseudo-counts")
    if not (np.all(alpha > 0) and np.all(beta > 0)):
        raise ValueError("Dirichlet pseudo-counts must be > 0")
    A = alpha.sum(axis=-1, keepdims=True)
    B = beta.sum(axis=-1, keepdims=True)
    psi_a, psi_A, psi_b, psi_B = digamma(alpha), digamma(A), digamma(beta), digamma(B)
    kl = (lgamma(A) - lgamma(B))[..., 0] + np.sum(lgamma(beta) - lgamma(alpha), axis=-1) \
        + np.sum((alpha - beta) * (psi_a - psi_A), axis=-1)
    return kl, KLDirCache(alpha, beta, A - B, psi_a, psi_A, psi_b, psi_B)


def kl_dirichlet_backward(dkl: np.ndarray, cache: KLDirCache):
    r"""$\partial\mathrm{KL}/\partial\alpha_j = (\alpha_j - \beta_j)\,\psi'(\alpha_j) - (A - B)\,\psi'(A)$ and
    $\partial\mathrm{KL}/\partial\beta_j = \psi(\beta_j) - \psi(B) - \psi(\alpha_j) + \psi(A)$
    (the $\psi$ terms of $\partial/\partial\alpha$ cancel against the derivative of the $\log\Gamma$s).
    dkl (...,) -> dalpha, dbeta (..., m) (not reduced over broadcast axes)."""
    alpha, beta, dA, psi_a, psi_A, psi_b, psi_B = cache
    A = alpha.sum(axis=-1, keepdims=True)
    d = np.asarray(dkl)[..., None]
    dalpha = d * ((alpha - beta) * trigamma(alpha) - dA * trigamma(A))
    dbeta = d * (psi_b - psi_B - psi_a + psi_A)
    return dalpha, dbeta
