# %% [markdown]
# # 07. The beta-VAE and the rate-distortion trade-off
#
# **Goal.** Weigh the KL term by $\beta$ and watch the model move along a curve:
# a small $\beta$ buys sharp reconstructions with many nats of latent information,
# a large $\beta$ a cheap code and blurry reconstructions, and a very large one
# a decoder that ignores $z$ (posterior collapse). Derive why the rate must fall
# and the distortion rise as $\beta$ grows, train a sweep of $\beta$'s to see it, count
# the latent dimensions that stay in use (active units), look at latent
# traversals, and meet two remedies for collapse: KL warm-up and free bits.
#
# **Builds on** lesson 6 (training an MNIST VAE, distortion and rate) and lesson 4
# (the ELBO).
#
# **Runtime** about 1 minute on a laptop CPU (seven short runs of 5 epochs, one
# per $\beta$ plus one with free bits); about 10 seconds with `MINIVAE_QUICK=1`.

# %%
import shutil

import numpy as np
from matplotlib.figure import Figure

from minivae.diagnostics import ACTIVE_THRESHOLD, active_units, kl_per_dimension
from minivae.lessons import out_dir, quick, show
from minivae.likelihoods import bernoulli_forward
from minivae.plots import rate_distortion, tile
from minivae.train import TrainConfig, load_dataset, load_run, train

QUICK = quick()

# %% [markdown]
# ## 1. Rate, distortion, and $\beta$
#
# Average the two terms of the negative ELBO over the data (lesson 6):
#
# $$ D = -\mathbb E_{x}\,\mathbb E_{q(z\mid x)}\log p(x \mid z) \quad\text{(distortion)}, \qquad
#    R = \mathbb E_{x}\,\mathrm{KL}\big(q(z \mid x)\,\|\,p(z)\big) \quad\text{(rate)}. $$
#
# The rate is the price of the code in nats: it bounds the information the code
# carries, $R = I_q(x; z) + \mathrm{KL}(q(z)\,\|\,p(z)) \ge I_q(x; z)$, with $q(z)$ the
# encoder's aggregate posterior (Hoffman and Johnson, 2016, "ELBO surgery"). The
# $\beta$-VAE (Higgins et al., 2017) minimizes
#
# $$ L_\beta = D + \beta R . $$
#
# Only $\beta = 1$ makes $L_\beta$ the negative ELBO, a bound on $-\log p(x)$; other values
# trade the two terms. Every encoder-decoder pair is a point $(R, D)$ in the plane,
# and $L_\beta$ picks the point where a line of slope $-\beta$ touches the set of
# achievable points (Alemi et al., 2018, "Fixing a broken ELBO").
#
# **Why the rate falls as $\beta$ grows.** Let $(R_1, D_1)$ be optimal for $\beta_1$ and
# $(R_2, D_2)$ for $\beta_2 > \beta_1$. Each optimum beats the other point at its own $\beta$:
#
# $$ D_1 + \beta_1 R_1 \le D_2 + \beta_1 R_2, \qquad D_2 + \beta_2 R_2 \le D_1 + \beta_2 R_1 . $$
#
# Adding the two, $(\beta_2 - \beta_1)(R_2 - R_1) \le 0$, so $R_2 \le R_1$; putting that back into the
# first, $D_2 \ge D_1 + \beta_1(R_1 - R_2) \ge D_1$. More $\beta$: less rate, more distortion. Trained
# models are only near their optima, so we check this with a tolerance.
#
# **The far end.** When $\beta$ is large enough, the cheapest code is no code: $q(z \mid x) = p(z)$
# for every $x$, rate 0, and the decoder learns the data's pixel frequencies
# (lesson 6's independent-pixel baseline). That is *posterior collapse*.

# %% [markdown]
# ## 2. A sweep over $\beta$
#
# One run per $\beta$, all else equal: a 16-dimensional latent, one hidden layer of
# 128 units, 5 epochs, learning rate $3\cdot 10^{-3}$ (a little higher than usual, so
# that unused dimensions have time to switch off). From the command line, a longer
# sweep at the default learning rate is
# `python -m minivae sweep --betas 0.5,1,2,4,8,16 --z-dim 16 --hidden 128`.
#
# For each model we read the test rate and distortion from the last epoch, and
# encode the test set to count its **active units**: dimension $k$ is active when
# its posterior mean moves with the input, $A_k = \mathrm{Var}_x\,\mu_k(x) > 0.01$
# (Burda et al., 2016). An inactive dimension has $\mu_k \approx 0$, $\sigma_k \approx 1$ for every $x$:
# it sits at the prior, costs no KL, and tells the decoder nothing.

# %%
betas = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
if QUICK:
    base = TrainConfig(z_dim=16, hidden=(128,), epochs=3, batch_size=32, lr=3e-3,
                       train_size=5000, test_size=1000)
else:
    base = TrainConfig(z_dim=16, hidden=(128,), epochs=5, lr=3e-3)
data = load_dataset(base)                                         # the same data for every run


def run_model(name: str, **changes):
    """Train base + changes in a fresh folder; return its last metrics row, the
    model, and the test posteriors mu, log_var (M, K)."""
    cfg = TrainConfig(**{**base.to_json(), **changes})
    folder = out_dir() / name
    shutil.rmtree(folder, ignore_errors=True)                     # train refuses an existing run
    row = train(cfg, folder, progress=False, figures=False, data=data)
    vae = load_run(folder)[1]
    mu, log_var = vae.encode(data.x_test)                         # (M, K) each
    return row, vae, mu, log_var


runs = {}
for beta in betas:
    row, vae, mu, log_var = run_model(f"07_beta-{beta:g}", beta=beta)
    runs[beta] = dict(rate=row["test_kl"], distortion=row["test_recon"], vae=vae, warnings=row["warnings"],
                      active=active_units(mu), kl_dims=kl_per_dimension(mu, log_var))
    print(f"beta {beta:4g}: rate {row['test_kl']:6.2f}  distortion {row['test_recon']:6.2f}  "
          f"-ELBO {row['test_kl'] + row['test_recon']:6.2f}  active units {runs[beta]['active']:2d} "
          f"of {base.z_dim}")

rate = np.array([runs[b]["rate"] for b in betas])                 # (B,)
distortion = np.array([runs[b]["distortion"] for b in betas])     # (B,)
active = np.array([runs[b]["active"] for b in betas])             # (B,)

# %% [markdown]
# ## 3. The checks
#
# * The rate falls and the distortion rises with $\beta$, run after run (up to half a
#   nat of training noise), and across the sweep by a wide margin.
# * The per-dimension KLs add up to the rate: the KL of a diagonal Gaussian
#   against $\mathcal N(0, I)$ is a sum over dimensions.
# * The number of active units does not grow with $\beta$ (up to one unit), and the
#   largest $\beta$ has switched dimensions off.
# * At the largest $\beta$ the model is close to collapse: less than a tenth of the
#   smallest $\beta$'s rate, and a distortion within 30 nats of the independent-pixel
#   baseline (the smallest $\beta$ is more than 60 nats below it).

# %%
p = data.x_train.mean(axis=0).clip(1e-3, 1 - 1e-3)                # (D,) pixel frequencies
baseline = float(-bernoulli_forward(data.x_test, np.log(p / (1 - p)))[0].mean())

assert np.all(np.diff(rate) < 0.5) and np.all(np.diff(distortion) > -0.5)
assert rate[0] > 5 * rate[-1] and distortion[-1] > distortion[0] + 20
for b in betas:
    assert abs(runs[b]["kl_dims"].sum() - runs[b]["rate"]) < 1e-3 * max(1.0, runs[b]["rate"])
assert np.all(np.diff(active) <= 1) and active[-1] < active[0]
assert rate[-1] < 0.1 * rate[0] and baseline - 30 < distortion[-1] < baseline + 2
assert distortion[0] < baseline - 60
print("rate:", np.round(rate, 2), " distortion:", np.round(distortion, 1), " active units:", active,
      f" independent pixels: {baseline:.1f}")

# %% [markdown]
# ## 4. The rate-distortion plane
#
# Each run is a point; the grey lines are constant $D + R$, the $-$ELBO. Moving
# right (more rate) buys less distortion, at an exchange rate set by $\beta$: at its
# optimum the model saves $\beta$ nats of distortion per extra nat of rate, at the
# margin. Below $\beta = 1$ it buys rate that saves less distortion than it costs: a
# trade that the ELBO ($\beta = 1$) would refuse.

# %%
show(rate_distortion(rate, distortion, [f"beta={b:g}" for b in betas]), "07_rate_distortion.png")

# %% [markdown]
# ## 5. Where the rate goes: KL per dimension
#
# Sorting each model's 16 dimensions by their KL shows how the code shrinks: as
# $\beta$ grows, the rate concentrates in fewer dimensions and the rest drop to the
# prior. The dotted line is the activity threshold's order of magnitude: a
# dimension with $\mathrm{Var}\,\mu_k = 0.01$ and $\sigma_k \approx 1$ spends about $0.005$ nats.

# %%
mu_edge = np.array([[-0.1], [0.1]])                               # (2, 1): Var mu = 0.01, sigma = 1
assert abs(np.var(mu_edge) - ACTIVE_THRESHOLD) < 1e-12
assert abs(kl_per_dimension(mu_edge, np.zeros_like(mu_edge))[0] - ACTIVE_THRESHOLD / 2) < 1e-12

fig = Figure(figsize=(6.5, 4.2), layout="constrained")
ax = fig.add_subplot()
for b in betas:
    kl_sorted = np.sort(runs[b]["kl_dims"])[::-1]                  # (K,) largest first
    ax.plot(np.arange(1, base.z_dim + 1), np.maximum(kl_sorted, 1e-4), marker="o", markersize=3,
            label=f"beta={b:g} ({runs[b]['active']} active)")
ax.axhline(ACTIVE_THRESHOLD / 2, color="0.5", ls=":", lw=1, label="about the activity threshold")
ax.set_yscale("log")
ax.set_xlabel("latent dimension, sorted by its KL")
ax.set_ylabel("mean KL of the dimension  [nats]")
ax.set_title("the rate, dimension by dimension")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
show(fig, "07_kl_per_dimension.png")

# %% [markdown]
# ## 6. Latent traversals
#
# Fix $z = 0$, move one coordinate $z_k$ from $-3$ to $3$, decode. Each row is one of
# a model's four dimensions with the most KL (the label gives its KL in nats). At
# small $\beta$ the code is spread over all 16 dimensions, and one coordinate moved
# alone, with the other 15 at zero, often decodes to faint in-between shapes: few
# images live there. At large $\beta$ the few surviving coordinates must each carry
# one of the most useful factors of variation (which digit, its width, its
# slant): the pressure toward *disentangled* codes that Higgins et al. describe,
# bought with blurrier images.

# %%
steps = np.linspace(-3, 3, 9)                                     # (T,)
shown = [betas[0], 4.0]
fig = Figure(figsize=(10, 3.3), layout="constrained")
for ax, b in zip(fig.subplots(1, 2), shown):
    vae = runs[b]["vae"]
    dims = np.argsort(runs[b]["kl_dims"])[::-1][:4]               # (4,) most KL first
    z = np.zeros((len(dims), len(steps), base.z_dim), dtype=vae.dtype)  # (4, T, K)
    z[np.arange(len(dims))[:, None], np.arange(len(steps)), dims[:, None]] = steps
    images = vae.decode_mean(z.reshape(-1, base.z_dim))           # (4 * T, D)
    assert images.min() >= 0 and images.max() <= 1
    ax.imshow(tile(images, ncol=len(steps)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(np.arange(len(steps)) * 29 + 13.5, [f"{s:g}" for s in steps])
    ax.set_yticks(np.arange(len(dims)) * 29 + 13.5, [f"z{d}: {runs[b]['kl_dims'][d]:.1f}" for d in dims])
    ax.set_xlabel(r"value of $z_k$ (others 0)")
    ax.set_ylabel("dimension: its KL")
    ax.set_title(f"beta = {b:g}")
show(fig, "07_traversals.png")

# %% [markdown]
# ## 7. Fighting collapse: warm-up and free bits
#
# Collapse is not always wanted. Early in training the decoder is poor, so the
# information in $z$ is worth little while its KL is already charged: the encoder
# can give up on a dimension before the decoder would have learned to use it.
# Two standard remedies, both in `TrainConfig`:
#
# * **KL warm-up** (`warmup_epochs`; Bowman et al., 2016; Sønderby et al., 2016): the
#   weight of the KL ramps linearly from 0 to $\beta$ over the first epochs, so the
#   code is learned before it is charged for.
# * **Free bits** (`free_bits` $= \lambda$; Kingma et al., 2016): the KL term becomes
#   $\sum_k \max\big(\lambda, \overline{\mathrm{KL}}_k\big)$, with $\overline{\mathrm{KL}}_k$ the batch mean of dimension $k$'s KL. A
#   dimension below $\lambda$ nats costs a constant and gets no KL gradient: its
#   first $\lambda$ nats are free, so there is no reason to switch it off.
#
# Below, the warm-up schedule, checked; then free bits at work: the $\beta = 16$ run again with
# $\lambda = 1$ nat per dimension keeps more dimensions active and spends more rate.
# (The reported rate is always the true KL, not the floored one.)
#
# `train` watches for collapse itself: when the test rate stays under 0.1 nats (or no unit is
# active) at two evaluations in a row, it prints a warning with the KL of every unit and these
# remedies, and returns it in the row's `"warnings"`. The short quick-mode $\beta = 16$ run, at a
# rate near 0.1 nats, usually gets one; the full run, at about 1 nat, does not; the free-bits run
# must not.

# %%
warm = TrainConfig(beta=4.0, warmup_epochs=2)
assert [warm.beta_at(e) for e in (0, 0.5, 1, 2, 3)] == [0.0, 1.0, 2.0, 4.0, 4.0]

row, _, mu_fb, _ = run_model("07_beta-16_free-bits", beta=16.0, free_bits=1.0)
active_fb = active_units(mu_fb)
print(f"beta 16: active units {runs[16.0]['active']} -> {active_fb} with free bits; "
      f"rate {runs[16.0]['rate']:.2f} -> {row['test_kl']:.2f} nats")
assert active_fb > runs[16.0]["active"] and row["test_kl"] > runs[16.0]["rate"] + 2
print(f"collapse warnings: beta 16 {len(runs[16.0]['warnings'])}, with free bits {len(row['warnings'])}")
assert row["warnings"] == []

# %% [markdown]
# ## Summary
#
# * $L_\beta = D + \beta R$. Comparing the optima of two $\beta$'s proves that the rate falls
#   and the distortion rises as $\beta$ grows; the trained sweep follows it, from
#   sharp and expensive codes to posterior collapse.
# * Only $\beta = 1$ is a bound on $-\log p(x)$; the others are points on the
#   rate-distortion curve, chosen for what the code is for.
# * Dimensions switch off one by one as $\beta$ grows (active units,
#   KL per dimension); the survivors carry the most useful factors.
# * Warm-up and free bits keep the KL from switching dimensions off too early.
#
# Next, lesson 8: give the decoder the digit's label, and the latent is free to
# hold only the style.
