"""EM for a Gaussian mixture as coordinate ascent on the ELBO: the gap, the steps, the fit."""
import itertools

import numpy as np
import pytest

from minivae.data import toy_gaussian_mixture
from minivae.em import (GaussianMixture, e_step, elbo, fit, hard_e_step, init_mixture, log_joint,
                        log_likelihood, m_step)

COVARIANCES = ["full", "diag"]


def random_mixture(rng, C=3, D=2, covariance="full"):
    """A mixture with random weights, means and (well-conditioned) covariances."""
    weights = rng.dirichlet(np.ones(C))
    means = 2 * rng.standard_normal((C, D))
    if covariance == "full":
        A = rng.standard_normal((C, D, D))
        covs = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D)
    else:
        covs = rng.uniform(0.3, 2.0, (C, D))
    return GaussianMixture(weights, means, covs)


def overlapping_data(rng, n=400):
    """Three Gaussian blobs that overlap, so posteriors are far from one-hot."""
    x, _ = toy_gaussian_mixture(n, rng, n_components=3, spread=1.5, scale=0.8)
    return x


def gaussian_logpdf_loop(x, mean, cov):
    """log N(x; mean, cov) one point at a time, straight from the definition."""
    D = len(mean)
    inv, (sign, logdet) = np.linalg.inv(cov), np.linalg.slogdet(cov)
    assert sign > 0
    return np.array([-0.5 * (D * np.log(2 * np.pi) + logdet + (v - mean) @ inv @ (v - mean)) for v in x])


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_joint_matches_the_definition(covariance):
    rng = np.random.default_rng(0)
    gmm = random_mixture(rng, C=3, D=3, covariance=covariance)
    x = rng.standard_normal((7, 3))
    covs = gmm.covs if covariance == "full" else np.stack([np.diag(v) for v in gmm.covs])
    expected = np.stack([np.log(gmm.weights[c]) + gaussian_logpdf_loop(x, gmm.means[c], covs[c])
                         for c in range(3)], axis=1)                       # (N, C)
    np.testing.assert_allclose(log_joint(x, gmm), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_likelihood(x, gmm), np.log(np.exp(expected).sum(axis=1)), rtol=1e-12)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_after_the_e_step_the_elbo_is_the_log_likelihood(covariance):
    rng = np.random.default_rng(1)
    gmm = random_mixture(rng, C=4, D=2, covariance=covariance)
    x = 3 * rng.standard_normal((50, 2))
    q = e_step(x, gmm)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(elbo(x, gmm, q), log_likelihood(x, gmm), rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_the_gap_is_the_kl_to_the_posterior(covariance):
    """For any q: log p(x) - ELBO(q) = KL(q || p(c | x)) >= 0, zero only at the posterior."""
    rng = np.random.default_rng(2)
    gmm = random_mixture(rng, C=3, D=2, covariance=covariance)
    x = 2 * rng.standard_normal((30, 2))
    q = rng.dirichlet(np.ones(3), size=30)                                 # (N, C), arbitrary
    post = e_step(x, gmm)
    kl = np.sum(q * (np.log(q) - np.log(post)), axis=1)
    gap = log_likelihood(x, gmm) - elbo(x, gmm, q)
    np.testing.assert_allclose(gap, kl, rtol=1e-9, atol=1e-12)
    assert np.all(gap > 0)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_the_m_step_maximizes_the_elbo(covariance):
    """ELBO(q, m_step(q)) beats the starting parameters and every small perturbation of its own."""
    rng = np.random.default_rng(3)
    x = overlapping_data(rng, 300)
    q = rng.dirichlet(np.ones(3), size=len(x))                             # (N, C), any q
    best = m_step(x, q, covariance)
    value = elbo(x, best, q).sum()
    for _ in range(5):
        assert value >= elbo(x, random_mixture(rng, 3, 2, covariance), q).sum()
    for _ in range(20):
        w = best.weights * np.exp(0.05 * rng.standard_normal(3))
        means = best.means + 0.05 * rng.standard_normal(best.means.shape)
        if covariance == "full":
            A = np.eye(2) + 0.05 * rng.standard_normal((3, 2, 2))
            covs = A @ best.covs @ A.transpose(0, 2, 1)
        else:
            covs = best.covs * np.exp(0.05 * rng.standard_normal(best.covs.shape))
        assert value >= elbo(x, GaussianMixture(w / w.sum(), means, covs), q).sum()


def test_diagonal_m_step_keeps_the_diagonal_of_the_full_one():
    rng = np.random.default_rng(4)
    x = overlapping_data(rng, 200)
    q = e_step(x, random_mixture(rng, 3, 2))
    full, diag = m_step(x, q, "full"), m_step(x, q, "diag")
    np.testing.assert_allclose(diag.covs, np.diagonal(full.covs, axis1=1, axis2=2), rtol=1e-12)
    np.testing.assert_allclose(diag.means, full.means, rtol=1e-12)
    np.testing.assert_allclose(full.weights, q.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_soft_em_climbs_a_staircase(covariance):
    """E closes the gap (ELBO = log-lik), M raises the bound, and the log-likelihood never falls."""
    rng = np.random.default_rng(5)
    x = overlapping_data(rng)
    gmm0 = init_mixture(x, 3, rng, covariance)
    _, trace = fit(x, gmm0, 40)
    np.testing.assert_allclose(trace.elbo_e, trace.log_lik[:-1], rtol=0, atol=1e-10)
    assert np.all(trace.elbo_m >= trace.elbo_e - 1e-12)                   # the M-step
    assert np.all(trace.log_lik[1:] >= trace.elbo_m - 1e-12)              # the bound holds
    assert np.all(np.diff(trace.log_lik) >= -1e-12)                       # monotone
    assert trace.log_lik[-1] > trace.log_lik[0] + 0.1                     # and it did climb


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_hard_em_stays_below_the_log_likelihood(covariance):
    rng = np.random.default_rng(6)
    x = overlapping_data(rng)
    _, trace = fit(x, init_mixture(x, 3, rng, covariance), 30, hard=True)
    assert np.all(trace.elbo_e <= trace.log_lik[:-1] - 1e-3)              # the gap never closes
    assert np.all(trace.elbo_m <= trace.log_lik[1:])
    assert np.all(trace.elbo_m >= trace.elbo_e - 1e-12)                   # the M-step still helps
    assert np.all(trace.elbo_e[1:] >= trace.elbo_m[:-1] - 1e-12)          # and so does the hard E-step
    q = hard_e_step(x, init_mixture(x, 3, rng, covariance))
    assert set(np.unique(q)) <= {0.0, 1.0} and np.all(q.sum(axis=1) == 1)


@pytest.mark.parametrize("covariance", COVARIANCES)
@pytest.mark.parametrize("hard", [False, True])
def test_recovers_well_separated_clusters(covariance, hard):
    rng = np.random.default_rng(7)
    n, C, scale = 2000, 4, 0.5
    x, labels = toy_gaussian_mixture(n, rng, n_components=C, spread=3.0, scale=scale)
    gmm, _ = fit(x, init_mixture(x, C, rng, covariance), 50, hard=hard)
    angle = 2 * np.pi * np.arange(C) / C
    true_means = 3.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (C, 2), as toy_gaussian_mixture
    perm = min(itertools.permutations(range(C)),
               key=lambda p: np.sum((gmm.means[list(p)] - true_means) ** 2))
    perm = list(perm)
    # standard errors: a mean from ~500 points has se 0.5 / sqrt(500) = 0.022 per coordinate
    assert np.max(np.abs(gmm.means[perm] - true_means)) < 6 * scale / np.sqrt(n / C)
    counts = np.bincount(labels, minlength=C) / n
    assert np.max(np.abs(gmm.weights[perm] - counts)) < 0.01              # clusters this far apart: no doubt
    variances = gmm.covs[perm] if covariance == "diag" else np.diagonal(gmm.covs[perm], axis1=1, axis2=2)
    # sample variance of ~500 points: relative se sqrt(2 / 500) = 0.063
    assert np.max(np.abs(variances / scale**2 - 1)) < 6 * np.sqrt(2 / (n / C))
    assigned = np.argsort(perm)[e_step(x, gmm).argmax(axis=1)]
    assert np.mean(assigned == labels) > 0.995


def test_an_empty_component_is_harmless():
    rng = np.random.default_rng(8)
    x = overlapping_data(rng, 100)
    q = np.zeros((100, 3))
    q[:, 0], q[50:, 0], q[50:, 1] = 1.0, 0.0, 1.0                          # component 2 gets nothing
    gmm = m_step(x, q, "full")
    assert gmm.weights[2] == 0 and np.all(np.isfinite(gmm.covs))
    assert np.isfinite(elbo(x, gmm, q).sum()) and np.all(e_step(x, gmm)[:, 2] == 0)
    assert np.all(elbo(x, gmm, hard_e_step(x, gmm)) <= log_likelihood(x, gmm))


def test_bad_inputs_are_refused():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((10, 2))
    gmm = random_mixture(rng, 3, 2)
    with pytest.raises(ValueError, match="distribution"):
        elbo(x, gmm, np.full((10, 3), 0.5))
    with pytest.raises(ValueError, match="shape"):
        m_step(x, np.full((9, 3), 1 / 3))
    with pytest.raises(ValueError, match="covariance"):
        m_step(x, np.full((10, 3), 1 / 3), covariance="spherical")
    with pytest.raises(ValueError, match="n_components"):
        init_mixture(x, 11, rng)
    with pytest.raises(ValueError, match="components"):
        elbo(x, gmm, np.full((10, 2), 0.5))
