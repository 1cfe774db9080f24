# %% [markdown]
# # 09. Estimating log p(x): naive Monte Carlo, importance sampling, the IWAE bound
#
# **Goal.** Put a number on $\log p(x) = \log \int p(x \mid z)\,p(z)\,dz$, the quantity
# the ELBO only bounds, and know how far off that number is. We compare three
# things built from the same Monte Carlo weights: the naive estimate that samples
# $z$ from the prior, importance sampling with the encoder as proposal, and the
# importance-weighted (IWAE) bound $\mathcal L_S$ that sits between the ELBO and
# $\log p(x)$. Each is checked against the exact answer: in closed form on the
# linear-Gaussian model, and by quadrature on a small VAE trained on MNIST.
#
# **Builds on** lesson 4 (the ELBO and its gap $\mathrm{KL}(q \,\|\, p(z \mid x))$) and
# lesson 6 (training a VAE).
#
# **Runtime** on a laptop CPU: about half a minute (a few seconds with `MINIVAE_QUICK=1`).

# %% [markdown]
# ## Three estimators from one identity
#
# For any proposal density $r(z)$ that is positive wherever $p(x, z)$ is,
#
# $$ p(x) = \int \frac{p(x \mid z)\, p(z)}{r(z)}\, r(z)\, dz = \mathbb E_{z \sim r}\big[w(z)\big],
#    \qquad w(z) = \frac{p(x, z)}{r(z)}. $$
#
# With $S$ independent draws $z_s \sim r$ the average $\hat p = \frac1S \sum_s w_s$ is an
# unbiased estimate of $p(x)$, with variance $\mathrm{Var}_r[w] / S$.
#
# * **Naive Monte Carlo**, $r = p(z)$: the weight is the likelihood $w_s = p(x \mid z_s)$.
#   Simple, and hopeless in practice: for a given $x$ almost every prior sample decodes
#   to something else, and a handful of lucky draws carry the whole sum.
# * **Importance sampling with the encoder**, $r = q(z \mid x)$: the draws land where
#   the posterior is, $\log w_s = \log p(x \mid z_s) + \log p(z_s) - \log q(z_s \mid x)$.
#   If $q$ were the exact posterior, $w(z) = p(x, z) / p(z \mid x) = p(x)$ for *every* $z$:
#   a zero-variance estimator, exact with a single sample.
#
# We work with $\log \hat p$, not $\hat p$ (the weights underflow). The logarithm is
# concave, so by Jensen's inequality the log of an unbiased estimate is biased low:
#
# $$ \mathcal L_S = \mathbb E\Big[\log \frac1S \sum_{s=1}^S w_s\Big] \le \log \mathbb E\Big[\frac1S\sum_s w_s\Big] = \log p(x). $$
#
# With $r = q(z \mid x)$, $\mathcal L_1 = \mathbb E_q[\log p(x, z) - \log q(z \mid x)]$ is exactly the
# ELBO, and $\mathcal L_S$ is the **importance-weighted bound** of Burda, Grosse &
# Salakhutdinov (2015). It never decreases with $S$: the average of $S$ weights is the
# average, over all subsets $I$ of size $m < S$, of the subset means, so by Jensen again
#
# $$ \mathcal L_S = \mathbb E\Big[\log \mathbb E_I \tfrac1m \textstyle\sum_{s \in I} w_s\Big]
#    \ge \mathbb E\Big[\mathbb E_I \log \tfrac1m \textstyle\sum_{s\in I} w_s\Big] = \mathcal L_m , $$
#
# and it tends to $\log p(x)$ as $S \to \infty$ (the bias shrinks like $\mathrm{Var}[w] / (2S\,p(x)^2)$).
#
# **How wrong is one estimate?** The delta method turns the spread of the weights
# into a standard error of $\log\hat p$, and their imbalance into an effective
# sample size:
#
# $$ \mathrm{se} \approx \frac{\mathrm{sd}(w)}{\sqrt S\, \bar w}, \qquad
#    \mathrm{ESS} = \frac{(\sum_s w_s)^2}{\sum_s w_s^2} \in [1, S]. $$
#
# Both are computed from the same weights, so they can be fooled: when a few huge
# weights have not been drawn yet, the sample looks calm. An ESS near 1 says "do not
# trust this se". `minivae.estimate.estimate_log_px` returns all three per example
# (`log_px`, `se`, `ess`), accumulating the weights with a running log-sum-exp.

# %%
import shutil

import numpy as np
from matplotlib.figure import Figure

from minivae import VAE
from minivae.estimate import estimate_log_px, log_weights
from minivae.exact import (gaussian_elbo_linear, ppca_log_px, ppca_optimal_encoder,
                           quadrature_log_px)
from minivae.lessons import out_dir, quick, show
from minivae.objectives import iw_bound_forward
from minivae.train import TrainConfig, load_run, load_split, train

QUICK = quick()
D, K, SIGMA = 24, 2, 0.5                 # data dim, latent dim, observation noise of the linear model
N_LIN = 50 if QUICK else 200             # examples of the linear model
S_GRID = [1, 10, 100, 1000] if QUICK else [1, 10, 100, 1000, 10_000]
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## A model with a known answer: the linear-Gaussian VAE
#
# `VAE(hidden=(), likelihood="gaussian", obs_scale=s)` decodes with $p(x \mid z) =
# \mathcal N(zW + b, s^2 I)$, and then (lesson 4, `minivae.exact`)
# $p(x) = \mathcal N(b, W^\top W + s^2 I)$ and $p(z \mid x) = \mathcal N(m, \Lambda^{-1})$ with
# $\Lambda = I + WW^\top / s^2$. The best *diagonal* encoder (`ppca_optimal_encoder`) has the
# posterior mean and variances $1/\Lambda_{kk}$; it is the exact posterior exactly when
# the rows of $W$ are orthogonal.
#
# First the zero-variance claim: with orthogonal rows, one importance sample gives
# $\log p(x)$ to rounding error.

# %%
def linear_vae(W, b, s):
    """The linear-Gaussian model as a VAE, with the ELBO-optimal diagonal encoder."""
    vae = VAE(x_dim=W.shape[1], hidden=(), z_dim=W.shape[0], likelihood="gaussian",
              obs_scale=s, dtype="float64", seed=0)
    vae.params["dec.out.W"][...] = W
    vae.params["dec.out.b"][...] = b
    for name, value in ppca_optimal_encoder(W, b, s).items():
        vae.params[name][...] = value
    return vae


rng = np.random.default_rng(9)
b = rng.standard_normal(D)                                       # (D,)
U = np.linalg.qr(rng.standard_normal((D, K)))[0].T               # (K, D), orthonormal rows
W_orth = 4.0 * U                                                 # (K, D), orthogonal rows
vae_orth = linear_vae(W_orth, b, SIGMA)
x_orth = rng.standard_normal((20, K)) @ W_orth + b + SIGMA * rng.standard_normal((20, D))  # (20, D)
one = estimate_log_px(vae_orth, x_orth, 1, np.random.default_rng(0))
err_one = np.max(np.abs(one.log_px - ppca_log_px(x_orth, W_orth, b, SIGMA)))
print(f"exact posterior as proposal, S = 1: max |error| = {err_one:.1e} nats")
assert err_one < 1e-10

# %% [markdown]
# Now a realistic case: the rows of $W$ are correlated (cosine 0.5), so the posterior
# is a tilted ellipse and the diagonal $q$ is only an approximation: its ELBO (in closed form,
# `gaussian_elbo_linear`) falls short of $\log p(x)$ by
# $\tfrac12(\sum_k \log\Lambda_{kk} - \log\det\Lambda)$ for every $x$ (lesson 4). We
# estimate $\log p(x)$ for `N_LIN` data points with both proposals and every $S$ in the
# grid, and measure the error against `ppca_log_px`.

# %%
W = 4.0 * np.stack([U[0], 0.5 * U[0] + np.sqrt(0.75) * U[1]])  # (K, D), rows at cosine 0.5
vae_lin = linear_vae(W, b, SIGMA)
x_lin = rng.standard_normal((N_LIN, K)) @ W + b + SIGMA * rng.standard_normal((N_LIN, D))  # (N, D)
exact_lin = ppca_log_px(x_lin, W, b, SIGMA)                      # (N,)
mu, log_var = vae_lin.encode(x_lin)                              # (N, K) each
elbo_lin = gaussian_elbo_linear(x_lin, W, b, SIGMA, mu, log_var)  # (N,), exact
print(f"mean log p(x) = {exact_lin.mean():.3f}, mean ELBO = {elbo_lin.mean():.3f}, "
      f"gap = {np.mean(exact_lin - elbo_lin):.3f} nats")
precision = np.eye(K) + W @ W.T / SIGMA**2                       # (K, K), Lambda
mean_field_gap = 0.5 * (np.sum(np.log(np.diag(precision))) - np.linalg.slogdet(precision)[1])
assert np.max(np.abs(exact_lin - elbo_lin - mean_field_gap)) < 1e-9  # the same gap for every x


def error_table(vae, x, truth, seed):
    """{proposal: {S: LogLikelihood}} and the RMS errors against the truth."""
    runs = {p: {S: estimate_log_px(vae, x, S, np.random.default_rng([seed, S]), proposal=p)
                for S in S_GRID} for p in ("prior", "posterior")}
    rms = {p: np.array([np.sqrt(np.mean((runs[p][S].log_px - truth) ** 2)) for S in S_GRID])
           for p in runs}
    return runs, rms


runs_lin, rms_lin = error_table(vae_lin, x_lin, exact_lin, seed=1)
print(" S      naive RMS err   IS RMS err   ratio   naive ESS   IS ESS")
for i, S in enumerate(S_GRID):
    print(f"{S:6d}  {rms_lin['prior'][i]:12.4f}  {rms_lin['posterior'][i]:11.4f}  "
          f"{rms_lin['prior'][i] / rms_lin['posterior'][i]:6.1f}  "
          f"{runs_lin['prior'][S].ess.mean():9.1f}  {runs_lin['posterior'][S].ess.mean():8.1f}")

# %% [markdown]
# Read the table along a row: at equal cost, the encoder's proposal is more accurate by
# an order of magnitude or more, because its effective sample size is a large fraction
# of $S$ while the prior's is a few percent. Read it down a column: both errors shrink
# like $1/\sqrt S$ once the estimate is in its asymptotic regime; for the naive estimate,
# that regime starts much later.
#
# And the standard errors: where the ESS is healthy, the reported `se` is honest (most
# errors lie within $2\,\mathrm{se}$, nearly all within $3\,\mathrm{se}$). Where the ESS is
# about 1, as for the naive estimate with few samples, the `se` is computed from a sample
# that has not yet met the weights that matter, and it is far too small.

# %%
def coverage(run, truth, k=3.0):
    """Fraction of examples whose error lies within k reported standard errors."""
    return float(np.mean(np.abs(run.log_px - truth) <= k * run.se))


for i, S in enumerate(S_GRID[1:], 1):          # equal S: IS wins by a large factor
    assert rms_lin["prior"][i] > 5 * rms_lin["posterior"][i], (S, rms_lin)
S_max = S_GRID[-1]
ess_is, ess_naive = runs_lin["posterior"][S_max].ess.mean() / S_max, runs_lin["prior"][S_max].ess.mean() / S_max
print(f"S = {S_max}: ESS / S = {ess_is:.2f} with q, {ess_naive:.3f} with the prior")
assert ess_is > 0.3 and ess_naive < 0.05
for S in S_GRID[-2:]:                          # healthy ESS: the se is honest
    cov2, cov3 = coverage(runs_lin["posterior"][S], exact_lin, 2), coverage(runs_lin["posterior"][S], exact_lin)
    print(f"IS, S = {S}: {100 * cov2:.0f}% of errors within 2 se, {100 * cov3:.0f}% within 3 se")
    assert cov2 >= 0.7 and cov3 >= 0.9
cov_naive = coverage(runs_lin["prior"][10], exact_lin)
print(f"naive, S = 10 (mean ESS {runs_lin['prior'][10].ess.mean():.2f}): "
      f"only {100 * cov_naive:.0f}% within 3 se")
assert cov_naive < 0.6 and runs_lin["prior"][10].ess.mean() < 1.5

# %% [markdown]
# ## The IWAE bound climbs from the ELBO to log p(x)
#
# To see $\mathcal L_S$ increase we average $\log\frac1S\sum_s w_s$ over many independent
# repetitions, and we *nest* the samples: repetition $r$ draws 64 weights once, and
# $\mathcal L_1, \mathcal L_2, \dots, \mathcal L_{64}$ use its first $1, 2, \dots, 64$. The
# differences $\mathcal L_{2S} - \mathcal L_S$ then share most of their noise and their signs are
# clearer. `log_weights` gives $\log w_s$ for fixed noise, `iw_bound_forward` the log-mean-exp.
# The two ends are known exactly: $\mathbb E[\mathcal L_1]$ is the closed-form ELBO, and the
# limit is $\log p(x)$.

# %%
S_IW = [1, 2, 4, 8, 16, 32, 64]
R = 100                                                          # repetitions
iw = np.empty((R, len(S_IW), N_LIN))                             # (R, len(S_IW), N)
rng_iw = np.random.default_rng(2)
for r in range(R):
    lw = log_weights(vae_lin, x_lin, rng_iw.standard_normal((S_IW[-1], N_LIN, K)))  # (64, N)
    for j, S in enumerate(S_IW):
        iw[r, j] = iw_bound_forward(lw[:S])[0]
gap_S = exact_lin - iw                                           # (R, len(S_IW), N): log p(x) - L_S
gap_mean = gap_S.mean(axis=(0, 2))
gap_se = gap_S.std(axis=(0, 2)) / np.sqrt(R * N_LIN)
print(" S    log p(x) - L_S   (se)")
for S, g, e in zip(S_IW, gap_mean, gap_se):
    print(f"{S:3d}   {g:10.4f}   ({e:.4f})")
elbo_gap = float(np.mean(exact_lin - elbo_lin))
assert abs(gap_mean[0] - elbo_gap) < 4 * gap_se[0] + 1e-3       # L_1 is the ELBO
steps = gap_S[:, :-1] - gap_S[:, 1:]                             # (R, len-1, N): L_2S - L_S, paired
step_mean = steps.mean(axis=(0, 2))
step_se = steps.std(axis=(0, 2)) / np.sqrt(R * N_LIN)
print("L_2S - L_S:", np.round(step_mean, 4), " se:", np.round(step_se, 4))
assert np.all(step_mean > -3 * step_se)                          # never a significant decrease
total = gap_S[:, 0] - gap_S[:, -1]                               # (R, N): L_64 - L_1, paired
assert total.mean() > 5 * total.std() / np.sqrt(R * N_LIN)       # a clear increase overall
assert gap_mean[-1] > -3 * gap_se[-1]                            # ... and stays below log p(x)
assert gap_mean[-1] < 0.25 * gap_mean[0]                         # ... and most of the gap is gone

# %% [markdown]
# ## A trained VAE, checked by quadrature
#
# A real encoder is no longer the optimal $q$, and the decoder is a neural network, so
# nothing is in closed form. But with a 2-dimensional latent the integral
# $\int p(x\mid z)p(z)\,dz$ can be computed on a grid (`quadrature_log_px`, the midpoint rule
# over $[-8, 8]^2$), accurately enough to serve as the truth.
#
# We train a small VAE (784-256-2, Bernoulli decoder; 784-128-2 in quick mode) on part of MNIST. We train it on the
# importance-weighted bound with 5 samples (`objective="iwae"`): as Burda et al. observed,
# the encoder of an IWAE is broader than that of an ELBO-trained VAE, whose $q$ is pushed to
# sit *inside* the posterior (the KL $\mathrm{KL}(q\,\|\,p)$ penalizes mass where the
# posterior has none, not the reverse). A proposal that is too narrow in some direction gives
# heavy-tailed weights; a broader one is a safer proposal.

# %%
run = out_dir() / "runs" / "09_vae_k2"
shutil.rmtree(run, ignore_errors=True)
cfg = TrainConfig(epochs=2 if QUICK else 4, z_dim=2, hidden=(128,) if QUICK else (256,),
                  train_size=3000 if QUICK else 10_000, batch_size=32 if QUICK else 64,
                  test_size=500, objective="iwae", samples=5, seed=0)
last = train(cfg, run, progress=False, figures=False)
_, vae_mnist, _, _ = load_run(run)
x_test, _ = load_split(cfg, "test")
x_mn = x_test[:5 if QUICK else 20]                               # (N, 784), binarized once
truth_mn = quadrature_log_px(vae_mnist, x_mn, n=201 if QUICK else 401)  # (N,)
print(f"test -ELBO {last['test_loss']:.1f} nats; quadrature log p(x) of {len(x_mn)} test digits: "
      f"mean {truth_mn.mean():.2f}")

runs_mn, rms_mn = error_table(vae_mnist, x_mn, truth_mn, seed=3)
print(" S      naive RMS err   IS RMS err   ratio   naive ESS   IS ESS")
for i, S in enumerate(S_GRID):
    print(f"{S:6d}  {rms_mn['prior'][i]:12.4f}  {rms_mn['posterior'][i]:11.4f}  "
          f"{rms_mn['prior'][i] / rms_mn['posterior'][i]:6.1f}  "
          f"{runs_mn['prior'][S].ess.mean():9.1f}  {runs_mn['posterior'][S].ess.mean():8.1f}")

# %% [markdown]
# The same picture on real data. Even in two latent dimensions, where prior samples do
# cover everything eventually, the prior with 10 times the samples is still far less accurate
# than the encoder; and the fraction of prior mass that lands in the posterior
# shrinks exponentially with $K$, so with $K = 20$, as in the default model, naive Monte
# Carlo is out of the question. The ELBO (estimated below with 1000 samples of $z$, so that
# its own noise is negligible) sits more than a nat below $\log p(x)$; the IWAE bound closes
# most of that gap.

# %%
for i, S in enumerate(S_GRID[1:], 1):
    assert rms_mn["prior"][i] > 3 * rms_mn["posterior"][i], (S, rms_mn)
assert rms_mn["prior"][-1] > 3 * rms_mn["posterior"][-2]         # 10 times the samples, still far worse
S_big = S_GRID[-1]
cov_mn = coverage(runs_mn["posterior"][S_big], truth_mn)
print(f"IS, S = {S_big}: {100 * cov_mn:.0f}% of errors within 3 se")
assert cov_mn >= 0.8
bounds = np.array([runs_mn["posterior"][S].log_px.mean() for S in S_GRID])  # L_S, one draw each
print("L_S - log p(x):", np.round(bounds - truth_mn.mean(), 3))
se_bounds = np.array([np.sqrt(np.sum(runs_mn["posterior"][S].se ** 2)) / len(x_mn) for S in S_GRID])
assert np.all(np.diff(bounds)[1:] > -3 * np.hypot(se_bounds[1:-1], se_bounds[2:]))  # increases, up to noise
elbo_mn = vae_mnist.elbo(x_mn, np.random.default_rng(4).standard_normal((1000, len(x_mn), 2))).mean()
print(f"ELBO - log p(x) = {elbo_mn - truth_mn.mean():.3f} nats;  L_{S_big} - log p(x) = "
      f"{bounds[-1] - truth_mn.mean():.3f} +- {se_bounds[-1]:.3f}")
assert truth_mn.mean() - elbo_mn > 1.0                           # the ELBO's gap: over a nat
assert bounds[-1] - elbo_mn > 0.5 * (truth_mn.mean() - elbo_mn)  # the IWAE bound closes most of it
assert bounds[-1] < truth_mn.mean() + 3 * se_bounds[-1]          # and stays a lower bound

# %% [markdown]
# ## The picture
#
# Error against the number of samples, both axes logarithmic. The dashed lines are the
# mean *reported* standard errors: where they track the solid lines, the estimator knows
# how wrong it is.

# %%
fig = Figure(figsize=(15, 4.5), layout="constrained")
axes = fig.subplots(1, 3)
for ax, (title, runs, rms) in zip(axes[:2], [("(a) linear-Gaussian model, exact truth", runs_lin, rms_lin),
                                             ("(b) trained VAE (K = 2), quadrature truth", runs_mn, rms_mn)]):
    for p, label, color in [("prior", "naive (prior proposal)", "C3"), ("posterior", "importance sampling (q)", "C0")]:
        ax.loglog(S_GRID, rms[p], "o-", color=color, label=label)
        ax.loglog(S_GRID[1:], [runs[p][S].se.mean() for S in S_GRID[1:]], "--", color=color, alpha=0.6,
                  label=f"{label.split(' ')[0]}: mean reported se")
    ref = rms["posterior"][-1] * np.sqrt(S_GRID[-1] / np.array(S_GRID))
    ax.loglog(S_GRID, ref, ":", color="0.5", label=r"$\propto 1/\sqrt{S}$")
    ax.set_xlabel("samples S")
    ax.set_ylabel(r"RMS error of $\log \hat p(x)$ [nats]")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
ax = axes[2]
ax.errorbar(S_IW, -gap_mean, yerr=2 * gap_se, marker="o", capsize=3,
            label=r"$\mathcal{L}_S - \log p(x)$ (mean over data, $\pm 2$ se)")
ax.axhline(-elbo_gap, color="C1", linestyle="--", label="ELBO (closed form)")
ax.axhline(0.0, color="k", linewidth=1, label=r"$\log p(x)$ (exact)")
ax.set_xscale("log", base=2)
ax.set_ylim(-1.2 * elbo_gap, 0.15 * elbo_gap)
ax.set_xlabel("samples S")
ax.set_ylabel("nats")
ax.set_title("(c) the IWAE bound rises from the ELBO to log p(x)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
show(fig, "09_log_px_estimators.png")

# %% [markdown]
# ## Takeaways
#
# * $\log p(x)$ is an expectation of weights, $\log \mathbb E_r[p(x,z)/r(z)]$; every estimator
#   here differs only in the proposal $r$. The closer $r$ is to the posterior, the smaller the
#   variance; the exact posterior gives zero variance.
# * The log of an average of weights is a *lower bound in expectation*, $\mathcal L_S$, rising
#   with $S$ from the ELBO ($S = 1$) to $\log p(x)$. Reported log-likelihoods of VAEs
#   (e.g. `python -m minivae evaluate --checkpoint RUN` with importance samples) are $\mathcal L_{S}$
#   for a large $S$, slightly pessimistic.
# * Trust a standard error only with its effective sample size: both come from the same
#   weights, and a proposal that misses part of the posterior looks confident until it hits it.
