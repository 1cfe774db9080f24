"""Decoder likelihoods: gradients w.r.t. the decoder output, normalization, naive
formulas, and behaviour at extreme logits / log-variances in float32 and float64."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae import likelihoods
from minivae.gradcheck import check_backward
from minivae.likelihoods import (
    LIKELIHOODS, bernoulli_backward, bernoulli_forward, categorical_backward, categorical_forward,
    gaussian_backward, gaussian_forward, gaussian_learned_backward, gaussian_learned_forward,
    get_likelihood, laplace_backward, laplace_forward, log_softmax,
)
from minivae.nn import sigmoid

from checks import assert_backward, assert_close
from strategies import data_for, dtypes, finite_arrays, sample_data, shapes_2d, small_dim

N, D = 3, 4
SIGMA = 0.7  # the fixed scale of the gaussian and laplace likelihoods in these tests
TOL = 1e-7

def marked(names):
    """The likelihood names as pytest parameters, bernoulli marked as its assignment task."""
    return [pytest.param(n, marks=pytest.mark.task_bernoulli) if n == "bernoulli" else n for n in names]


#: name -> (forward(x, out), backward, params per data dimension)
OPS = {
    "bernoulli": (bernoulli_forward, bernoulli_backward, 1),
    "gaussian": (lambda x, out: gaussian_forward(x, out, SIGMA), gaussian_backward, 1),
    "gaussian_learned": (gaussian_learned_forward, gaussian_learned_backward, 2),
    "laplace": (lambda x, out: laplace_forward(x, out, SIGMA), laplace_backward, 1),
    "categorical": (categorical_forward, categorical_backward, 1),
}


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
@pytest.mark.parametrize("name", marked(OPS))
def test_likelihood_backward_gradcheck(name, lead):
    forward, backward, _ = OPS[name]
    rng = np.random.default_rng(17 * list(OPS).index(name) + len(lead))
    x = sample_data(name, rng)
    out = sample_out(name, x, lead, rng)
    assert_backward(lambda o: forward(x, o), lambda d, c: (backward(d, c),), {"out": out}, rng,
                    f"{backward.__name__}, x {x.shape}, decoder output {out.shape}")


def test_backward_names_cover_the_registry():
    """Each registry entry is its module pair (bernoulli's is the pair the trainer runs, which is
    bernoulli_forward/backward or, in the solution, their in-buffers twins held bit for bit equal)."""
    assert list(OPS) == list(LIKELIHOODS)
    for name in LIKELIHOODS:
        lik = get_likelihood(name, SIGMA)
        backward = likelihoods._BERNOULLI[1] if name == "bernoulli" else OPS[name][1]
        assert lik.backward is backward and lik.params_per_dim == OPS[name][2]


@pytest.mark.parametrize("name", marked(LIKELIHOODS))
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
        get_likelihood("no-such-likelihood")
    assert all(name in str(info.value) for name in LIKELIHOODS)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            get_likelihood("gaussian", bad)


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
def test_bernoulli_values_worked_out_by_hand():
    """Three images of four pixels, their log-likelihoods computed to 30 digits from the definition."""
    x = np.array([[1, 0, 1, 0.25], [0, 1, 0, 1], [0.5, 0.5, 1, 0]])
    logits = np.array([[0, 2, -3, 1], [-1.5, 0.5, 4, -0.25], [10, -10, 20, -20]], dtype=np.float64)
    assert_close(bernoulli_forward(x, logits)[0], [-6.931924230694882, -5.5195796099595125, -10.000090801920742],
                 f"bernoulli_forward, x = {x.tolist()}, logits = {logits.tolist()}", "log p(x | logits)",
                 rtol=1e-13)
    # the same three images under two decoder outputs at once: logits (S = 2, N, D)
    both = bernoulli_forward(x, np.stack([logits, logits]))[0]
    assert_close(both, np.tile([-6.931924230694882, -5.5195796099595125, -10.000090801920742], (2, 1)),
                 "the same logits twice along a leading sample axis", "log p(x | logits)", rtol=1e-13)


@pytest.mark.task_bernoulli
def test_bernoulli_probabilities_of_0_and_1_sum_to_one():
    logits = np.linspace(-30, 30, 61)[:, None]  # (N, 1): D = 1
    p0 = np.exp(bernoulli_forward(np.zeros_like(logits), logits)[0])
    p1 = np.exp(bernoulli_forward(np.ones_like(logits), logits)[0])
    case = "one pixel, logits from -30 to 30"
    assert_close(p0 + p1, np.ones(61), case, "p(x = 0) + p(x = 1)", rtol=1e-14)
    assert_close(p1, sigmoid(logits[:, 0]), case, "p(x = 1), the pixel's probability sigmoid(logit)",
                 rtol=1e-12, atol=1e-16)


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


@pytest.mark.parametrize("name", marked(LIKELIHOODS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_finite_dtype_shape_and_pure_for_extreme_inputs(name, data):
    """Finite log-densities and gradients for |logit| up to 1e4 and log_var in [-50, 50],
    float32 in -> float32 out, logp of out's leading shape, dout of out's shape, and
    backward touches neither dlogp nor the cache; forward touches neither x nor out."""
    x, out, dlogp = data.draw(extreme_case(name))
    forward, backward, _ = OPS[name]
    x0, out0, dlogp0 = x.copy(), out.copy(), dlogp.copy()
    case = f"{name}, {out.dtype} decoder output {out.shape} with entries up to {np.abs(out).max():.3g}"
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        try:
            logp, cache = forward(x, out)
            cache0 = [np.array(a, copy=True) for a in cache]
            dout = backward(dlogp, cache)
        except FloatingPointError as e:
            raise AssertionError(f"{case}: {e} (an overflow, a log 0 or an invalid value)") from None
    assert logp.shape == out.shape[:-1] and logp.dtype == out.dtype, f"{case}: log p is {logp.shape} {logp.dtype}"
    assert dout.shape == out.shape and dout.dtype == out.dtype, f"{case}: the gradient is {dout.shape} {dout.dtype}"
    assert np.all(np.isfinite(logp)), f"{case}: log p is not finite: {logp[~np.isfinite(logp)][:4]}"
    assert np.all(np.isfinite(dout)), f"{case}: the gradient is not finite"
    assert np.array_equal(x, x0) and np.array_equal(out, out0) and np.array_equal(dlogp, dlogp0), \
        f"{case}: an input was changed"
    assert all(np.array_equal(a, a0) for a, a0 in zip(cache, cache0)), f"{case}: the cache was changed"


@pytest.mark.parametrize("name", marked(["bernoulli", "categorical"]))
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
    logp = OPS[name][0](x, out)[0]
    assert np.all(logp <= 0), f"{name}, decoder outputs up to {np.abs(out).max():.3g}: log-probabilities " \
                              f"above 0: {logp[logp > 0][:4]}"


@pytest.mark.parametrize("name", marked(LIKELIHOODS))
def test_outputs_broadcast_against_the_data_both_ways(name):
    """One decoder output for many data points (out (S, 1, P) against x (N, D)) gives what
    the explicitly repeated output gives."""
    rng = np.random.default_rng(5)
    forward, backward, _ = OPS[name]
    x = sample_data(name, rng, n=4, d=3)
    out = rng.standard_normal((2, 1, 6 if name == "gaussian_learned" else 3))
    full = np.repeat(out, 4, axis=1)                       # (2, 4, P)
    dlogp = rng.standard_normal((2, 4))
    logp, cache = forward(x, out)
    logp_full, cache_full = forward(x, full)
    case = f"{name}, decoder output (2, 1, P) broadcast against x (4, 3)"
    assert_close(logp, logp_full, case, "log p (expected: that of the output repeated 4 times)", rtol=1e-12)
    assert_close(backward(dlogp, cache), backward(dlogp, cache_full), case, "the gradient", rtol=1e-12)
### BEGIN INSTRUCTOR: the in-buffers Bernoulli pair is left out of the student copy


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_bernoulli_in_buffers_gives_the_textbooks_bits(data):
    """The trainer's Bernoulli pair (two scratch arrays, no temporaries) is bernoulli_forward and
    bernoulli_backward, bit for bit, at logits up to 1e4 in float32 and float64."""
    from minivae.likelihoods import bernoulli_backward_in_buffers, bernoulli_forward_in_buffers
    x, logits, dlogp = data.draw(extreme_case("bernoulli"))
    if data.draw(st.booleans(), label="logits not contiguous"):
        logits = np.asfortranarray(logits)
    (logp, cache), (logp_b, cache_b) = bernoulli_forward(x, logits), bernoulli_forward_in_buffers(x, logits)
    np.testing.assert_array_equal(logp_b, logp)
    assert logp_b.dtype == logp.dtype
    dlogits, dlogits_b = bernoulli_backward(dlogp, cache), bernoulli_backward_in_buffers(dlogp, cache_b)
    np.testing.assert_array_equal(dlogits_b, dlogits)
    assert dlogits_b.dtype == dlogits.dtype


@pytest.mark.parametrize("case", ["broadcast", "mixed dtypes"])
def test_bernoulli_in_buffers_leaves_broadcasting_and_mixed_dtypes_to_the_textbook(case):
    """Logits broadcast against the data, or data and logits of two dtypes: the textbook's result."""
    from minivae.likelihoods import bernoulli_backward_in_buffers, bernoulli_forward_in_buffers
    rng = np.random.default_rng(3)
    x = (rng.random((4, 3)) < 0.5).astype(np.float32 if case == "mixed dtypes" else np.float64)
    logits = rng.standard_normal((2, 1, 3) if case == "broadcast" else (2, 4, 3)) * 5
    dlogp = rng.standard_normal((2, 4))
    (logp, cache), (logp_b, cache_b) = bernoulli_forward(x, logits), bernoulli_forward_in_buffers(x, logits)
    np.testing.assert_array_equal(logp_b, logp)
    np.testing.assert_array_equal(bernoulli_backward_in_buffers(dlogp, cache_b), bernoulli_backward(dlogp, cache))


def test_the_models_bernoulli_is_the_in_buffers_pair():
    """What training runs is the pair the two tests above hold equal to the textbook."""
    from minivae.likelihoods import bernoulli_backward_in_buffers, bernoulli_forward_in_buffers
    lik = get_likelihood("bernoulli")
    assert (lik.forward, lik.backward) == (bernoulli_forward_in_buffers, bernoulli_backward_in_buffers)
### END INSTRUCTOR
