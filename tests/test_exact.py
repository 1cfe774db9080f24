"""Models where the truth is known: the linear-Gaussian model in closed form and small
nonlinear decoders by quadrature. Against them, the ELBO identity
log p(x) = ELBO(q) + KL(q || p(z|x)) is checked to rounding error (linear) or within
Monte Carlo error bars (nonlinear), and the importance-sampled log p(x) of
minivae.estimate is checked to converge to the exact value."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae import VAE
from minivae.estimate import estimate_log_px
from minivae.exact import (QUADRATURE_N, gaussian_elbo_linear, kl_diag_full, ppca_from_vae,
                           ppca_log_px, ppca_optimal_encoder, ppca_posterior, quadrature_log_px,
                           quadrature_posterior_moments)
from minivae.gaussian import kl_diag_forward, kl_std_normal_forward, log_density

from strategies import gaussian_params

D, N = 5, 6


# ---------------------------------------------------------------- helpers
def linear_vae(K: int, s: float, seed: int = 0) -> VAE:
    return VAE(x_dim=D, hidden=(), z_dim=K, likelihood="gaussian", obs_scale=s, dtype="float64", seed=seed)


def sharp_decoder_vae(K: int, seed: int = 1) -> VAE:
    """A small nonlinear Bernoulli VAE. The decoder's initial weights are tripled, so
    that the exact posterior is visibly narrower than the prior and the encoder's
    initial q is visibly wrong (ELBO gaps of 0.2 to 2 nats)."""
    vae = VAE(x_dim=D, hidden=(8,), z_dim=K, likelihood="bernoulli", activation="tanh",
              dtype="float64", seed=seed)
    for name in vae.params:
        if name.startswith("dec."):
            vae.params[name][...] *= 3.0
    return vae


def set_params(vae: VAE, values: dict) -> None:
    for name, value in values.items():
        vae.params[name][...] = value


def sample_ppca(W, b, s, n, rng):
    """n draws x = zW + b + s * noise from the linear-Gaussian model, (n, D)."""
    z = rng.standard_normal((n, W.shape[0]))                     # (n, K)
    return z @ W + b + s * rng.standard_normal((n, W.shape[1]))


def sample_vae(vae, n, rng):
    """n binary draws x ~ p(x | z) p(z) from a Bernoulli VAE, (n, D)."""
    p = vae.decode_mean(rng.standard_normal((n, vae.z_dim)))     # (n, D)
    return (rng.random(p.shape) < p).astype(np.float64)


def orthogonal_rows(scales, rng):
    """W (K, D) whose rows are orthogonal with the given norms, so W W^T is diagonal."""
    Q = np.linalg.qr(rng.standard_normal((D, len(scales))))[0]   # (D, K), orthonormal columns
    return np.asarray(scales, dtype=np.float64)[:, None] * Q.T


def correlated_rows(rng, rho=0.9):
    """W (2, D) with strongly correlated rows: the posterior is strongly correlated."""
    w0 = rng.standard_normal(D)
    return np.stack([w0, rho * w0 + math.sqrt(1 - rho ** 2) * rng.standard_normal(D)])


def brute_force_log_px(x, W, b, s):
    """log N(x; b, C) with the D x D covariance C = W^T W + s^2 I formed explicitly."""
    C = W.T @ W + s * s * np.eye(W.shape[1])                     # (D, D)
    r = x - b
    quad = np.sum(r * np.linalg.solve(C, r.T).T, axis=-1)
    return -0.5 * (W.shape[1] * math.log(2 * math.pi) + np.linalg.slogdet(C)[1] + quad)


def mean_and_se(samples):
    """Per-example mean over the sample axis and its standard error: (S, N) -> (N,), (N,)."""
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(len(samples))


def mean_field_gap(W, s):
    """0.5 (sum_k log Lambda_kk - log det Lambda): the ELBO gap of the best diagonal q."""
    precision = np.eye(len(W)) + W @ W.T / s ** 2
    return 0.5 * (np.sum(np.log(np.diag(precision))) - np.linalg.slogdet(precision)[1])


# ---------------------------------------------------------------- the linear-Gaussian model
@pytest.mark.parametrize("K,d,s", [(1, 1, 0.7), (2, 5, 0.05), (3, 4, 1.0), (6, 3, 3.0)])
def test_ppca_log_px_matches_brute_force(K, d, s):
    rng = np.random.default_rng(K * 10 + d)
    W, b = rng.standard_normal((K, d)), rng.standard_normal(d)
    x = rng.standard_normal((N, K)) @ W + b + s * rng.standard_normal((N, d))
    x[0] += 5.0  # one example far from the data, where the quadratic form dominates
    exact = ppca_log_px(x, W, b, s)
    assert exact.shape == (N,) and exact.dtype == np.float64
    # both round at about 1e-14 relative (x[0] has log p(x) ~ -1e4 when s = 0.05)
    np.testing.assert_allclose(exact, brute_force_log_px(x, W, b, s), rtol=1e-13, atol=1e-10)


@pytest.mark.parametrize("K,s", [(1, 0.7), (2, 0.05), (3, 2.0)])
def test_ppca_posterior_matches_gaussian_conditioning(K, s):
    # (z, x) is jointly Gaussian with Cov(z, x) = W: E[z|x] = (x - b) C^{-1} W^T, Cov = I - W C^{-1} W^T
    rng = np.random.default_rng(K)
    W, b = rng.standard_normal((K, D)), rng.standard_normal(D)
    x = sample_ppca(W, b, s, N, rng)
    C = W.T @ W + s * s * np.eye(D)                              # (D, D)
    mean, cov = ppca_posterior(x, W, b, s)
    assert mean.shape == (N, K) and cov.shape == (K, K)
    np.testing.assert_allclose(mean, np.linalg.solve(C, (x - b).T).T @ W.T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cov, np.eye(K) - W @ np.linalg.solve(C, W.T), rtol=0, atol=1e-10)


@pytest.mark.parametrize("K", [1, 2])
def test_ppca_matches_quadrature_of_the_linear_vae(K):
    rng = np.random.default_rng(10 + K)
    vae = linear_vae(K, s=0.6, seed=K)
    W, b, s = ppca_from_vae(vae)
    assert W.shape == (K, D) and b.shape == (D,) and s == 0.6
    x = sample_ppca(W, b, s, N, rng)
    np.testing.assert_allclose(quadrature_log_px(vae, x), ppca_log_px(x, W, b, s), rtol=0, atol=1e-9)
    mean, cov = ppca_posterior(x, W, b, s)
    q_mean, q_var = quadrature_posterior_moments(vae, x)
    np.testing.assert_allclose(q_mean, mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(q_var, np.broadcast_to(np.diag(cov), (N, K)), rtol=0, atol=1e-9)


def test_ppca_from_vae_rejects_other_models():
    with pytest.raises(ValueError, match="hidden"):
        ppca_from_vae(VAE(x_dim=D, hidden=(4,), z_dim=2, likelihood="gaussian", dtype="float64"))
    with pytest.raises(ValueError, match="likelihood"):
        ppca_from_vae(VAE(x_dim=D, hidden=(), z_dim=2, likelihood="bernoulli", dtype="float64"))


def test_quadrature_rejects_three_latent_dimensions():
    vae = VAE(x_dim=D, hidden=(4,), z_dim=3, dtype="float64")
    with pytest.raises(ValueError, match="z_dim=3"):
        quadrature_log_px(vae, np.zeros((1, D)))


# ---------------------------------------------------------------- KL with a full covariance
@settings(max_examples=50, deadline=None)
@given(q=gaussian_params(np.float64, mu_bound=4.0, log_var_bound=4.0, shape=(4, 3)),
       seed=st.integers(0, 2 ** 32 - 1))
def test_kl_diag_full_matches_the_textbook_formula(q, seed):
    mu_q, log_var_q = q
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((3, 3))
    cov_p, mean_p = A @ A.T + 0.1 * np.eye(3), rng.standard_normal(3)
    # 0.5 [tr(S_p^{-1} S_q) + (m_p - m_q)^T S_p^{-1} (m_p - m_q) - K + log det S_p - log det S_q]
    P = np.linalg.inv(cov_p)
    diff = mu_q - mean_p
    expected = 0.5 * (np.exp(log_var_q) @ np.diag(P) + np.einsum("nk,kj,nj->n", diff, P, diff) - 3
                      + np.linalg.slogdet(cov_p)[1] - log_var_q.sum(axis=-1))
    kl = kl_diag_full(mu_q, log_var_q, mean_p, cov_p)
    np.testing.assert_allclose(kl, expected, rtol=1e-9, atol=1e-9)
    assert np.all(kl >= -1e-12)


@settings(max_examples=50, deadline=None)
@given(q=gaussian_params(np.float64, mu_bound=8.0, log_var_bound=6.0, shape=(4, 3)),
       p=gaussian_params(np.float64, mu_bound=8.0, log_var_bound=6.0, shape=(1, 3)))
def test_kl_diag_full_with_diagonal_covariance_is_the_diagonal_kl(q, p):
    (mu_q, log_var_q), (mean_p, log_var_p) = q, p
    cov_p = np.diag(np.exp(log_var_p[0]))
    expected = kl_diag_forward(mu_q, log_var_q, mean_p, log_var_p)[0]
    np.testing.assert_allclose(kl_diag_full(mu_q, log_var_q, mean_p[0], cov_p), expected,
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(kl_diag_full(mu_q, log_var_q, np.zeros(3), np.eye(3)),
                               kl_std_normal_forward(mu_q, log_var_q)[0], rtol=1e-12, atol=1e-12)
    assert np.all(np.abs(kl_diag_full(np.broadcast_to(mean_p, (4, 3)), np.broadcast_to(log_var_p, (4, 3)),
                                      mean_p, cov_p)) <= 1e-12)


# ---------------------------------------------------------------- the ELBO identity, exactly
@pytest.mark.parametrize("K,s", [(1, 0.5), (2, 1.0), (3, 0.2)])
@settings(max_examples=60, deadline=None)
@given(q=st.data())
def test_elbo_plus_posterior_kl_is_log_px_for_any_diagonal_q(K, s, q):
    rng = np.random.default_rng(K)
    W, b = rng.standard_normal((K, D)), rng.standard_normal(D)   # rows not orthogonal
    x = sample_ppca(W, b, s, N, rng)
    mu, log_var = q.draw(gaussian_params(np.float64, mu_bound=4.0, log_var_bound=4.0, shape=(N, K)))
    mean, cov = ppca_posterior(x, W, b, s)
    elbo = gaussian_elbo_linear(x, W, b, s, mu, log_var)
    gap = kl_diag_full(mu, log_var, mean, cov)
    assert np.all(gap > 0)  # a drawn q is never the posterior (for K > 1 no diagonal q can be)
    np.testing.assert_allclose(elbo + gap, ppca_log_px(x, W, b, s), rtol=0, atol=1e-9)


def test_closed_form_elbo_is_the_limit_of_the_vae_monte_carlo_elbo():
    rng = np.random.default_rng(0)
    vae = linear_vae(K=2, s=0.8, seed=4)
    W, b, s = ppca_from_vae(vae)
    x = sample_ppca(W, b, s, N, rng)
    mu, log_var = vae.encode(x)                                  # q from the VAE's own encoder
    exact = gaussian_elbo_linear(x, W, b, s, mu, log_var)
    eps = rng.standard_normal((50_000, N, 2))                    # (S, N, K)
    t = vae.terms(x, eps)
    per_sample = t.log_px_z - t.kl                               # (S, N)
    mc, se = mean_and_se(per_sample)
    np.testing.assert_allclose(vae.elbo(x, eps), mc, rtol=1e-12)
    assert np.all(se < 0.05)
    assert np.all(np.abs(mc - exact) <= 4 * se), (mc - exact) / se


def test_gap_is_zero_exactly_at_the_true_posterior():
    rng = np.random.default_rng(1)
    W, b, s = orthogonal_rows([2.0, 0.7, 0.3], rng), rng.standard_normal(D), 0.5
    x = sample_ppca(W, b, s, N, rng)
    mean, cov = ppca_posterior(x, W, b, s)
    assert np.max(np.abs(cov - np.diag(np.diag(cov)))) <= 1e-15  # orthogonal rows: diagonal posterior
    log_var = np.broadcast_to(np.log(np.diag(cov)), (N, 3))
    assert np.all(np.abs(kl_diag_full(mean, log_var, mean, cov)) <= 1e-10)
    np.testing.assert_allclose(gaussian_elbo_linear(x, W, b, s, mean, log_var), ppca_log_px(x, W, b, s),
                               rtol=0, atol=1e-10)
    # the optimal linear encoder outputs exactly this q
    vae = linear_vae(K=3, s=s)
    set_params(vae, ppca_optimal_encoder(W, b, s))
    mu_enc, log_var_enc = vae.encode(x)
    np.testing.assert_allclose(mu_enc, mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(log_var_enc, log_var, rtol=0, atol=1e-12)


@pytest.mark.parametrize("orthogonal", [True, False])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), step=st.floats(1e-3, 3.0))
def test_every_perturbation_of_the_best_diagonal_q_lowers_the_elbo(orthogonal, seed, step):
    """At the ELBO-optimal diagonal q (the exact posterior when W's rows are
    orthogonal) a step of any length in any direction of (mu, log_var) lowers the ELBO."""
    rng = np.random.default_rng(7)
    s = 0.5
    W = orthogonal_rows([1.5, 0.4], rng) if orthogonal else correlated_rows(rng, rho=0.6)
    b = rng.standard_normal(D)
    x = sample_ppca(W, b, s, N, rng)
    enc = ppca_optimal_encoder(W, b, s)
    mu = x @ enc["enc.mu.W"] + enc["enc.mu.b"]                   # (N, K)
    log_var = np.broadcast_to(enc["enc.log_var.b"], (N, 2))
    best = gaussian_elbo_linear(x, W, b, s, mu, log_var)
    exact = ppca_log_px(x, W, b, s)
    gap = mean_field_gap(W, s)
    if orthogonal:
        assert gap <= 1e-12
    else:
        assert gap > 0.1
    np.testing.assert_allclose(exact - best, gap, rtol=0, atol=1e-10)

    d = np.random.default_rng(seed).standard_normal((N, 4))
    d *= step / np.linalg.norm(d, axis=1, keepdims=True)         # one direction per example, |d| = step
    worse = gaussian_elbo_linear(x, W, b, s, mu + d[:, :2], log_var + d[:, 2:])
    assert np.all(worse < best)


# ---------------------------------------------------------------- importance sampling against the truth
def linear_vae_with_mean_field_encoder(s: float, rho: float | None = None, seed: int = 3):
    """Linear VAE (K = 2) with its ELBO-optimal diagonal encoder: a good but imperfect
    proposal. ``rho`` given: W has rows correlated by about rho, so the posterior is
    correlated and the mean-field q (narrower than the posterior along its long axis)
    leaves a gap; None: W is the VAE's initial decoder, weakly correlated, and the
    importance weights are well behaved."""
    rng = np.random.default_rng(seed)
    vae = linear_vae(K=2, s=s, seed=seed)
    if rho is not None:
        vae.params["dec.out.W"][...] = correlated_rows(rng, rho)
    W, b, _ = ppca_from_vae(vae)
    set_params(vae, ppca_optimal_encoder(W, b, s))
    return vae, rng


@pytest.mark.task_iw
def test_importance_sampling_with_the_exact_posterior_has_zero_variance():
    rng = np.random.default_rng(2)
    s = 0.5
    vae = linear_vae(K=2, s=s, seed=2)
    W, b = orthogonal_rows([1.2, 0.5], rng), vae.params["dec.out.b"]
    vae.params["dec.out.W"][...] = W
    set_params(vae, ppca_optimal_encoder(W, b, s))
    x = sample_ppca(W, b, s, N, rng)
    est = estimate_log_px(vae, x, 4, rng)
    np.testing.assert_allclose(est.log_px, ppca_log_px(x, W, b, s), rtol=0, atol=1e-10)
    assert np.all(est.se <= 1e-6)
    np.testing.assert_allclose(est.ess, 4.0, rtol=1e-9)


@pytest.mark.task_iw
def test_importance_sampling_converges_to_the_exact_log_px():
    vae, rng = linear_vae_with_mean_field_encoder(s=0.5)
    W, b, s = ppca_from_vae(vae)
    x = sample_ppca(W, b, s, 8, rng)
    exact = ppca_log_px(x, W, b, s)
    errors, ses = [], []
    for S in (10, 100, 1000, 10_000):
        est = estimate_log_px(vae, x, S, np.random.default_rng(S))
        err = est.log_px - exact
        # the estimate's bias is about -se^2 / 2: within the allowance below
        assert np.all(np.abs(err) <= 4 * est.se + est.se ** 2), (S, err / est.se)
        errors.append(np.mean(np.abs(err)))
        ses.append(np.mean(est.se))
    assert errors[-1] < errors[0] / 10
    assert all(b < a for a, b in zip(ses, ses[1:]))
    assert 0.5 < ses[0] / ses[-1] / math.sqrt(1000) < 2  # se ~ 1 / sqrt(S)


@pytest.mark.task_iw
def test_importance_weighted_bound_increases_with_S():
    vae, rng = linear_vae_with_mean_field_encoder(s=0.5, rho=0.9)
    W, b, s = ppca_from_vae(vae)
    n, R = 4, 4000                                               # examples, repetitions
    x = sample_ppca(W, b, s, n, rng)
    exact = ppca_log_px(x, W, b, s)
    x_rep = np.repeat(x, R, axis=0)                              # (n R, D): R independent runs per example
    bounds, ses = [], []
    for S in (1, 5, 50):
        runs = estimate_log_px(vae, x_rep, S, np.random.default_rng(S)).log_px.reshape(n, R).T  # (R, n)
        mean, se = mean_and_se(runs)
        assert np.all(mean <= exact + 4 * se)
        bounds.append(mean)
        ses.append(se)
    for i in range(2):
        assert np.all(bounds[i + 1] - bounds[i] > 4 * np.hypot(ses[i], ses[i + 1])), i
    # S = 1 is the ELBO: the closed form, and the VAE's own Monte Carlo ELBO
    elbo = gaussian_elbo_linear(x, W, b, s, *vae.encode(x))
    np.testing.assert_allclose(exact - elbo, mean_field_gap(W, s), rtol=0, atol=1e-10)
    assert np.all(np.abs(bounds[0] - elbo) <= 4 * ses[0])
    t = vae.terms(x, rng.standard_normal((R, n, 2)))
    vae_elbo, vae_se = mean_and_se(t.log_px_z - t.kl)
    assert np.all(np.abs(bounds[0] - vae_elbo) <= 4 * np.hypot(ses[0], vae_se))


@pytest.mark.task_iw
def test_naive_estimator_is_far_worse_than_importance_sampling_for_a_narrow_posterior():
    # s = 0.05: the posterior is ~0.05 wide, so few prior samples land where p(x | z) is large
    vae, rng = linear_vae_with_mean_field_encoder(s=0.05, rho=0.5)
    W, b, s = ppca_from_vae(vae)
    x = sample_ppca(W, b, s, 8, rng)
    exact = ppca_log_px(x, W, b, s)
    S = 1000
    posterior = estimate_log_px(vae, x, S, np.random.default_rng(0))
    prior = estimate_log_px(vae, x, S, np.random.default_rng(0), proposal="prior")
    error_ratio = np.mean(np.abs(prior.log_px - exact)) / np.mean(np.abs(posterior.log_px - exact))
    se_ratio = np.median(prior.se) / np.median(posterior.se)
    assert error_ratio > 10, error_ratio
    assert se_ratio > 10, se_ratio
    assert np.all(prior.ess < posterior.ess)


# ---------------------------------------------------------------- a nonlinear decoder, by quadrature
@pytest.mark.parametrize("K", [1, 2])
def test_quadrature_converges_in_n(K):
    vae = sharp_decoder_vae(K)
    x = sample_vae(vae, N, np.random.default_rng(K))
    n0 = QUADRATURE_N[K]
    reference = quadrature_log_px(vae, x, n=2 * n0)
    errors = [np.max(np.abs(quadrature_log_px(vae, x, n=n) - reference)) for n in (10, 20, 40, 80)]
    assert all(b < a / 10 for a, b in zip(errors, errors[1:])), errors  # geometric convergence
    assert errors[0] > 1e-3                                      # a coarse grid is visibly wrong
    assert np.max(np.abs(quadrature_log_px(vae, x) - reference)) <= 1e-10
    # the grid is wide enough: widening it changes nothing
    assert np.max(np.abs(quadrature_log_px(vae, x, n=n0, limit=10.0) - reference)) <= 1e-10


@pytest.mark.task_iw
@pytest.mark.parametrize("K", [1, 2])
def test_elbo_importance_sampling_and_posterior_kl_against_quadrature(K):
    rng = np.random.default_rng(100 + K)
    vae = sharp_decoder_vae(K)
    x = sample_vae(vae, N, rng)
    exact = quadrature_log_px(vae, x)
    S = 20_000

    # the ELBO is below log p(x) by more than its error bars
    t = vae.terms(x, rng.standard_normal((S, N, K)))
    elbo, elbo_se = mean_and_se(t.log_px_z - t.kl)               # (N,) each
    assert np.all(elbo_se < 0.02)
    assert np.all(exact - elbo > 4 * elbo_se), (exact - elbo) / elbo_se

    # importance sampling with many samples agrees with quadrature
    est = estimate_log_px(vae, x, S, rng)
    assert np.all(est.se < 0.02)
    assert np.all(np.abs(est.log_px - exact) <= 4 * est.se + est.se ** 2), (est.log_px - exact) / est.se

    # KL(q || p(z|x)) = E_q[log q(z) - log p(x, z)] + log p(x), from independent samples
    mu, log_var = vae.encode(x)
    z = mu + np.exp(0.5 * log_var) * rng.standard_normal((S, N, K))  # (S, N, K)
    log_joint = (vae.likelihood.forward(x, vae.decode(z))[0]
                 + log_density(z, 0.0, np.zeros(K)))             # (S, N)
    kl_samples, kl_se = mean_and_se(log_density(z, mu, log_var) - log_joint)
    kl = kl_samples + exact
    assert np.all(kl > 4 * kl_se)                                # q is not the posterior
    assert np.all(np.abs(elbo + kl - exact) <= 4 * np.hypot(elbo_se, kl_se))
