"""Diagonal Gaussians: sampler, KLs, log-density and entropy.

Gradients against finite differences; closed forms against each other and
against Monte Carlo through the sampler; properties by hypothesis.
"""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minivae.gaussian import (
    LOG_2PI, LOG_VAR_LIMIT, clamp_log_var_backward, clamp_log_var_forward, entropy, kl_diag_backward, kl_diag_forward, kl_std_normal_backward,
    kl_std_normal_forward, log_density, log_density_backward, log_density_forward,
    reparameterize_backward, reparameterize_forward, std,
)
from minivae.gradcheck import check_backward, numerical_gradient, rel_error

from checks import assert_backward, assert_close, assert_monte_carlo
from strategies import dtypes, finite_arrays, gaussian_params, shapes_2d, small_dim

N, K = 3, 4
TOL = 1e-7


def params(rng, n=N, k=K):
    """(mu, log_var), each (n, k), log_var in a range where sigma is O(1)."""
    return rng.standard_normal((n, k)), rng.uniform(-1.5, 1.5, (n, k))


# ---------------------------------------------------------------- gradient checks
@pytest.mark.task_reparam
@pytest.mark.parametrize("eps_shape", [(N, K), (5, N, K), (1, N, K)])
def test_reparameterize_backward_gradcheck(eps_shape):
    rng = np.random.default_rng(len(eps_shape) + eps_shape[0])
    mu, log_var = params(rng)
    eps = rng.standard_normal(eps_shape)
    assert_backward(reparameterize_forward, reparameterize_backward, {"mu": mu, "log_var": log_var, "eps": eps},
                    rng, f"reparameterize_backward, mu and log_var ({N}, {K}), eps {eps_shape}")


@pytest.mark.task_reparam
def test_reparameterize_backward_shapes_and_a_case_by_hand():
    rng = np.random.default_rng(0)
    mu, log_var = params(rng)
    eps = rng.standard_normal((6, N, K))
    z, cache = reparameterize_forward(mu, log_var, eps)
    dmu, dlog_var, deps = reparameterize_backward(np.ones_like(z), cache)
    case = f"reparameterize_backward, eps (6, {N}, {K}), dz = 1 everywhere"
    got = (np.shape(dmu), np.shape(dlog_var), np.shape(deps))
    assert got == ((N, K), (N, K), eps.shape), f"{case}: shapes {got}, expected {((N, K), (N, K), eps.shape)}"
    assert_close(dmu, np.full((N, K), 6.0), case, "dmu (each mu moves all 6 samples' z by as much)")
    # one sample, log sigma^2 = log 4 (sigma = 2), eps = 1.5: z = mu + 3, and a small change in
    # log sigma^2 moves z by 1.5 times the change in sigma = exp(log sigma^2 / 2), worked out by hand
    _, one = reparameterize_forward(np.zeros((1, 1)), np.full((1, 1), np.log(4.0)), np.full((1, 1), 1.5))
    dmu1, dlv1, deps1 = reparameterize_backward(np.ones((1, 1)), one)
    case = "reparameterize_backward, mu = 0, sigma = 2, eps = 1.5, dz = 1"
    assert_close(dmu1, [[1.0]], case, "dmu")
    assert_close(dlv1, [[1.5]], case, "dlog_var", rtol=1e-14)
    assert_close(deps1, [[2.0]], case, "deps", rtol=1e-14)


def test_clamp_log_var_backward_gradcheck_inside_and_outside_the_range():
    rng = np.random.default_rng(7)
    raw = rng.uniform(-45, 45, (N, 10))
    raw[np.abs(np.abs(raw) - LOG_VAR_LIMIT) < 0.01] = 0.0  # keep off the two kinks
    raw[0, :2] = [-44.0, 44.0]                              # some outside for sure
    assert check_backward(clamp_log_var_forward, lambda d, c: (clamp_log_var_backward(d, c),),
                          [raw], rng)[0] <= TOL
    lv, cache = clamp_log_var_forward(raw)
    assert np.all(np.abs(lv) <= LOG_VAR_LIMIT)
    inside = np.abs(raw) <= LOG_VAR_LIMIT
    assert np.array_equal(lv[inside], raw[inside])          # the identity where it matters
    assert np.all(clamp_log_var_backward(np.ones_like(raw), cache)[~inside] == 0)


def test_clamped_log_var_keeps_every_gaussian_op_finite_in_float32():
    raw = np.array([[-1e4, -50.0, 50.0, 1e4]], np.float32)     # (1, 4)
    lv = clamp_log_var_forward(raw)[0]
    mu = np.full_like(lv, 1e3)
    eps = np.full((3, 1, 4), 4.0, np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        z, c_rep = reparameterize_forward(mu, lv, eps)
        kl, c_kl = kl_std_normal_forward(mu, lv)
        logq, c_q = log_density_forward(z, mu, lv)
        grads = [*reparameterize_backward(np.ones_like(z), c_rep), *kl_std_normal_backward(np.ones(1, np.float32), c_kl),
                 *log_density_backward(np.ones((3, 1), np.float32), c_q)]
    for a in (lv, z, kl, logq, *grads):
        assert a.dtype == np.float32 and np.all(np.isfinite(a))


@pytest.mark.task_kl
@pytest.mark.parametrize("shape", [(N, K), (2, N, K), (N, K, 1), (K,)])
def test_kl_std_normal_backward_gradcheck(shape):
    """Any leading shape: one KL per row of the last axis (free bits asks for (N, K, 1))."""
    rng = np.random.default_rng(1 + len(shape))
    mu, log_var = rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape)
    assert_backward(kl_std_normal_forward, kl_std_normal_backward, {"mu": mu, "log_var": log_var}, rng,
                    f"kl_std_normal_backward, mu and log_var of shape {shape}")


@pytest.mark.task_kl
@pytest.mark.parametrize("shape", [(N, K), (2, N, K)])
def test_kl_diag_backward_gradcheck_all_four_inputs(shape):
    rng = np.random.default_rng(2 + len(shape))
    inputs = {"mu_q": rng.standard_normal(shape), "log_var_q": rng.uniform(-1.5, 1.5, shape),
              "mu_p": rng.standard_normal(shape), "log_var_p": rng.uniform(-1.5, 1.5, shape)}
    assert_backward(kl_diag_forward, kl_diag_backward, inputs, rng, f"kl_diag_backward, all four of shape {shape}")


@pytest.mark.parametrize("z_shape", [(N, K), (2, N, K)])
def test_log_density_backward_gradcheck(z_shape):
    rng = np.random.default_rng(3 + len(z_shape))
    z = rng.standard_normal(z_shape)
    mu, log_var = (rng.standard_normal(z_shape), rng.uniform(-1.5, 1.5, z_shape))
    errors = check_backward(log_density_forward, log_density_backward, [z, mu, log_var], rng)
    assert len(errors) == 3 and max(errors) <= TOL, errors


def test_log_density_backward_broadcast_gradients_sum_to_the_parameters_gradient():
    """z (S, N, K) against mu, log_var (N, K): the caller sums dmu, dlog_var over S."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, N, K))
    mu, log_var = params(rng)
    dlogp = rng.standard_normal((4, N))
    _, dmu, dlog_var = log_density_backward(dlogp, log_density_forward(z, mu, log_var)[1])
    loss = lambda: float(np.sum(dlogp * log_density(z, mu, log_var)))  # noqa: E731
    assert rel_error(dmu.sum(axis=0), numerical_gradient(loss, mu)) <= TOL
    assert rel_error(dlog_var.sum(axis=0), numerical_gradient(loss, log_var)) <= TOL


# ---------------------------------------------------------------- closed forms
def test_std_is_sqrt_of_exp_log_var():
    log_var = np.linspace(-20, 20, 41)
    np.testing.assert_allclose(std(log_var), np.sqrt(np.exp(log_var)), rtol=1e-14)
    np.testing.assert_allclose(std(log_var) ** 2, np.exp(log_var), rtol=1e-14)


@pytest.mark.task_kl
def test_kl_std_normal_equals_kl_diag_against_standard_normal():
    rng = np.random.default_rng(6)
    mu, log_var = rng.standard_normal((8, K)) * 3, rng.uniform(-6, 6, (8, K))
    kl = kl_std_normal_forward(mu, log_var)[0]
    case = "mu, log_var (8, 4) against N(0, I)"
    assert_close(kl_diag_forward(mu, log_var, 0.0, 0.0)[0], kl, case, "kl_diag_forward with mu_p = log_var_p = 0 "
                 "(expected: kl_std_normal_forward's values)", rtol=1e-13)
    assert_close(kl_diag_forward(mu, log_var, np.zeros_like(mu), np.zeros_like(mu))[0], kl, case,
                 "kl_diag_forward with zero arrays for p", rtol=1e-13)


@pytest.mark.task_kl
def test_kl_values_worked_out_by_hand():
    case = "mu = 1 and log_var = 1 in each of 2 dimensions"
    assert_close(kl_std_normal_forward(np.ones((1, 2)), np.ones((1, 2)))[0], [1.718281828459045], case,
                 "kl_std_normal_forward", rtol=1e-14)
    case = "q = N(1, 1), p = N(3, 4), one dimension"
    kl = kl_diag_forward(np.array([[1.0]]), np.array([[0.0]]), np.array([[3.0]]), np.array([[np.log(4)]]))[0]
    assert_close(kl, [0.8181471805599453], case, "kl_diag_forward", rtol=1e-14)


@pytest.mark.task_kl
def test_kl_diag_of_q_with_itself_is_exactly_zero():
    rng = np.random.default_rng(7)
    mu, log_var = rng.standard_normal((50, K)) * 3, rng.uniform(-10, 10, (50, K))
    kl = kl_diag_forward(mu, log_var, mu, log_var)[0]
    assert_close(kl, np.zeros(50), "KL(q || q) for 50 random q, log_var in [-10, 10]", "kl_diag_forward", atol=0)


def _log_ratios(mu, log_var, mu_p, log_var_p, rng, S):
    """log q(z) - log p(z) for S draws z ~ q through the sampler: (S, N), the KL's definition."""
    eps = rng.standard_normal((S, *mu.shape))  # (S, N, K)
    z = reparameterize_forward(mu, log_var, eps)[0]
    return log_density(z, mu, log_var) - log_density(z, mu_p, log_var_p)  # (S, N)


@pytest.mark.task_kl
def test_kl_std_normal_agrees_with_monte_carlo_through_the_sampler():
    rng = np.random.default_rng(8)
    mu, log_var = rng.standard_normal((N, K)), rng.uniform(-2, 1, (N, K))
    terms = _log_ratios(mu, log_var, 0.0, 0.0, rng, S=40_000)
    kl = kl_std_normal_forward(mu, log_var)[0]
    assert_monte_carlo(kl, terms, f"{N} random q, E_q[log q(z) - log N(z; 0, I)]", "kl_std_normal_forward")
    assert np.all(terms.std(axis=0) / np.sqrt(len(terms)) < 0.05 * kl)  # the check has teeth


@pytest.mark.task_kl
def test_kl_diag_agrees_with_monte_carlo_through_the_sampler():
    rng = np.random.default_rng(9)
    mu, log_var = rng.standard_normal((N, K)), rng.uniform(-1, 1, (N, K))
    mu_p, log_var_p = rng.standard_normal((N, K)), rng.uniform(-1, 1, (N, K))
    terms = _log_ratios(mu, log_var, mu_p, log_var_p, rng, S=40_000)
    kl = kl_diag_forward(mu, log_var, mu_p, log_var_p)[0]
    assert_monte_carlo(kl, terms, f"{N} random pairs q, p, E_q[log q(z) - log p(z)]", "kl_diag_forward")
    assert np.all(terms.std(axis=0) / np.sqrt(len(terms)) < 0.05 * kl)


def test_sampler_reads_log_var_as_log_variance():
    """Sample mean mu and sample variance exp(log_var), not exp(log_var)^2 or exp(log_var/2)."""
    rng = np.random.default_rng(10)
    mu, log_var = np.array([[0.5, -1.0]]), np.array([[np.log(4.0), np.log(0.25)]])
    S = 200_000
    z = reparameterize_forward(mu, log_var, rng.standard_normal((S, 1, 2)))[0]
    var = np.exp(log_var)
    assert np.all(np.abs(z.mean(axis=0) - mu) <= 4 * np.sqrt(var / S))
    # Var of the sample variance of a Gaussian: 2 sigma^4 / (S - 1)
    assert np.all(np.abs(z.var(axis=0, ddof=1) - var) <= 4 * np.sqrt(2 * var ** 2 / (S - 1)))


def test_log_density_matches_per_dimension_formula():
    rng = np.random.default_rng(11)
    z, mu, log_var = rng.standard_normal((N, K)), rng.standard_normal((N, K)), rng.uniform(-2, 2, (N, K))
    var = np.exp(log_var)
    naive = np.sum(-0.5 * np.log(2 * np.pi * var) - (z - mu) ** 2 / (2 * var), axis=-1)
    np.testing.assert_allclose(log_density(z, mu, log_var), naive, rtol=1e-13)
    assert LOG_2PI == pytest.approx(np.log(2 * np.pi), rel=1e-16)


@pytest.mark.parametrize("mu,log_var", [(0.0, 0.0), (1.5, np.log(0.3)), (-2.0, np.log(5.0))])
def test_log_density_integrates_to_one(mu, log_var):
    sigma = np.exp(0.5 * log_var)
    grid = np.linspace(mu - 15 * sigma, mu + 15 * sigma, 30_001)[:, None]  # (G, 1)
    p = np.exp(log_density(grid, mu, np.full((1, 1), log_var)))
    assert np.trapezoid(p, grid[:, 0]) == pytest.approx(1.0, abs=1e-6)


def test_entropy_matches_closed_form_and_monte_carlo():
    rng = np.random.default_rng(12)
    mu, log_var = rng.standard_normal((N, K)), rng.uniform(-2, 2, (N, K))
    naive = np.sum(0.5 * np.log(2 * np.pi * np.e * np.exp(log_var)), axis=-1)
    np.testing.assert_allclose(entropy(log_var), naive, rtol=1e-13)
    S = 40_000
    z = reparameterize_forward(mu, log_var, rng.standard_normal((S, N, K)))[0]
    neg_logq = -log_density(z, mu, log_var)  # (S, N)
    se = neg_logq.std(axis=0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(neg_logq.mean(axis=0) - entropy(log_var)) <= 4 * se)
    assert np.all(se < 0.02)


# ---------------------------------------------------------------- properties
@pytest.mark.task_kl
@settings(max_examples=200, deadline=None)
@given(mu_lv=gaussian_params(np.float64, mu_bound=1e3, log_var_bound=30.0))
@example(mu_lv=(np.zeros((1, 1)), np.full((1, 1), 1e-20)))
@example(mu_lv=(np.zeros((1, 1)), np.full((1, 1), 1e-9)))
def test_kl_std_normal_is_nonnegative(mu_lv):
    mu, log_var = mu_lv
    kl = kl_std_normal_forward(mu, log_var)[0]
    case = f"kl_std_normal_forward, mu and log_var of shape {mu.shape}"
    assert np.shape(kl) == mu.shape[:1], f"{case}: the KL has shape {np.shape(kl)}, expected {mu.shape[:1]}"
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0), \
        f"{case}: a KL is negative or not finite: {kl[~(kl >= 0)][:4]} at mu, log_var = " \
        f"{mu[~(kl >= 0)][:1]}, {log_var[~(kl >= 0)][:1]}"


@pytest.mark.task_kl
@settings(max_examples=100, deadline=None)
@given(q=gaussian_params(np.float64, mu_bound=1e3, log_var_bound=30.0), data=st.data())
def test_kl_diag_is_nonnegative(q, data):
    mu_q, log_var_q = q
    mu_p = data.draw(finite_arrays(mu_q.shape, np.float64, 1e3))
    log_var_p = data.draw(finite_arrays(mu_q.shape, np.float64, 30.0))
    kl = kl_diag_forward(mu_q, log_var_q, mu_p, log_var_p)[0]
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0), \
        f"kl_diag_forward, inputs of shape {mu_q.shape}: a KL is negative or not finite: {kl[~(kl >= 0)][:4]}"


@pytest.mark.task_kl
@settings(max_examples=30, deadline=None)
@given(shape=shapes_2d, dtype=dtypes)
def test_kl_is_exactly_zero_at_the_prior(shape, dtype):
    zeros = np.zeros(shape, dtype)
    case = f"mu = log_var = 0, shape {shape}, {np.dtype(dtype)}"
    assert_close(kl_std_normal_forward(zeros, zeros)[0], np.zeros(shape[0]), case, "kl_std_normal_forward")
    assert_close(kl_diag_forward(zeros, zeros, zeros, zeros)[0], np.zeros(shape[0]), case, "kl_diag_forward")
    dmu, dlog_var = kl_std_normal_backward(np.ones(shape[0], dtype), kl_std_normal_forward(zeros, zeros)[1])
    assert_close(dmu, np.zeros(shape), case, "dmu (the prior is the minimum)")
    assert_close(dlog_var, np.zeros(shape), case, "dlog_var (the prior is the minimum)")


@pytest.mark.task_kl
@settings(max_examples=50, deadline=None)
@given(mu_lv=gaussian_params(np.float64, mu_bound=100.0, log_var_bound=10.0))
def test_kl_is_positive_away_from_the_prior(mu_lv):
    mu, log_var = mu_lv
    away = np.any((np.abs(mu) > 1e-3) | (np.abs(log_var) > 1e-3), axis=-1)
    kl = kl_std_normal_forward(mu, log_var)[0]
    assert np.all(kl[away] > 0), f"kl_std_normal_forward away from the prior: {kl[away][~(kl[away] > 0)][:4]} <= 0"


@settings(max_examples=50, deadline=None)
@given(dtype=dtypes, mu_lv=st.data(), S=st.one_of(st.none(), small_dim))
def test_zero_noise_gives_the_mean(dtype, mu_lv, S):
    mu, log_var = mu_lv.draw(gaussian_params(dtype, mu_bound=1e3, log_var_bound=30.0))
    eps = np.zeros(mu.shape if S is None else (S, *mu.shape), dtype)
    z = reparameterize_forward(mu, log_var, eps)[0]
    assert z.dtype == dtype and z.shape == eps.shape
    np.testing.assert_array_equal(z, np.broadcast_to(mu, eps.shape))


def _check_op(forward, backward, inputs, out_shape, dy, dtype):
    """float32 in -> float32 out, forward and backward, of the input shapes; backward mutates
    neither its upstream gradient nor the cache, forward not its inputs."""
    case = f"{backward.__name__} on {np.dtype(dtype)} inputs of shapes {[a.shape for a in inputs]}"
    copies = [a.copy() for a in inputs]
    y, cache = forward(*inputs)
    assert y.shape == out_shape and y.dtype == dtype, f"{case}: the forward gives {y.shape} {y.dtype}"
    dy0, cache0 = dy.copy(), [np.copy(a) for a in cache]
    grads = backward(dy, cache)
    assert len(grads) == len(inputs), f"{case}: {len(grads)} gradients for {len(inputs)} inputs"
    for g, x in zip(grads, inputs):
        assert g.dtype == dtype, f"{case}: a gradient has dtype {g.dtype}, expected {np.dtype(dtype)}"
        assert g.shape in (x.shape, out_shape + x.shape[-1:]), f"{case}: a gradient has shape {g.shape}"
        assert np.all(np.isfinite(g)), f"{case}: a gradient is not finite"
    assert np.array_equal(dy, dy0), f"{case}: the upstream gradient was changed"
    assert all(np.array_equal(a, a0) for a, a0 in zip(cache, cache0)), f"{case}: the cache was changed"
    assert all(np.array_equal(a, a0) for a, a0 in zip(inputs, copies)), f"{case}: an input was changed"


def _draw_ops_inputs(dtype, data):
    n, k = data.draw(shapes_2d)
    S = data.draw(small_dim)
    arr = lambda shape, bound=4.0: data.draw(finite_arrays(shape, dtype, bound))  # noqa: E731
    return n, k, S, arr


@pytest.mark.task_reparam
@settings(max_examples=40, deadline=None)
@given(dtype=dtypes, data=st.data())
def test_reparameterize_keeps_dtype_and_shape_and_leaves_inputs_alone(dtype, data):
    n, k, S, arr = _draw_ops_inputs(dtype, data)
    _check_op(reparameterize_forward, reparameterize_backward, (arr((n, k)), arr((n, k)), arr((S, n, k))),
              (S, n, k), arr((S, n, k)), dtype)


@pytest.mark.task_kl
@settings(max_examples=40, deadline=None)
@given(dtype=dtypes, data=st.data())
def test_kls_keep_dtype_and_shape_and_leave_inputs_alone(dtype, data):
    n, k, S, arr = _draw_ops_inputs(dtype, data)
    mu, log_var, mu_p, log_var_p = arr((n, k)), arr((n, k)), arr((n, k)), arr((n, k))
    _check_op(kl_std_normal_forward, kl_std_normal_backward, (mu, log_var), (n,), arr((n,)), dtype)
    _check_op(kl_diag_forward, kl_diag_backward, (mu, log_var, mu_p, log_var_p), (n,), arr((n,)), dtype)


@settings(max_examples=40, deadline=None)
@given(dtype=dtypes, data=st.data())
def test_log_density_and_entropy_keep_dtype_and_shape_and_leave_inputs_alone(dtype, data):
    n, k, S, arr = _draw_ops_inputs(dtype, data)
    mu, log_var, z = arr((n, k)), arr((n, k)), arr((S, n, k))
    _check_op(log_density_forward, log_density_backward, (z, mu, log_var), (S, n), arr((S, n)), dtype)
    assert entropy(log_var).dtype == dtype and entropy(log_var).shape == (n,)
    assert std(log_var).dtype == dtype
    assert log_density(z, mu, log_var).dtype == dtype
