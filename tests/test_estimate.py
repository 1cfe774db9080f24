"""Importance-sampled log p(x), gradient estimators and latent diagnostics."""
import numpy as np
import pytest

from minivae import VAE
from minivae.diagnostics import active_units, activity, kl_per_dimension, nearest_mean_accuracy
from minivae.estimate import block_generators, estimate_log_px, log_weights, reparam_grad, score_function_grad
from minivae.gaussian import kl_std_normal_forward, log_density
from minivae.train import evaluate

from checks import assert_close

D, K = 6, 2


def small_vae(**kw):
    kw = dict(x_dim=D, hidden=(5,), z_dim=K, activation="tanh", dtype="float64", seed=0) | kw
    return VAE(**kw)


def binary(rng, n=3):
    return (rng.random((n, D)) < 0.5).astype(np.float64)


def test_log_weights_are_log_joint_minus_log_proposal():
    rng = np.random.default_rng(0)
    vae, x = small_vae(), binary(rng)
    eps = rng.standard_normal((4, 3, K))
    t = vae.terms(x, eps)
    expected = t.log_px_z + log_density(t.z, 0.0, np.zeros(K)) - log_density(t.z, t.mu, t.log_var)
    np.testing.assert_allclose(log_weights(vae, x, eps), expected, rtol=1e-12)
    # prior proposal: z = eps and the weight is the likelihood alone
    np.testing.assert_allclose(log_weights(vae, x, eps, "prior"), _log_px_given(vae, x, eps), rtol=1e-12)
    with pytest.raises(ValueError, match="posterior"):
        log_weights(vae, x, eps, "uniform")


def _log_px_given(vae, x, z):
    return vae.log_px_z(x, z)


@pytest.mark.task_iw
@pytest.mark.parametrize("rows", [1, 7, 64, 10_000])
def test_chunking_does_not_change_the_estimate(rows):
    """Same noise, any chunk size: the running log-sum-exp equals the direct one."""
    vae, x, S = small_vae(), binary(np.random.default_rng(1), 5), 50
    ref = estimate_log_px(vae, x, S, np.random.default_rng(2), rows=10_000)
    eps = block_generators(np.random.default_rng(2), 1)[0].standard_normal((S, 5, K))  # the one block's noise
    lw = log_weights(vae, x, eps)                                          # (S, N)
    case = f"estimate_log_px, S = {S}, 5 images, one chunk"
    # the definition, log of the mean weight, computed in one piece by NumPy's log-add-exp
    assert_close(ref.log_px, np.logaddexp.reduce(lw, axis=0) - np.log(S), case, "log p(x)", rtol=1e-12)
    w = np.exp(lw - lw.max(0))
    assert_close(ref.ess, w.sum(0) ** 2 / (w * w).sum(0), case, "the effective sample size", rtol=1e-10)
    got = estimate_log_px(vae, x, S, np.random.default_rng(2), rows=rows)
    case = f"estimate_log_px, S = {S}, 5 images, at most {rows} rows a chunk"
    if rows >= S * 5:  # one chunk holds everything: the same draws in the same order
        assert_close(got.log_px, ref.log_px, case, "log p(x) (expected: the one-chunk estimate)", rtol=1e-12)
    else:  # samples are drawn per chunk: another draw, the same distribution
        off = np.abs(got.log_px - ref.log_px) / np.hypot(got.se, ref.se)
        assert np.all(off < 5), f"{case}: log p(x) {got.log_px} is {off.max():.1f} standard errors from the " \
                                f"one-chunk estimate {ref.log_px}"


@pytest.mark.task_iw
def test_standard_error_is_the_spread_of_repeated_estimates():
    """The reported standard error against the standard deviation of 300 independent estimates.
    The model: the linear-Gaussian one with its best diagonal encoder, widened (log_var + 1), so
    the weights p(x, z) / q(z | x) are bounded and the delta method holds at S = 100."""
    from minivae.exact import ppca_from_vae, ppca_optimal_encoder

    vae, S = VAE(x_dim=D, hidden=(), z_dim=K, likelihood="gaussian", obs_scale=1.0, dtype="float64"), 100
    for name, value in ppca_optimal_encoder(*ppca_from_vae(vae)).items():
        vae.params[name][...] = value
    vae.params["enc.log_var.b"][...] += 1.0
    x = np.random.default_rng(11).standard_normal((2, D))
    rng = np.random.default_rng(12)
    runs = [estimate_log_px(vae, x, S, rng) for _ in range(300)]
    spread = np.std([r.log_px for r in runs], axis=0, ddof=1)             # (N,)
    reported = np.mean([r.se for r in runs], axis=0)
    assert_close(reported, spread, f"300 runs of estimate_log_px, S = {S}, 2 points of the linear-Gaussian model",
                 "the mean reported standard error (expected: the runs' standard deviation)", rtol=0.15)


@pytest.mark.task_iw
def test_no_overflow_with_huge_log_weights():
    vae = small_vae(likelihood="gaussian", obs_scale=1e-3)  # log p(x|z) ~ -1e6
    x = np.random.default_rng(3).standard_normal((2, D))
    r = estimate_log_px(vae, x, 100, np.random.default_rng(4), rows=30)
    case = "estimate_log_px, S = 100, log p(x | z) near -1e6, chunks of 30 rows"
    assert np.all(np.isfinite(r.log_px)) and np.all(r.log_px < -1e4), f"{case}: log p(x) = {r.log_px}"
    assert np.all(np.isfinite(r.se)), f"{case}: standard errors {r.se}"
    assert np.all((r.ess >= 1) & (r.ess <= 100)), f"{case}: effective sample sizes {r.ess} outside [1, 100]"


@pytest.mark.task_iw
def test_one_sample_is_the_elbo_in_expectation():
    rng = np.random.default_rng(5)
    vae, x = small_vae(), binary(rng, 2)
    reps = np.array([estimate_log_px(vae, x, 1, rng).log_px for _ in range(4000)])  # (R, N)
    elbo = vae.elbo(x, rng.standard_normal((20000, 2, K)))
    se = reps.std(0) / np.sqrt(len(reps))
    assert np.all(np.abs(reps.mean(0) - elbo) < 4 * se + 0.01), \
        f"4000 runs of estimate_log_px with S = 1: mean {reps.mean(0)} +- {se}, expected the ELBO {elbo}"


def test_estimate_rejects_bad_sample_counts():
    with pytest.raises(ValueError, match="S must be >= 1"):
        estimate_log_px(small_vae(), np.zeros((1, D)), 0, np.random.default_rng(0))


# ---------------------------------------------------------------- gradient estimators
def test_score_function_and_reparameterization_are_unbiased_and_differ_in_variance():
    r"""f(z) = sum z^2: E_q f = sum mu^2 + sigma^2, so d/dmu = 2 mu, d/dlog_var = sigma^2."""
    mu, log_var = np.array([0.3, -1.2]), np.array([0.1, -0.7])
    eps = np.random.default_rng(6).standard_normal((200_000, 2))
    sf = score_function_grad(lambda z: np.sum(z * z, -1), mu, log_var, eps)
    rp = reparam_grad(lambda z: 2 * z, mu, log_var, eps)
    exact = (2 * mu, np.exp(log_var))
    for est in (sf, rp):
        for g, truth in zip(est, exact):
            se = g.std(0) / np.sqrt(len(g))
            assert np.all(np.abs(g.mean(0) - truth) < 4 * se)
    # the score function's variance is far larger here
    assert np.all(sf[0].var(0) > 4 * rp[0].var(0))
    assert np.all(sf[1].var(0) > 4 * rp[1].var(0))


def test_a_baseline_keeps_the_score_function_unbiased_and_lowers_its_variance():
    mu, log_var = np.array([0.5]), np.array([0.0])
    eps = np.random.default_rng(7).standard_normal((100_000, 1))
    f = lambda z: np.sum(z * z, -1)  # noqa: E731
    plain = score_function_grad(f, mu, log_var, eps)[0]
    based = score_function_grad(f, mu, log_var, eps, baseline=float(mu @ mu) + 1.0)[0]  # E f
    se = based.std(0) / np.sqrt(len(based))
    assert abs(based.mean() - 2 * mu[0]) < 4 * se[0]
    assert based.var() < 0.7 * plain.var()


# ---------------------------------------------------------------- diagnostics
def test_active_units_and_kl_per_dimension():
    rng = np.random.default_rng(8)
    mu = np.column_stack([rng.standard_normal(500), 0.05 * rng.standard_normal(500), np.zeros(500)])
    assert active_units(mu) == 1  # variances ~1, ~0.0025, 0
    np.testing.assert_allclose(activity(mu), mu.var(0))
    log_var = rng.uniform(-2, 0, (500, 3))
    per_dim = kl_per_dimension(mu, log_var)
    assert per_dim.shape == (3,) and np.all(per_dim >= 0)
    assert per_dim.sum() == pytest.approx(kl_std_normal_forward(mu, log_var)[0].mean(), rel=1e-12)


def test_evaluate_reports_everything():
    rng = np.random.default_rng(9)
    vae, x = small_vae(), binary(rng, 20)
    r = evaluate(vae, x, iw=50)
    assert set(r) >= {"elbo", "active_units", "kl_per_dim", "iw_bound", "nll", "nll_se", "ess",
                      "iw_samples_per_s"}
    assert r["nll"] == -r["iw_bound"]
    assert r["iw_bound"] > -r["elbo"]["loss"] - 4 * r["nll_se"]  # L_50 >= ELBO, up to noise
    assert 0 <= r["active_units"] <= K and r["nll_se"] > 0


def test_nearest_mean_accuracy():
    train = np.array([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.2, 5.0]])
    test = np.array([[0.1, 0.1], [4.9, 5.1], [0.0, 0.3]])
    assert nearest_mean_accuracy(train, np.array([3, 3, 7, 7]), test, np.array([3, 7, 3])) == 1.0
    assert nearest_mean_accuracy(train, np.array([3, 3, 7, 7]), test, np.array([7, 7, 7])) == pytest.approx(1 / 3)


@pytest.mark.parametrize("rows", [64, 10_000])
def test_the_estimate_does_not_depend_on_the_number_of_threads(rows):
    """Each block of examples has its own noise and the BLAS one thread: the same bits on 1, 2 or 3 threads."""
    vae, x = small_vae(), binary(np.random.default_rng(21), 7)
    runs = [estimate_log_px(vae, x, 40, np.random.default_rng(22), rows=rows, threads=t) for t in (1, 2, 3)]
    for r in runs[1:]:
        for a, b in zip(runs[0], r):
            np.testing.assert_array_equal(a, b)
