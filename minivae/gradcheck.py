r"""Finite-difference gradient checks: the referee for every hand-derived backward.

Central differences in float64,

$$ \frac{\partial f}{\partial x_i} \approx \frac{f(x + h e_i) - f(x - h e_i)}{2h}, $$

have truncation error $O(h^2)$ and round-off error $O(\epsilon_{mach} |f| / h)$;
$h = 10^{-6}$ balances the two for the $O(1)$ functions checked here.

The relative error of an analytic gradient $a$ against a numerical one $n$ is

$$ \mathrm{rel}(a, n) = \frac{\lVert a - n \rVert_2}{\max(\lVert a \rVert_2, \lVert n \rVert_2)}, $$

taken per array, so a tiny entry that is pure round-off cannot dominate while a
wrong formula still shows up as an error of order one. Used by the tests, the
lessons and students alike (every lesson on a backward pass ends with one).
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = ["numerical_gradient", "rel_error", "Comparison", "compare_backward", "check_backward", "check_params",
           "show", "mismatch"]


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` with respect to array ``x``.

    ``x`` is perturbed in place one entry at a time and restored exactly, so ``f``
    may close over it (this is how model parameters are checked). ``x`` must be
    float64: in float32 the differences would drown in round-off.
    Returns an array of ``x``'s shape.
    """
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient needs a float64 array, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: writes reach x
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array it can perturb in place")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        f_minus = f()
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(a: np.ndarray, n: np.ndarray) -> float:
    r"""$\lVert a - n\rVert / \max(\lVert a\rVert, \lVert n\rVert)$; 0.0 when both are exactly 0."""
    a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
    if a.shape != n.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {n.shape}")
    scale = max(np.linalg.norm(a), np.linalg.norm(n))
    return 0.0 if scale == 0.0 else float(np.linalg.norm(a - n) / scale)


class Comparison(NamedTuple):
    """One input's gradient: the backward's, the central differences', their relative error."""
    index: int              # the input's position in forward's arguments
    analytic: np.ndarray
    numerical: np.ndarray
    error: float


def compare_backward(
    forward: Callable[..., tuple],
    backward: Callable[..., tuple],
    inputs: Sequence[np.ndarray],
    rng: np.random.Generator,
    wrt: Sequence[int] | None = None,
    h: float = 1e-6,
) -> list[Comparison]:
    r"""Compare ``backward`` with finite differences with a random upstream gradient.

    ``forward(*inputs) -> (y, cache)`` and ``backward(dy, cache) -> grads`` with
    one gradient per input, in order (``None`` for a non-differentiable input).
    With a random $\bar y$ the scalar $L = \sum \bar y \odot y$ has
    $\partial L / \partial x = $ backward($\bar y$), so every entry of every
    Jacobian-vector product is exercised. ``y`` may be an array or a tuple of
    arrays (then ``dy`` is a tuple too). Returns one :class:`Comparison` per checked
    input (``wrt`` selects them, default all). The inputs are float64 copies;
    the caller's arrays are never touched. A missing (None) or wrongly shaped
    backward gradient gets an error of ``inf`` (and is returned as it came, None as NaNs).
    """
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    y, cache = forward(*xs)
    ys = y if isinstance(y, tuple) else (y,)
    dys = tuple(rng.standard_normal(np.shape(t)) for t in ys)

    def loss() -> float:
        out = forward(*xs)[0]
        outs = out if isinstance(out, tuple) else (out,)
        return float(sum(np.sum(d * o) for d, o in zip(dys, outs)))

    grads = backward(dys if isinstance(y, tuple) else dys[0], cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) != len(xs):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(xs)} inputs")
    out = []
    for i in (range(len(xs)) if wrt is None else wrt):
        numerical = numerical_gradient(loss, xs[i], h)
        analytic = np.asarray(grads[i]) if grads[i] is not None else np.full(xs[i].shape, np.nan)
        ok = grads[i] is not None and analytic.shape == numerical.shape  # max() over errors skips a NaN
        error = rel_error(analytic, numerical) if ok else float("inf")
        out.append(Comparison(i, analytic, numerical, error))
    return out


def check_backward(
    forward: Callable[..., tuple],
    backward: Callable[..., tuple],
    inputs: Sequence[np.ndarray],
    rng: np.random.Generator,
    wrt: Sequence[int] | None = None,
    h: float = 1e-6,
) -> list[float]:
    """:func:`compare_backward`'s relative errors alone, one per checked input."""
    return [c.error for c in compare_backward(forward, backward, inputs, rng, wrt, h)]


def check_params(
    loss: Callable[[], float],
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    h: float = 1e-6,
) -> dict[str, float]:
    """Relative error of ``grads[name]`` against finite differences of ``loss()``
    for every float64 array in ``params`` (perturbed in place and restored).
    ``loss`` must read the current values of ``params``. Returns {name: error}.
    """
    missing = set(params) ^ set(grads)
    if missing:
        raise KeyError(f"params and grads have different keys: {sorted(missing)}")
    return {k: rel_error(grads[k], numerical_gradient(loss, params[k], h)) for k in params}


def show(a, n: int = 6) -> str:
    """A short, readable rendering of an array: its first ``n`` values and its shape."""
    a = np.asarray(a)
    if a.ndim == 0:
        return f"{a.item():.10g}" if a.dtype.kind in "fc" else str(a.item())
    flat = a.ravel()
    values = ", ".join(f"{float(v):.6g}" for v in flat[:n]) + (", ..." if flat.size > n else "")
    return f"[{values}] (shape {a.shape})"


def mismatch(got, expected, rtol: float = 1e-12, atol: float = 0.0, dtype: bool = False) -> str | None:
    """None when ``got`` equals ``expected`` within ``rtol``/``atol`` (same shape, NaN and inf
    where expected has them, and with ``dtype`` the same dtype); else one line saying how
    they differ: both in brief, and the worst entry's expected and obtained values."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if dtype and got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}"
    if got.dtype.kind not in "biufc" or expected.dtype.kind not in "biufc":
        return None if np.array_equal(got, expected) else f"{show(got)}, expected {show(expected)}"
    g, e = got.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        excess = np.abs(g - e) - (atol + rtol * np.abs(e))                          # > 0 where too far
    special = ~np.isfinite(e) | ~np.isfinite(g)
    excess = np.where(special, np.where((g == e) | (np.isnan(g) & np.isnan(e)), -1.0, np.inf), excess)
    if not np.any(excess > 0):
        return None
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
    return (f"expected {show(expected)}, got {show(got)}; the largest difference, at index "
            f"{tuple(int(i) for i in worst)}: expected {e[worst]:.10g}, got {g[worst]:.10g} "
            f"(tolerance rtol={rtol:g}, atol={atol:g})")
