"""Decoder likelihoods: gradients w.r.t. the decoder output, normalization, naive
formulas, and behaviour at extreme logits / log-variances in float32 and float64."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae.gradcheck import check_backward
from minivae.likelihoods import (
    LIKELIHOODS, bernoulli_backward, bernoulli_forward, categorical_backward, categorical_forward,
    gaussian_backward, gaussian_forward, gaussian_learned_backward, gaussian_learned_forward,
    get_likelihood, laplace_backward, laplace_forward, log_softmax,
)
from minivae.nn import sigmoid

from strategies import data_for, dtypes, finite_arrays, shapes_2d, small_dim

N, D = 3, 4
SIGMA = 0.7  # the fixed scale of the gaussian and laplace likelihoods in these tests
TOL = 1e-7

#: name -> (forward(x, out), backward, params per data dimension)
OPS = {
    "bernoulli": (bernoulli_forward, bernoulli_backward, 1),
    "gaussian": (lambda x, out: gaussian_forward(x, out, SIGMA), gaussian_backward, 1),
    "gaussian_learned": (gaussian_learned_forward, gaussian_learned_backward, 2),
    "laplace": (lambda x, out: laplace_forward(x, out, SIGMA), laplace_backward, 1),
    "categorical": (categorical_forward, categorical_backward, 1),
}


def sample_data(name: str, rng: np.random.Generator, n: int = N, d: int = D) -> np.ndarray:
    if name == "bernoulli":
        x = (rng.random((n, d)) < 0.5).astype(np.float64)
        x[0] = rng.random(d)  # fractional targets (grey pixels) are allowed too
        return x
    if name == "categorical":
        return rng.multinomial(5, np.full(d, 1 / d), size=n).astype(np.float64)  # counts
    return rng.standard_normal((n, d))


def sample_out(name: str, x: np.ndarray, lead: tuple, rng: np.random.Generator) -> np.ndarray:
    """A decoder output of shape (*lead, N, P); laplace locations stay >= 0.1 from x."""
    shape = (*lead, *x.shape)
    if name == "laplace":
        return x + rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 2.0, size=shape)
    if name == "gaussian_learned":
        return np.concatenate([rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape)], axis=-1)
    return 2 * rng.standard_normal(shape)


# ---------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("lead", [(), (2,)], ids=["N,P", "S,N,P"])
@pytest.mark.parametrize("name", list(OPS))
def test_likelihood_backward_gradcheck(name, lead):
    forward, backward, _ = OPS[name]
    rng = np.random.default_rng(17 * list(OPS).index(name) + len(lead))
    x = sample_data(name, rng)
    out = sample_out(name, x, lead, rng)
    errors = check_backward(lambda o: forward(x, o), backward, [out], rng)
    assert errors[0] <= TOL


def test_backward_names_cover_the_registry():
    assert list(OPS) == list(LIKELIHOODS)
    for name in LIKELIHOODS:
        lik = get_likelihood(name, SIGMA)
        assert lik.backward is OPS[name][1] and lik.params_per_dim == OPS[name][2]


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_registry_forward_is_the_module_function_with_the_scale(name):
    rng = np.random.default_rng(3)
    x = sample_data(name, rng)
    out = sample_out(name, x, (2,), rng)
    lik = get_likelihood(name, SIGMA)
    np.testing.assert_array_equal(lik.forward(x, out)[0], OPS[name][0](x, out)[0])
    errors = check_backward(lambda o: lik.forward(x, o), lik.backward, [out], rng)
    assert errors[0] <= TOL


def test_get_likelihood_rejects_unknown_names_and_bad_scales():
    with pytest.raises(ValueError) as info:
        get_likelihood("poisson")
    assert all(name in str(info.value) for name in LIKELIHOODS)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            get_likelihood("gaussian", bad)


@pytest.mark.task_bernoulli
def test_likelihood_means():
    rng = np.random.default_rng(4)
    out = rng.standard_normal((2, N, D))
    np.testing.assert_array_equal(get_likelihood("bernoulli").mean(out), sigmoid(out))
    np.testing.assert_array_equal(get_likelihood("gaussian").mean(out), out)
    np.testing.assert_array_equal(get_likelihood("laplace").mean(out), out)
    cat = get_likelihood("categorical").mean(out)
    np.testing.assert_allclose(cat.sum(axis=-1), 1.0, rtol=1e-15)
    learned = np.concatenate([out, out + 10], axis=-1)
    np.testing.assert_array_equal(get_likelihood("gaussian_learned").mean(learned), out)


# ---------------------------------------------------------------- closed forms
@pytest.mark.task_bernoulli
def test_bernoulli_matches_naive_formula_for_moderate_logits():
    rng = np.random.default_rng(5)
    x, logits = sample_data("bernoulli", rng), rng.uniform(-8, 8, (2, N, D))
    s = 1 / (1 + np.exp(-logits))
    naive = np.sum(x * np.log(s) + (1 - x) * np.log(1 - s), axis=-1)
    np.testing.assert_allclose(bernoulli_forward(x, logits)[0], naive, rtol=1e-12)


@pytest.mark.task_bernoulli
def test_bernoulli_probabilities_of_0_and_1_sum_to_one():
    logits = np.linspace(-30, 30, 61)[:, None]  # (N, 1): D = 1
    p0 = np.exp(bernoulli_forward(np.zeros_like(logits), logits)[0])
    p1 = np.exp(bernoulli_forward(np.ones_like(logits), logits)[0])
    np.testing.assert_allclose(p0 + p1, 1.0, rtol=1e-14)
    np.testing.assert_allclose(p1, sigmoid(logits[:, 0]), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("name,loc", [("gaussian", 0.0), ("gaussian", 1.3), ("laplace", 0.0), ("laplace", -0.4)])
@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_fixed_scale_densities_integrate_to_one(name, loc, scale):
    lik = get_likelihood(name, scale)
    lo, hi = loc - 40 * scale, loc + 40 * scale
    grid = np.linspace(lo, hi, 80_001)  # loc is a grid point: the laplace kink sits on a node
    x = grid[:, None]  # (G, 1): D = 1
    p = np.exp(lik.forward(x, np.full_like(x, loc))[0])
    assert np.trapezoid(p, grid) == pytest.approx(1.0, abs=1e-6)


def test_gaussian_learned_integrates_to_one():
    grid = np.linspace(-20, 20, 80_001)
    x = grid[:, None]  # (G, 1)
    out = np.broadcast_to([0.5, np.log(2.0)], (grid.size, 2))  # mean 0.5, variance 2
    p = np.exp(gaussian_learned_forward(x, out)[0])
    assert np.trapezoid(p, grid) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sigma", [0.2, 1.0, 3.0])
def test_fixed_gaussian_equals_learned_gaussian_with_constant_log_var(sigma):
    rng = np.random.default_rng(6)
    x, mean = rng.standard_normal((N, D)), rng.standard_normal((2, N, D))
    fixed, fixed_cache = gaussian_forward(x, mean, sigma)
    out = np.concatenate([mean, np.full_like(mean, 2 * math.log(sigma))], axis=-1)
    learned, learned_cache = gaussian_learned_forward(x, out)
    np.testing.assert_allclose(fixed, learned, rtol=1e-14)
    dlogp = rng.standard_normal((2, N))
    np.testing.assert_allclose(gaussian_backward(dlogp, fixed_cache),
                               gaussian_learned_backward(dlogp, learned_cache)[..., :D], rtol=1e-14)
    naive = np.sum(-0.5 * ((x - mean) / sigma) ** 2 - 0.5 * np.log(2 * np.pi * sigma ** 2), axis=-1)
    np.testing.assert_allclose(fixed, naive, rtol=1e-13)


def test_laplace_matches_naive_formula():
    rng = np.random.default_rng(7)
    x, loc = rng.standard_normal((N, D)), rng.standard_normal((2, N, D))
    naive = np.sum(-np.abs(x - loc) / SIGMA - np.log(2 * SIGMA), axis=-1)
    np.testing.assert_allclose(laplace_forward(x, loc, SIGMA)[0], naive, rtol=1e-14)


def test_categorical_one_hots_sum_to_one_over_all_categories():
    rng = np.random.default_rng(8)
    logits = 3 * rng.standard_normal((2, N, D))  # (S, N, D)
    probs = [np.exp(categorical_forward(np.broadcast_to(np.eye(D)[d], (N, D)), logits)[0])
             for d in range(D)]
    np.testing.assert_allclose(np.sum(probs, axis=0), 1.0, rtol=1e-14)


def test_categorical_counts_match_naive_formula():
    rng = np.random.default_rng(9)
    x, logits = sample_data("categorical", rng), rng.standard_normal((N, D))
    naive = np.sum(x * np.log(np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)), axis=-1)
    np.testing.assert_allclose(categorical_forward(x, logits)[0], naive, rtol=1e-13)
    np.testing.assert_allclose(np.exp(log_softmax(logits)).sum(axis=-1), 1.0, rtol=1e-15)


def test_categorical_is_shift_invariant():
    rng = np.random.default_rng(10)
    x, logits = sample_data("categorical", rng), rng.standard_normal((N, D))
    np.testing.assert_allclose(categorical_forward(x, logits + 1e3)[0], categorical_forward(x, logits)[0],
                               rtol=1e-10)


# ---------------------------------------------------------------- properties
#: per likelihood: bounds on the decoder output for "extreme" inputs
EXTREME_OUT = {"bernoulli": 1e4, "categorical": 1e4, "gaussian": 1e3, "laplace": 1e3}


@st.composite
def extreme_case(draw, name):
    """(x (N, D), out (*lead, N, P), dlogp (*lead, N)) of one dtype, with extreme outputs."""
    dtype = draw(dtypes)
    n, d = draw(shapes_2d)
    lead = draw(st.one_of(st.just(()), small_dim.map(lambda s: (s,))))
    x = draw(data_for(name, (n, d), dtype, bound=1e3))
    if name == "gaussian_learned":
        mean = draw(finite_arrays((*lead, n, d), dtype, 1e3))
        log_var = draw(finite_arrays((*lead, n, d), dtype, 50.0))
        out = np.concatenate([mean, log_var], axis=-1)
    else:
        out = draw(finite_arrays((*lead, n, d), dtype, EXTREME_OUT[name]))
    dlogp = draw(finite_arrays((*lead, n), dtype, 4.0))
    return x, out, dlogp


@pytest.mark.parametrize("name", LIKELIHOODS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_finite_dtype_shape_and_pure_for_extreme_inputs(name, data):
    """Finite log-densities and gradients for |logit| up to 1e4 and log_var in [-50, 50],
    float32 in -> float32 out, logp of out's leading shape, dout of out's shape, and
    backward touches neither dlogp nor the cache; forward touches neither x nor out."""
    x, out, dlogp = data.draw(extreme_case(name))
    forward, backward, _ = OPS[name]
    x0, out0, dlogp0 = x.copy(), out.copy(), dlogp.copy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        logp, cache = forward(x, out)
        cache0 = [np.array(a, copy=True) for a in cache]
        dout = backward(dlogp, cache)
    assert logp.shape == out.shape[:-1] and logp.dtype == out.dtype
    assert dout.shape == out.shape and dout.dtype == out.dtype
    assert np.all(np.isfinite(logp)) and np.all(np.isfinite(dout))
    assert np.array_equal(x, x0) and np.array_equal(out, out0) and np.array_equal(dlogp, dlogp0)
    assert all(np.array_equal(a, a0) for a, a0 in zip(cache, cache0))


@pytest.mark.task_bernoulli
@pytest.mark.parametrize("name", ["bernoulli", "categorical"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_log_probabilities_of_discrete_data_are_nonpositive(name, data):
    """A probability mass is at most 1, even at |logit| = 1e4 (softplus and the
    log-sum-exp must not lose the sign)."""
    x, out, _ = data.draw(extreme_case(name))
    if name == "bernoulli":
        x = np.round(x)  # binary: a mass; fractional targets are not probabilities
    if name == "categorical":
        x = np.eye(x.shape[-1], dtype=out.dtype)[np.argmax(x, axis=-1)]  # one-hot: a single draw
    assert np.all(OPS[name][0](x, out)[0] <= 0)


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_outputs_broadcast_against_the_data_both_ways(name):
    """One decoder output for many data points (out (S, 1, P) against x (N, D)) gives what
    the explicitly repeated output gives: the in-place passes keep the broadcast shape."""
    rng = np.random.default_rng(5)
    forward, backward, _ = OPS[name]
    x = sample_data(name, rng, n=4, d=3)
    out = rng.standard_normal((2, 1, 6 if name == "gaussian_learned" else 3))
    full = np.repeat(out, 4, axis=1)                       # (2, 4, P)
    dlogp = rng.standard_normal((2, 4))
    logp, cache = forward(x, out)
    logp_full, cache_full = forward(x, full)
    np.testing.assert_allclose(logp, logp_full, rtol=1e-12)
    np.testing.assert_allclose(backward(dlogp, cache), backward(dlogp, cache_full), rtol=1e-12)
