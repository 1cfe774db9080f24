# %% [markdown]
# # 13. Attention as denoising, and a bottleneck for sets
#
# **Goal.** A transformer encoder does not output one vector. It outputs a *set* of vectors,
# as many as the input has tokens. To put a VAE bottleneck there, the latent must be a
# distribution over sets of any size. NVIB (Henderson & Fehr, *A VAE for Transformers
# with Nonparametric Variational Information Bottleneck*, ICLR 2023) uses a Dirichlet
# process: the latent is a mixture of Gaussians with a variable number of components, and
# the KL charges for every component that carries weight. In this lesson we
#
# 1. derive attention as **Bayesian denoising** of the query under a Gaussian mixture, and
#    the limit in which it is exactly scaled dot-product attention;
# 2. build the **NVIB layer**: a prior component, pseudo-counts, sampling (Gaussian and
#    Dirichlet reparameterization), its deterministic evaluation mode, and its two KL terms,
#    which need $\log\Gamma$ and $\psi$ (written in `minivae.special`);
# 3. check every gradient by finite differences;
# 4. train a tiny **set autoencoder** on point clouds with 1 to 5 clusters, and measure that the
#    number of components it keeps grows with the number of clusters.
#
# **Builds on** lesson 2 (Gaussian KLs), lesson 3 (reparameterization) and lesson 6 (the
# training loop and Adam).
#
# **Runtime** on a laptop CPU: about 50 seconds (about 6 seconds with `MINIVAE_QUICK=1`).

# %%
import math
import time

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from minivae import nvib, setae, special
from minivae.gradcheck import check_backward, check_params
from minivae.lessons import quick, show

QUICK = quick()
rng = np.random.default_rng(13)
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## 1. Attention as denoising
#
# Let the latent be a mixture $F = \sum_{i} \pi_i\, \mathcal N(z_i, \mathrm{diag}\,\sigma_i^2)$ in $\mathbb R^d$. A
# query $u$ is a *noisy observation* of a vector drawn from $F$: $v \sim F$, $u = v + \eta$ with
# $\eta \sim \mathcal N(0, \sigma_u^2 I)$. The best guess of $v$ (squared error) is the posterior mean.
# Bayes' rule does it in two steps. Which component was it? Each marginal
# $p(u \mid i) = \mathcal N(u; z_i, \sigma_i^2 + \sigma_u^2)$, so with $s_i = \sigma_i^2 + \sigma_u^2$
#
# $$ r_i(u) = p(i \mid u) = \mathrm{softmax}_i\Big(\log\pi_i - \tfrac12\sum_k\big[\log s_{ik} + (u_k - z_{ik})^2 / s_{ik}\big]\Big). $$
#
# Where in that component? Two Gaussians combine by precision weighting,
# $\mathbb E[v \mid u, i] = (\sigma_u^2 z_i + \sigma_i^2 u)/(\sigma_i^2 + \sigma_u^2)$. Altogether
#
# $$ y(u) = \mathbb E[v \mid u] = \sum_i r_i(u)\, \frac{\sigma_u^2\, z_i + \sigma_i^2\, u}{\sigma_i^2 + \sigma_u^2}. $$
#
# The responsibilities are attention weights, and the means are keys *and* values.
#
# **The limit.** Set $\sigma_i^2 = 0$. Then every $s_{ik} = \sigma_u^2$. Expanding
# $(u - z_i)^2 = \lVert u\rVert^2 - 2u\cdot z_i + \lVert z_i\rVert^2$, the terms that do not depend on $i$ cancel in the softmax:
#
# $$ y(u) = \sum_i \mathrm{softmax}_i\Big(\frac{u\cdot z_i}{\sigma_u^2} - \frac{\lVert z_i\rVert^2}{2\sigma_u^2} + \log\pi_i\Big)\, z_i . $$
#
# With $\sigma_u^2 = \sqrt d$ this is scaled dot-product attention, $\mathrm{softmax}(u\cdot z_i/\sqrt d)$, plus a bias
# $\log\pi_i - \lVert z_i\rVert^2/(2\sqrt d)$. So *equal weights and vanishing variance alone are not
# enough*. The result is exactly dot-product attention when (a) the weights are equal and
# the keys have equal norms, or (b) $\pi_i \propto e^{\lVert z_i\rVert^2/(2\sqrt d)}$, which cancels the norm term.
# We check both, and that the finite-variance output converges to the limit.

# %%
T, n, d = 6, 5, 4
u = rng.standard_normal((T, d))                                   # (T, d) queries
z = rng.standard_normal((n, d))                                   # (n, d) component means
sdpa = lambda keys: nvib.attention_forward(u, keys, keys)[0]      # noqa: E731  softmax(u k^T / sqrt d) k

# (b) any keys, pi_i ∝ exp(|z_i|^2 / (2 sqrt d)), zero variance: exact
pi_b = np.exp(np.sum(z * z, axis=1) / (2 * np.sqrt(d)))
gap_b = np.abs(nvib.denoising_attention_forward(u, z, np.zeros(n), pi_b)[0] - sdpa(z)).max()
# (a) keys on a sphere, equal weights, vanishing variance
z_sphere = 1.5 * z / np.linalg.norm(z, axis=1, keepdims=True)
gaps_a = {v: np.abs(nvib.denoising_attention_forward(u, z_sphere, np.full(n, v), np.ones(n))[0]
                    - sdpa(z_sphere)).max() for v in (1e-1, 1e-3, 1e-5, 0.0)}
# equal weights, zero variance, unequal norms: the norm bias remains
gap_norms = np.abs(nvib.denoising_attention_forward(u, z, np.zeros(n), np.ones(n))[0] - sdpa(z)).max()
print(f"(b) norm-cancelling weights, sigma^2 = 0: max |difference| {gap_b:.1e}")
print("(a) equal norms, equal weights:", "  ".join(f"sigma^2={v:g}: {g:.1e}" for v, g in gaps_a.items()))
print(f"equal weights, unequal norms, sigma^2 = 0: {gap_norms:.2f} (not dot-product attention)")
assert gap_b < 1e-12 and gaps_a[0.0] < 1e-12
assert gaps_a[1e-1] > gaps_a[1e-3] > gaps_a[1e-5] and gaps_a[1e-5] < 1e-4
assert gap_norms > 1e-2

# %% [markdown]
# The other limits are just as easy to read off. As $\sigma_i^2 \to \infty$ the component says nothing
# and $y \to u$. As $\sigma_u^2 \to \infty$ the query says nothing and $y \to \sum_i\pi_i z_i / \sum_i\pi_i$. As
# $\sigma_u^2 \to 0$ the softmax becomes an argmax, and $y$ is the nearest component (hard attention).
# The figure at the end draws the field $u \mapsto y(u)$ in the plane.

# %%
var = rng.uniform(0.1, 1.0, (n, d))
pi = rng.uniform(0.2, 1.0, n)
y_wide = nvib.denoising_attention_forward(u, z, np.full((n, d), 1e12), pi)[0]
y_vague = nvib.denoising_attention_forward(u, z, np.zeros((n, d)), pi, query_var=1e12)[0]
y_sharp = nvib.denoising_attention_forward(u, z, np.zeros((n, d)), pi, query_var=1e-6)[0]
nearest = z[np.argmin(np.linalg.norm(u[:, None] - z[None], axis=-1), axis=1)]
assert np.allclose(y_wide, u, atol=1e-9) and np.allclose(y_vague, pi @ z / pi.sum(), atol=1e-9)
assert np.allclose(y_sharp, nearest, atol=1e-9)

# %% [markdown]
# ## 2. Its backward pass
#
# Write $w_i = 1/s_i$, $a_i = \sigma_u^2 z_i w_i$, $b_i = \sigma_i^2 w_i$. Then $y = R a + u \odot (R b)$, with $R$ the $(T, n)$
# responsibilities. The backward pass is matrix products around a softmax. The one
# subtle input is $\pi$. Its gradient $\bar\pi_i = \sum_t \bar\ell_{ti}/\pi_i$ is computed from
# $r_{ti}/\pi_i = p(u_t \mid i)/p(u_t)$, which stays finite where $\pi_i = 0$ (a component switched off). All
# five inputs ($u$, $z$, $\sigma^2$, $\pi$, $\sigma_u^2$) go through the finite-difference check, with a batch axis
# and one variance per component:

# %%
ub = rng.standard_normal((2, T, d))                               # (B, T, d)
zb = rng.standard_normal((2, n, d))                               # (B, n, d)
errors = {
    "per-dimension variances": check_backward(
        nvib.denoising_attention_forward, nvib.denoising_attention_backward,
        [ub, zb, rng.uniform(0.05, 2, (2, n, d)), rng.uniform(0.1, 1, (2, n)), np.array(0.8)], rng),
    "one variance per component": check_backward(
        nvib.denoising_attention_forward, nvib.denoising_attention_backward,
        [ub, zb, rng.uniform(0.05, 2, (2, n)), rng.uniform(0.1, 1, (2, n)), np.array(0.8)], rng),
}
for name, errs in errors.items():
    print(f"{name:28s} du, dz, dvar, dpi, dquery_var: " + "  ".join(f"{e:.1e}" for e in errs))
assert max(max(e) for e in errors.values()) < 1e-7

# %% [markdown]
# ## 3. The NVIB layer: a Dirichlet process over the encoder's vectors
#
# A Dirichlet process $\mathrm{DP}(\alpha_0, G_0)$ that has seen $n$ points $v_1, \ldots, v_n$ has the posterior
# $\mathrm{DP}\big(\alpha_0 + n,\ \tfrac{\alpha_0 G_0 + \sum_i \delta_{v_i}}{\alpha_0 + n}\big)$. A draw from it is a mixture with weights
# $(\pi_0, \pi_1, \ldots, \pi_n) \sim \mathrm{Dir}(\alpha_0, 1, \ldots, 1)$: one part for the prior $G_0$, one for each point.
# NVIB makes two changes. Each encoder vector $i$ brings a Gaussian $\mathcal N(\mu_i, \sigma_i^2)$ instead of
# a point, and a learned **pseudo-count** $\alpha_i = e^{\log\alpha_i}$ instead of 1. The prior
# component is $\mathcal N(0, I)$ with pseudo-count $\alpha_0$. So the latent is the random mixture
#
# $$ F = \sum_{i=0}^n \pi_i\, \delta_{z_i}, \qquad \pi \sim \mathrm{Dir}(\alpha_0, \alpha_1, \ldots, \alpha_n), \qquad z_i \sim \mathcal N(\mu_i, \sigma_i^2). $$
#
# A vector with $\alpha_i \to 0$ gets no weight: **the number of components is learned.**
#
# **Training: sampling.** $z_i = \mu_i + \sigma_i\epsilon_i$ as in lesson 3. For $\pi$, normalize independent Gammas,
# $\pi_i = \gamma_i / \sum_j\gamma_j$ with $\gamma_i \sim \mathrm{Gamma}(\alpha_i, 1)$. The Gamma has no exact reparameterization in
# closed form; `nvib.log_gamma_sample_forward` uses an approximate one (the published code
# uses implicit gradients instead). It draws $\gamma' \sim \mathrm{Gamma}(\alpha + 1)$ with Marsaglia and Tsang's transform
# $d(1 + c\epsilon)^3$, $d = \alpha + \tfrac23$, $c = 1/\sqrt{9d}$, *without* the rejection step. That proposal is
# accepted with probability above 0.95 anyway. Then the exact boost $\gamma = \gamma' U^{1/\alpha}$, $U \sim \mathrm U(0,1)$,
# gives shape $\alpha$. The mean stays exactly $\alpha$; the variance becomes $\alpha + 0.11 + 0.02/d$ instead of $\alpha$.
#
# **Evaluation: the mean.** No noise: the components are $\mathcal N(\mu_i, \sigma_i^2)$ with weights
# $\mathbb E[\pi_i] = \alpha_i/\sum_j\alpha_j$, after dropping every vector with $\alpha_i < 0.1$ (the published
# threshold). Denoising attention reads both forms. A sampled atom is a component with
# $\sigma^2 = 0$.

# %%
S = 50_000 if QUICK else 400_000
for alpha in (0.1, 1.0, 5.0):
    lg, _ = nvib.log_gamma_sample_forward(np.full(S, np.log(alpha)), rng.standard_normal(S), rng.uniform(size=S))
    g = np.exp(lg)
    print(f"alpha = {alpha:4.1f}: sample mean {g.mean():.3f} +- {g.std() / np.sqrt(S):.3f}, "
          f"variance {g.var():.3f} (exact Gamma: {alpha})")
    assert abs(g.mean() - alpha) < 4 * g.std() / np.sqrt(S)

N_, n_, K_ = 2, 4, 3
mu = rng.standard_normal((N_, n_, K_))
log_var = rng.uniform(-1, 1, (N_, n_, K_))
log_alpha = rng.uniform(-3, 2, (N_, n_))
noise = nvib.draw_noise(rng, N_, n_, K_)
layer_errors = {
    "NVIB layer, training": check_backward(lambda m, v, a: nvib.nvib_forward(m, v, a, noise), nvib.nvib_backward,
                                           [mu, log_var, log_alpha], rng),
    "NVIB layer, evaluation": check_backward(nvib.nvib_forward, nvib.nvib_backward, [mu, log_var, log_alpha], rng),
}
(z_e, var_e, pi_e), _ = nvib.nvib_forward(mu, log_var, log_alpha)
(z_e2, _, pi_e2), _ = nvib.nvib_forward(mu, log_var, log_alpha)
assert np.array_equal(z_e, z_e2) and np.array_equal(pi_e, pi_e2)          # evaluation is deterministic
assert np.all(z_e[:, 0] == 0) and np.all(var_e[:, 0] == 1)                 # index 0: the prior N(0, I)
print("pseudo-counts (prior first):", np.round(np.c_[np.ones(N_), np.exp(log_alpha)], 2).tolist())
print("evaluation weights:         ", np.round(pi_e, 3).tolist())

# %% [markdown]
# ## 4. The two KL terms
#
# The KL from the posterior DP to the prior DP splits into a part for the atoms and a part
# for the weights. NVIB uses these two regularizers:
#
# **Gaussian part.** Each component's KL from lesson 2, weighted by its expected weight:
#
# $$ \mathrm{KL}_{\mathcal N} = \sum_{i=1}^n \frac{\alpha_i}{A}\, \mathrm{KL}\big(\mathcal N(\mu_i, \sigma_i^2)\,\|\,\mathcal N(0, I)\big), \qquad A = \alpha_0 + \textstyle\sum_j \alpha_j . $$
#
# **Dirichlet part.** The KL between Dirichlets, from $\mathbb E_{\mathrm{Dir}(\alpha)}[\log\pi_i] = \psi(\alpha_i) - \psi(A)$:
#
# $$ \mathrm{KL}(\mathrm{Dir}(\alpha)\,\|\,\mathrm{Dir}(\beta)) = \log\Gamma(A) - \log\Gamma(B) + \sum_i\big[\log\Gamma(\beta_i) - \log\Gamma(\alpha_i)\big]
#    + \sum_i (\alpha_i - \beta_i)\big(\psi(\alpha_i) - \psi(A)\big), $$
#
# $$ \frac{\partial\,\mathrm{KL}}{\partial\alpha_j} = (\alpha_j - \beta_j)\,\psi'(\alpha_j) - (A - B)\,\psi'(A). $$
#
# The prior is a DP of concentration $\alpha_p$ truncated to $n + 1$ atoms, $\beta_i = b = \alpha_p/(n+1)$. Why does
# this KL prefer *few* components? Apply Stirling's series to $\log\Gamma$ and $\psi$. For large $\alpha_i$,
# $-\log\Gamma(\alpha_i) + \alpha_i\psi(\alpha_i) \approx \alpha_i + \tfrac12\log\alpha_i$ and $-b\,\psi(\alpha_i) \approx -b\log\alpha_i$. The coupling terms
# in $A$ cancel the $\alpha_i$'s, which leaves about $\sum_i (\tfrac12 - b)\log\alpha_i$. That is concave in $\alpha$: one large
# pseudo-count costs less than several medium ones with the same total.
#
# $\log\Gamma$, $\psi$ and $\psi'$ come from `minivae.special`. It shifts the argument up to at least 10 with
# $\Gamma(x+1) = x\Gamma(x)$, then sums Stirling's series. It is vectorized, and agrees with `math.lgamma` to about
# $10^{-14}$.

# %%
xs = np.exp(rng.uniform(np.log(1e-6), np.log(1e6), 5000))
lg_err = np.max(np.abs(special.lgamma(xs) - [math.lgamma(v) for v in xs]) / np.maximum(1, np.abs(special.lgamma(xs))))
psi_err = abs(special.digamma(np.array([1.0]))[0] + 0.5772156649015329)
print(f"lgamma vs math.lgamma: max error {lg_err:.1e};  psi(1) + Euler's gamma = {psi_err:.1e}")
assert lg_err < 1e-13 and psi_err < 1e-14

n_vec, b = 12, 0.5 / 13
prior = np.full(n_vec + 1, b)
same = nvib.kl_dirichlet_forward(prior, prior)[0]
spread_out = nvib.kl_dirichlet_forward(np.r_[1.0, np.full(n_vec, 6 / n_vec)], prior)[0]     # total 6 over 12
two = nvib.kl_dirichlet_forward(np.r_[1.0, 3.0, 3.0, np.full(n_vec - 2, b)], prior)[0]      # total 6 over 2
one = nvib.kl_dirichlet_forward(np.r_[1.0, 6.0, np.full(n_vec - 1, b)], prior)[0]           # total 6 on 1
print(f"KL(Dir || prior): at the prior {same:.3f}; the same total pseudo-count 6 on 12 vectors "
      f"{spread_out:.2f}, on 2 {two:.2f}, on 1 {one:.2f} nats")
assert same == 0.0 and spread_out > two > one > 0

# Monte Carlo through numpy's Dirichlet sampler (independent of ours)
alpha_mc, beta_mc = np.array([0.7, 2.0, 5.0]), np.array([1.0, 0.5, 2.0])
pis = np.clip(rng.dirichlet(alpha_mc, size=100_000 if QUICK else 400_000), 1e-300, None)
log_dir = lambda p, a: (special.lgamma(a.sum()) - special.lgamma(a).sum()  # noqa: E731
                        + np.sum((a - 1) * np.log(p), axis=-1))
mc = log_dir(pis, alpha_mc) - log_dir(pis, beta_mc)
closed = nvib.kl_dirichlet_forward(alpha_mc, beta_mc)[0]
print(f"KL closed form {closed:.4f}, Monte Carlo {mc.mean():.4f} +- {mc.std() / np.sqrt(len(mc)):.4f}")
assert abs(mc.mean() - closed) < 4 * mc.std() / np.sqrt(len(mc))

kl_g0 = nvib.kl_gaussian_weighted_forward(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)), np.zeros((1, 3)))[0]
assert kl_g0[0] == 0.0                                                    # 0 at the prior
layer_errors["Gaussian KL"] = check_backward(nvib.kl_gaussian_weighted_forward, nvib.kl_gaussian_weighted_backward,
                                             [mu, log_var, log_alpha], rng)
layer_errors["Dirichlet KL"] = check_backward(nvib.kl_dirichlet_forward, nvib.kl_dirichlet_backward,
                                              [rng.uniform(0.05, 5, (2, 5)), rng.uniform(0.05, 5, (2, 5))], rng)
for name, errs in layer_errors.items():
    print(f"{name:24s} " + "  ".join(f"{e:.1e}" for e in errs))
assert max(max(e) for e in layer_errors.values()) < 1e-7

# %% [markdown]
# ## 5. A set autoencoder whose latent size adapts
#
# The data are sets of 12 points in the plane around $k \in \{1, \ldots, 5\}$ cluster centres.
# `minivae.setae` builds the model from the ops above:
#
# * **encoder**: per-point features $(x_j, \tfrac12\lVert x_j\rVert^2, r_j)$, one self-attention layer, a tanh
#   layer, and affine heads for $\mu_j$, $\log\sigma_j^2$, $\log\alpha_j$. The squared norm lets a dot product
#   measure a distance, which is section 1's norm term again. $r_j \sim \mathrm U(0,1)$ is a random
#   tie-breaking code (a transformer would have positions). Without it the points of one
#   cluster are interchangeable, and an encoder that treats them alike must give them equal
#   pseudo-counts. The attention starts as a Gaussian neighbourhood that prefers large codes;
#   training takes it from there.
# * **latent**: the NVIB mixture in the plane ($K = 2$), 13 components with the prior.
# * **decoder**: no parameters. Point $j$ is reconstructed by denoising attention from a
#   corrupted query $u_j = x_j + 0.3\,\xi_j$, with $\sigma_u^2 = 0.09$, the true corruption variance. The
#   cluster spread is 0.08, so the query cannot single out one point, only its cluster.
#   One component per cluster is all the decoder can use.
#
# The loss is $\sum_j\lVert\hat x_j - x_j\rVert^2/(2\tau^2) + \mathrm{KL}_{\mathcal N} + \mathrm{KL}_{\mathrm{Dir}}$ with $\tau = 0.15$ and $\alpha_p = 0.5$. First the
# whole model's gradient, end to end with fixed noise. The attention starts milder here: the
# default's saturated softmax leaves gradients near round-off.

# %%
small = setae.SetAE(setae.SetAEConfig(n_points=5, max_clusters=3, att_dim=4, hidden=3,
                                      kernel_width=0.6, priority_scale=3.0))
xs_small = setae.make_sets(rng, 3, 5, 3).x                                # (3, 5, 2)
noise_small = setae.draw_set_noise(rng, 3, 5)
out = small.loss_and_grads(xs_small, noise_small)
model_errors = check_params(lambda: small.loss_and_grads(xs_small, noise_small).loss, small.params, out.grads,
                            h=1e-5)
worst = max(model_errors, key=model_errors.get)
print(f"whole set autoencoder, {len(model_errors)} parameter arrays: worst {worst} {model_errors[worst]:.1e}")
assert model_errors[worst] < 1e-7

# %% [markdown]
# Now train: Adam, batches of 64 sets from a pool of 8192, fresh noise every step. Then
# evaluate on 2000 new sets in evaluation mode, and count the vectors whose pseudo-count
# survives the threshold ($\alpha_j \ge 0.1$).

# %%
cfg = setae.SetAEConfig()
cfg = cfg.quick() if QUICK else cfg
start = time.perf_counter()
model, history = setae.train_setae(cfg)
seconds = time.perf_counter() - start
print(f"trained {cfg.steps} steps in {seconds:.0f} s; last loss {history[-1]['loss']:.2f}")

test = setae.make_sets(np.random.default_rng(1013), 2000, cfg.n_points, cfg.max_clusters, cfg.spread)
ev = setae.evaluate_setae(model, test, np.random.default_rng(7))
oracle = setae.oracle_recon_error(test, cfg.query_std, np.random.default_rng(7))   # (S,)
ks = sorted(ev.active_by_k)
print(" k | active components (mean) | squared error per point: model   oracle")
for k in ks:
    print(f" {k} | {ev.active_by_k[k]:24.2f} | {ev.sq_error_by_k[k]:29.4f}   {oracle[test.k == k].mean():.4f}")
print(f"all sets: model {ev.sq_error:.4f}, oracle {oracle.mean():.4f}, the noisy query itself {ev.query_sq_error:.4f}")

active = [ev.active_by_k[k] for k in ks]
assert all(b_ > a_ for a_, b_ in zip(active, active[1:])), active         # more clusters, more components
assert active[-1] - active[0] > (1.5 if QUICK else 3.0)
assert ev.sq_error < 0.4 * ev.query_sq_error                              # the latent carries the clusters
assert ev.sq_error < (1.6 if QUICK else 1.5) * oracle.mean()              # near the Bayes denoiser

# %% [markdown]
# ## 6. Pictures
#
# Top left: the denoising field $u \mapsto y(u)$ of a three-component mixture. Arrows run from
# a query to its denoised output; the wide component lets queries stay near where they are.
# Top right: the mean number of kept components against the number of clusters. Bottom:
# test sets in evaluation mode. Points are grey, the kept components are circles with area
# proportional to $\mathbb E[\pi_i]$ and radius $2\sigma$, and the prior component is not drawn.

# %%
fig = Figure(figsize=(13, 8), layout="constrained")
grid = fig.add_gridspec(2, 4)
ax = fig.add_subplot(grid[0, :2])
zc = np.array([[-1.0, -0.5], [1.0, 0.0], [0.0, 1.2]])                     # (3, 2)
vc = np.array([0.02, 0.02, 0.5])                                          # one variance per component
g1, g2 = np.meshgrid(np.linspace(-2.2, 2.2, 19), np.linspace(-1.8, 2.4, 17))
queries = np.stack([g1.ravel(), g2.ravel()], axis=1)                      # (323, 2)
field, fcache = nvib.denoising_attention_forward(queries, zc, vc, np.ones(3), query_var=0.3)
ax.quiver(queries[:, 0], queries[:, 1], field[:, 0] - queries[:, 0], field[:, 1] - queries[:, 1],
          fcache.resp.argmax(1), cmap="viridis", angles="xy", scale_units="xy", scale=1, width=0.003)
for (cx, cy), v in zip(zc, vc):
    ax.add_patch(Circle((cx, cy), 2 * np.sqrt(v), fill=False, color="k", lw=1.2))
ax.set_aspect("equal")
ax.set_title(r"denoising attention: $u \to \mathbb{E}[v \mid u]$ (colour: most responsible component)")

ax = fig.add_subplot(grid[0, 2:])
ax.plot(ks, active, "o-", label="kept components (mean over test sets)")
ax.plot(ks, ks, "k--", lw=1, label="number of clusters")
ax.set_xlabel("clusters in the set")
ax.set_ylabel(r"components with $\alpha_j \geq 0.1$")
ax.set_title(f"the latent grows with the data (n = {cfg.n_points} points per set)")
ax.legend()
ax.grid(alpha=0.3)

fw = ev.forward
shown = [int(np.flatnonzero(test.k == k)[0]) for k in (1, 2, 3, 5)]
for col, s in enumerate(shown):
    ax = fig.add_subplot(grid[1, col])
    ax.scatter(test.x[s, :, 0], test.x[s, :, 1], s=12, c="0.5", label="points")
    ax.scatter(fw.x_hat[s, :, 0], fw.x_hat[s, :, 1], s=10, marker="x", c="C3", label="reconstructions")
    for i in np.flatnonzero(fw.pi[s, 1:] > 0) + 1:                        # kept vectors (index 0: prior)
        radius = 2 * np.sqrt(fw.var[s, i].mean())
        ax.add_patch(Circle(fw.z[s, i], radius, fill=False, color="C0", lw=0.8 + 6 * fw.pi[s, i]))
    ax.set_xlim(-2, 2)
    ax.set_ylim(-2, 2)
    ax.set_aspect("equal")
    ax.set_title(f"{test.k[s]} cluster(s): {ev.active[s]} components kept")
    if col == 0:
        ax.legend(fontsize=7, loc="lower left")
show(fig, "13_attention_as_denoising.png")

# %% [markdown]
# ## Summary
#
# * Denoising attention is the posterior mean of a noisy query under a Gaussian mixture.
#   With zero component variance and query variance $\sqrt d$, it is dot-product attention plus a
#   bias $\log\pi_i - \lVert z_i\rVert^2/(2\sqrt d)$. It is exactly dot-product attention when that bias is constant.
# * NVIB turns a set of $n$ vectors into a Dirichlet-process posterior: $n$ Gaussians and a prior
#   component, with pseudo-counts as weights. It samples in training (Gaussian
#   reparameterization, and normalized approximate Gamma samples for the weights) and
#   uses the mean mixture in evaluation.
# * Its KL has a Gaussian part weighted by $\alpha_i/A$ and a Dirichlet part, built from $\log\Gamma$ and $\psi$.
#   For large pseudo-counts the Dirichlet part grows like $\sum_i(\tfrac12 - b)\log\alpha_i$, which favours
#   few components. On point sets, the trained model keeps more components for more clusters.
