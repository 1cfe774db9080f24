r"""Decoders' likelihoods $p(x \mid z)$: log-densities in nats with every constant.

The decoder MLP ends in a linear layer whose output ``out`` parameterizes the
likelihood. Each likelihood is a forward/backward pair

    ``log_prob_forward(x, out) -> (logp, cache)``, ``log_prob_backward(dlogp, cache) -> dout``

where ``x`` is data (N, D) and ``out`` is the decoder output (N, P) or, with S
latent samples per example, (S, N, P); ``logp`` sums over the D data dimensions
and has ``out``'s leading shape. The gradient is with respect to ``out`` only:
``x`` is data, never differentiated. Taught in lesson 5.

| name | ``out`` (P) | $\log p(x \mid \text{out})$ summed over $d$ |
|---|---|---|
| bernoulli | logits $\ell$ (D), $p = \sigma(\ell)$ | $x \log p + (1 - x)\log(1 - p)$ |
| gaussian | mean $m$ (D), fixed $\sigma$ | $-\tfrac12((x-m)^2/\sigma^2 + \log 2\pi\sigma^2)$ |
| gaussian_learned | mean, log-variance (2D) | $-\tfrac12((x-m)^2 e^{-v} + v + \log 2\pi)$ |
| laplace | location $m$ (D), fixed scale $b$ | $-\lvert x-m\rvert/b - \log 2b$ |
| categorical | logits (D), one softmax | $\sum_d x_d \log \mathrm{softmax}(\ell)_d$ |

For the categorical likelihood ``x`` holds counts over the D categories (one-hot
for a single draw). The multinomial coefficient $\log\big((\sum_d x_d)! / \prod_d x_d!\big)$
does not depend on the decoder, so it is left out: the value is exact for a
one-hot ``x`` and, for counts, is the log-probability of the ordered sequence of
draws.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from .gaussian import clamp_log_var_backward, clamp_log_var_forward, log_density_backward, log_density_forward
from .nn import sigmoid, softplus

__all__ = [
    "bernoulli_forward", "bernoulli_backward",
    "gaussian_forward", "gaussian_backward",
    "gaussian_learned_forward", "gaussian_learned_backward",
    "laplace_forward", "laplace_backward",
    "categorical_forward", "categorical_backward", "log_softmax",
    "Likelihood", "get_likelihood", "LIKELIHOODS",
]


class ResidualCache(NamedTuple):
    r: np.ndarray  # (..., D)  the part of the gradient that dlogp multiplies


def _scale(r: np.ndarray, dlogp: np.ndarray) -> np.ndarray:
    return dlogp[..., None] * r


# ---------------------------------------------------------------- Bernoulli
class BernoulliCache(NamedTuple):
    x: np.ndarray       # (N, D)
    logits: np.ndarray  # (..., N, D)


def bernoulli_forward(x: np.ndarray, logits: np.ndarray):
    r"""$\log p(x \mid \ell) = \sum_d x_d \log\sigma(\ell_d) + (1 - x_d)\log(1 - \sigma(\ell_d))$, in nats.

    x (N, D) in [0, 1], logits (..., N, D) -> logp (..., N), and a BernoulliCache.
    Finite and accurate for any finite logit, $|\ell|$ of $10^4$ and beyond, where
    $\sigma(\ell)$ itself rounds to exactly 0 or 1.
    """
    ### BEGIN SOLUTION task_bernoulli
    # log sigma(l) = l - softplus(l) and log(1 - sigma(l)) = -softplus(l), so the sum is
    # x l - softplus(l): no log 0 anywhere. Subtract per element, then sum: at |l| = 1e4 the
    # two terms cancel element by element, where two sums of 1e4-sized terms would not.
    logp = np.sum(x * logits - softplus(logits), axis=-1)  # (..., N)
    ### END SOLUTION
    return logp, BernoulliCache(x, logits)


def bernoulli_backward(dlogp: np.ndarray, cache: BernoulliCache):
    r"""$\bar\ell = \partial L / \partial \ell$ from $\overline{\log p} = \partial L / \partial \log p$.

    dlogp (..., N) -> dlogits (..., N, D), of the logits' shape and dtype.
    """
    ### BEGIN SOLUTION task_bernoulli
    # d/dl [x l - softplus(l)] = x - sigma(l). sigma is computed here, not in the forward pass,
    # so that evaluation (forward only, 5000 importance samples per image) never pays for it.
    dlogits = dlogp[..., None] * (cache.x - sigmoid(cache.logits))
    ### END SOLUTION
    return dlogits


_BERNOULLI = (bernoulli_forward, bernoulli_backward)  # the pair the registry's "bernoulli" uses
### BEGIN INSTRUCTOR: this is task_bernoulli's answer; the student copy trains with the student's pair


def bernoulli_forward_in_buffers(x: np.ndarray, logits: np.ndarray):
    """:func:`bernoulli_forward`'s arithmetic, operation for operation, written into two arrays
    and one temporary instead of a fresh array per operation: the same bits (tests/test_likelihoods.py holds
    them equal), a sixth less time for the pair at batch 512 (memory bound: every pass streams it)."""
    if not _one_shape_one_dtype(x, logits):
        return bernoulli_forward(x, logits)
    s = np.abs(logits, out=np.empty_like(logits))  # softplus(l) = max(l, 0) + log1p(exp(-|l|))
    np.negative(s, out=s)
    np.exp(s, out=s)
    np.log1p(s, out=s)
    s += np.maximum(logits, np.zeros(logits.shape[-1], logits.dtype))  # a row of zeros: NumPy's fast loop
    xl = np.multiply(x, logits)                    # (..., N, D)
    xl -= s
    return np.sum(xl, axis=-1), BernoulliCache(x, logits)


def bernoulli_backward_in_buffers(dlogp: np.ndarray, cache: BernoulliCache) -> np.ndarray:
    """:func:`bernoulli_backward`'s arithmetic in one array: the same bits (tests hold them equal)."""
    if not _one_shape_one_dtype(cache.x, cache.logits, dlogp):
        return bernoulli_backward(dlogp, cache)
    d = np.multiply(cache.logits, 0.5)             # sigma(l) = (1 + tanh(l / 2)) / 2
    np.tanh(d, out=d)
    d += 1
    d *= 0.5
    np.subtract(cache.x, d, out=d)                 # x - sigma(l)
    d *= dlogp[..., None]
    return d


def _one_shape_one_dtype(x: np.ndarray, logits: np.ndarray, *more: np.ndarray) -> bool:
    """Whether logits (..., N, D) are as large as the textbook's result and all share a dtype:
    otherwise (broadcasting, mixed precision) the textbook's temporaries are its own."""
    return logits.shape[-x.ndim:] == x.shape and all(a.dtype == logits.dtype for a in (x, *more))


_BERNOULLI = (bernoulli_forward_in_buffers, bernoulli_backward_in_buffers)
### END INSTRUCTOR


# ---------------------------------------------------------------- Gaussians
def gaussian_forward(x: np.ndarray, mean: np.ndarray, sigma: float = 1.0):
    r"""Gaussian with fixed $\sigma$: $-\tfrac{1}{2\sigma^2}\lVert x - m\rVert^2 - \tfrac D2 \log 2\pi\sigma^2$.

    Maximizing it is minimizing the L2 distortion. x (N, D), mean (..., N, D) -> logp (..., N).
    """
    log_var = np.asarray(2 * math.log(sigma), dtype=mean.dtype)  # 0-d, keeps float32 float32
    return log_density_forward(x, mean, log_var)


def gaussian_backward(dlogp: np.ndarray, cache):
    r"""$\bar m = \overline{\log p}\,(x - m)/\sigma^2$.  -> dmean (..., N, D)."""
    return log_density_backward(dlogp, cache)[1]


def gaussian_learned_forward(x: np.ndarray, out: np.ndarray):
    r"""Gaussian whose mean and log-variance $v$ are both decoded: ``out`` = [mean | v].

    $v$ is clipped to the safe range (:func:`minivae.gaussian.clamp_log_var_forward`).
    On data with constant pixels, such as MNIST's zeros, the maximum-likelihood
    variance there is 0 and the density unbounded: the clip is what bounds it
    (at $\tfrac12(30 - \log 2\pi) \approx 14$ nats per pixel).
    x (N, D), out (..., N, 2D) -> logp (..., N).
    """
    mean, raw = np.split(out, 2, axis=-1)            # (..., N, D) each
    log_var, c_clamp = clamp_log_var_forward(raw)
    logp, c_dens = log_density_forward(x, mean, log_var)
    return logp, (c_dens, c_clamp)


def gaussian_learned_backward(dlogp: np.ndarray, cache):
    r"""$[\bar m \mid \bar v]$ with $\bar v = \overline{\log p}\,\tfrac12((x-m)^2 e^{-v} - 1)$ inside the
    safe range (0 outside).  -> dout (..., N, 2D)."""
    c_dens, c_clamp = cache
    _, dmean, dlog_var = log_density_backward(dlogp, c_dens)
    return np.concatenate([dmean, clamp_log_var_backward(dlog_var, c_clamp)], axis=-1)


# ---------------------------------------------------------------- Laplace
def laplace_forward(x: np.ndarray, loc: np.ndarray, scale: float = 1.0):
    r"""Laplace with fixed scale $b$: $-\lVert x - m\rVert_1 / b - D \log 2b$ (the L1 distortion).

    x (N, D), loc (..., N, D) -> logp (..., N).
    """
    diff = x - loc
    scale = float(scale)  # a Python float never promotes float32 arrays
    logp = -np.sum(np.abs(diff), axis=-1) / scale - x.shape[-1] * math.log(2 * scale)
    return logp, ResidualCache(np.sign(diff) / scale)


def laplace_backward(dlogp: np.ndarray, cache: ResidualCache):
    r"""$\bar m = \overline{\log p}\,\mathrm{sign}(x - m)/b$ (0 at the kink $x = m$).  -> dloc (..., N, D)."""
    return _scale(cache.r, dlogp)


# ---------------------------------------------------------------- Categorical
def log_softmax(logits: np.ndarray) -> np.ndarray:
    r"""$\ell_d - \log\sum_j e^{\ell_j}$ over the last axis, shifted by the max for stability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def categorical_forward(x: np.ndarray, logits: np.ndarray):
    r"""$\log p(x \mid \ell) = \sum_d x_d \log\mathrm{softmax}(\ell)_d$ (multinomial coefficient left out).

    Softmax over the last axis: for several groups (e.g. one per word slot),
    reshape to (..., groups, categories) first. x (N, D) counts, logits (..., N, D) -> logp (..., N).
    """
    log_p = log_softmax(logits)
    logp = np.sum(x * log_p, axis=-1)
    return logp, ResidualCache(x - x.sum(axis=-1, keepdims=True) * np.exp(log_p))


def categorical_backward(dlogp: np.ndarray, cache: ResidualCache):
    r"""$\bar\ell = \overline{\log p}\,(x - (\textstyle\sum_d x_d)\,\mathrm{softmax}(\ell))$.  -> dlogits (..., N, D)."""
    return _scale(cache.r, dlogp)


# ---------------------------------------------------------------- registry
def _in_unit_interval(x: np.ndarray) -> str | None:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        return f"has values in [{lo:g}, {hi:g}]; the 'bernoulli' likelihood needs values in [0, 1]"
    return None


def _counts(x: np.ndarray) -> str | None:
    if float(x.min()) < 0:
        return f"has negative values (min {float(x.min()):g}); the 'categorical' likelihood needs counts >= 0"
    empty_rows = np.flatnonzero(x.sum(axis=1) <= 0)  # (R,)
    if empty_rows.size:
        return (f"has {empty_rows.size} rows that sum to 0, the first is row {empty_rows[0]}; "
                f"the 'categorical' likelihood needs a positive total per row")
    return None


def _real(x: np.ndarray) -> str | None:
    return None  # any finite value (finiteness is checked for every likelihood)


def _mean_and_log_var(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, raw = np.split(out, 2, axis=-1)
    return mean, clamp_log_var_forward(raw)[0]


class Likelihood(NamedTuple):
    """A likelihood as the model and the data checks use it."""
    name: str
    params_per_dim: int                      # P = params_per_dim * D decoder outputs
    forward: Callable                        # (x, out) -> (logp, cache)
    backward: Callable                       # (dlogp, cache) -> dout
    mean: Callable[[np.ndarray], np.ndarray]  # out -> E[x | out], (..., D)
    params: Callable                         # out -> its parameters as VAE.decode returns them
    support: Callable[[np.ndarray], str | None]  # finite x (N, D) -> None, or what lies outside the support


def get_likelihood(name: str, scale: float = 1.0) -> Likelihood:
    """The :class:`Likelihood` called ``name``; ``scale`` is the fixed $\\sigma$
    ("gaussian") or $b$ ("laplace") and is ignored by the others."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"likelihood scale must be a positive number, got {scale!r}")
    return LIKELIHOODS[name](float(scale))


def _ident(out: np.ndarray) -> np.ndarray:
    return out


#: name -> a function of the fixed scale returning the Likelihood: the names accepted by
#: ``VAE(likelihood=...)``, ``--likelihood`` and :func:`minivae.data.validate_data`.
LIKELIHOODS: dict[str, Callable[[float], Likelihood]] = {
    "bernoulli": lambda scale: Likelihood(
        "bernoulli", 1, *_BERNOULLI, sigmoid, _ident, _in_unit_interval),
    "gaussian": lambda scale: Likelihood(
        "gaussian", 1, lambda x, out: gaussian_forward(x, out, scale), gaussian_backward, _ident, _ident, _real),
    "gaussian_learned": lambda scale: Likelihood(
        "gaussian_learned", 2, gaussian_learned_forward, gaussian_learned_backward,
        lambda out: np.split(out, 2, axis=-1)[0], _mean_and_log_var, _real),
    "laplace": lambda scale: Likelihood(
        "laplace", 1, lambda x, out: laplace_forward(x, out, scale), laplace_backward, _ident, _ident, _real),
    "categorical": lambda scale: Likelihood(
        "categorical", 1, categorical_forward, categorical_backward, lambda out: np.exp(log_softmax(out)),
        _ident, _counts),
}
