"""The two ELBO forms, the closed-form E_q[log p(z)], and the unit conversion."""
import math

import numpy as np
import pytest
from hypothesis import given, settings

from minivae.gaussian import entropy, kl_std_normal_forward, log_density, reparameterize_forward
from minivae.gradcheck import check_backward
from minivae.likelihoods import gaussian_forward
from minivae.objectives import elbo_joint_form, elbo_kl_form, expected_log_prior, nats_to_bits_per_dim

from strategies import dtypes, gaussian_params

N, K, D = 3, 2, 4


def toy_model(rng: np.random.Generator, S: int):
    """Encoder outputs (N, K), samples z (S, N, K) and log p(x | z) (S, N) from a linear-Gaussian decoder."""
    mu, log_var = rng.standard_normal((N, K)), rng.uniform(-1.5, 0.5, (N, K))
    x, W = rng.standard_normal((N, D)), rng.standard_normal((K, D))
    z = reparameterize_forward(mu, log_var, rng.standard_normal((S, N, K)))[0]  # (S, N, K)
    log_px_z = gaussian_forward(x, z @ W, 0.8)[0]  # (S, N)
    return mu, log_var, z, log_px_z


@settings(max_examples=100, deadline=None)
@given(mu_lv=gaussian_params(np.float64, mu_bound=10.0, log_var_bound=10.0))
def test_expected_log_prior_plus_entropy_is_minus_kl(mu_lv):
    mu, log_var = mu_lv
    lhs = expected_log_prior(mu, log_var) + entropy(log_var)
    kl = kl_std_normal_forward(mu, log_var)[0]
    scale = np.sum(1 + mu * mu + np.exp(log_var) + np.abs(log_var), axis=-1)
    assert np.all(np.abs(lhs + kl) <= 1e-12 * np.maximum(scale, 1.0))


def test_expected_log_prior_agrees_with_monte_carlo():
    rng = np.random.default_rng(0)
    mu, log_var = rng.standard_normal((N, K)), rng.uniform(-2, 1, (N, K))
    S = 40_000
    z = reparameterize_forward(mu, log_var, rng.standard_normal((S, N, K)))[0]
    log_pz = log_density(z, 0.0, np.zeros((N, K)))  # (S, N)
    se = log_pz.std(axis=0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(log_pz.mean(axis=0) - expected_log_prior(mu, log_var)) <= 4 * se)
    assert np.all(se < 0.05)


def test_expected_log_prior_hand_computed():
    # mu = (1, 0), sigma^2 = (1, e): -(2 log 2pi + 1 + 1 + e) / 2
    value = expected_log_prior(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(value, [-(2 * math.log(2 * math.pi) + 2 + math.e) / 2], rtol=1e-15)


def test_elbo_forms_agree_on_average():
    rng = np.random.default_rng(1)
    S = 40_000
    mu, log_var, z, log_px_z = toy_model(rng, S)
    kl_form = elbo_kl_form(log_px_z, kl_std_normal_forward(mu, log_var)[0])
    joint_form = elbo_joint_form(log_px_z, z, log_var)
    # Their difference is the Monte Carlo error of (1/S) sum_s log p(z_s) alone.
    log_pz = log_density(z, 0.0, np.zeros((N, K)))  # (S, N)
    se = log_pz.std(axis=0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(joint_form - kl_form) <= 4 * se)
    assert np.all(se < 0.05)


def test_elbo_forms_agree_exactly_with_closed_form_prior_term():
    rng = np.random.default_rng(2)
    mu, log_var, z, log_px_z = toy_model(rng, S=5)
    kl = kl_std_normal_forward(mu, log_var)[0]
    kl_form = elbo_kl_form(log_px_z, kl)
    # E_q[log p(z)] in closed form in place of its sample average: the KL form exactly
    closed = log_px_z.mean(axis=0) + expected_log_prior(mu, log_var) + entropy(log_var)
    np.testing.assert_allclose(closed, kl_form, rtol=1e-12)
    # and the per-draw difference of the two forms is exactly the prior term's sampling error
    log_pz = log_density(z, 0.0, np.zeros((N, K)))  # (S, N)
    np.testing.assert_allclose(elbo_joint_form(log_px_z, z, log_var) - kl_form,
                               log_pz.mean(axis=0) - expected_log_prior(mu, log_var), rtol=1e-10, atol=1e-12)


def test_elbo_kl_form_values_and_beta():
    log_px_z = np.array([[-1.0, -4.0], [-3.0, -2.0]])  # (S=2, N=2)
    kl = np.array([0.5, 2.0])
    np.testing.assert_array_equal(elbo_kl_form(log_px_z, kl), [-2.5, -5.0])
    np.testing.assert_array_equal(elbo_kl_form(log_px_z, kl, beta=0.0), [-2.0, -3.0])
    np.testing.assert_array_equal(elbo_kl_form(log_px_z, kl, beta=2.0), [-3.0, -7.0])


def test_elbo_joint_form_hand_computed():
    """S = 1, K = 1, z = 0, log_var = 0: log p(x|z) + log N(0; 0, 1) + H(N(0, 1)) = log p(x|z) + 1/2."""
    value = elbo_joint_form(np.array([[-3.0]]), np.zeros((1, 1, 1)), np.zeros((1, 1)))
    np.testing.assert_allclose(value, [-2.5], rtol=1e-15)


def test_nats_to_bits_per_dim():
    assert nats_to_bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0, rel=1e-15)
    assert nats_to_bits_per_dim(0.0, 10) == 0.0
    np.testing.assert_allclose(nats_to_bits_per_dim(np.array([2 * math.log(2), 6 * math.log(2)]), 2),
                               [1.0, 3.0], rtol=1e-15)


@settings(max_examples=30, deadline=None)
@given(dtype=dtypes, mu_lv=gaussian_params(np.float32, mu_bound=4.0, log_var_bound=4.0))
def test_objectives_keep_float32(dtype, mu_lv):
    mu, log_var = (a.astype(dtype) for a in mu_lv)
    n = mu.shape[0]
    z = np.stack([mu, -mu])  # (S=2, N, K)
    log_px_z = np.ones((2, n), dtype)
    kl = kl_std_normal_forward(mu, log_var)[0]
    for value in (elbo_kl_form(log_px_z, kl), elbo_kl_form(log_px_z, kl, beta=0.5),
                  elbo_joint_form(log_px_z, z, log_var), expected_log_prior(mu, log_var),
                  nats_to_bits_per_dim(kl, 7)):
        assert value.dtype == dtype and value.shape == (n,)
        assert np.all(np.isfinite(value))


def test_iw_bound_backward_gradcheck_and_values():
    from minivae.objectives import iw_bound_backward, iw_bound_forward
    rng = np.random.default_rng(21)
    log_w = rng.standard_normal((5, 3)) * 3
    errors = check_backward(iw_bound_forward, iw_bound_backward, [log_w], rng)
    assert max(errors) <= 1e-7
    bound, cache = iw_bound_forward(log_w)
    np.testing.assert_allclose(bound, np.log(np.exp(log_w).mean(0)), rtol=1e-13)
    np.testing.assert_allclose(cache.weights.sum(0), 1.0, rtol=1e-14)
    huge = iw_bound_forward(log_w - 1e5)[0]  # no underflow: shifted by the max
    np.testing.assert_allclose(huge, bound - 1e5, rtol=1e-12)
    one = iw_bound_forward(log_w[:1])[0]  # S = 1: the single-sample ELBO
    np.testing.assert_array_equal(one, log_w[0])


def test_free_bits_backward_gradcheck_and_values():
    from minivae.objectives import free_bits_backward, free_bits_forward
    rng = np.random.default_rng(22)
    kl_dims = rng.uniform(0, 2, (6, 4))
    kl_dims[:, 0] *= 0.05  # a dimension well below the floor
    floor = 0.5
    fwd = lambda k: free_bits_forward(k, floor)  # noqa: E731
    assert max(check_backward(fwd, free_bits_backward, [kl_dims], rng)) <= 1e-7
    value, cache = fwd(kl_dims)
    assert value == pytest.approx(np.maximum(kl_dims.mean(0), floor).sum(), rel=1e-14)
    grad = free_bits_backward(1.0, cache)
    np.testing.assert_array_equal(grad[:, 0], 0.0)  # below the floor: no gradient
    np.testing.assert_allclose(grad[:, 1:], 1 / 6)
    assert free_bits_backward(1.0, free_bits_forward(kl_dims.astype(np.float32), floor)[1]).dtype == np.float32
