# %% [markdown]
# # 10. EM as alternating optimization of the ELBO
#
# **Goal.** See the expectation-maximization algorithm for a Gaussian mixture as
# coordinate ascent on the very ELBO a VAE maximizes: the E-step maximizes it over $q$
# (and, because the posterior is computable, closes the gap to $\log p(x)$ exactly), the
# M-step maximizes it over the parameters in closed form. We watch the staircase this
# makes, check each step numerically, and compare soft EM with hard EM, where $q$ must be
# one-hot and the bound can no longer touch $\log p(x)$.
#
# **Builds on** lesson 4 (the identity $\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q \,\|\, p(z\mid x))$)
# and lesson 9 (the gap a VAE's encoder leaves open).
#
# **Runtime** on a laptop CPU: a few seconds (quick mode too).

# %% [markdown]
# ## The ELBO with a discrete latent
#
# A mixture of $C$ Gaussians has a latent component $c$ for every data point:
#
# $$ p(c) = \pi_c, \qquad p(x \mid c) = \mathcal N(x;\ \mu_c, \Sigma_c), \qquad
#    p(x) = \sum_{c=1}^C \pi_c\,\mathcal N(x;\ \mu_c, \Sigma_c). $$
#
# For any distribution $q_n(c)$ over the components of data point $x_n$, the derivation of
# lesson 4 goes through with a sum in place of the integral:
#
# $$ \log p(x_n) = \underbrace{\sum_c q_n(c)\,\big[\log p(x_n, c) - \log q_n(c)\big]}_{\mathrm{ELBO}(q_n,\ \theta)}
#    + \mathrm{KL}\big(q_n \,\|\, p(c \mid x_n)\big). $$
#
# The ELBO depends on two things, $q = (q_1, \dots, q_N)$ and $\theta = (\pi, \mu, \Sigma)$;
# EM maximizes $\mathcal F(q, \theta) = \sum_n \mathrm{ELBO}(q_n, \theta)$ one of them at a time.
#
# **E-step** ($\theta$ fixed). $\log p(x_n)$ does not depend on $q$, so maximizing the ELBO
# over $q_n$ is minimizing the KL, and the minimum, 0, is at the posterior:
#
# $$ q_n(c) = p(c \mid x_n) = \frac{\pi_c\,\mathcal N(x_n; \mu_c, \Sigma_c)}{\sum_{c'} \pi_{c'}\,\mathcal N(x_n; \mu_{c'}, \Sigma_{c'})} \qquad\Longrightarrow\qquad \mathrm{ELBO}(q_n, \theta) = \log p(x_n). $$
#
# These are the *responsibilities*. Unlike a VAE, a mixture's posterior is a softmax
# over $C$ numbers, so the E-step is exact.
#
# **M-step** ($q$ fixed). Write $N_c = \sum_n q_n(c)$. Up to the entropy of $q$, which does
# not involve $\theta$,
#
# $$ \mathcal F = \sum_c N_c \log \pi_c + \sum_{n, c} q_n(c)\Big[-\tfrac12\log\det(2\pi\Sigma_c)
#    - \tfrac12 (x_n - \mu_c)^\top \Sigma_c^{-1}(x_n - \mu_c)\Big]. $$
#
# * $\pi$: maximize $\sum_c N_c\log\pi_c$ subject to $\sum_c \pi_c = 1$. A Lagrange multiplier
#   gives $N_c / \pi_c = \lambda$, so $\pi_c = N_c / N$.
# * $\mu_c$: $\partial\mathcal F / \partial\mu_c = \Sigma_c^{-1}\sum_n q_n(c)(x_n - \mu_c) = 0$ gives
#   $\mu_c = \frac1{N_c}\sum_n q_n(c)\, x_n$, a weighted mean.
# * $\Sigma_c$: with $P = \Sigma_c^{-1}$, $\partial/\partial P$ of $\tfrac{N_c}2\log\det P - \tfrac12\sum_n q_n(c)\,(x_n-\mu_c)^\top P (x_n-\mu_c)$
#   is $\tfrac{N_c}2 P^{-1} - \tfrac12 \sum_n q_n(c)(x_n - \mu_c)(x_n-\mu_c)^\top = 0$, so
#   $\Sigma_c = \frac1{N_c}\sum_n q_n(c)\,(x_n - \mu_c)(x_n - \mu_c)^\top$, a weighted covariance.
#
# (Each is the unique maximizer: $\mathcal F$ is concave in $\log\pi$ on the simplex, in $\mu_c$,
# and in $P$.)
#
# **The staircase.** Iteration $t$ takes $\theta_t$ to $q_t$ (E) to $\theta_{t+1}$ (M), and
#
# $$ \log p(x \mid \theta_{t+1}) \;\ge\; \mathcal F(q_t, \theta_{t+1}) \;\ge\; \mathcal F(q_t, \theta_t) \;=\; \log p(x \mid \theta_t): $$
#
# the M-step raises the bound, the log-likelihood rises at least as much (the gap reopens,
# because $q_t$ is no longer the posterior under $\theta_{t+1}$), and the next E-step closes
# the gap again. The log-likelihood can never go down.
#
# Everything lives in `minivae.em`: `e_step`, `m_step`, `elbo`, `log_likelihood`, `fit`.

# %%
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from minivae.data import toy_gaussian_mixture
from minivae.em import GaussianMixture, e_step, elbo, fit, init_mixture, log_likelihood, m_step
from minivae.gradcheck import numerical_gradient
from minivae.lessons import quick, show

QUICK = quick()
N, C = (300, 3) if QUICK else (600, 3)
N_ITER = 200                                     # EM is cheap: run it to convergence
rng = np.random.default_rng(10)
x, labels = toy_gaussian_mixture(N, rng, n_components=C, spread=2.0, scale=0.8)  # (N, 2), (N,)
gmm0 = init_mixture(x, C, rng, covariance="full")  # k-means++ means, the data covariance for all
print(f"quick mode: {QUICK};  {N} points from {C} overlapping Gaussians (sd 0.8, means 3.5 apart)")

# %% [markdown]
# ## One iteration by hand
#
# The E-step closes the gap to rounding error; the M-step's parameters beat any others for
# this $q$. For the second claim we take the gradient of $\mathcal F(q, \theta)$ by finite
# differences (`minivae.gradcheck.numerical_gradient`) at the M-step's answer: it should
# vanish, in every mean and every covariance entry.

# %%
q = e_step(x, gmm0)                                              # (N, C) responsibilities
gap_e = np.max(np.abs(log_likelihood(x, gmm0) - elbo(x, gmm0, q)))
print(f"after the E-step: max_n |log p(x_n) - ELBO_n| = {gap_e:.1e}")
assert gap_e < 1e-10

gmm1 = m_step(x, q)
# (C, 2), (C, 2, 2), perturbed in place one entry at a time; the Cholesky factorization reads
# only the lower triangle of a covariance, so an upper entry has derivative 0 and the lower
# one carries the symmetric pair's: at a maximum both vanish.
means, covs = gmm1.means.copy(), gmm1.covs.copy()
F = lambda: float(elbo(x, GaussianMixture(gmm1.weights, means, covs), q).sum())  # noqa: E731
g_means, g_covs = numerical_gradient(F, means), numerical_gradient(F, covs)
means0 = gmm0.means.copy()                                       # for scale: the gradient at the start
F0 = lambda: float(elbo(x, GaussianMixture(gmm0.weights, means0, gmm0.covs), q).sum())  # noqa: E731
g_start = numerical_gradient(F0, means0)
print(f"|dF/dmu| at the M-step: {np.abs(g_means).max():.1e}  (at the start: {np.abs(g_start).max():.1e}); "
      f"|dF/dSigma|: {np.abs(g_covs).max():.1e}")
assert np.abs(g_means).max() < 1e-5 * np.abs(g_start).max()
assert np.abs(g_covs).max() < 1e-5 * np.abs(g_start).max()
print(f"F(q, theta_0) = {elbo(x, gmm0, q).mean():.4f}  ->  F(q, theta_1) = {elbo(x, gmm1, q).mean():.4f}  "
      f"<=  log p(x | theta_1) = {log_likelihood(x, gmm1).mean():.4f}   (nats per point)")
assert elbo(x, gmm1, q).mean() > elbo(x, gmm0, q).mean()
assert log_likelihood(x, gmm1).mean() > elbo(x, gmm1, q).mean()  # the gap reopens after M

# %% [markdown]
# ## Soft EM to convergence: the staircase
#
# `fit` records, per iteration and averaged over the data, the log-likelihood of
# $\theta_t$, the ELBO after the E-step and the ELBO after the M-step.

# %%
gmm_soft, soft = fit(x, gmm0, N_ITER)
gap_after_m = soft.log_lik[1:] - soft.elbo_m                     # (T,) KL(q_t || p(c | x, theta_{t+1}))
assert np.max(np.abs(soft.elbo_e - soft.log_lik[:-1])) < 1e-10  # E closes the gap
assert np.all(soft.elbo_m >= soft.elbo_e - 1e-12)                # M raises the bound (up to rounding)
assert np.all(gap_after_m >= -1e-12)                             # which stays a bound
assert np.all(np.diff(soft.log_lik) >= -1e-12)                   # so the log-likelihood never falls
print("iteration  log-lik   gain from M   gap after M")
for t in range(6):
    print(f"{t:9d}  {soft.log_lik[t]:8.4f}  {soft.elbo_m[t] - soft.elbo_e[t]:11.5f}  {gap_after_m[t]:11.5f}")
assert np.all(gap_after_m[:3] > 1e-4)                            # early on the gap reopens visibly
assert abs(soft.log_lik[-1] - soft.log_lik[-11]) < 1e-9          # converged

# %% [markdown]
# ## Hard EM: one-hot q, a bound that never closes
#
# Restrict $q_n$ to one-hot distributions. Among those, $\mathrm{ELBO} = \log p(x_n, c)$ (a
# one-hot $q$ has no entropy), so the best choice is $c_n = \arg\max_c p(c \mid x_n)$
# (`hard_e_step`), and the ELBO it reaches is
#
# $$ \log p(x_n, c_n) = \log p(x_n) + \log p(c_n \mid x_n) \;\le\; \log p(x_n), $$
#
# short by $-\log p(c_n\mid x_n)$, which vanishes only for a point that is certain of its
# component. Hard EM is still coordinate ascent, on a smaller set of $q$, so *its* ELBO never
# decreases; with equal weights and one shared spherical covariance it is k-means.
#
# What it maximizes is no longer the likelihood: a point in the tail of component 1 that
# happens to be closer to component 2 counts fully for component 2. Each cluster's tails are
# cut off, and the fixed point of hard EM is not a maximum of $\log p(x)$. We check that with
# the gradient of the mean log-likelihood with respect to the means, at both answers.

# %%
gmm_hard, hard = fit(x, gmm0, N_ITER, hard=True)
assert np.all(hard.elbo_e < hard.log_lik[:-1])                   # the gap never closes
assert np.all(hard.elbo_m <= hard.log_lik[1:])
assert np.all(np.diff(np.ravel(np.c_[hard.elbo_e, hard.elbo_m])) >= -1e-12)  # its ELBO never falls


def mean_grad(gmm):
    """Largest |d mean log p(x) / d mu| at the mixture gmm, by central differences."""
    mu = gmm.means.copy()                                        # (C, 2), perturbed in place
    f = lambda: float(log_likelihood(x, GaussianMixture(gmm.weights, mu, gmm.covs)).mean())  # noqa: E731
    return float(np.abs(numerical_gradient(f, mu)).max())


g_soft, g_hard = mean_grad(gmm_soft), mean_grad(gmm_hard)
hard_gap = hard.log_lik[-1] - hard.elbo_m[-1]
print(f"final log-lik per point: soft {soft.log_lik[-1]:.4f}, hard {hard.log_lik[-1]:.4f} "
      f"(hard EM's own ELBO {hard.elbo_m[-1]:.4f}, a gap of {hard_gap:.4f})")
print(f"|d log p / d mu| at the answer: soft {g_soft:.1e}, hard {g_hard:.1e}")
assert g_soft < 1e-6 and g_hard > 100 * g_soft                   # only soft EM stops at a stationary point
assert hard_gap > 1e-3
# soft EM started from hard EM's answer climbs further: that answer was not a maximum
_, polish = fit(x, gmm_hard, 50)
print(f"soft EM from the hard answer: {hard.log_lik[-1]:.4f} -> {polish.log_lik[-1]:.4f}")
assert polish.log_lik[-1] > hard.log_lik[-1] + 1e-4
assert soft.log_lik[-1] >= hard.log_lik[-1]

# %% [markdown]
# ## The figure
#
# (a) Iterations 1 to 7 as half-steps: the ELBO (blue) climbs in the M-steps and jumps up
# to the log-likelihood (black) in the E-steps; the log-likelihood only moves in M-steps.
# (b) The gap after each M-step and the gain of each iteration, on a log scale: both vanish
# as EM converges. (c) Soft and hard EM from the same start: hard EM's ELBO (dashed) stays
# below its log-likelihood. (d) The data coloured by their soft responsibilities, with the
# 2-standard-deviation ellipses of both fits.

# %%
def staircase(trace, t0, t1):
    """Half-step positions t0, t0 + 0.5, ..., t1 and the ELBO and log-likelihood there.

    At integer t the E-step has just run (the ELBO equals the log-likelihood of theta_t);
    at t + 0.5 the M-step has just run (theta_{t+1}, the same q_t)."""
    steps = np.arange(2 * t0, 2 * t1 + 1) / 2                    # t0, t0 + 0.5, ..., t1
    bound = np.ravel(np.c_[trace.elbo_e, trace.elbo_m])[2 * t0:2 * t1 + 1]  # E, M, E, M, ...
    ll = np.repeat(trace.log_lik, 2)[1:][2 * t0:2 * t1 + 1]      # theta changes at M only
    return steps, bound, ll


def ellipse(ax, mean, cov, **kw):
    vals, vecs = np.linalg.eigh(cov)                             # ascending
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    ax.add_patch(Ellipse(mean, 2 * 2 * np.sqrt(vals[1]), 2 * 2 * np.sqrt(vals[0]), angle=angle,
                         fill=False, **kw))


fig = Figure(figsize=(12, 9.5), layout="constrained")
(ax_a, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
t0, t1 = 1, 7                                                    # the first M-step is off the scale
steps, bound, ll = staircase(soft, t0, t1)
ax_a.step(steps, ll, where="post", color="k", lw=2, label=r"$\log p(x\mid\theta)$")
ax_a.step(steps, bound, where="post", color="C0", marker="o", label=r"ELBO $\mathcal{F}(q, \theta)$")
for t in range(t0, t1):
    ax_a.annotate("M", (t + 0.5, bound[2 * (t - t0) + 1]), xytext=(3, -12), textcoords="offset points",
                  color="C2", fontsize=9)
    ax_a.annotate("E", (t + 1, bound[2 * (t - t0) + 2]), xytext=(3, -12), textcoords="offset points",
                  color="C3", fontsize=9)
ax_a.set_xlabel("iteration t (E-step at t, M-step at t + 1/2)")
ax_a.set_ylabel("nats per point")
ax_a.set_title("(a) soft EM: E closes the gap, M raises the bound")
ax_a.legend()
ax_a.grid(alpha=0.3)

iters = np.arange(1, len(gap_after_m) + 1)
gain = np.diff(soft.log_lik)
ax_b.semilogy(iters[gap_after_m > 0], gap_after_m[gap_after_m > 0], "o-", ms=3,
              label=r"gap after the M-step, KL$(q_t \,\|\, p(c \mid x, \theta_{t+1}))$")
ax_b.semilogy(iters[gain > 0], gain[gain > 0], "s-", ms=3, label="gain in log-likelihood")
ax_b.set_xlim(0, min(60, N_ITER))
ax_b.set_xlabel("iteration")
ax_b.set_ylabel("nats per point")
ax_b.set_title("(b) both vanish as EM converges")
ax_b.legend(fontsize=8)
ax_b.grid(alpha=0.3, which="both")

k = np.arange(N_ITER + 1)
ax_c.plot(k, soft.log_lik, color="C0", label="soft EM: log-likelihood (= its ELBO after E)")
ax_c.plot(k, hard.log_lik, color="C1", label="hard EM: log-likelihood")
ax_c.plot(k[1:], hard.elbo_m, "--", color="C1", label="hard EM: ELBO (one-hot q)")
ax_c.set_xscale("symlog", linthresh=1)
ax_c.set_ylim(min(soft.log_lik[1], hard.log_lik[1], hard.elbo_e[1]) - 0.05, soft.log_lik[-1] + 0.05)
ax_c.set_xlabel("iteration")
ax_c.set_ylabel("nats per point")
ax_c.set_title("(c) soft vs hard EM from the same start")
ax_c.legend(fontsize=8)
ax_c.grid(alpha=0.3)

resp = e_step(x, gmm_soft)                                       # (N, C)
ax_d.scatter(x[:, 0], x[:, 1], c=np.clip(resp @ np.eye(3)[:C, :3] * 0.85 + 0.1, 0, 1), s=8, linewidths=0)
for c in range(C):
    ellipse(ax_d, gmm_soft.means[c], gmm_soft.covs[c], color="k", lw=1.5,
            label="soft EM (2 sd)" if c == 0 else None)
    ellipse(ax_d, gmm_hard.means[c], gmm_hard.covs[c], color="C1", lw=1.5, linestyle="--",
            label="hard EM (2 sd)" if c == 0 else None)
ax_d.set_aspect("equal")
ax_d.set_title("(d) points coloured by soft responsibilities (RGB)")
ax_d.legend(fontsize=8, loc="upper right")
show(fig, "10_em_staircase.png")

# %% [markdown]
# ## From EM to the VAE
#
# | | EM for a mixture | VAE |
# |---|---|---|
# | latent | discrete $c$, $C$ values | continuous $z \in \mathbb R^K$ |
# | E-step | exact posterior, a softmax: the gap closes | encoder $q_\phi(z\mid x)$, one network for all $x$ (amortized); the gap stays open |
# | M-step | closed form | a gradient step on the decoder $\theta$ |
# | schedule | alternate to convergence | both updated together, one minibatch at a time |
#
# Both climb the same objective, $\mathcal F(q, \theta) = \log p(x\mid\theta) - \mathrm{KL}(q \,\|\, p(\cdot \mid x, \theta))$.
# In EM the KL is driven to zero every iteration, so the bound is the likelihood; in a VAE it
# is whatever the encoder can achieve, which is why lesson 9 had to estimate $\log p(x)$
# separately, and why hard EM, whose $q$ cannot match the posterior either, ends up with a
# biased answer: a restricted $q$ pulls the model toward places where that $q$ fits.
