"""Assertions whose failures teach: each names the case, what was expected and what came out.

A failing test of an assignment task also names the section of ASSIGNMENT.md to re-read
(tests/conftest.py adds it). Expected values come from independent means: central
differences, Monte Carlo, exact cases, numbers worked out by hand.
"""
from __future__ import annotations

import numpy as np

from minivae.gradcheck import compare_backward, mismatch, show

TOL = 1e-7  # relative error of a backward pass against central differences, in float64


def assert_close(got, expected, case: str, what: str = "the result", rtol: float = 1e-12, atol: float = 0.0):
    """``got`` equals ``expected`` within rtol/atol, shape included; else a message naming the case."""
    problem = mismatch(got, expected, rtol, atol)
    if problem:
        raise AssertionError(f"{case}: {what}: {problem}")


def assert_backward(forward, backward, inputs: dict, rng: np.random.Generator, case: str,
                    tol: float = TOL, wrt: list[str] | None = None):
    """The backward pass against central differences of the forward pass (minivae.gradcheck),
    with a random upstream gradient; ``inputs`` maps each input's name to its array, in the
    order of forward's arguments. A failure names the case and, for each input off by more
    than ``tol``, its relative error and the expected and obtained gradient at its worst entry."""
    names = list(inputs)
    index = None if wrt is None else [names.index(n) for n in wrt]
    results = compare_backward(forward, backward, list(inputs.values()), rng, index)
    bad = []
    for c in results:
        if not c.error <= tol:
            name = names[c.index]
            if c.analytic.shape != c.numerical.shape:
                bad.append(f"d{name} has shape {c.analytic.shape}, expected {c.numerical.shape}")
                continue
            worst = np.unravel_index(np.argmax(np.abs(c.analytic - c.numerical)), c.numerical.shape)
            bad.append(f"d{name}: relative error {c.error:.3g} > {tol:g}; at index {tuple(int(i) for i in worst)} "
                       f"central differences give {c.numerical[worst]:.10g}, your backward {c.analytic[worst]:.10g} "
                       f"(expected {show(c.numerical)}, got {show(c.analytic)})")
    if bad:
        raise AssertionError(f"{case}: " + "; ".join(bad))


def assert_monte_carlo(value, samples, case: str, what: str = "the value", z: float = 4.0):
    """``value`` (per example) within ``z`` standard errors of the mean of ``samples`` (S, ...)."""
    samples = np.asarray(samples, np.float64)
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    off = np.abs(np.asarray(value) - mean) / np.maximum(se, 1e-300)
    if np.all(off <= z):
        return
    i = np.unravel_index(np.argmax(off), off.shape) if off.ndim else ()
    raise AssertionError(f"{case}: {what}: Monte Carlo with {len(samples)} samples gives {show(mean)} "
                         f"+- {show(se)} (standard error); got {show(value)}; at index {tuple(int(k) for k in i)} "
                         f"that is {float(off[i]):.1f} standard errors off (more than {z:g})")


def assert_param_grads(loss, params: dict, grads: dict, case: str, tol: float = TOL, h: float = 1e-4):
    """Every parameter's gradient against central differences of ``loss()`` (which reads the
    current ``params``, float64, perturbed in place and restored). A failure names the case
    and each parameter off by more than ``tol``, with the expected and obtained values at its
    worst entry."""
    from minivae.gradcheck import numerical_gradient, rel_error

    missing, unknown = sorted(set(params) - set(grads)), sorted(set(grads) - set(params))
    bad = [f"no gradient for {missing}"] if missing else []
    bad += [f"gradients for {unknown}, which are not parameters"] if unknown else []
    for name in (n for n in params if n in grads):
        numerical = numerical_gradient(loss, params[name], h)
        got = np.asarray(grads[name])
        if got.shape != numerical.shape:
            bad.append(f"{name}: gradient of shape {got.shape}, expected {numerical.shape}")
            continue
        error = rel_error(got, numerical)
        if not error <= tol:
            worst = np.unravel_index(np.argmax(np.abs(got - numerical)), numerical.shape)
            bad.append(f"{name}: relative error {error:.3g} > {tol:g}; at index {tuple(int(i) for i in worst)} "
                       f"central differences give {numerical[worst]:.10g}, the backward {got[worst]:.10g}")
    if bad:
        raise AssertionError(f"{case}: " + "; ".join(bad))
