# %% [markdown]
# # 04. The ELBO three ways
#
# **Goal.** Derive the evidence lower bound (ELBO) from Jensen's inequality and
# rewrite it three ways: as $\mathbb E_q[\log p(x, z)] + H(q)$, as reconstruction minus KL
# (the form the VAE trains on), and as $\log p(x) - \mathrm{KL}(q\,\|\,p(z \mid x))$, which says
# exactly how far below $\log p(x)$ it lies. Then measure everything on a model
# where $\log p(x)$ and the posterior are known in closed form: the identity holds to
# rounding error, the gap vanishes at the true posterior, and every Monte Carlo
# form agrees with the exact value within its standard error.
#
# **Builds on** lesson 2 (Gaussian KLs, log-densities, entropy) and lesson 3
# (sampling $z = \mu + \sigma\odot\epsilon$).
#
# **Runtime** about 2 seconds on a laptop CPU (about a second with `MINIVAE_QUICK=1`).

# %%
import numpy as np
from matplotlib.figure import Figure

from minivae import VAE, gaussian
from minivae.estimate import log_weights
from minivae.exact import (gaussian_elbo_linear, kl_diag_full, ppca_from_vae, ppca_log_px,
                           ppca_optimal_encoder, ppca_posterior)
from minivae.lessons import quick, show
from minivae.objectives import elbo_joint_form, elbo_kl_form

QUICK = quick()
rng = np.random.default_rng(4)

# %% [markdown]
# ## 1. Jensen's bound
#
# A latent-variable model $p(x, z) = p(z)\,p(x \mid z)$ assigns each $x$ the evidence
# $p(x) = \int p(x, z)\,dz$, an integral we usually cannot compute. For *any* density
# $q(z)$ that is positive where $p(x, z)$ is, multiply and divide by $q$:
#
# $$ \log p(x) = \log \mathbb E_{z\sim q}\Big[\frac{p(x, z)}{q(z)}\Big]
#    \;\ge\; \mathbb E_{z\sim q}\Big[\log\frac{p(x, z)}{q(z)}\Big] =: \mathrm{ELBO}(q), $$
#
# because $\log$ is concave (Jensen: $\log\mathbb E[w] \ge \mathbb E[\log w]$). Equality needs the
# ratio $w = p(x, z)/q(z)$ to be constant in $z$, i.e. $q(z) \propto p(x, z)$: $q$ is the
# posterior $p(z\mid x)$.
#
# ## 2. Three rewritings
#
# **(a) Energy plus entropy.** Split the log of the ratio:
#
# $$ \mathrm{ELBO}(q) = \mathbb E_q[\log p(x, z)] + H(q), \qquad H(q) = -\mathbb E_q[\log q(z)] . $$
#
# **(b) Reconstruction minus KL.** Split $\log p(x, z) = \log p(x\mid z) + \log p(z)$ instead:
#
# $$ \mathrm{ELBO}(q) = \mathbb E_q[\log p(x \mid z)] - \mathrm{KL}(q\,\|\,p(z)) . $$
#
# This is the VAE's form: the KL to the prior has the closed form of lesson 2,
# only the reconstruction term is sampled.
#
# **(c) Evidence minus the gap.** Split $\log p(x, z) = \log p(x) + \log p(z \mid x)$:
#
# $$ \mathrm{ELBO}(q) = \log p(x) - \mathrm{KL}(q\,\|\,p(z\mid x)) . $$
#
# Since a KL is $\ge 0$ with equality only when the two densities agree, this
# re-proves the bound and names the gap: **the ELBO falls short of $\log p(x)$ by
# exactly the KL from $q$ to the true posterior.** Raising the ELBO over $q$ (the
# encoder) pulls $q$ towards the posterior; raising it over the decoder raises
# $\log p(x)$ or shrinks the gap.
#
# Sampled with $z_s = \mu + \sigma\odot\epsilon_s$, the Jensen form and (a) and (b) are three
# Monte Carlo estimators of the same number: `objectives.elbo_joint_form` is (a),
# `objectives.elbo_kl_form` is (b), and the mean of the log-weights
# $\log w_s = \log p(x, z_s) - \log q(z_s)$ is the Jensen form.

# %% [markdown]
# ## 3. A model where everything is known
#
# The linear-Gaussian model (probabilistic PCA), with latent row vector $z$ (K),
# weights $W$ (K, D), bias $b$ (D,) and noise scale $s$:
#
# $$ p(z) = \mathcal N(0, I_K), \qquad p(x \mid z) = \mathcal N(zW + b,\ s^2 I_D) . $$
#
# Then $p(x) = \mathcal N(b,\ W^\top W + s^2 I)$ and the posterior is Gaussian,
# $p(z \mid x) = \mathcal N(m, \Lambda^{-1})$ with precision $\Lambda = I + WW^\top/s^2$ and mean
# $m = (x - b)W^\top\Lambda^{-1}/s^2$. For a diagonal $q = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$ the ELBO has
# a closed form too (the expected squared error is $\lVert x - \mu W - b\rVert^2 + \sum_k\sigma_k^2\lVert W_k\rVert^2$).
# `minivae.exact` provides all of these: `ppca_log_px`, `ppca_posterior`,
# `gaussian_elbo_linear`, and `kl_diag_full` for the KL from a diagonal $q$ to a
# full-covariance Gaussian. It is also exactly the decoder of
# `VAE(hidden=(), likelihood="gaussian", obs_scale=s)`, so the VAE's own code can
# compute the sampled forms.
#
# We build two such models with $D = 6$, $K = 2$, $s = 0.5$: in model **A** the rows of
# $W$ are orthogonal, so $WW^\top$ and the posterior covariance are diagonal; in
# model **B** they are not, so the posterior is correlated.

# %%
D, K, s = 6, 2, 0.5
Q, _ = np.linalg.qr(rng.standard_normal((D, D)))      # (D, D) orthogonal
W_A = np.array([[2.0], [1.0]]) * Q[:K]                # (K, D): orthogonal rows of norms 2 and 1
W_B = np.array([[1.0, 0.0], [1.0, 1.0]]) @ W_A        # (K, D): rows W_A[0] and W_A[0] + W_A[1]
b = rng.standard_normal(D)                            # (D,)
assert np.allclose(W_A @ W_A.T, np.diag([4.0, 1.0])) and abs((W_B @ W_B.T)[0, 1]) > 1


def linear_vae(W, b, s):
    """A float64 VAE with a linear decoder p(x | z) = N(zW + b, s^2 I)."""
    vae = VAE(x_dim=D, hidden=(), z_dim=K, likelihood="gaussian", obs_scale=s, seed=0, dtype="float64")
    vae.params["dec.out.W"][...] = W
    vae.params["dec.out.b"][...] = b
    W_, b_, s_ = ppca_from_vae(vae)                   # the model the VAE decodes with
    assert np.array_equal(W_, W) and np.array_equal(b_, b) and s_ == s
    return vae


N = 4                                                  # data points, drawn from model B
x = rng.standard_normal((N, K)) @ W_B + b + s * rng.standard_normal((N, D))   # (N, D)

# %% [markdown]
# ## 4. The identity, to rounding error
#
# For an arbitrary diagonal $q$ per data point, compute the left side, the ELBO
# in closed form, and the right side, $\log p(x) - \mathrm{KL}(q\,\|\,p(z\mid x))$, from the
# exact evidence and posterior:

# %%
mu = rng.standard_normal((N, K))                       # (N, K): some encoder's guesses
log_var = rng.uniform(-2, 1, (N, K))                   # (N, K)
for W in (W_A, W_B):
    elbo = gaussian_elbo_linear(x, W, b, s, mu, log_var)          # (N,)
    log_px = ppca_log_px(x, W, b, s)                               # (N,)
    m, C = ppca_posterior(x, W, b, s)                              # (N, K), (K, K)
    gap = kl_diag_full(mu, log_var, m, C)                          # (N,) KL(q || p(z|x))
    print("log p(x)", np.round(log_px, 3), " ELBO", np.round(elbo, 3), " gap", np.round(gap, 3))
    assert np.all(gap > 0) and np.all(elbo < log_px)
    assert np.max(np.abs(elbo + gap - log_px)) < 1e-9

# %% [markdown]
# ## 5. The three sampled forms agree with the exact ELBO
#
# Now estimate the ELBO of the same $q$ under model B by sampling
# $z_s = \mu + \sigma\odot\epsilon_s$ and decoding with the VAE. Each form averages a
# per-sample quantity over $S$ samples; its standard error is that quantity's
# standard deviation over $\sqrt S$.

# %%
S = 4_000 if QUICK else 200_000
vae_B = linear_vae(W_B, b, s)
eps = rng.standard_normal((S, N, K))                                   # (S, N, K)
z, _ = gaussian.reparameterize_forward(mu, log_var, eps)               # (S, N, K)
log_px_z = vae_B.log_px_z(x, z)                                        # (S, N)
log_pz = gaussian.log_density(z, 0.0, np.zeros(K))                     # (S, N)
log_qz = gaussian.log_density(z, mu, log_var)                          # (S, N)
kl_prior = gaussian.kl_std_normal_forward(mu, log_var)[0]              # (N,)

forms = {  # name -> (estimate (N,), the per-sample quantity it averages (S, N))
    "Jensen: E[log p(x,z) - log q(z)]": ((log_px_z + log_pz - log_qz).mean(0), log_px_z + log_pz - log_qz),
    "(a) E[log p(x,z)] + H(q)": (elbo_joint_form(log_px_z, z, log_var), log_px_z + log_pz),
    "(b) E[log p(x|z)] - KL(q||p(z))": (elbo_kl_form(log_px_z, kl_prior), log_px_z),
}
exact_B = gaussian_elbo_linear(x, W_B, b, s, mu, log_var)              # (N,)
for name, (estimate, per_sample) in forms.items():
    se = per_sample.std(axis=0) / np.sqrt(S)                           # (N,)
    print(f"{name:34s} max |estimate - exact| / se = {np.max(np.abs(estimate - exact_B) / se):.2f}")
    assert np.all(np.abs(estimate - exact_B) < 4 * se)

# %% [markdown]
# ## 6. The best diagonal $q$, and the gap at the true posterior
#
# Which $q$ maximizes the ELBO? By (c), the one closest to the posterior in
# $\mathrm{KL}(q\,\|\,p(z\mid x))$. Among diagonal Gaussians that is $\mu = m$ and
# $\sigma_k^2 = 1/\Lambda_{kk}$ (set the derivatives of `kl_diag_full`'s formula to zero),
# and a *linear encoder* can output it for every $x$: `exact.ppca_optimal_encoder`
# returns its weights. What is left is
#
# $$ \mathrm{KL}(q^*\,\|\,p(z\mid x)) = \tfrac12\Big(\sum_k \log\Lambda_{kk} - \log\det\Lambda\Big) \ \ge 0 $$
#
# (Hadamard's inequality), zero exactly when $\Lambda$ is diagonal. In model A, $q^*$ *is* the
# posterior and the ELBO equals $\log p(x)$. In model B a diagonal $q$ cannot
# represent the correlation, and the gap stays positive whatever the encoder:
# the price of the mean-field (diagonal) family.
#
# At the true posterior the Jensen form has a further property: every sample's
# $\log w_s = \log p(x, z_s) - \log p(z_s\mid x) = \log p(x)$ is the *same* number, so its
# Monte Carlo estimate has zero variance. `estimate.log_weights` computes those
# $\log w_s$ through the VAE's encoder.

# %%
results = {}
for name, W in [("A", W_A), ("B", W_B)]:
    vae = linear_vae(W, b, s)
    for key, value in ppca_optimal_encoder(W, b, s).items():
        vae.params[key][...] = value
    mu_star, log_var_star = vae.encode(x)                             # (N, K) each
    m, C = ppca_posterior(x, W, b, s)
    Lam = np.eye(K) + W @ W.T / s**2                                   # (K, K) posterior precision
    assert np.max(np.abs(mu_star - m)) < 1e-12
    assert np.max(np.abs(np.exp(log_var_star) - 1 / np.diag(Lam))) < 1e-12

    log_px = ppca_log_px(x, W, b, s)
    gap = log_px - gaussian_elbo_linear(x, W, b, s, mu_star, log_var_star)     # (N,)
    mean_field_gap = 0.5 * (np.sum(np.log(np.diag(Lam))) - np.linalg.slogdet(Lam)[1])
    assert np.max(np.abs(gap - kl_diag_full(mu_star, log_var_star, m, C))) < 1e-9
    assert np.max(np.abs(gap - mean_field_gap)) < 1e-9

    lw = log_weights(vae, x, rng.standard_normal((S, N, K)))            # (S, N) log w_s
    results[name] = dict(W=W, m=m, C=C, Lam=Lam, log_px=log_px, gap=gap, lw_sd=lw.std(axis=0))
    print(f"model {name}: gap at the best diagonal q = {gap[0]:.2e} nats; "
          f"sd of log w over samples = {lw.std(axis=0).max():.2e}")

assert np.max(np.abs(results["A"]["gap"])) < 1e-9             # A: the ELBO reaches log p(x)
assert np.max(results["A"]["lw_sd"]) < 1e-9                    # ... and log w_s is constant
assert np.min(results["B"]["gap"]) > 0.1                       # B: a gap no diagonal q can close
assert np.min(results["B"]["lw_sd"]) > 0.1

# %% [markdown]
# ## 7. The ELBO along a family of $q$'s
#
# Slide the mean of $q$ along the line $\mu_t = t\,m$ through the posterior mean, with
# the best diagonal variances, for the first data point. By (c) the ELBO is
# $\log p(x)$ minus the gap, and since $q_t$ differs from $q^*$ only by the mean shift
# $(t-1)m$, the gap grows by the quadratic form of the posterior precision:
#
# $$ \log p(x) - \mathrm{ELBO}(q_t) = \mathrm{KL}(q^*\,\|\,p(z\mid x)) + \tfrac12 (t-1)^2\, m\Lambda m^\top . $$
#
# A parabola under a horizontal line: touching it at $t = 1$ in model A, staying
# below by the mean-field gap in model B. The dots are Monte Carlo estimates
# (Jensen form) at a few $t$, with $\pm 2$ standard errors.

# %%
ts = np.linspace(0.6, 1.4, 81)                                         # (T,), contains t = 1
t_dots = np.array([0.7, 0.85, 1.0, 1.15, 1.3])
S_dots = 500 if QUICK else 5_000
for name, r in results.items():
    vae = linear_vae(r["W"], b, s)
    m0, lv0 = r["m"][:1], -np.log(np.diag(r["Lam"]))[None]                  # (1, K) each
    x0 = np.repeat(x[:1], len(ts), axis=0)                                  # (T, D)
    elbo_t = gaussian_elbo_linear(x0, r["W"], b, s, ts[:, None] * m0, np.repeat(lv0, len(ts), 0))  # (T,)
    predicted = r["log_px"][0] - r["gap"][0] - 0.5 * (ts - 1) ** 2 * (m0 @ r["Lam"] @ m0.T)[0, 0]
    assert np.max(np.abs(elbo_t - predicted)) < 1e-9
    assert np.all(elbo_t <= r["log_px"][0] + 1e-12) and abs(ts[np.argmax(elbo_t)] - 1) < 1e-9
    r["elbo_t"] = elbo_t

    dots, dots_se = [], []
    for t in t_dots:
        z_t, _ = gaussian.reparameterize_forward(t * m0, lv0, rng.standard_normal((S_dots, 1, K)))  # (S, 1, K)
        lw_t = (vae.log_px_z(x[:1], z_t) + gaussian.log_density(z_t, 0.0, np.zeros(K))
                - gaussian.log_density(z_t, t * m0, lv0))[:, 0]                 # (S,)
        dots.append(lw_t.mean())
        dots_se.append(lw_t.std() / np.sqrt(S_dots))
    exact_dots = gaussian_elbo_linear(x[:1].repeat(len(t_dots), 0), r["W"], b, s,
                                      t_dots[:, None] * m0, lv0.repeat(len(t_dots), 0))   # (5,)
    assert np.all(np.abs(np.array(dots) - exact_dots) < 4 * np.array(dots_se) + 1e-12)
    r["dots"], r["dots_se"] = np.array(dots), np.array(dots_se)

# %%
fig = Figure(figsize=(11, 4.2), layout="constrained")
axes = fig.subplots(1, 2, sharey=True)
titles = {"A": "model A: orthogonal $W$ rows, diagonal posterior",
          "B": "model B: correlated posterior"}
for ax, (name, r) in zip(axes, results.items()):
    lp = r["log_px"][0]
    ax.axhline(lp, color="k", lw=1.5, label=r"$\log p(x)$ (exact)")
    ax.plot(ts, r["elbo_t"], color="C0", lw=2, label=r"ELBO$(q_t)$ (exact)")
    ax.fill_between(ts, r["elbo_t"], lp, color="C0", alpha=0.12,
                    label=r"gap $=$ KL$(q_t\,\|\,p(z\mid x))$")
    ax.errorbar(t_dots, r["dots"], yerr=2 * r["dots_se"], fmt="o", color="C3", ms=5,
                label="Monte Carlo (Jensen form)")
    ax.axvline(1.0, color="gray", ls=":", lw=1)
    ax.annotate(f"gap at $t = 1$:\n{r['gap'][0]:.3f} nats", xy=(1.0, lp - r["gap"][0]),
                xytext=(1.0, r["elbo_t"].min() + 0.6), ha="center", fontsize=9,
                bbox=dict(boxstyle="round", fc="white", ec="0.7"),
                arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.set_title(titles[name], fontsize=10)
    ax.set_xlabel(r"$t$  (the mean of $q_t$ is $t\,m$; $t = 1$: the posterior mean)")
axes[0].set_ylabel("nats")
axes[0].legend(fontsize=8, loc="upper center", ncol=2)
bottom = min(r["elbo_t"].min() for r in results.values())
axes[0].set_ylim(bottom - 0.3, max(r["log_px"][0] for r in results.values()) + 1.3)

show(fig, "04_elbo.png", dpi=110)

# %% [markdown]
# ## Summary
#
# $$ \log p(x) \;\ge\; \underbrace{\mathbb E_q\Big[\log\tfrac{p(x,z)}{q(z)}\Big]}_{\text{Jensen}}
#  = \underbrace{\mathbb E_q[\log p(x,z)] + H(q)}_{\text{(a)}}
#  = \underbrace{\mathbb E_q[\log p(x\mid z)] - \mathrm{KL}(q\,\|\,p(z))}_{\text{(b), the VAE's}}
#  = \underbrace{\log p(x) - \mathrm{KL}(q\,\|\,p(z\mid x))}_{\text{(c)}} $$
#
# * On the linear-Gaussian model the identity (c) holds to $10^{-9}$ nats for any $q$,
#   and the three sampled forms agree with the exact ELBO within 4 standard errors.
# * The gap is zero exactly at the true posterior (model A), where every
#   importance log-weight equals $\log p(x)$; a diagonal $q$ cannot reach a correlated
#   posterior (model B) and leaves the mean-field gap
#   $\tfrac12(\sum_k\log\Lambda_{kk} - \log\det\Lambda)$.
#
# Next: the decoder's likelihoods, the $\log p(x \mid z)$ of form (b).
