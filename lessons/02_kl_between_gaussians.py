# %% [markdown]
# # 02. The KL divergence between Gaussians
#
# **Goal.** Derive the closed form of $\mathrm{KL}(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, 1))$,
# the term of the ELBO that pulls every encoding towards the prior, and the
# general KL between two diagonal Gaussians. Check both against a Monte Carlo
# estimate drawn through the VAE's own sampler, watch that estimate's error
# shrink like $1/\sqrt n$, and check the hand-derived gradient against finite
# differences.
#
# **Builds on** lesson 1, where the KL appeared as the price of information
# about $x$ carried by the code $z$.
#
# **Runtime** about 6 seconds on a laptop CPU (about 2 seconds with `MINIVAE_QUICK=1`).

# %%
import numpy as np
from matplotlib.figure import Figure

from minivae import gaussian, gradcheck
from minivae.lessons import quick, show

QUICK = quick()
rng = np.random.default_rng(2)

# %% [markdown]
# ## 1. The definition
#
# For densities $q$ and $p$,
#
# $$ \mathrm{KL}(q\,\|\,p) = \mathbb E_{z\sim q}\big[\log q(z) - \log p(z)\big]. $$
#
# In the VAE, $q = q(z \mid x) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)$ is the encoder's
# output for one image and $p = \mathcal N(0, I)$ is the prior. The encoder outputs
# $\mu$ and $v = \log\sigma^2$ (never $\sigma$ itself: $v$ may be any real number).
#
# ## 2. The closed form in one dimension
#
# Write $z = \mu + \sigma\epsilon$ with $\epsilon \sim \mathcal N(0, 1)$. The two log-densities are
#
# $$ \log q(z) = -\tfrac12\log 2\pi - \tfrac12 \log\sigma^2 - \tfrac12\epsilon^2, \qquad
#    \log p(z) = -\tfrac12\log 2\pi - \tfrac12 z^2 , $$
#
# and with $z^2 = \mu^2 + 2\mu\sigma\epsilon + \sigma^2\epsilon^2$ their difference is
#
# $$ \log q(z) - \log p(z) = -\tfrac12\log\sigma^2 + \tfrac12\mu^2 + \mu\sigma\,\epsilon
#    + \tfrac12(\sigma^2 - 1)\,\epsilon^2 . \tag{1}$$
#
# Take the expectation ($\mathbb E\epsilon = 0$, $\mathbb E\epsilon^2 = 1$):
#
# $$ \boxed{\mathrm{KL}\big(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, 1)\big)
#    = \tfrac12\big(\mu^2 + \sigma^2 - 1 - \log\sigma^2\big)} $$
#
# and for a diagonal Gaussian in $K$ dimensions the log-densities are sums over
# $k$, so the KL is the sum of $K$ such terms. That is
# `gaussian.kl_std_normal_forward`, which takes `mu` and `log_var` of shape (N, K)
# and returns one KL per row, (N,).
#
# ## 3. Two diagonal Gaussians
#
# The same computation with $p = \mathcal N(\mu_p, \sigma_p^2)$ (use
# $\mathbb E_q[(z - \mu_p)^2] = \sigma_q^2 + (\mu_q - \mu_p)^2$) gives, per dimension,
#
# $$ \mathrm{KL}(q\,\|\,p) = \tfrac12\Big(\log\frac{\sigma_p^2}{\sigma_q^2}
#    + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{\sigma_p^2} - 1\Big), $$
#
# `gaussian.kl_diag_forward`. With $\mu_p = 0$, $\sigma_p = 1$ it is the boxed formula.

# %%
K = 3
mu = np.array([[0.5, -1.0, 0.0]])          # (1, K): one encoding
log_var = np.array([[0.3, -0.7, 1.0]])     # (1, K)
kl = gaussian.kl_std_normal_forward(mu, log_var)[0]   # (1,)

sigma2 = np.exp(log_var)
by_hand = 0.5 * np.sum(mu**2 + sigma2 - 1 - log_var)
assert abs(kl[0] - by_hand) < 1e-12

zeros = np.zeros_like(mu)
kl_general = gaussian.kl_diag_forward(mu, log_var, zeros, zeros)[0]  # p = N(0, I)
assert abs(kl_general[0] - kl[0]) < 1e-12
print(f"KL(q || N(0, I)) = {kl[0]:.4f} nats")

# %% [markdown]
# ## 4. Never negative, zero only at the prior
#
# Each dimension contributes $\tfrac12\mu^2 + \tfrac12(t - 1 - \log t)$ with
# $t = \sigma^2$. The first part is $\ge 0$; so is the second, since $\log t \le t - 1$
# (the logarithm lies below its tangent at $t = 1$). Both vanish only at
# $\mu = 0$, $\sigma^2 = 1$: **the KL is zero exactly when the encoding is the prior**.
# The library computes $\sigma^2 - 1$ as `expm1(log_var)`, so that rounding can
# never push a KL near zero below zero. Check it on a grid of
# $(\mu, \log\sigma^2)$ that contains the prior $(0, 0)$:

# %%
mu_axis = np.linspace(-3, 3, 121)           # (121,), contains 0 exactly
lv_axis = np.linspace(-4, 3, 141)           # (141,), contains 0 exactly
MU, LV = np.meshgrid(mu_axis, lv_axis)      # (141, 121) each
grid_kl = gaussian.kl_std_normal_forward(MU[..., None], LV[..., None])[0]  # (141, 121): K = 1

assert np.all(grid_kl >= 0)
i0, j0 = np.argmin(np.abs(lv_axis)), np.argmin(np.abs(mu_axis))
assert grid_kl[i0, j0] == 0.0                       # exactly zero at the prior
assert np.sum(grid_kl == 0.0) == 1                  # and nowhere else on the grid
assert gaussian.kl_std_normal_forward(np.zeros((1, 20)), np.zeros((1, 20)))[0][0] == 0.0

# %% [markdown]
# The KL is not symmetric. A narrow $q = \mathcal N(0, 0.1^2)$ inside the prior costs
# $\mathrm{KL}(q\,\|\,p) = \tfrac12(0.01 - 1 - \log 0.01) \approx 1.81$ nats, while the reverse,
# the wide prior measured against the narrow $q$, costs (section 3 with the roles
# swapped) $\mathrm{KL}(p\,\|\,q) = \tfrac12(\log 0.01 + 1/0.01 - 1) \approx 47.2$ nats. The VAE
# pays the cheap direction: an encoding may be much sharper than the prior at a
# modest price, because $\mathrm{KL}(q\,\|\,p)$ weighs $\log q - \log p$ where $q$ has its mass.

# %%
narrow, wide = np.array([[np.log(0.01)]]), np.array([[0.0]])   # log_var of N(0, 0.1^2), N(0, 1)
zero = np.zeros((1, 1))
kl_qp = gaussian.kl_diag_forward(zero, narrow, zero, wide)[0][0]
kl_pq = gaussian.kl_diag_forward(zero, wide, zero, narrow)[0][0]
print(f"KL(narrow || prior) = {kl_qp:.3f},  KL(prior || narrow) = {kl_pq:.3f}")
assert abs(kl_qp - 1.81) < 5e-3 and abs(kl_pq - 47.2) < 5e-2

# %% [markdown]
# ## 5. Monte Carlo through the sampler
#
# The definition is an expectation, so it can be estimated by sampling: draw
# $\epsilon_i \sim \mathcal N(0, I)$, set $z_i = \mu + \sigma \odot \epsilon_i$ (the VAE's sampler,
# `gaussian.reparameterize_forward`) and average
#
# $$ \widehat{\mathrm{KL}}_n = \frac1n \sum_{i=1}^n \big[\log q(z_i) - \log p(z_i)\big] $$
#
# with `gaussian.log_density`. This checks two things at once: the closed form,
# and that the sampler and the KL read `log_var` the same way (a sampler that
# used $e^{v}$ as the standard deviation while the KL used it as the variance
# would fail here).
#
# Equation (1) also gives the **variance of one term**: $\epsilon$ and $\epsilon^2$ are
# uncorrelated, $\mathrm{Var}\,\epsilon = 1$ and $\mathrm{Var}\,\epsilon^2 = 2$, so per dimension
#
# $$ \mathrm{Var}\big[\log q(z) - \log p(z)\big] = \mu^2\sigma^2 + \tfrac12(\sigma^2 - 1)^2 , $$
#
# summed over $k$. The estimate is unbiased with standard error
# $\mathrm{sd}/\sqrt n$: to halve the error, take four times as many samples.

# %%
def mc_kl_terms(mu, log_var, eps):
    """log q(z) - log p(z) at z = mu + sigma * eps.  mu, log_var (1, K); eps (..., K) -> (...)."""
    z, _ = gaussian.reparameterize_forward(mu, log_var, eps)     # (..., K)
    return gaussian.log_density(z, mu, log_var) - gaussian.log_density(z, 0.0, np.zeros_like(log_var))


sd = np.sqrt(np.sum(mu**2 * sigma2 + 0.5 * (sigma2 - 1) ** 2))   # sd of one term, from (1)

n_big = 20_000 if QUICK else 1_000_000
terms = mc_kl_terms(mu, log_var, rng.standard_normal((n_big, K)))    # (n_big,)
kl_mc, se = terms.mean(), terms.std() / np.sqrt(n_big)
print(f"closed form {kl[0]:.5f}  Monte Carlo {kl_mc:.5f} +- {se:.5f}  (n = {n_big:,})")
assert abs(kl_mc - kl[0]) < 4 * se                     # unbiased, within 4 standard errors
kurtosis = np.mean((terms - kl_mc) ** 4) / terms.var() ** 2
se_rel_sd = np.sqrt((kurtosis - 1) / (4 * n_big))      # relative standard error of a sample sd
assert abs(terms.std() / sd - 1) < 4 * se_rel_sd       # the sd of one term matches the formula

# %% [markdown]
# The same check for the general KL of section 3, with a $p$ that is not the prior:

# %%
mu_p, log_var_p = np.array([[1.0, 0.5, -2.0]]), np.array([[0.5, -1.0, 0.2]])   # (1, K) each
z, _ = gaussian.reparameterize_forward(mu, log_var, rng.standard_normal((n_big, K)))   # (n_big, K)
terms_pq = gaussian.log_density(z, mu, log_var) - gaussian.log_density(z, mu_p, log_var_p)  # (n_big,)
kl_pq_closed = gaussian.kl_diag_forward(mu, log_var, mu_p, log_var_p)[0][0]
assert abs(terms_pq.mean() - kl_pq_closed) < 4 * terms_pq.std() / np.sqrt(n_big)

# %% [markdown]
# ### The error shrinks like $1/\sqrt n$
#
# Repeat the estimate $R$ times for each of several $n$ and measure the
# root-mean-square error against the closed form. On log-log axes,
# $\log \mathrm{rmse} = \log \mathrm{sd} - \tfrac12\log n$: a line of slope $-\tfrac12$.

# %%
R = 100 if QUICK else 300
ns = np.unique(np.logspace(1, 3 if QUICK else 4, 5 if QUICK else 9).astype(int))  # (M,)
rmse, rmse_se, ratios = [], [], []
for n in ns:
    est = mc_kl_terms(mu, log_var, rng.standard_normal((R, n, K))).mean(axis=1)  # (R,)
    sq = (est - kl[0]) ** 2                                                   # (R,) squared errors
    rmse.append(np.sqrt(sq.mean()))
    rmse_se.append(sq.std() / np.sqrt(R) / (2 * rmse[-1]))   # standard error of the rmse
    ratios.append(sq / (sd**2 / n))                   # squared error over its predicted mean
rmse, ratios = np.array(rmse), np.concatenate(ratios)  # (M,), (M * R,)

# pooled over every n: the mean squared error is sd^2 / n, within 4 standard errors
print(f"measured / predicted mean squared error: {ratios.mean():.3f} +- {ratios.std() / np.sqrt(len(ratios)):.3f}")
assert abs(ratios.mean() - 1) < 4 * ratios.std() / np.sqrt(len(ratios))

slope, intercept = np.polyfit(np.log(ns), np.log(rmse), 1)
print(f"fitted slope {slope:.3f} (theory -0.5)")
assert -0.65 <= slope <= -0.35

# %% [markdown]
# ## 6. The gradient
#
# The encoder learns from $\partial\,\mathrm{KL} / \partial\mu$ and
# $\partial\,\mathrm{KL} / \partial v$ with $v = \log\sigma^2$. From the boxed formula,
# with $\sigma^2 = e^v$,
#
# $$ \frac{\partial\,\mathrm{KL}}{\partial \mu_k} = \mu_k, \qquad
#    \frac{\partial\,\mathrm{KL}}{\partial v_k} = \tfrac12(e^{v_k} - 1) = \tfrac12(\sigma_k^2 - 1). $$
#
# Both vanish at the prior, and the second derivatives $1$ and $\tfrac12 e^{v}$ are
# positive: the KL is convex in $(\mu, v)$ with its only minimum at the prior. In
# a network, the upstream gradient $\overline{\mathrm{KL}}_n = \partial L / \partial\,\mathrm{KL}_n$
# (for the mean loss over a batch, $1/N$) multiplies each row:
# `kl_std_normal_backward(dkl, cache)` returns $(\overline{\mathrm{KL}}_n\,\mu_n,\ \overline{\mathrm{KL}}_n\,(\sigma_n^2 - 1)/2)$.
#
# `gradcheck.check_backward` compares this with central differences of
# $L = \sum_n \overline{\mathrm{KL}}_n\,\mathrm{KL}_n$ for a random upstream gradient:

# %%
mu_c, lv_c = rng.standard_normal((4, 5)), rng.uniform(-2, 2, (4, 5))     # (N, K) = (4, 5)
errors = gradcheck.check_backward(gaussian.kl_std_normal_forward, gaussian.kl_std_normal_backward,
                                  [mu_c, lv_c], rng)
print("relative errors (d mu, d log_var):", [f"{e:.1e}" for e in errors])
assert max(errors) < 1e-7

mu_p_c, lv_p_c = rng.standard_normal((4, 5)), rng.uniform(-2, 2, (4, 5))
errors_diag = gradcheck.check_backward(gaussian.kl_diag_forward, gaussian.kl_diag_backward,
                                       [mu_c, lv_c, mu_p_c, lv_p_c], rng)
assert max(errors_diag) < 1e-7

dmu, dlv = gaussian.kl_std_normal_backward(np.ones(1), gaussian.kl_std_normal_forward(zeros, zeros)[1])
assert np.all(dmu == 0) and np.all(dlv == 0)          # the prior is a stationary point

# %% [markdown]
# ## 7. The picture
#
# Left: the KL of a one-dimensional encoding over $(\mu, \log\sigma^2)$, a bowl with its
# bottom at the prior. Right: the Monte Carlo error against $n$, with the
# prediction $\mathrm{sd}/\sqrt n$ from equation (1).

# %%
fig = Figure(figsize=(10, 4.2), layout="constrained")
ax1, ax2 = fig.subplots(1, 2)

levels = [0.05, 0.25, 0.5, 1, 2, 4, 8]
cs = ax1.contour(MU, LV, grid_kl, levels=levels, cmap="viridis")
ax1.clabel(cs, fmt="%g", fontsize=8)
ax1.plot([0], [0], "r*", ms=12, label=r"prior: $\mu = 0,\ \log\sigma^2 = 0$, KL $= 0$")
ax1.set_xlabel(r"$\mu$")
ax1.set_ylabel(r"$\log\sigma^2$")
ax1.set_title(r"KL$(\mathcal{N}(\mu, \sigma^2)\,\|\,\mathcal{N}(0, 1))$ in nats")
ax1.legend(loc="lower left", fontsize=8)

ax2.errorbar(ns, rmse, yerr=rmse_se, fmt="o", label=f"measured ({R} repeats per n)")
ax2.plot(ns, sd / np.sqrt(ns), "k--", label=r"theory: sd$/\sqrt{n}$")
ax2.plot(ns, np.exp(intercept) * ns**slope, "C1-", alpha=0.6, label=f"fit: slope {slope:.3f}")
ax2.set_xscale("log")
ax2.set_yscale("log")
ax2.set_xlabel("samples n")
ax2.set_ylabel("rms error of the Monte Carlo KL (nats)")
ax2.set_title(r"Monte Carlo error $\propto n^{-1/2}$")
ax2.legend(fontsize=8)
ax2.grid(True, which="both", alpha=0.3)

show(fig, "02_kl.png", dpi=110)

# %% [markdown]
# ## Summary
#
# * $\mathrm{KL}(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, 1)) = \tfrac12(\mu^2 + \sigma^2 - 1 - \log\sigma^2)$,
#   summed over dimensions; $\ge 0$, and $0$ only at the prior.
# * The closed form agrees with a Monte Carlo estimate through the sampler, whose
#   error falls like $1/\sqrt n$ with a standard deviation we derived exactly. The
#   VAE uses the closed form: it is exact and has no variance.
# * Its gradient, $(\mu,\ (\sigma^2 - 1)/2)$, passes the finite-difference check.
#
# Next, lesson 3: the *other* term of the ELBO is an expectation we cannot
# write in closed form, and we need its gradient through the sampling.
