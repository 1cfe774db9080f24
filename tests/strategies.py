"""Hypothesis strategies shared by the tests: small shapes, finite floats of bounded size;
and :func:`assert_one_line`, the check of the library's one-line error promise.

Bounds are exactly representable in float32 (integers or powers of two), so the
same strategy serves float32 and float64 arrays.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

#: both floating dtypes every op must support.
DTYPES = (np.float32, np.float64)
dtypes = st.sampled_from(DTYPES)

small_dim = st.integers(min_value=1, max_value=4)
#: (N, K): a batch of N examples with K latent (or D data) dimensions.
shapes_2d = st.tuples(small_dim, small_dim)
#: (S, N, K): S samples per example.
shapes_3d = st.tuples(small_dim, small_dim, small_dim)
#: activations are elementwise: any small shape.
shapes_any = st.lists(small_dim, min_size=1, max_size=3).map(tuple)


def finite(dtype, bound: float) -> st.SearchStrategy[float]:
    """Finite floats in [-bound, bound] representable in ``dtype``."""
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)


def finite_arrays(shape, dtype=np.float64, bound: float = 8.0) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` (a tuple or a strategy of tuples) with entries in [-bound, bound]."""
    return arrays(np.dtype(dtype), shape, elements=finite(dtype, bound))


@st.composite
def gaussian_params(draw, dtype=np.float64, mu_bound: float = 1e3, log_var_bound: float = 30.0,
                    shape=None):
    """``(mu, log_var)``, two (N, K) arrays of one dtype: the encoder's two outputs."""
    shape = draw(shapes_2d) if shape is None else shape
    mu = draw(finite_arrays(shape, dtype, mu_bound))
    log_var = draw(finite_arrays(shape, dtype, log_var_bound))
    return mu, log_var


@st.composite
def data_for(draw, likelihood: str, shape, dtype=np.float64, bound: float = 1e3) -> np.ndarray:
    """Data ``x`` (N, D) the likelihood is defined for: binary or in [0, 1] for
    bernoulli, counts for categorical, bounded reals otherwise."""
    if likelihood == "bernoulli":
        unit = st.floats(0, 1, width=32 if np.dtype(dtype) == np.float32 else 64)
        return draw(arrays(np.dtype(dtype), shape, elements=st.one_of(st.sampled_from([0.0, 1.0]), unit)))
    if likelihood == "categorical":
        return draw(arrays(np.dtype(dtype), shape, elements=st.integers(0, 5).map(float)))
    return draw(finite_arrays(shape, dtype, bound))


def sample_data(likelihood: str, rng: np.random.Generator, n: int = 3, d: int = 4) -> np.ndarray:
    """Data x (n, d) for the likelihood, drawn with ``rng``: binary for bernoulli (the first row
    grey levels, which it allows), counts for categorical, standard normal otherwise."""
    if likelihood == "bernoulli":
        x = (rng.random((n, d)) < 0.5).astype(np.float64)
        x[0] = rng.random(d)
        return x
    if likelihood == "categorical":
        return rng.multinomial(5, np.full(d, 1 / d), size=n).astype(np.float64)  # counts
    return rng.standard_normal((n, d))


def assert_one_line(message, *fragments: str) -> str:
    """``message`` (a string, or a ``pytest.raises`` result) is one line, with no line break
    of any kind (as ``str.splitlines`` counts them), and holds every fragment; returns it."""
    if isinstance(message, pytest.ExceptionInfo):
        message = str(message.value)
    assert message and len(message.splitlines()) == 1, repr(message)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message
