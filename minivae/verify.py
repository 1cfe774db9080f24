r"""Check your own derivation: a claimed expectation, gradient, identity or bound, judged numerically.

Four checks, each returning a :class:`Result` that prints as one line and has a boolean ``ok``:

* :func:`expectation`: a closed form $c$ for $\mathbb E[f(Z)]$ against the Monte Carlo mean
  $\bar f_n$ of $n$ draws, judged by $z = (c - \bar f_n) / (s_n / \sqrt n)$ at a stated confidence;
* :func:`gradient`: a hand-derived gradient against central differences in float64, by the
  relative error $\lVert a - n\rVert / \max(\lVert a\rVert, \lVert n\rVert)$ of :mod:`minivae.gradcheck`;
* :func:`identity`: two deterministic values, by $|{\rm lhs} - {\rm rhs}| / \max(|{\rm lhs}|, |{\rm rhs}|)$;
* :func:`bound`: ${\rm lower} \le {\rm target}$ on every given case, with the tightest case shown.

A wrong formula is a result with ``ok = False``, never an exception; so is a claimed
value of the wrong shape or one that is not finite. Misuse of the check itself (a sample
count below 2, an ``f`` that does not return a scalar) raises ValueError, and an
exception raised inside the caller's own functions propagates unchanged.
``python -m minivae derivations`` runs these checks on every identity the lessons derive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

import numpy as np

from .gradcheck import numerical_gradient, rel_error

__all__ = ["CONFIDENCE", "Result", "expectation", "gradient", "identity", "bound"]

#: the default confidence of :func:`expectation`: a right closed form fails once in 1000 seeds.
CONFIDENCE = 0.999


@dataclass(frozen=True, repr=False)
class Result:
    """The verdict of one check. ``str(result)`` is one line; ``bool(result)`` is ``result.ok``,
    so ``assert verify.identity(a, b)`` fails when the identity does.

    ``lhs`` and ``rhs`` are the two sides at the entry that decided the verdict (the
    largest error, or the tightest case of a bound): the claimed closed form and the
    Monte Carlo mean; the claimed and the numerical gradient; the left and right side;
    the lower value and its target. ``where`` is that entry's index (``()`` for scalars;
    for several gradient arrays, the array's position first). ``score`` is the z-score,
    the relative error, or the bound's smallest margin ``target - lower``; ``limit`` the
    largest ``|score|`` that passes (for a bound 0: a margin passes down to minus a
    rounding allowance, ``rtol`` times the larger of ``|lower|`` and ``|target|``).
    """
    ok: bool
    kind: str  # "expectation", "gradient", "identity", "bound"; "stub" in minivae.derivations.run
    lhs: float
    rhs: float
    score: float
    limit: float
    where: tuple
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<verify.{self.kind}: {self.text}>"

    def __bool__(self) -> bool:
        return self.ok


def _num(v: float) -> str:
    return f"{v:.6g}"


def _at(where: tuple) -> str:
    return "[" + ", ".join(str(int(i)) for i in where) + "]"


def _verdict(ok: bool) -> str:
    return "ok" if ok else "WRONG"


def _not_ok(kind: str, text: str) -> Result:
    """A wrong claim that has no two sides to compare (a wrong shape or count)."""
    return Result(False, kind, math.nan, math.nan, math.nan, math.nan, (), f"WRONG: {text}")


def _worst(score: np.ndarray) -> tuple:
    """Index of the largest score, NaN counting as the largest."""
    key = np.where(np.isnan(score), np.inf, score)
    return np.unravel_index(int(np.argmax(key)), score.shape) if score.ndim else ()


# ---------------------------------------------------------------- expectation
def expectation(closed_form, f: Callable, sample: Callable, n: int = 100_000, seed=0,
                confidence: float = CONFIDENCE) -> Result:
    r"""Is ``closed_form`` the expectation $\mathbb E[f(Z)]$? Judged against $n$ Monte Carlo draws.

    ``sample(rng, n)`` returns $n$ draws of $Z$ (an array whose first axis is $n$, from the
    ``numpy.random.Generator`` it is given); ``f`` maps them to one value per draw, (n,),
    or one array per draw, (n, *P), for a vector of expectations. ``closed_form`` is a
    number, or an array of shape P. ``seed`` is an int or a Generator; the same seed
    gives the same draws, so a result is reproducible.

    With the Monte Carlo mean $\bar f_n$ and the sample standard deviation $s_n$,

    $$ z = \frac{c - \bar f_n}{s_n / \sqrt n}, $$

    and the claim passes when $|z| \le z^*$, with $z^*$ the two-sided normal quantile of
    ``confidence``: a right formula fails with probability $1 - $ ``confidence`` (default
    99.9%: $z^* = 3.29$, one false alarm in 1000 seeds). For P components the limit is
    Bonferroni's, $z^* = \Phi^{-1}(1 - (1 - \text{confidence}) / 2P)$, so that the chance
    of any false alarm among them stays at most $1 - $ ``confidence``. If $f(Z)$ is
    constant, $s_n = 0$ and the claim must match to a relative $10^{-12}$.

    **Measured false-alarm rate.** This relies on $\bar f_n$ being normal, which holds
    for large $n$ when $f(Z)$ has a finite variance. ``tests/test_verify.py`` measures it
    on every run, over seeds 0 to 19,999 with a right closed form and $n = 1000$: for the
    integrand $\log q(z) - \log p(z)$ of a one-dimensional Gaussian KL ($\mu = 0.5$,
    $\log\sigma^2 = 0.3$), 26 false alarms at 99.9% (0.13%; 20 expected) and 213 at 99%
    (1.07%; 200 expected), both within Poisson noise of the stated rate; for $e^Z$ with
    $Z \sim \mathcal N(0, 1)$, skewed with a heavy right tail, 51 at 99.9% (0.26%). A
    skewed $f$ with few draws fails a right formula more often than stated; more draws
    bring the rate down to the stated one (for $e^Z$, measured once over the same seeds:
    35 at $n$ = 10,000, 25 at the default 100,000). With an infinite
    variance (e.g. importance weights $p/q$ where $q$ has lighter tails than $p$) the
    test means nothing.

    The power is the other side: a wrong closed form off by $\delta$ is caught when
    $|\delta| \gg z^* s_n/\sqrt n$; the line printed shows both, so a too-small $n$ is visible.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ValueError(f"n must be an integer >= 2 (the standard error needs two draws), got {n!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.999, got {confidence!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    values = np.asarray(f(sample(rng, int(n))), dtype=np.float64)
    if values.ndim == 0 or values.shape[0] != n:
        raise ValueError(f"f must return one value per draw, an array of shape ({n}, ...), "
                         f"got shape {values.shape}")
    claimed = np.asarray(closed_form, dtype=np.float64)
    if claimed.shape != values.shape[1:]:
        return _not_ok("expectation", f"the closed form has shape {claimed.shape}, f gives "
                       f"{values.shape[1:]} per draw")
    mean = values.mean(axis=0)
    se = values.std(axis=0, ddof=1) / math.sqrt(n)
    m = claimed.size
    z_limit = NormalDist().inv_cdf(1 - (1 - confidence) / (2 * m))
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = 1e-12 * np.maximum(np.abs(claimed), np.abs(mean))  # s_n = 0: f(Z) is constant
        z = (claimed - mean) / np.maximum(se, floor)
        z = np.where(claimed == mean, 0.0, z)
    where = _worst(np.abs(z))
    zw, c, mc, s = float(z[where]), float(claimed[where]), float(mean[where]), float(se[where])
    ok = bool(np.all(np.abs(z) <= z_limit))
    parts = f" at {_at(where)}, the worst of {m} components" if m > 1 else ""
    jointly = f" for all {m} jointly" if m > 1 else ""
    if not (math.isfinite(c) and math.isfinite(mc)):
        text = f"claimed E[f] = {_num(c)}, Monte Carlo {_num(mc)}{parts}: not finite"
    else:
        text = (f"claimed E[f] = {_num(c)}, Monte Carlo {_num(mc)} +- {s:.2g} (n = {n:,}){parts}: "
                f"z = {zw:+.2f}, |z| {'<=' if ok else '>'} {z_limit:.2f} at {100 * confidence:g}% "
                f"confidence{jointly}")
    return Result(ok, "expectation", c, mc, zw, z_limit, where, f"{_verdict(ok)}: {text}")


# ---------------------------------------------------------------- gradient
def _scalar(value) -> float:
    a = np.asarray(value, dtype=np.float64)
    if a.size != 1:
        raise ValueError(f"f must return a scalar (sum an output first), got shape {a.shape}")
    return float(a.reshape(()))


def gradient(f: Callable, grad, x, h: float = 1e-6, tol: float = 1e-6) -> Result:
    r"""Is ``grad`` the gradient of the scalar ``f`` at ``x``? Judged against central differences.

    ``x`` is an array, or a tuple of arrays for a function of several (then ``f(*x)`` and
    ``grad(*x)``, which returns a tuple with one gradient per array). ``grad`` may be the
    claimed gradient itself instead of a function. Every entry is perturbed by $\pm h$ in
    float64 (:func:`minivae.gradcheck.numerical_gradient`, on copies: ``x`` is never
    changed) and each array's relative error

    $$ \mathrm{rel}(a, n) = \frac{\lVert a - n\rVert_2}{\max(\lVert a\rVert_2, \lVert n\rVert_2)} $$

    must be at most ``tol``. A right gradient of a smooth function of order one scores
    $10^{-8}$ to $10^{-11}$ with $h = 10^{-6}$; a wrong one (a missing $\tfrac12$, a sign,
    $\sigma$ for $\sigma^2$) scores $10^{-2}$ or more. Near a stationary point both
    gradients are tiny and round-off dominates their difference: check elsewhere.
    """
    if not (h > 0 and tol > 0):
        raise ValueError(f"h and tol must be > 0, got h={h!r}, tol={tol!r}")
    several = isinstance(x, tuple)
    xs = [np.array(a, dtype=np.float64) for a in (x if several else (x,))]
    claimed = grad(*[a.copy() for a in xs]) if callable(grad) else grad
    if several and not (isinstance(claimed, (tuple, list)) and len(claimed) == len(xs)):
        got = len(claimed) if isinstance(claimed, (tuple, list)) else 1
        return _not_ok("gradient", f"grad gave {got} array(s) for {len(xs)} inputs")
    claimed = [np.asarray(g, dtype=np.float64) for g in (claimed if several else (claimed,))]
    for i, (g, a) in enumerate(zip(claimed, xs)):
        if g.shape != a.shape:
            name = f"x{i}" if several else "x"
            return _not_ok("gradient", f"the claimed gradient for {name} has shape {g.shape}, {name} has {a.shape}")
    loss = lambda: _scalar(f(*xs))  # noqa: E731  reads xs as numerical_gradient perturbs them
    numerical = [numerical_gradient(loss, a, h) for a in xs]
    errors = np.array([rel_error(g, nu) if np.all(np.isfinite(g)) else np.nan
                       for g, nu in zip(claimed, numerical)])
    i = _worst(errors)[0] if several else 0
    entry = _worst(np.abs(claimed[i] - numerical[i]))
    err = float(errors[i])
    ok = bool(np.all(errors <= tol))
    name = (f"x{i}" if several else "x") + (_at(entry) if entry else "")
    where = ((i,) if several else ()) + tuple(int(k) for k in entry)
    a, nu = float(claimed[i][entry]), float(numerical[i][entry])
    text = (f"{_verdict(ok)}: gradient relative error {err:.2g} {'<=' if ok else '>'} {tol:g} "
            f"(central differences, h = {h:g})")
    if several:
        text += f", the worst of {len(xs)} arrays: x{i}"
    if not ok:
        text += f"; worst entry {name}: claimed {_num(a)}, numerical {_num(nu)}"
    return Result(ok, "gradient", a, nu, err, tol, where, text)


# ---------------------------------------------------------------- identity and bound
def _pair(kind: str, a, b):
    """Two float64 arrays of one shape (a scalar is broadcast), or a not-ok Result."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape and a.ndim and b.ndim:
        return _not_ok(kind, f"the two sides have shapes {a.shape} and {b.shape}")
    return np.broadcast_arrays(a, b)


def identity(lhs, rhs, rtol: float = 1e-9, scale=None) -> Result:
    r"""Is ``lhs == rhs``, up to rounding? Judged relative to their size.

    ``lhs`` and ``rhs`` are numbers or arrays of one shape (or one of them a number).
    Each entry's error is $|\mathrm{lhs} - \mathrm{rhs}| / \max(|\mathrm{lhs}|, |\mathrm{rhs}|)$ (0 where
    both are 0) and the largest must be at most ``rtol``: float64 rounding in a
    computation of a few dozen steps stays far below the default $10^{-9}$, a wrong
    constant or a missing term does not. ``scale`` replaces $\max(|\mathrm{lhs}|, |\mathrm{rhs}|)$ as
    the size to judge against (a number or an array), e.g. ``scale=1.0`` for two sides
    that should both be 0, where a relative error means nothing.
    """
    pair = _pair("identity", lhs, rhs)
    if isinstance(pair, Result):
        return pair
    a, b = pair
    size = np.maximum(np.abs(a), np.abs(b)) if scale is None else np.broadcast_to(
        np.asarray(scale, dtype=np.float64), a.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(a - b) / size
        err = np.where(a == b, 0.0, err)
    err = np.where(np.isfinite(a) & np.isfinite(b), err, np.nan)
    where = _worst(err)
    e, l, r = float(err[where]), float(a[where]), float(b[where])
    ok = bool(np.all(err <= rtol))
    if not math.isfinite(e):
        body = f"{_num(l)} vs {_num(r)}{' at ' + _at(where) if where else ''}: not finite"
    else:
        judged = f"relative error {e:.2g} {'<=' if ok else '>'} {rtol:g}"
        if not where:
            body = f"{_num(l)} {'=' if ok else '!='} {_num(r)}, {judged}"
        elif ok:
            body = f"all {a.size} entries agree, {judged} (worst {_at(where)}: {_num(l)} vs {_num(r)})"
        else:
            bad = int(np.sum(~(err <= rtol)))
            body = f"{bad} of {a.size} entries differ, worst {_at(where)}: {_num(l)} != {_num(r)}, {judged}"
    return Result(ok, "identity", l, r, e, rtol, where, f"{_verdict(ok)}: {body}")


def bound(lower, target, rtol: float = 1e-12) -> Result:
    r"""Does ``lower <= target`` hold in every case? The tightest case (or the worst failure) is shown.

    ``lower`` and ``target`` are numbers or arrays of one shape (one of them may be a
    number), one entry per case: e.g. the ELBO of many $q$'s and $\log p(x)$. The margin
    of a case is ``target - lower``; it must be at least $-\,$``rtol``$\cdot\max(|\mathrm{lower}|, |\mathrm{target}|)$,
    a rounding allowance for cases where the bound is attained (an ELBO at the exact
    posterior). Deterministic values only: for a Monte Carlo estimate of a bound, check
    the expectation it estimates with :func:`expectation`, or the bound draw by draw.
    """
    pair = _pair("bound", lower, target)
    if isinstance(pair, Result):
        return pair
    a, b = pair
    margin = b - a
    holds = margin >= -rtol * np.maximum(np.abs(a), np.abs(b))  # False for NaN
    where = _worst(-margin)
    m, l, t = float(margin[where]), float(a[where]), float(b[where])
    ok = bool(np.all(holds))
    case = f" {_at(where)}" if where else ""
    if ok:
        head = f"lower <= target in all {a.size} cases; tightest{case}: " if where else ""
        body = f"{head}{_num(l)} <= {_num(t)}, margin {m:.3g}"
    elif not math.isfinite(m):
        body = f"{_num(l)} vs {_num(t)}{case}: not finite"
    else:
        head = f"lower > target in {int(np.sum(~holds))} of {a.size} cases; worst{case}: " if where else ""
        body = f"{head}{_num(l)} > {_num(t)} by {-m:.3g}"
    return Result(ok, "bound", l, t, m, 0.0, where, f"{_verdict(ok)}: {body}")
