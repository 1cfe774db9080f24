"""NVIB: special functions, attention as denoising, the NVIB layer and its KLs, the set autoencoder.

Every backward against finite differences (float64, random upstream gradient);
the special functions against ``math.lgamma`` and known values; the attention
limits; KL properties; bad inputs.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae import nvib, setae, special
from minivae.gradcheck import check_backward, check_params

TOL = 1e-7
EULER_GAMMA = 0.5772156649015329


# ---------------------------------------------------------------- lgamma, digamma, trigamma
def test_lgamma_matches_math_lgamma_over_many_decades():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.exp(rng.uniform(np.log(1e-10), np.log(1e8), 20_000)),
                        np.linspace(0.01, 25, 2_500), np.arange(1.0, 30.0), np.arange(1, 30) - 0.5])
    ref = np.array([math.lgamma(v) for v in x])
    err = np.abs(special.lgamma(x) - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() < 1e-13, (x[err.argmax()], err.max())


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 1e5))
def test_lgamma_matches_math_lgamma_hypothesis(x):
    ref = math.lgamma(x)
    assert abs(special.lgamma(np.array([x]))[0] - ref) <= 1e-13 * max(1.0, abs(ref))


def test_digamma_and_trigamma_known_values_and_recurrence():
    x = np.array([1.0, 0.5, 2.0, 0.25])
    psi = np.array([-EULER_GAMMA, -EULER_GAMMA - 2 * math.log(2), 1 - EULER_GAMMA,
                    -EULER_GAMMA - math.pi / 2 - 3 * math.log(2)])
    np.testing.assert_allclose(special.digamma(x), psi, rtol=0, atol=1e-14)
    np.testing.assert_allclose(special.trigamma(np.array([1.0, 0.5, 2.0])),
                               [math.pi ** 2 / 6, math.pi ** 2 / 2, math.pi ** 2 / 6 - 1], rtol=1e-14)
    # psi(n) = H_{n-1} - gamma for the integers, far into the asymptotic range
    n = np.arange(1, 200)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / n[:-1])])
    np.testing.assert_allclose(special.digamma(n.astype(float)), harmonic - EULER_GAMMA, rtol=0, atol=1e-13)
    y = np.exp(np.random.default_rng(1).uniform(-8, 8, 2000))
    # differences of O(log y) values: round-off of about 1e-15 absolute
    np.testing.assert_allclose(special.digamma(y + 1) - special.digamma(y), 1 / y, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(special.trigamma(y) - special.trigamma(y + 1), 1 / y ** 2, rtol=1e-12, atol=1e-13)


def test_digamma_is_the_derivative_of_lgamma():
    """Central differences of math.lgamma (an independent implementation), step relative to x."""
    x = np.exp(np.linspace(np.log(0.05), np.log(1e4), 300))
    h = 1e-4 * x
    fd = np.array([(math.lgamma(v + s) - math.lgamma(v - s)) / (2 * s) for v, s in zip(x, h)])
    scale = np.maximum(1.0, np.abs(fd))
    assert np.max(np.abs(special.digamma(x) - fd) / scale) < 1e-7


def test_trigamma_is_the_derivative_of_digamma():
    x = np.exp(np.linspace(np.log(0.05), np.log(1e4), 300))
    h = 1e-4 * x
    fd = (special.digamma(x + h) - special.digamma(x - h)) / (2 * h)
    assert np.max(np.abs(special.trigamma(x) - fd) / np.abs(fd)) < 1e-7


def test_special_backward_gradcheck():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 20, (3, 4))
    for fwd, bwd in [(special.lgamma_forward, special.lgamma_backward),
                     (special.digamma_forward, special.digamma_backward)]:
        assert check_backward(fwd, lambda d, c, b=bwd: (b(d, c),), [x], rng)[0] <= TOL


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_special_rejects_outside_the_domain(bad):
    for f in (special.lgamma, special.digamma, special.trigamma):
        with pytest.raises(ValueError, match="x > 0"):
            f(np.array([1.0, bad]))


# ---------------------------------------------------------------- attention
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_backward_gradcheck(axis):
    """The softmax's Jacobian-vector product, on its own (attention and the Dirichlet
    weights use it), along any axis; a -inf logit gets weight 0 and gradient 0."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal((3, 4, 5)) * 3

    def forward(a):
        p = nvib.softmax(a, axis)
        return p, p
    assert check_backward(forward, lambda dp, p: nvib._softmax_backward(dp, p, axis), [a], rng)[0] <= TOL
    a[0, 0, 0] = -np.inf
    p = nvib.softmax(a, axis)
    assert p[0, 0, 0] == 0 and nvib._softmax_backward(rng.standard_normal(p.shape), p, axis)[0, 0, 0] == 0


def test_attention_backward_gradcheck():
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))
    y, cache = nvib.attention_forward(q, k, v)
    assert y.shape == (2, 4, 2)
    np.testing.assert_allclose(cache.attn.sum(-1), 1.0)
    assert max(check_backward(nvib.attention_forward, nvib.attention_backward, [q, k, v], rng)) <= TOL


def mixture(rng, lead=(2,), T=4, n=5, d=3, scalar_var=False):
    u = rng.standard_normal(lead + (T, d))
    z = rng.standard_normal(lead + (n, d))
    var = rng.uniform(0.05, 2.0, lead + ((n,) if scalar_var else (n, d)))
    pi = rng.uniform(0.1, 1.0, lead + (n,))
    return u, z, var, pi


@pytest.mark.parametrize("scalar_var", [False, True])
@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_denoising_attention_backward_gradcheck(scalar_var, lead):
    rng = np.random.default_rng(4 + len(lead))
    u, z, var, pi = mixture(rng, lead, scalar_var=scalar_var)
    errors = check_backward(nvib.denoising_attention_forward, nvib.denoising_attention_backward,
                            [u, z, var, pi, np.array(0.7)], rng)
    assert len(errors) == 5 and max(errors) <= TOL, errors


def test_denoising_attention_gradient_at_zero_weight_and_zero_variance():
    """A component with pi_i = 0 is absent, but the derivative in pi_i is finite and correct
    (one-sided, since pi >= 0); point atoms (var = 0) are differentiable too."""
    rng = np.random.default_rng(5)
    u, z, var, pi = mixture(rng, (1,))
    pi[0, 2] = 0.0
    var[0, 1] = 0.0
    errors = check_backward(nvib.denoising_attention_forward, nvib.denoising_attention_backward,
                            [u, z, var, pi, np.array(0.7)], rng, wrt=[0, 1, 4])
    assert max(errors) <= TOL
    y, cache = nvib.denoising_attention_forward(u, z, var, pi, 0.7)
    assert np.all(cache.resp[..., 2] == 0)
    dy = rng.standard_normal(y.shape)
    dpi = nvib.denoising_attention_backward(dy, cache)[3]
    h = 1e-7
    pi_h = pi.copy()
    pi_h[0, 2] = h
    one_sided = (np.sum(dy * nvib.denoising_attention_forward(u, z, var, pi_h, 0.7)[0]) - np.sum(dy * y)) / h
    assert abs(dpi[0, 2] - one_sided) < 1e-5 * max(1.0, abs(one_sided))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_vanishing_variance_with_norm_cancelling_weights_is_dot_product_attention(T, n, d, seed):
    """sigma_i^2 = 0, sigma_u^2 = sqrt(d), pi_i ∝ exp(|z_i|^2 / (2 sqrt d)) -> softmax(u.z/sqrt d) z, exactly."""
    rng = np.random.default_rng(seed)
    u, z = rng.standard_normal((T, d)), rng.standard_normal((n, d))
    pi = np.exp(np.sum(z * z, axis=-1) / (2 * np.sqrt(d)))
    y, cache = nvib.denoising_attention_forward(u, z, np.zeros(n), pi)
    ref, rcache = nvib.attention_forward(u, z, z)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cache.resp, rcache.attn, rtol=1e-10, atol=1e-12)


def test_equal_weights_and_equal_norms_give_dot_product_attention_in_the_limit():
    rng = np.random.default_rng(6)
    T, n, d = 5, 7, 4
    u = rng.standard_normal((T, d))
    z = rng.standard_normal((n, d))
    z *= 1.5 / np.linalg.norm(z, axis=-1, keepdims=True)          # keys on a sphere
    ref = nvib.attention_forward(u, z, z)[0]
    pi = np.ones(n)
    np.testing.assert_allclose(nvib.denoising_attention_forward(u, z, np.zeros(n), pi)[0], ref, atol=1e-13)
    gaps = [np.abs(nvib.denoising_attention_forward(u, z, np.full(n, v), pi)[0] - ref).max()
            for v in (1e-2, 1e-4, 1e-6)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-5        # converges as the variance vanishes
    # with unequal norms the norm bias -|z|^2/(2 sqrt d) remains: not dot-product attention
    z2 = z * rng.uniform(0.5, 2.0, (n, 1))
    assert np.abs(nvib.denoising_attention_forward(u, z2, np.zeros(n), pi)[0]
                  - nvib.attention_forward(u, z2, z2)[0]).max() > 1e-2


def test_denoising_attention_other_limits():
    rng = np.random.default_rng(7)
    u, z, var, pi = mixture(rng, ())
    wide = nvib.denoising_attention_forward(u, z, np.full_like(var, 1e12), pi)[0]
    np.testing.assert_allclose(wide, u, atol=1e-9)                 # wide components hand the query back
    vague = nvib.denoising_attention_forward(u, z, np.zeros_like(var), pi, query_var=1e12)[0]
    np.testing.assert_allclose(vague, np.broadcast_to(pi @ z / pi.sum(), u.shape), atol=1e-9)
    sharp = nvib.denoising_attention_forward(u, z, np.zeros_like(var), np.ones_like(pi), query_var=1e-6)[0]
    nearest = z[np.argmin(np.linalg.norm(u[:, None] - z[None], axis=-1), axis=1)]
    np.testing.assert_allclose(sharp, nearest, atol=1e-9)          # hard attention


def test_denoising_attention_is_the_bayes_posterior_mean_one_dimension():
    """Against direct numerical integration of v p(v) N(u; v, s_u) over a fine grid."""
    z, var, pi, q, u = np.array([[-1.0], [0.5], [2.0]]), np.array([0.3, 0.1, 0.6]), np.array([0.2, 0.5, 0.3]), 0.4, 0.7
    v = np.linspace(-12, 12, 200_001)
    prior = sum(p * np.exp(-(v - m) ** 2 / (2 * s)) / np.sqrt(2 * np.pi * s) for p, m, s in zip(pi, z[:, 0], var))
    post = prior * np.exp(-(u - v) ** 2 / (2 * q))
    expected = np.sum(v * post) / np.sum(post)
    y = nvib.denoising_attention_forward(np.array([[u]]), z, var, pi, q)[0]
    assert abs(y[0, 0] - expected) < 1e-9


def test_denoising_attention_backward_leaves_inputs_unchanged():
    rng = np.random.default_rng(8)
    args = mixture(rng)
    copies = [a.copy() for a in args]
    y, cache = nvib.denoising_attention_forward(*args)
    nvib.denoising_attention_backward(np.ones_like(y), cache)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("change, message", [
    (lambda u, z, v, p: (u[..., :2], z, v, p), "agree"),
    (lambda u, z, v, p: (u, z, v, p[..., :-1]), "weights pi must have shape"),
    (lambda u, z, v, p: (u, z, v[..., :-1], p), "variances must have shape"),
    (lambda u, z, v, p: (u[0], z, v, p), "same number of axes"),
    (lambda u, z, v, p: (u, z, -v, p), ">= 0"),
    (lambda u, z, v, p: (u, z, v, 0 * p), "positive weight"),
])
def test_denoising_attention_bad_inputs(change, message):
    args = change(*mixture(np.random.default_rng(9)))
    with pytest.raises(ValueError, match=message):
        nvib.denoising_attention_forward(*args)


def test_attention_bad_shapes():
    with pytest.raises(ValueError, match="attention"):
        nvib.attention_forward(np.zeros((3, 4)), np.zeros((5, 3)), np.zeros((5, 2)))


# ---------------------------------------------------------------- Gamma and Dirichlet samples
def test_gamma_and_dirichlet_sample_gradcheck():
    rng = np.random.default_rng(10)
    log_alpha = rng.uniform(-4, 3, (3, 5))
    eps, unif = rng.standard_normal((3, 5)), rng.uniform(0.05, 0.95, (3, 5))
    for fwd, bwd in [(nvib.log_gamma_sample_forward, nvib.log_gamma_sample_backward),
                     (nvib.dirichlet_sample_forward, nvib.dirichlet_sample_backward)]:
        assert max(check_backward(fwd, bwd, [log_alpha, eps, unif], rng)) <= TOL


@pytest.mark.parametrize("alpha", [0.05, 0.5, 1.0, 4.0, 30.0])
def test_gamma_sample_moments(alpha):
    """Mean alpha (exact for the approximation too); variance alpha within the documented +0.11 + 0.02/d."""
    rng = np.random.default_rng(11)
    S = 200_000
    lg, _ = nvib.log_gamma_sample_forward(np.full(S, np.log(alpha)), rng.standard_normal(S), rng.uniform(size=S))
    g = np.exp(lg)
    assert abs(g.mean() - alpha) < 5 * g.std() / np.sqrt(S)
    assert abs(g.var() - alpha) < 0.15 * max(alpha, 1.0) + 0.05


def test_dirichlet_sample_mean():
    rng = np.random.default_rng(12)
    alpha = np.array([0.1, 0.5, 1.0, 3.0, 8.0])
    S = 100_000
    pi, _ = nvib.dirichlet_sample_forward(np.tile(np.log(alpha), (S, 1)), rng.standard_normal((S, 5)),
                                          rng.uniform(size=(S, 5)))
    np.testing.assert_allclose(pi.sum(-1), 1.0)
    se = pi.std(0) / np.sqrt(S)
    assert np.all(np.abs(pi.mean(0) - alpha / alpha.sum()) < 5 * se)


# ---------------------------------------------------------------- the NVIB layer
def layer_inputs(rng, N=2, n=4, K=3):
    return rng.standard_normal((N, n, K)), rng.uniform(-1.5, 1.5, (N, n, K)), rng.uniform(-3, 2, (N, n))


def test_nvib_training_mode_gradcheck():
    rng = np.random.default_rng(13)
    mu, log_var, log_alpha = layer_inputs(rng)
    noise = nvib.draw_noise(rng, 2, 4, 3)
    errors = check_backward(lambda m, v, a: nvib.nvib_forward(m, v, a, noise), nvib.nvib_backward,
                            [mu, log_var, log_alpha], rng)
    assert max(errors) <= TOL, errors


def test_nvib_evaluation_mode_gradcheck_and_determinism():
    rng = np.random.default_rng(14)
    mu, log_var, log_alpha = layer_inputs(rng)
    log_alpha[0, 1] = np.log(0.01)                              # below the threshold: dropped
    errors = check_backward(nvib.nvib_forward, nvib.nvib_backward, [mu, log_var, log_alpha], rng)
    assert max(errors) <= TOL, errors
    (z, var, pi), _ = nvib.nvib_forward(mu, log_var, log_alpha)
    (z2, var2, pi2), _ = nvib.nvib_forward(mu, log_var, log_alpha)
    for a, b in [(z, z2), (var, var2), (pi, pi2)]:
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(z[:, 0], 0.0)                 # the prior component: N(0, I)
    np.testing.assert_array_equal(var[:, 0], 1.0)
    np.testing.assert_allclose(pi.sum(1), 1.0)
    assert pi[0, 2] == 0.0                                      # index 0 is the prior: vector 1 is index 2
    alpha = np.concatenate([np.ones((2, 1)), np.exp(log_alpha)], axis=1)
    alpha[alpha < nvib.EVAL_THRESHOLD] = 0.0
    np.testing.assert_allclose(pi, alpha / alpha.sum(1, keepdims=True))


def test_dp_posterior_puts_the_prior_first():
    mu, log_var, log_alpha = layer_inputs(np.random.default_rng(25))
    post = nvib.dp_posterior(mu, log_var, log_alpha, alpha0=2.5)
    np.testing.assert_array_equal(post.mu[:, 0], 0.0)
    np.testing.assert_array_equal(post.log_var[:, 0], 0.0)
    np.testing.assert_array_equal(post.alpha[:, 0], 2.5)
    np.testing.assert_array_equal(post.mu[:, 1:], mu)
    np.testing.assert_allclose(post.alpha[:, 1:], np.exp(log_alpha))


def test_nvib_zero_noise_gives_the_means():
    rng = np.random.default_rng(15)
    mu, log_var, log_alpha = layer_inputs(rng)
    noise = nvib.draw_noise(rng, 2, 4, 3)
    (z, var, pi), _ = nvib.nvib_forward(mu, log_var, log_alpha, noise._replace(eps=np.zeros_like(noise.eps)))
    np.testing.assert_array_equal(z[:, 1:], mu)
    np.testing.assert_array_equal(var, 0.0)
    np.testing.assert_allclose(pi.sum(1), 1.0)


@pytest.mark.parametrize("bad, message", [
    (lambda m, v, a: (m, v[..., :-1], a), "mu and log_var"),
    (lambda m, v, a: (m, v, a[:, :-1]), "log_alpha must be"),
    (lambda m, v, a: (m[0], v[0], a[0]), "mu and log_var"),
])
def test_nvib_bad_shapes(bad, message):
    args = bad(*layer_inputs(np.random.default_rng(16)))
    with pytest.raises(ValueError, match=message):
        nvib.nvib_forward(*args)


def test_nvib_noise_of_the_wrong_shape():
    rng = np.random.default_rng(17)
    with pytest.raises(ValueError, match="prior component included"):
        nvib.nvib_forward(*layer_inputs(rng), noise=nvib.draw_noise(rng, 2, 3, 3))


# ---------------------------------------------------------------- the KL terms
def test_kl_gaussian_weighted_gradcheck_and_prior():
    rng = np.random.default_rng(18)
    mu, log_var, log_alpha = layer_inputs(rng)
    errors = check_backward(nvib.kl_gaussian_weighted_forward, nvib.kl_gaussian_weighted_backward,
                            [mu, log_var, log_alpha], rng)
    assert max(errors) <= TOL, errors
    kl, cache = nvib.kl_gaussian_weighted_forward(np.zeros_like(mu), np.zeros_like(log_var), log_alpha)
    np.testing.assert_array_equal(kl, 0.0)
    assert np.all(nvib.kl_gaussian_weighted_forward(mu, log_var, log_alpha)[0] > 0)
    # the weights are the expected mixture weights alpha_i / (alpha0 + sum alpha)
    alpha = np.exp(log_alpha)
    np.testing.assert_allclose(cache.weight, alpha / (1.0 + alpha.sum(1, keepdims=True)))


def test_kl_dirichlet_gradcheck():
    rng = np.random.default_rng(19)
    alpha, beta = rng.uniform(0.05, 6, (3, 5)), rng.uniform(0.05, 6, (3, 5))
    assert max(check_backward(nvib.kl_dirichlet_forward, nvib.kl_dirichlet_backward, [alpha, beta], rng)) <= TOL


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1), st.floats(-3, 3), st.floats(-3, 3))
def test_kl_dirichlet_nonnegative_and_zero_at_the_prior(m, seed, log_scale_a, log_scale_b):
    rng = np.random.default_rng(seed)
    alpha = np.exp(log_scale_a + rng.uniform(-2, 2, m))
    beta = np.exp(log_scale_b + rng.uniform(-2, 2, m))
    kl = nvib.kl_dirichlet_forward(alpha, beta)[0]
    assert kl >= -1e-12 * (1 + alpha.sum() + beta.sum())
    assert nvib.kl_dirichlet_forward(alpha, alpha)[0] == 0.0


def test_kl_dirichlet_matches_monte_carlo_and_the_symmetric_closed_form():
    rng = np.random.default_rng(20)
    alpha, beta = np.array([0.7, 2.0, 5.0, 0.3]), np.array([1.0, 0.5, 0.5, 2.0])

    def log_dir(pi, a):
        return special.lgamma(a.sum()) - special.lgamma(a).sum() + np.sum((a - 1) * np.log(pi), axis=-1)
    pi = rng.dirichlet(alpha, size=200_000)
    pi = np.clip(pi, 1e-300, None)
    mc = log_dir(pi, alpha) - log_dir(pi, beta)
    kl = nvib.kl_dirichlet_forward(alpha, beta)[0]
    assert abs(mc.mean() - kl) < 5 * mc.std() / np.sqrt(len(mc))
    # symmetric case: the published "expected-K" formula with totals A, B over k components
    k, A, B = 6, 4.2, 1.3
    psi, lg = special.digamma, special.lgamma
    published = (lg(np.array(A)) - lg(np.array(B)) + (A - B) * (psi(np.array(A / k)) - psi(np.array(A)))
                 + k * (lg(np.array(B / k)) - lg(np.array(A / k))))
    assert abs(nvib.kl_dirichlet_forward(np.full(k, A / k), np.full(k, B / k))[0] - published) < 1e-12


def test_kl_dirichlet_rejects_nonpositive_counts():
    with pytest.raises(ValueError, match="> 0"):
        nvib.kl_dirichlet_forward(np.array([1.0, 0.0]), np.array([1.0, 1.0]))


# ---------------------------------------------------------------- the set autoencoder
def test_make_sets():
    data = setae.make_sets(np.random.default_rng(21), 50, n_points=8, max_clusters=4)
    assert data.x.shape == (50, 8, 2) and data.k.min() >= 1 and data.k.max() <= 4
    for s in range(50):
        assert set(data.labels[s].tolist()) == set(range(data.k[s]))   # every cluster has a point
        c = data.centers[s, :data.k[s]]
        assert not np.isnan(c).any() and np.isnan(data.centers[s, data.k[s]:]).all()
        d = np.linalg.norm(c[:, None] - c[None], axis=-1) + 10 * np.eye(len(c))
        assert d.min() >= 0.9


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("kernel_init", [True, False])
def test_setae_whole_model_gradcheck(train, kernel_init):
    # a milder neighbourhood initialization than the default (whose saturated attention has
    # gradients near round-off); the loss is a sum of squared errors over tau^2 = 0.0225, so a
    # step of 1e-5 keeps the differences above round-off with negligible O(h^2) truncation.
    cfg = setae.SetAEConfig(n_points=5, max_clusters=3, att_dim=4, hidden=3, kernel_init=kernel_init,
                            kernel_width=0.6, priority_scale=3.0)
    model = setae.SetAE(cfg)
    rng = np.random.default_rng(22)
    x = setae.make_sets(rng, 3, 5, 3).x
    noise = setae.draw_set_noise(rng, 3, 5, train=train)
    out = model.loss_and_grads(x, noise)
    errors = check_params(lambda: model.loss_and_grads(x, noise).loss, model.params, out.grads, h=1e-5)
    assert max(errors.values()) <= TOL, errors


def test_setae_short_training_lowers_the_loss():
    cfg = setae.SetAEConfig(steps=300, pool=256, seed=1)
    model, history = setae.train_setae(cfg)
    start = setae.SetAE(cfg)
    rng = np.random.default_rng(23)
    x = setae.make_sets(rng, 64, cfg.n_points).x
    noise = setae.draw_set_noise(rng, 64, cfg.n_points)
    assert model.loss_and_grads(x, noise).loss < start.loss_and_grads(x, noise).loss - 5
    assert history[-1]["step"] == 300


def test_setae_bad_input():
    model = setae.SetAE(setae.SetAEConfig(n_points=4))
    rng = np.random.default_rng(24)
    with pytest.raises(ValueError, match="sets of points in the plane"):
        model.forward(np.zeros((2, 4, 3)), setae.draw_set_noise(rng, 2, 4))
