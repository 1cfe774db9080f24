# %% [markdown]
# # 01. Autoencoder vs VAE
#
# **Goal.** See why a plain autoencoder, however well it reconstructs, is not a
# generative model: its codes are not distributed like any distribution we can
# sample from. Then see what the VAE changes (noise in the code, and a KL
# penalty that makes information cost nats) and measure the difference: where
# the codes lie, what $\mathcal N(0, I)$ samples decode to, and how likely each
# model finds held-out images.
#
# **Builds on** nothing but NumPy; lessons 2 to 4 derive the pieces used here
# (the KL, the reparameterization, the ELBO).
#
# **Runtime** about a minute and a half on a laptop CPU (three small models trained on
# 10,000 MNIST digits); a few seconds with `MINIVAE_QUICK=1`, which uses 4x4 toy
# images instead.

# %%
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from minivae import VAE, gaussian, optim
from minivae.data import binarize, binarize_static, load_mnist, toy_binary_patterns
from minivae.exact import quadrature_log_px
from minivae.lessons import quick, show
from minivae.plots import tile

QUICK = quick()
rng = np.random.default_rng(1)

# %% [markdown]
# ## 1. What "generative" asks for
#
# A generative model of images $x$ is a recipe we can *run*: draw a code
# $z \sim p(z)$ from a fixed, simple distribution, here $p(z) = \mathcal N(0, I)$ in
# $K$ dimensions, then draw an image from the decoder, $x \sim p(x\mid z)$. For binary
# images the decoder outputs one logit $\ell_d(z)$ per pixel, and
#
# $$ \log p(x \mid z) = \sum_d \big[x_d\,\ell_d - \log(1 + e^{\ell_d})\big] $$
#
# (a Bernoulli per pixel, lesson 5). The model's probability of an image is
#
# $$ p(x) = \int p(x \mid z)\, p(z)\, dz , $$
#
# and a good generative model gives high $p(x)$ to images it has never seen.
#
# ## 2. The autoencoder
#
# An autoencoder has an encoder $z = e(x)$ and the same kind of decoder, and
# minimizes the reconstruction loss $-\log p(x \mid e(x))$ averaged over the data.
# It learns to reconstruct. But nothing in its loss mentions $p(z)$: the codes
# $e(x)$ go wherever reconstruction is easiest. Sampling $z \sim \mathcal N(0, I)$ and
# decoding is then a shot in the dark: those $z$ need not be anywhere near the
# codes the decoder was trained on.
#
# In fact the loss *cannot* care where the codes are. Multiply every code by a
# constant $c$ and divide the decoder's first weight matrix by $c$: the decoder
# sees the same numbers, the loss is unchanged, yet the codes now have $c^2$
# times the variance. Any scale, any shift, any rotation of the codes is as good
# as any other.
#
# ## 3. The VAE: noise, and a price for information
#
# The VAE changes two things.
#
# 1. **Noise.** The encoder outputs a distribution, $q(z\mid x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))$,
#    and the decoder is trained on a *sample* $z = \mu + \sigma\odot\epsilon$, $\epsilon\sim\mathcal N(0, I)$.
# 2. **The KL.** Each code pays $\mathrm{KL}\big(q(z\mid x)\,\|\,\mathcal N(0, I)\big)$ nats, a
#    closed form in $\mu$ and $\sigma^2$ (lesson 2).
#
# The loss per image is $\mathbb E_{q}[-\log p(x\mid z)] + \mathrm{KL}(q(z\mid x)\,\|\,p(z))$, the
# negative ELBO (lesson 4). Noise alone would change little: an encoder
# that shrinks $\sigma$, or spreads the $\mu$'s far apart, makes the noise irrelevant.
# The KL forbids both: large $\mu_k^2$ costs, and so does a small $\sigma_k$ ($-\log\sigma_k^2$).
# Averaged over the data the KL splits into two non-negative parts,
#
# $$ \mathbb E_x\,\mathrm{KL}\big(q(z\mid x)\,\|\,p(z)\big) = I_q(x; z) + \mathrm{KL}\big(q(z)\,\|\,p(z)\big),
#    \qquad q(z) = \mathbb E_x\, q(z\mid x), $$
#
# the information the code carries about $x$ (in nats), and the mismatch between
# the *aggregate* distribution of codes $q(z)$ and the prior. So the KL is an
# information bottleneck, and it pushes the codes, taken together, towards
# $\mathcal N(0, I)$: the very distribution we will sample from.
#
# **One model, two switches.** In `minivae` the autoencoder needs no code of its
# own: a `VAE` trained with $\epsilon = 0$ (so $z = \mu(x)$, a deterministic code) and
# KL weight $\beta = 0$ *is* an autoencoder with encoder $\mu(\cdot)$. We train three
# models with the same architecture, data, seed and number of steps:
#
# | model | noise $\epsilon$ | KL weight $\beta$ |
# |---|---|---|
# | autoencoder | 0 | 0 |
# | noise only | $\mathcal N(0, I)$ | 0 |
# | VAE | $\mathcal N(0, I)$ | 1 |
#
# $K = 2$ latent dimensions, so that we can look at the codes and compute $p(x)$
# exactly (section 6).

# %%
K = 2
if QUICK:   # 4x4 images of noisy bars: 8 prototypes, 5% of the pixels flipped
    x_train, y_train = toy_binary_patterns(2_000, rng)            # (2000, 16), (2000,)
    x_test, _ = toy_binary_patterns(200, rng)                     # (200, 16)
    shape, hidden, steps, batch, lr = (4, 4), (32,), 1_500, 64, 3e-3
else:       # MNIST digits, pixel intensities in [0, 1]; binarized afresh at every step
    images, labels = load_mnist("train")
    x_train, y_train = images[:10_000], labels[:10_000]           # (10000, 784), (10000,)
    x_test = binarize_static(load_mnist("test")[0][:100], seed=1)  # (100, 784), fixed 0/1 test images
    shape, hidden, steps, batch, lr = (28, 28), (256,), 3_000, 100, 1e-3
D = x_train.shape[1]


def fit(noise: float, beta: float) -> VAE:
    """Train a VAE for `steps` Adam steps with eps scaled by `noise` (0: no noise) and KL weight `beta`."""
    vae = VAE(x_dim=D, hidden=hidden, z_dim=K, likelihood="bernoulli", activation="relu", seed=0)
    state = optim.init_state("adam", vae.flat)
    gflat = np.zeros(vae.n_params, dtype=vae.dtype)
    grads = vae.views(gflat)                                       # name -> view into gflat
    step_rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = step_rng.integers(0, len(x_train), batch)
        xb = binarize(x_train[idx], step_rng)                      # (B, D) of 0/1
        eps = noise * step_rng.standard_normal((batch, K), dtype=vae.dtype)   # (B, K)
        vae.loss_and_grads(xb, eps, beta=beta, grads=grads)       # fills gflat
        state = optim.adam_step(vae.flat, gflat, state, lr)
    return vae


# %% [markdown]
# Before training, check the claim that $\epsilon = 0$, $\beta = 0$ is an autoencoder: the
# `log_var` head then receives exactly zero gradient (it never influences the
# loss), so only $\mu(\cdot)$ and the decoder learn.

# %%
probe = VAE(x_dim=D, hidden=hidden, z_dim=K, likelihood="bernoulli", activation="relu", seed=0)
out = probe.loss_and_grads(binarize(x_train[:8], rng), np.zeros((8, K)), beta=0.0)
assert np.all(out.grads["enc.log_var.W"] == 0) and np.all(out.grads["enc.log_var.b"] == 0)
assert np.any(out.grads["enc.mu.W"] != 0)

# %%
models = {"autoencoder": fit(noise=0.0, beta=0.0),
          "noise only": fit(noise=1.0, beta=0.0),
          "VAE": fit(noise=1.0, beta=1.0)}

# %% [markdown]
# ## 4. The scale of the codes is free without the KL
#
# Take each trained model, multiply its codes by $c = 10$ (the encoder's $\mu$ head
# by 10, its $\log\sigma^2$ by $+2\log 10$, so $z = \mu + \sigma\epsilon$ becomes $10z$) and divide the
# decoder's first weights by 10. With the noise held fixed (and zero for the
# autoencoder), the reconstruction term does not move for any of the three; only
# the KL does, and only the VAE pays it.

# %%
def rescaled(vae: VAE, c: float) -> VAE:
    """A copy of `vae` whose codes are c times larger, decoded to the same outputs."""
    copy = VAE(**vae.config())
    copy.flat[...] = vae.flat                                      # every parameter, one buffer
    copy.params["enc.mu.W"][...] *= c
    copy.params["enc.mu.b"][...] *= c
    copy.params["enc.log_var.b"][...] += 2 * np.log(c)             # sigma -> c sigma
    copy.params["dec.0.W"][...] /= c                               # (K, H): (c z) (W / c) = z W
    return copy


xb = binarize(x_train[:500], rng)                                  # (500, D)
eps = rng.standard_normal((500, K))                                # (500, K), held fixed
for name, vae in models.items():
    e = 0 * eps if name == "autoencoder" else eps
    before, after = vae.terms(xb, e), rescaled(vae, 10.0).terms(xb, e)
    recon_before, recon_after = -before.log_px_z.mean(), -after.log_px_z.mean()
    assert abs(recon_after - recon_before) < 1e-4 * abs(recon_before)   # float32 rounding only
    assert after.kl.mean() > before.kl.mean() + 10                       # but the KL grows
    print(f"{name:12s} reconstruction {recon_before:8.3f} -> {recon_after:8.3f} nats,  "
          f"KL {before.kl.mean():7.2f} -> {after.kl.mean():7.2f}")

# %% [markdown]
# The autoencoder and the noise-only model are trained without the KL, so for
# them every scale is equally good and training leaves the scale wherever the
# optimizer's path happened to take it. For the VAE the KL makes one scale the
# cheapest, and training finds it.
#
# ## 5. Where the codes are
#
# Encode 2,000 training images. For the autoencoder the code is $\mu(x)$; for
# the other two it is a sample $z = \mu + \sigma\odot\epsilon$ from $q(z\mid x)$, so that the
# collection is a sample of the aggregate $q(z)$. Compare its mean and variance with
# the prior's $0$ and $1$, and summarize the mismatch by the KL from the
# moment-matched diagonal Gaussian to $\mathcal N(0, I)$, with the closed form of lesson 2.

# %%
x_enc = binarize_static(x_train[:2_000], seed=2)                   # (2000, D)
y_enc = y_train[:2_000]
codes, stats = {}, {}
for name, vae in models.items():
    mu, log_var = vae.encode(x_enc)                                # (2000, K) each
    noise = 0.0 if name == "autoencoder" else 1.0
    z, _ = gaussian.reparameterize_forward(mu, log_var, noise * rng.standard_normal(mu.shape))  # (2000, K)
    m, v = z.mean(axis=0), z.var(axis=0)                           # (K,), (K,)
    fit_kl = gaussian.kl_std_normal_forward(m[None], np.log(v)[None])[0][0]
    rate = gaussian.kl_std_normal_forward(mu, log_var)[0].mean()  # mean KL(q(z|x) || p(z))
    codes[name] = z
    stats[name] = dict(mean=m, var=v, fit_kl=fit_kl, sigma=gaussian.std(log_var).mean(), rate=rate)
    print(f"{name:12s} code mean {np.round(m, 2)}, variance {np.round(v, 2)}, "
          f"KL(moment match || N(0, I)) = {fit_kl:6.2f} nats")

assert stats["autoencoder"]["fit_kl"] > 5 and stats["noise only"]["fit_kl"] > 5
assert stats["VAE"]["fit_kl"] < 1

# %% [markdown]
# The autoencoder's codes are far from the prior in location and scale; the
# VAE's aggregate codes are close to $\mathcal N(0, I)$ (closer than one nat).
#
# **Noise without the KL** does not make a bottleneck. The noise-only model
# shrank its $\sigma$ to almost nothing, so its "noisy" codes are as precise as the
# autoencoder's, and it spends far more nats per image (the KL it *would* be
# charged, the rate) than the VAE:

# %%
print(f"mean sigma: noise only {stats['noise only']['sigma']:.3f}, VAE {stats['VAE']['sigma']:.3f};  "
      f"rate: noise only {stats['noise only']['rate']:.1f} nats, VAE {stats['VAE']['rate']:.1f} nats")
assert stats["noise only"]["sigma"] < 0.1 < stats["VAE"]["sigma"]
assert stats["noise only"]["rate"] > 3 * stats["VAE"]["rate"]

# %% [markdown]
# ## 6. A held-out check: how likely are new images?
#
# The generative model "$z \sim \mathcal N(0, I)$, then the decoder" defines $p(x)$ for each of the
# three decoders, and with $K = 2$ we can compute the integral
# $p(x) = \int p(x\mid z)\,p(z)\,dz$ on a grid: `exact.quadrature_log_px`, the midpoint
# rule over $[-12, 12]^2$ in cells of width $0.1$. No bound and no sampling noise:
# each decoder's own log-likelihood of test images it has never seen.
#
# The grid reaches far beyond where the prior has any mass to speak of, because
# the autoencoder put some codes out at $|z| > 8$. The prior density there is tiny,
# but for those images the decoder may be so much better there than near the
# origin that the far region still holds a good part of their integral. (Cutting
# the grid off can only lower the result: the integrand is positive.) A grid with
# twice as many cells per axis, on 5 of the images, changes no value by more
# than 0.1 nats.

# %%
assert np.max(np.abs(codes["autoencoder"])) > 8
GRID = dict(n=240, limit=12.0)                                     # 240 x 240 cells of width 0.1
log_px = {name: quadrature_log_px(vae, x_test, **GRID).mean() for name, vae in models.items()}
for name, value in log_px.items():
    print(f"{name:12s} held-out log p(x) = {value:8.2f} nats per image")
    finer = quadrature_log_px(models[name], x_test[:5], n=2 * GRID["n"], limit=GRID["limit"])
    assert np.max(np.abs(finer - quadrature_log_px(models[name], x_test[:5], **GRID))) < 0.1

margin = {name: log_px["VAE"] - log_px[name] for name in ("autoencoder", "noise only")}
assert min(margin.values()) > 2                                    # the VAE wins by more than 2 nats

# %% [markdown]
# The VAE gives the held-out images a higher log-likelihood than either model
# trained without the KL, by more than 2 nats per image (a factor $e^2 \approx 7$
# in probability, at the least; the printout above has the actual margins).
# The VAE trained on a lower bound of this very number, the ELBO: check that the
# exact $\log p(x)$ lies above the VAE's ELBO, estimated with 50 noise samples per image.

# %%
t = models["VAE"].terms(x_test, rng.standard_normal((50, len(x_test), K)))   # 50 samples per image
elbo_s = (t.log_px_z - t.kl).mean(axis=1)         # (50,): one ELBO estimate, averaged over images, per sample
elbo, elbo_se = elbo_s.mean(), elbo_s.std() / np.sqrt(len(elbo_s))
print(f"VAE: ELBO {elbo:.2f} +- {elbo_se:.2f} <= log p(x) {log_px['VAE']:.2f}")
assert elbo < log_px["VAE"] + 4 * elbo_se

# %% [markdown]
# ## 7. The picture
#
# Top: the codes of 2,000 training images (coloured by class) with the circles
# of radius 1 and 2 that hold 39% and 86% of the prior's mass. Bottom: 64
# images decoded from the *same* 64 draws $z \sim \mathcal N(0, I)$, shown as pixel
# probabilities. The autoencoder and the noise-only model put their codes
# wherever reconstruction was easy, so prior draws land on a small part of their
# code space and decode to a few classes and to blends; the VAE's codes fill the
# prior, and its prior draws decode to the variety of the data.

# %%
# in two dimensions P(|z| <= r) = 1 - exp(-r^2 / 2) under N(0, I)
assert round(1 - np.exp(-0.5), 2) == 0.39 and round(1 - np.exp(-2.0), 2) == 0.86
z_prior = np.random.default_rng(5).standard_normal((64, K))       # (64, K), shared by the models
fig = Figure(figsize=(12, 8.4), layout="constrained")
axes = fig.subplots(2, 3)
for j, (name, vae) in enumerate(models.items()):
    ax = axes[0, j]
    z = codes[name]
    ax.scatter(z[:, 0], z[:, 1], s=3, c=y_enc, cmap="tab10", alpha=0.7)
    for r in (1, 2):
        ax.add_patch(Circle((0, 0), r, fill=False, color="k", lw=1.2, ls="-" if r == 1 else "--"))
    ax.scatter(z_prior[:, 0], z_prior[:, 1], marker="x", s=14, color="k", lw=0.8,
               label=r"64 draws from $\mathcal{N}(0, I)$")
    ax.set_aspect("equal", adjustable="datalim")
    st = stats[name]
    ax.set_title(f"{name}: codes\nvariance {st['var'][0]:.1f}, {st['var'][1]:.1f};  "
                 f"held-out log p(x) {log_px[name]:.1f}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")

    canvas = tile(vae.decode_mean(z_prior), shape=shape, ncol=8, pad=0.5)  # (8*(H+1)-1, 8*(W+1)-1)
    axes[1, j].imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1, j].set_xticks([])
    axes[1, j].set_yticks([])
    axes[1, j].set_title(rf"{name}: decoded $z \sim \mathcal{{N}}(0, I)$", fontsize=10)

show(fig, "01_autoencoder_vs_vae.png", dpi=90)

# %% [markdown]
# ## Summary
#
# * An autoencoder's loss is blind to where its codes lie (any rescaling gives
#   the same loss), so $\mathcal N(0, I)$ samples need not land where its decoder was
#   trained: here its codes have a variance far from 1 and its decoder, used as a
#   generator, explains held-out images worse than the VAE's.
# * Noise alone is no cure: the encoder shrinks $\sigma$ towards 0 and the code is
#   again deterministic in all but name, carrying many nats per image.
# * The KL prices information ($\mu^2$ and $-\log\sigma^2$ both cost), bounding what a code
#   can carry and pulling the aggregate codes towards the prior; the VAE's codes
#   come out close to $\mathcal N(0, I)$, and sampling from it generates.
#
# Lesson 2 derives that KL, lesson 3 the gradient through the noise, lesson 4
# the objective they form.
