r"""Every identity the lessons derive, checked numerically: ``python -m minivae derivations``.

Each entry of :data:`CATALOGUE` names an identity, the lesson that derives it, and a
check from :mod:`minivae.verify` whose two sides come by different routes: a closed form
against Monte Carlo, quadrature or direct evaluation; a hand-derived gradient against
central differences; an inequality on every case of a sweep, e.g.

$$ \mathrm{KL}\big(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, 1)\big)_{\text{closed form}}
   = \mathbb E_q[\log q(z) - \log p(z)], \qquad \log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q\,\|\,p(z\mid x)). $$

Every entry is float64 and seeded, so a run is reproducible; :data:`QUICK` sizes (CI)
take well under a second here, :data:`FULL` sizes (more draws, finer grids) a few seconds.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, NamedTuple

import numpy as np

from . import em, estimate, exact, gaussian, likelihoods, nvib, objectives, special, verify
from .data import escape_line_breaks, toy_gaussian_mixture
from .vae import VAE

__all__ = ["Sizes", "QUICK", "FULL", "Derivation", "CATALOGUE", "Row", "run", "HEADER", "format_row"]


class Sizes(NamedTuple):
    """How hard each check works."""
    n: int        # Monte Carlo draws per expectation
    grid: int     # midpoint-rule cells of the one-dimensional integrals
    grid_2d: int  # grid points per axis of exact.quadrature_log_px (K = 2)
    S: int        # largest number of importance samples of the exact IWAE bounds
    em_iter: int  # EM iterations


QUICK = Sizes(n=20_000, grid=2_000, grid_2d=201, S=32, em_iter=10)
FULL = Sizes(n=400_000, grid=20_000, grid_2d=401, S=128, em_iter=50)


class Derivation(NamedTuple):
    name: str                                    # the identity, one line
    lesson: int                                  # the lesson that derives it
    check: Callable[[Sizes], verify.Result]


CATALOGUE: list[Derivation] = []


def _entry(lesson: int, name: str):
    """Register the decorated check in :data:`CATALOGUE`."""
    def register(check):
        CATALOGUE.append(Derivation(name, lesson, check))
        return check
    return register


def _normal(*shape):
    """sample(rng, n): n standard normal draws of the given shape, (n, *shape)."""
    return lambda rng, n: rng.standard_normal((n, *shape))


# ---------------------------------------------------------------- lesson 2: Gaussian KLs
MU, LOG_VAR = np.array([[0.5, -1.0, 0.0]]), np.array([[0.3, -0.7, 1.0]])        # (1, K): lesson 2's q
MU_P, LOG_VAR_P = np.array([[1.0, 0.5, -2.0]]), np.array([[0.5, -1.0, 0.2]])    # (1, K): its p


def _log_ratio(mu_p, log_var_p):
    """f(eps) = log q(z) - log p(z) at z = mu + sigma eps, through the VAE's sampler: (n, K) -> (n,)."""
    def f(eps):
        z = gaussian.reparameterize_forward(MU, LOG_VAR, eps)[0]                 # (n, K)
        return gaussian.log_density(z, MU, LOG_VAR) - gaussian.log_density(z, mu_p, log_var_p)
    return f


@_entry(2, "KL(N(mu, s^2) || N(0, I)) = E_q[log q(z) - log p(z)]")
def _kl_std_normal(sz: Sizes) -> verify.Result:
    kl = gaussian.kl_std_normal_forward(MU, LOG_VAR)[0][0]
    return verify.expectation(kl, _log_ratio(0.0, np.zeros(3)), _normal(3), sz.n, seed=21)


@_entry(2, "KL between two diagonal Gaussians = E_q[log q - log p]")
def _kl_diag(sz: Sizes) -> verify.Result:
    kl = gaussian.kl_diag_forward(MU, LOG_VAR, MU_P, LOG_VAR_P)[0][0]
    return verify.expectation(kl, _log_ratio(MU_P, LOG_VAR_P), _normal(3), sz.n, seed=22)


@_entry(2, "Var[log q - log p] = sum_k mu^2 s^2 + (s^2 - 1)^2 / 2")
def _kl_term_variance(sz: Sizes) -> verify.Result:
    kl = gaussian.kl_std_normal_forward(MU, LOG_VAR)[0][0]
    s2 = np.exp(LOG_VAR)
    variance = np.sum(MU**2 * s2 + 0.5 * (s2 - 1) ** 2)
    log_ratio = _log_ratio(0.0, np.zeros(3))
    return verify.expectation(variance, lambda eps: (log_ratio(eps) - kl) ** 2, _normal(3), sz.n, seed=23)


@_entry(2, "gradient of KL(q || p) in mu_q, log s_q^2, mu_p, log s_p^2")
def _kl_diag_gradient(sz: Sizes) -> verify.Result:
    rng = np.random.default_rng(24)
    args = (rng.standard_normal((3, 4)), rng.uniform(-2, 2, (3, 4)),
            rng.standard_normal((3, 4)), rng.uniform(-2, 2, (3, 4)))          # (N, K) each

    def by_hand(*a):
        kl, cache = gaussian.kl_diag_forward(*a)
        return gaussian.kl_diag_backward(np.ones_like(kl), cache)
    return verify.gradient(lambda *a: gaussian.kl_diag_forward(*a)[0].sum(), by_hand, args)


# ---------------------------------------------------------------- lesson 3: gradient estimators
# f(z) = |z - c|^2 has E_q f = sum_k (mu_k - c_k)^2 + s_k^2: gradient 2(mu - c) in mu, s^2 in log s^2
MU3, LOG_VAR3, C3 = np.array([0.3, -0.5, 1.0, 0.0]), np.array([0.2, -0.4, 0.0, 0.6]), np.ones(4)
GRAD3 = np.concatenate([2 * (MU3 - C3), np.exp(LOG_VAR3)])                     # (2K,)


@_entry(3, "reparameterization gradient of E_q|z - c|^2 is unbiased")
def _reparam(sz: Sizes) -> verify.Result:
    def per_draw(eps):                                                         # (n, K) -> (n, 2K)
        return np.concatenate(estimate.reparam_grad(lambda z: 2 * (z - C3), MU3, LOG_VAR3, eps), axis=1)
    return verify.expectation(GRAD3, per_draw, _normal(4), sz.n, seed=31)


@_entry(3, "score-function gradient of E_q|z - c|^2 is unbiased")
def _score(sz: Sizes) -> verify.Result:
    def per_draw(eps):
        f = lambda z: np.sum((z - C3) ** 2, axis=-1)                          # noqa: E731
        return np.concatenate(estimate.score_function_grad(f, MU3, LOG_VAR3, eps), axis=1)
    return verify.expectation(GRAD3, per_draw, _normal(4), sz.n, seed=32)


@_entry(3, "score-function variance = 30 + 22(K-1) + 4(K-1)^2")
def _score_variance(sz: Sizes) -> verify.Result:
    K = 3                                                 # mu = 0, s = 1, c = 1: d/dmu_1 E f = -2
    f = lambda z: np.sum((z - 1.0) ** 2, axis=-1)         # noqa: E731

    def per_draw(eps):                                    # the squared error of one estimate of d/dmu_1
        return (estimate.score_function_grad(f, np.zeros(K), np.zeros(K), eps)[0][:, 0] + 2) ** 2
    return verify.expectation(30 + 22 * (K - 1) + 4 * (K - 1) ** 2, per_draw, _normal(K), sz.n, seed=33)


# ---------------------------------------------------------------- lesson 4: the ELBO
class Linear(NamedTuple):
    """Lesson 4's linear-Gaussian model p(z) = N(0, I), p(x | z) = N(zW + b, s^2 I), D = 6, K = 2."""
    W: np.ndarray   # (K, D)
    b: np.ndarray   # (D,)
    s: float
    x: np.ndarray   # (N, D), N = 4 points drawn from the model
    vae: VAE        # its decoder, with the best diagonal encoder (exact.ppca_optimal_encoder)
    mu: np.ndarray  # (N, K)  some other diagonal q, per point
    log_var: np.ndarray


def _linear(cosine: float) -> Linear:
    """Rows of W of norms 1 and 1.5 at the given cosine: 0 gives a diagonal posterior, which the
    encoder matches exactly; 0.2 a posterior correlation of 0.17, mild enough that the
    importance weights p(x, z) / q(z) have finite moments up to the fourth."""
    rng = np.random.default_rng(4)
    D, K, s = 6, 2, 0.5
    U = np.linalg.qr(rng.standard_normal((D, K)))[0].T                       # (K, D) orthonormal rows
    W = np.stack([U[0], 1.5 * (cosine * U[0] + math.sqrt(1 - cosine**2) * U[1])])  # (K, D)
    b = rng.standard_normal(D)                                                # (D,)
    x = rng.standard_normal((4, K)) @ W + b + s * rng.standard_normal((4, D))  # (N, D)
    vae = VAE(x_dim=D, hidden=(), z_dim=K, likelihood="gaussian", obs_scale=s, seed=0, dtype="float64")
    vae.params["dec.out.W"][...] = W
    vae.params["dec.out.b"][...] = b
    for name, value in exact.ppca_optimal_encoder(W, b, s).items():
        vae.params[name][...] = value
    return Linear(W, b, s, x, vae, rng.standard_normal((4, K)), rng.uniform(-2, 1, (4, K)))


@_entry(4, "E_q[log p(z)] + H(q) = -KL(q || p(z)): the two ELBO forms")
def _two_forms(sz: Sizes) -> verify.Result:
    rng = np.random.default_rng(41)
    mu, log_var = rng.standard_normal((5, 3)), rng.uniform(-2, 1, (5, 3))      # (N, K) each
    return verify.identity(objectives.expected_log_prior(mu, log_var) + gaussian.entropy(log_var),
                           -gaussian.kl_std_normal_forward(mu, log_var)[0])


def _sampled_elbo(form: Callable, seed: int, sz: Sizes) -> verify.Result:
    """A sampled ELBO form, one value per draw of eps (n, N, K), against the closed form."""
    m = _linear(0.2)

    def per_draw(eps):                                                        # (n, N, K) -> (n, N)
        z = gaussian.reparameterize_forward(m.mu, m.log_var, eps)[0]          # (n, N, K)
        return form(m.vae.log_px_z(m.x, z)[None], z[None], m.mu, m.log_var)  # S = 1 per draw
    closed = exact.gaussian_elbo_linear(m.x, m.W, m.b, m.s, m.mu, m.log_var)  # (N,)
    return verify.expectation(closed, per_draw, _normal(*m.mu.shape), sz.n, seed=seed)


@_entry(4, "ELBO = E_q[log p(x|z)] - KL(q || p(z)), sampled")
def _kl_form(sz: Sizes) -> verify.Result:
    return _sampled_elbo(lambda lpxz, z, mu, lv: objectives.elbo_kl_form(
        lpxz, gaussian.kl_std_normal_forward(mu, lv)[0]), 42, sz)


@_entry(4, "ELBO = E_q[log p(x, z)] + H(q), sampled")
def _joint_form(sz: Sizes) -> verify.Result:
    return _sampled_elbo(lambda lpxz, z, mu, lv: objectives.elbo_joint_form(lpxz, z, lv), 43, sz)


@_entry(4, "ELBO = log p(x) - KL(q || p(z|x)), linear-Gaussian")
def _elbo_gap(sz: Sizes) -> verify.Result:
    m = _linear(0.2)
    post_mean, post_cov = exact.ppca_posterior(m.x, m.W, m.b, m.s)
    return verify.identity(exact.gaussian_elbo_linear(m.x, m.W, m.b, m.s, m.mu, m.log_var),
                           exact.ppca_log_px(m.x, m.W, m.b, m.s)
                           - exact.kl_diag_full(m.mu, m.log_var, post_mean, post_cov))


@_entry(4, "log p(x) = log N(x; b, W'W + s^2 I), evaluated directly")
def _log_px_direct(sz: Sizes) -> verify.Result:
    m = _linear(0.2)
    D = m.W.shape[1]
    cov = m.W.T @ m.W + m.s**2 * np.eye(D)                                    # (D, D)
    r = m.x - m.b                                                             # (N, D)
    quad = np.sum(r * np.linalg.solve(cov, r.T).T, axis=1)                    # (N,)
    direct = -0.5 * (D * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + quad)
    return verify.identity(exact.ppca_log_px(m.x, m.W, m.b, m.s), direct)


@_entry(4, "mean-field gap = (sum_k log Lam_kk - log det Lam) / 2")
def _mean_field_gap(sz: Sizes) -> verify.Result:
    m = _linear(0.2)
    mu, log_var = m.vae.encode(m.x)                                           # the best diagonal q
    precision = np.eye(2) + m.W @ m.W.T / m.s**2                              # (K, K) Lambda
    gap = 0.5 * (np.sum(np.log(np.diag(precision))) - np.linalg.slogdet(precision)[1])
    return verify.identity(exact.ppca_log_px(m.x, m.W, m.b, m.s)
                           - exact.gaussian_elbo_linear(m.x, m.W, m.b, m.s, mu, log_var), gap)


@_entry(4, "ELBO(q) <= log p(x) for every q, = at the posterior")
def _elbo_bound(sz: Sizes) -> verify.Result:
    m = _linear(0.0)                                      # the best diagonal q is the posterior
    rng = np.random.default_rng(44)
    mu_star, lv_star = m.vae.encode(m.x)                                      # (N, K) each
    mu = np.concatenate([mu_star[None], mu_star + rng.standard_normal((200, *mu_star.shape))])  # (201, N, K)
    log_var = np.concatenate([lv_star[None], lv_star + rng.uniform(-2, 2, (200, *lv_star.shape))])
    x = np.broadcast_to(m.x, (len(mu), *m.x.shape)).reshape(-1, m.x.shape[1])  # (201 N, D)
    elbo = exact.gaussian_elbo_linear(x, m.W, m.b, m.s, mu.reshape(len(x), -1), log_var.reshape(len(x), -1))
    return verify.bound(elbo, np.tile(exact.ppca_log_px(m.x, m.W, m.b, m.s), len(mu)))


# ---------------------------------------------------------------- lesson 5: likelihoods
@_entry(5, "Bernoulli log p(x|l) = log prod_d p^x (1 - p)^(1 - x)")
def _bernoulli(sz: Sizes) -> verify.Result:
    rng = np.random.default_rng(51)
    x = (rng.random((5, 20)) < 0.5).astype(float)                             # (N, D)
    logits = rng.uniform(-4, 4, (5, 20))
    p = 1 / (1 + np.exp(-logits))                                             # (N, D) sigma(l)
    direct = np.log(np.prod(np.where(x == 1, p, 1 - p), axis=1))
    return verify.identity(likelihoods.bernoulli_forward(x, logits)[0], direct)


@_entry(5, "Gaussian, Laplace log p(x|m) = log prod_d density")
def _gaussian_laplace(sz: Sizes) -> verify.Result:
    rng = np.random.default_rng(52)
    x, m = rng.random((5, 10)), rng.random((5, 10))                           # (N, D) each
    sigma, b = 0.3, 0.2
    gauss = np.prod(np.exp(-(x - m) ** 2 / (2 * sigma**2)) / math.sqrt(2 * math.pi * sigma**2), axis=1)
    laplace = np.prod(np.exp(-np.abs(x - m) / b) / (2 * b), axis=1)
    return verify.identity(np.concatenate([likelihoods.gaussian_forward(x, m, sigma)[0],
                                           likelihoods.laplace_forward(x, m, b)[0]]),
                           np.log(np.concatenate([gauss, laplace])))


@_entry(5, "multinomial log-pmf = log (n! / prod x!) prod_d p_d^x_d")
def _multinomial(sz: Sizes) -> verify.Result:
    rng = np.random.default_rng(53)
    counts = rng.integers(0, 4, (6, 5)).astype(float)                        # (N, C)
    logits = rng.standard_normal((6, 5))
    n = counts.sum(axis=1)
    coef = special.lgamma(n + 1) - special.lgamma(counts + 1).sum(axis=1)    # log n! / prod x!
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)           # (N, C)
    direct = [math.log(math.factorial(int(k)) / math.prod(math.factorial(int(c)) for c in row)
                       * float(np.prod(q**row))) for k, row, q in zip(n, counts, p)]
    return verify.identity(coef + likelihoods.categorical_forward(counts, logits)[0], direct)


# ---------------------------------------------------------------- lesson 7: rate
@_entry(7, "rate = I_q(x; z) + KL(q(z) || p(z)), by quadrature")
def _elbo_surgery(sz: Sizes) -> verify.Result:
    r"""Five encodings q(z | x_n) in one dimension; q(z) their mixture; the integrals by the midpoint rule."""
    rng = np.random.default_rng(71)
    mu, log_var = rng.uniform(-2, 2, 5), rng.uniform(-2, 1, 5)               # (N,) each, K = 1
    h = 40.0 / sz.grid
    z = -20.0 + h * (np.arange(sz.grid) + 0.5)                                # (G,) cell centres
    log_q = gaussian.log_density(z[:, None, None], mu[:, None], log_var[:, None])  # (G, N)
    top = log_q.max(axis=1, keepdims=True)
    log_agg = (top + np.log(np.mean(np.exp(log_q - top), axis=1, keepdims=True)))[:, 0]  # (G,) log q(z)
    log_prior = gaussian.log_density(z[:, None], 0.0, np.zeros(1))            # (G,)
    info = h * np.sum(np.exp(log_q) * (log_q - log_agg[:, None])) / len(mu)
    kl_agg = h * np.sum(np.exp(log_agg) * (log_agg - log_prior))
    rate = gaussian.kl_std_normal_forward(mu[:, None], log_var[:, None])[0].mean()
    return verify.identity(rate, info + kl_agg)


# ---------------------------------------------------------------- lesson 9: log p(x)
@_entry(9, "log p(x) by quadrature = closed form, linear-Gaussian")
def _quadrature(sz: Sizes) -> verify.Result:
    m = _linear(0.2)
    return verify.identity(exact.quadrature_log_px(m.vae, m.x, n=sz.grid_2d), exact.ppca_log_px(m.x, m.W, m.b, m.s))


@_entry(9, "importance weights are unbiased: E_q[w] = p(x)")
def _weights_unbiased(sz: Sizes) -> verify.Result:
    m = _linear(0.2)
    log_px = exact.ppca_log_px(m.x, m.W, m.b, m.s)                            # (N,)
    per_draw = lambda eps: np.exp(estimate.log_weights(m.vae, m.x, eps) - log_px)  # noqa: E731  w / p(x)
    return verify.expectation(np.ones(len(m.x)), per_draw, _normal(*m.mu.shape), sz.n, seed=91)


@_entry(9, "IWAE bound with S = 1 is the ELBO: E_q[log w] = ELBO")
def _iw_one(sz: Sizes) -> verify.Result:
    m = _linear(0.2)
    mu, log_var = m.vae.encode(m.x)
    per_draw = lambda eps: objectives.iw_bound_forward(estimate.log_weights(m.vae, m.x, eps)[None])[0]  # noqa: E731
    return verify.expectation(exact.gaussian_elbo_linear(m.x, m.W, m.b, m.s, mu, log_var), per_draw,
                              _normal(*m.mu.shape), sz.n, seed=92)


@_entry(9, "exact posterior as proposal: log w = log p(x) for all z")
def _zero_variance(sz: Sizes) -> verify.Result:
    m = _linear(0.0)
    eps = np.random.default_rng(93).standard_normal((64, *m.mu.shape))       # (S, N, K)
    log_px = exact.ppca_log_px(m.x, m.W, m.b, m.s)
    return verify.identity(estimate.log_weights(m.vae, m.x, eps), np.broadcast_to(log_px, (64, len(log_px))))


# A discrete latent makes the IWAE bound exact: S draws of c ~ q(c) from C values have finitely
# many count vectors, so L_S = E[log (1/S) sum_s w_s] is a finite sum over them.
MIXTURE = em.GaussianMixture(np.array([0.5, 0.3, 0.2]), np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]),
                             np.array([[1.0, 1.0], [0.5, 0.5], [1.0, 0.25]]))   # C = 3, diagonal
X_MIX, Q_MIX = np.array([[1.0, 0.8]]), np.full(3, 1 / 3)                      # one point; proposal q(c)


def _iw_bounds_exact(S_max: int) -> np.ndarray:
    r"""$\mathcal L_S$ for $S = 1..S_\max$ exactly: over every count vector $k$ of $S$ draws, its
    multinomial probability times :func:`minivae.objectives.iw_bound_forward` of its weights."""
    log_w = em.log_joint(X_MIX, MIXTURE)[0] - np.log(Q_MIX)                  # (C,)
    bounds = []
    for S in range(1, S_max + 1):
        a, b = np.meshgrid(np.arange(S + 1), np.arange(S + 1), indexing="ij")
        keep = a + b <= S
        counts = np.stack([a[keep], b[keep], S - a[keep] - b[keep]], axis=1)  # (M, C)
        pos = np.arange(S)[:, None]                                           # (S, 1)
        which = (pos >= counts[:, 0]).astype(int) + (pos >= counts[:, 0] + counts[:, 1])  # (S, M) component
        log_prob = (special.lgamma(S + 1.0) - special.lgamma(counts + 1.0).sum(axis=1)
                    + counts @ np.log(Q_MIX))                                 # (M,)
        bounds.append(np.sum(np.exp(log_prob) * objectives.iw_bound_forward(log_w[which])[0]))
    return np.array(bounds)


@_entry(9, "IWAE bound increases with S (exact, discrete z)")
def _iw_increasing(sz: Sizes) -> verify.Result:
    bounds = _iw_bounds_exact(sz.S)
    return verify.bound(bounds[:-1], bounds[1:])


@_entry(9, "IWAE bound L_S <= log p(x) for every S (exact)")
def _iw_below(sz: Sizes) -> verify.Result:
    return verify.bound(_iw_bounds_exact(sz.S), em.log_likelihood(X_MIX, MIXTURE)[0])


@_entry(9, "log p(x) - L_S = Var_q(w/p) / 2S + O(1/S^2) (exact)")
def _iw_gap_rate(sz: Sizes) -> verify.Result:
    r"""The delta method: $S(\log p(x) - \mathcal L_S) \to \tfrac12\mathrm{Var}_q[w / p(x)]$, with a
    relative error of order $1/S$ (here about $0.8/S$), so it is judged at ``rtol = 2/S``."""
    log_px = em.log_likelihood(X_MIX, MIXTURE)[0]
    ratio = np.exp(em.log_joint(X_MIX, MIXTURE)[0] - np.log(Q_MIX) - log_px)     # (C,) w_c / p(x)
    variance = np.sum(Q_MIX * ratio**2) - 1.0
    return verify.identity(sz.S * (log_px - _iw_bounds_exact(sz.S)[-1]), variance / 2, rtol=2 / sz.S)


# ---------------------------------------------------------------- lesson 10: EM
def _mixture_data():
    """200 points from three overlapping Gaussians, and a mixture two EM steps from its start:
    unequal weights and covariances, so that no term of an identity vanishes by symmetry."""
    rng = np.random.default_rng(10)
    x = toy_gaussian_mixture(200, rng, n_components=3, spread=2.0, scale=0.8)[0]  # (N, 2)
    return x, em.fit(x, em.init_mixture(x, 3, rng), 2)[0]


@_entry(10, "EM's E-step closes the gap: ELBO(p(c|x)) = log p(x)")
def _e_step(sz: Sizes) -> verify.Result:
    x, gmm = _mixture_data()
    return verify.identity(em.elbo(x, gmm, em.e_step(x, gmm)), em.log_likelihood(x, gmm))


@_entry(10, "log p(x) = ELBO(q) + KL(q || p(c|x)) for any q(c)")
def _discrete_gap(sz: Sizes) -> verify.Result:
    x, gmm = _mixture_data()
    q = np.random.default_rng(101).dirichlet(np.ones(3), size=len(x))       # (N, C) any distributions
    kl = np.sum(q * (np.log(q) - np.log(em.e_step(x, gmm))), axis=1)
    return verify.identity(em.log_likelihood(x, gmm), em.elbo(x, gmm, q) + kl)


@_entry(10, "hard EM's gap = -log p(c* | x)")
def _hard_gap(sz: Sizes) -> verify.Result:
    x, gmm = _mixture_data()
    gap = em.log_likelihood(x, gmm) - em.elbo(x, gmm, em.hard_e_step(x, gmm))
    return verify.identity(gap, -np.log(em.e_step(x, gmm).max(axis=1)))


@_entry(10, "EM never lowers the ELBO or the log-likelihood")
def _em_staircase(sz: Sizes) -> verify.Result:
    x, gmm = _mixture_data()
    trace = em.fit(x, gmm, sz.em_iter)[1]
    # log p(x | theta_t) = ELBO(q_t, theta_t) <= ELBO(q_t, theta_t+1) <= log p(x | theta_t+1)
    return verify.bound(np.concatenate([trace.elbo_e, trace.elbo_m]),
                        np.concatenate([trace.elbo_m, trace.log_lik[1:]]))


# ---------------------------------------------------------------- lesson 13: NVIB
ALPHA, BETA = np.array([0.7, 2.0, 5.0]), np.array([1.0, 0.5, 2.0])


def _dirichlet(rng, n):
    return np.clip(rng.dirichlet(ALPHA, size=n), 1e-300, None)              # (n, 3), no log 0


def _log_dirichlet(pi, a):
    return special.lgamma(a.sum()) - special.lgamma(a).sum() + np.sum((a - 1) * np.log(pi), axis=-1)


@_entry(13, "E_Dir(a)[log pi_i] = psi(a_i) - psi(sum a)")
def _dirichlet_log_mean(sz: Sizes) -> verify.Result:
    closed = special.digamma(ALPHA) - special.digamma(ALPHA.sum())
    return verify.expectation(closed, np.log, _dirichlet, sz.n, seed=131)


@_entry(13, "KL(Dir(a) || Dir(b)) = E[log Dir(pi; a) - log Dir(pi; b)]")
def _dirichlet_kl(sz: Sizes) -> verify.Result:
    return verify.expectation(nvib.kl_dirichlet_forward(ALPHA, BETA)[0],
                              lambda pi: _log_dirichlet(pi, ALPHA) - _log_dirichlet(pi, BETA),
                              _dirichlet, sz.n, seed=132)


@_entry(13, "gradient of the Dirichlet KL in a and b")
def _dirichlet_kl_gradient(sz: Sizes) -> verify.Result:
    rng = np.random.default_rng(133)
    args = (rng.uniform(0.05, 5, (2, 5)), rng.uniform(0.05, 5, (2, 5)))     # (N, m) each

    def by_hand(a, b):
        kl, cache = nvib.kl_dirichlet_forward(a, b)
        return nvib.kl_dirichlet_backward(np.ones_like(kl), cache)
    return verify.gradient(lambda a, b: nvib.kl_dirichlet_forward(a, b)[0].sum(), by_hand, args)


@_entry(13, "denoising attention at s_i^2 = 0 = dot-product attention")
def _attention_limit(sz: Sizes) -> verify.Result:
    rng = np.random.default_rng(134)
    d = 4
    u, z = rng.standard_normal((2, 3, d)), rng.standard_normal((2, 5, d))   # queries, means
    pi = np.exp(np.sum(z * z, axis=-1) / (2 * math.sqrt(d)))                  # (2, 5): cancels the norm term
    y = nvib.denoising_attention_forward(u, z, np.zeros((2, 5)), pi)[0]
    return verify.identity(y, nvib.attention_forward(u, z, z)[0])


# ---------------------------------------------------------------- running and printing
class Row(NamedTuple):
    derivation: Derivation
    result: verify.Result


def run(quick: bool = False) -> Iterator[Row]:
    """Check every entry of :data:`CATALOGUE` in order, yielding each :class:`Row` as it is done.

    In the student copy (``python -m minivae assign build``) an entry that reaches a stubbed
    solution region fails as ``kind == "stub"``, naming the task, and the others still run.
    """
    sizes = QUICK if quick else FULL
    for d in CATALOGUE:
        try:
            result = d.check(sizes)
        except NotImplementedError as e:
            result = verify.Result(False, "stub", math.nan, math.nan, math.nan, math.nan, (),
                                   f"not implemented: {escape_line_breaks(str(e))}")
        yield Row(d, result)


def _score(r: verify.Result) -> str:
    if r.kind == "stub":
        return r.text.split(": ")[1]                    # the task's name
    if r.kind == "expectation":
        return f"z = {r.score:+.2f}"
    if r.kind == "bound":
        return f"margin {r.score:.2g}"
    return f"rel {r.score:.1e}"


NAME_WIDTH = 58
HEADER = (f"{'#':>2}  {'identity':<{NAME_WIDTH}}  {'from':<9}  {'left side':>11}  {'right side':>11}  "
          f"{'error or z':>13}  result")


def format_row(i: int, row: Row) -> str:
    """One line of the table: number, identity, lesson, the two sides, the score, pass or FAIL."""
    r = row.result
    return (f"{i:>2}  {row.derivation.name:<{NAME_WIDTH}}  lesson {row.derivation.lesson:<2}  "
            f"{r.lhs:>11.6g}  {r.rhs:>11.6g}  {_score(r):>13}  {'pass' if r.ok else 'FAIL'}")
