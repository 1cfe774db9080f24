r"""The log-gamma function and its derivatives, vectorized in NumPy: $\log\Gamma$, $\psi$, $\psi'$.

The KL between Dirichlet distributions (lesson 13, :mod:`minivae.nvib`) needs
$\log\Gamma(x)$, the digamma function $\psi(x) = \frac{d}{dx}\log\Gamma(x)$ and, for its
gradient, the trigamma function $\psi'(x)$. All three are computed for arrays of
any shape with the same two steps:

1. **Shift up** with the recurrence $\Gamma(x + 1) = x\,\Gamma(x)$ until the argument is
   at least $x_0 = 10$:

   $$ \log\Gamma(x) = \log\Gamma(x + m) - \log\prod_{j=0}^{m-1}(x + j), \qquad
      \psi(x) = \psi(x + m) - \sum_{j=0}^{m-1}\frac{1}{x + j}, \qquad
      \psi'(x) = \psi'(x + m) + \sum_{j=0}^{m-1}\frac{1}{(x + j)^2}. $$

   Each element has its own $m = \max(0, \lceil x_0 - x\rceil) \le 10$; the loop runs
   over $j$, once over the whole array per $j$, with the finished elements masked.

2. **Stirling's asymptotic series** at $y = x + m \ge 10$, with Bernoulli numbers $B_{2k}$:

   $$ \log\Gamma(y) = (y - \tfrac12)\log y - y + \tfrac12\log 2\pi + \sum_{k\ge1}\frac{B_{2k}}{2k(2k-1)\,y^{2k-1}}, $$
   $$ \psi(y) = \log y - \frac{1}{2y} - \sum_{k\ge1}\frac{B_{2k}}{2k\,y^{2k}}, \qquad
      \psi'(y) = \frac1y + \frac1{2y^2} + \sum_{k\ge1}\frac{B_{2k}}{y^{2k+1}} . $$

   Eight terms are kept; the first omitted one is below $10^{-17}$ at $y = 10$, so the
   error is float64 round-off: about $10^{-15}$ absolute for $\log\Gamma$ and $\psi$ (the
   tests compare with ``math.lgamma`` and with known values such as
   $\psi(1) = -\gamma$, $\psi'(1) = \pi^2/6$).

The domain is finite $x > 0$ (all the Dirichlet KL needs); anything else is a
``ValueError``. Each function comes as a forward/backward pair too, since
$\frac{d}{dx}\log\Gamma = \psi$ and $\frac{d}{dx}\psi = \psi'$.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["lgamma", "digamma", "trigamma",
           "lgamma_forward", "lgamma_backward", "digamma_forward", "digamma_backward"]

SHIFT_TO = 10.0
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# B_2k, k = 1..8: 1/6, -1/30, 1/42, -1/30, 5/66, -691/2730, 7/6, -3617/510
_BERNOULLI = np.array([1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510])
_K = np.arange(1, len(_BERNOULLI) + 1)
_LGAMMA_COEF = _BERNOULLI / (2 * _K * (2 * _K - 1))   # y^-(2k-1)
_DIGAMMA_COEF = _BERNOULLI / (2 * _K)                  # y^-2k
_TRIGAMMA_COEF = _BERNOULLI                            # y^-(2k+1)


def _check(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x) & (x > 0)):
        bad = x[~(np.isfinite(x) & (x > 0))].ravel()[0]
        raise ValueError(f"lgamma/digamma/trigamma are defined here for finite x > 0, got {bad!r}")
    return x


def _poly_in_inverse_square(inv_y2: np.ndarray, coef: np.ndarray) -> np.ndarray:
    r"""$\sum_k c_k\, y^{-2(k-1)}$ by Horner's rule in $y^{-2}$."""
    acc = np.full_like(inv_y2, coef[-1])
    for c in coef[-2::-1]:
        acc = acc * inv_y2 + c
    return acc


def _shift(x: np.ndarray):
    """(y, active_terms): y = x + m >= SHIFT_TO, and the list of (x + j, mask j < m) for j < max m."""
    m = np.maximum(0.0, np.ceil(SHIFT_TO - x))  # (...,) shifts per element, at most 10
    terms = [(x + j, j < m) for j in range(int(m.max(initial=0)))]
    return x + m, terms


def lgamma(x) -> np.ndarray:
    r"""$\log\Gamma(x)$ for finite $x > 0$, elementwise. (...) -> (...)."""
    x = _check(x)
    y, terms = _shift(x)
    prod = np.ones_like(x)
    for xj, on in terms:
        prod *= np.where(on, xj, 1.0)  # at most 10 factors below 10: no overflow
    inv_y = 1.0 / y
    series = inv_y * _poly_in_inverse_square(inv_y * inv_y, _LGAMMA_COEF)
    return (y - 0.5) * np.log(y) - y + HALF_LOG_2PI + series - np.log(prod)


def digamma(x) -> np.ndarray:
    r"""$\psi(x) = \frac{d}{dx}\log\Gamma(x)$ for finite $x > 0$, elementwise. (...) -> (...)."""
    x = _check(x)
    y, terms = _shift(x)
    acc = np.zeros_like(x)
    for xj, on in terms:
        acc -= np.where(on, 1.0 / xj, 0.0)
    inv_y2 = 1.0 / (y * y)
    return acc + np.log(y) - 0.5 / y - inv_y2 * _poly_in_inverse_square(inv_y2, _DIGAMMA_COEF)


def trigamma(x) -> np.ndarray:
    r"""$\psi'(x) = \frac{d^2}{dx^2}\log\Gamma(x)$ for finite $x > 0$, elementwise. (...) -> (...)."""
    x = _check(x)
    y, terms = _shift(x)
    acc = np.zeros_like(x)
    for xj, on in terms:
        acc += np.where(on, 1.0 / (xj * xj), 0.0)
    inv_y = 1.0 / y
    inv_y2 = inv_y * inv_y
    return acc + inv_y + 0.5 * inv_y2 + inv_y2 * inv_y * _poly_in_inverse_square(inv_y2, _TRIGAMMA_COEF)


class SpecialCache(NamedTuple):
    x: np.ndarray  # (...) the argument


def lgamma_forward(x):
    r"""$y = \log\Gamma(x)$. x (...) -> y (...)."""
    return lgamma(x), SpecialCache(np.asarray(x, np.float64))


def lgamma_backward(dy, cache: SpecialCache):
    r"""$\bar x = \bar y\, \psi(x)$."""
    return dy * digamma(cache.x)


def digamma_forward(x):
    r"""$y = \psi(x)$. x (...) -> y (...)."""
    return digamma(x), SpecialCache(np.asarray(x, np.float64))


def digamma_backward(dy, cache: SpecialCache):
    r"""$\bar x = \bar y\, \psi'(x)$."""
    return dy * trigamma(cache.x)
