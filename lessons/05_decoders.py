# %% [markdown]
# # 05. Decoders: what log p(x | z) measures
#
# **Goal.** The decoder turns a latent $z$ into the parameters of a distribution
# over the data, and the ELBO's reconstruction term is that distribution's
# log-density at the data point. Derive the four likelihoods of
# `minivae.likelihoods` (Bernoulli, Gaussian with a fixed or a learned $\sigma$,
# Laplace, Categorical) with *every* constant, check numerically that each one
# is normalized, see which distortion each one minimizes (L2, L1, cross-entropy),
# and find out why a Gaussian decoder draws blurry digits: the best mean of a
# unimodal Gaussian sits between the modes of the data. Then convert nats to bits
# per dimension, and see why a continuous density cannot be compared with a
# discrete probability until it is discretized.
#
# **Builds on** lesson 4 (the ELBO: reconstruction minus KL, in nats per example).
#
# **Runtime** about 2 seconds on a laptop CPU (the same with `MINIVAE_QUICK=1`):
# no training, only small arrays.

# %%
import math

import numpy as np
from matplotlib.figure import Figure

from minivae import VAE, gradcheck
from minivae.lessons import quick, show
from minivae.likelihoods import (bernoulli_backward, bernoulli_forward, categorical_backward,
                                 categorical_forward, gaussian_backward, gaussian_forward,
                                 gaussian_learned_forward, get_likelihood, laplace_backward,
                                 laplace_forward)
from minivae.nn import sigmoid
from minivae.objectives import nats_to_bits_per_dim
from minivae.plots import tile

QUICK = quick()
rng = np.random.default_rng(5)


def integrate(values: np.ndarray, grid: np.ndarray) -> float:
    """Riemann sum of values sampled on an evenly spaced grid (both (G,))."""
    return float(np.sum(values) * (grid[1] - grid[0]))


# %% [markdown]
# ## 1. What a decoder outputs
#
# The decoder is an MLP whose last layer is linear: for a latent $z$ it returns a
# vector `out` that *parameterizes* $p(x \mid z)$, and the pixels are independent
# given $z$:
#
# $$ \log p(x \mid z) = \sum_{d=1}^{D} \log p\big(x_d \mid \text{out}_d(z)\big). $$
#
# Independence given $z$ is not independence: all the correlations between
# pixels (a stroke is a stroke) must come through $z$. What `out` means depends
# on the likelihood:
#
# | likelihood | `out` per pixel | $-\log p(x_d \mid \text{out}_d)$ |
# |---|---|---|
# | `bernoulli` | a logit $\ell_d$ | $\mathrm{softplus}(\ell_d) - x_d\ell_d$ (cross-entropy) |
# | `gaussian` | a mean $m_d$; $\sigma$ fixed | $\frac{(x_d - m_d)^2}{2\sigma^2} + \frac12\log 2\pi\sigma^2$ (L2) |
# | `gaussian_learned` | a mean and a log-variance $v_d$ | $\frac{(x_d - m_d)^2}{2e^{v_d}} + \frac{v_d}2 + \frac12\log 2\pi$ |
# | `laplace` | a location $m_d$; $b$ fixed | $\frac{\lvert x_d - m_d\rvert}{b} + \log 2b$ (L1) |
# | `categorical` | one logit per category | $-\log\mathrm{softmax}(\ell)_{x}$ |
#
# The width of the decoder's output layer is `params_per_dim` $\times D$:

# %%
D, K = 6, 2
z = rng.standard_normal((3, K))                                   # (N, K)
for name in ["bernoulli", "gaussian", "gaussian_learned", "laplace", "categorical"]:
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, likelihood=name, seed=0, dtype="float64")
    out = vae.decode(z)                        # (N, D), or a (mean, log_var) pair of (N, D)
    shapes = [o.shape for o in out] if isinstance(out, tuple) else out.shape
    print(f"{name:17s} dec.out.W {vae.params['dec.out.W'].shape}  decode(z) -> {shapes}")
    assert vae.params["dec.out.W"].shape == (5, get_likelihood(name).params_per_dim * D)

# %% [markdown]
# ## 2. Bernoulli: binary pixels, the cross-entropy
#
# For $x_d \in \{0, 1\}$ with $p(x_d = 1) = \sigma(\ell_d) = 1/(1 + e^{-\ell_d})$,
#
# $$ \log p(x_d \mid \ell_d) = x_d \log\sigma(\ell_d) + (1 - x_d)\log\big(1 - \sigma(\ell_d)\big). $$
#
# With $\log\sigma(\ell) = \ell - \mathrm{softplus}(\ell)$ and $\log(1 - \sigma(\ell)) = -\mathrm{softplus}(\ell)$,
# where $\mathrm{softplus}(\ell) = \log(1 + e^{\ell})$, this is
#
# $$ \log p(x_d \mid \ell_d) = x_d\,\ell_d - \mathrm{softplus}(\ell_d),
#    \qquad \frac{\partial \log p}{\partial \ell_d} = x_d - \sigma(\ell_d). $$
#
# No constant is missing: the two probabilities sum to one. The logit form never
# takes $\log 0$; the textbook form does, as soon as $\sigma(\ell)$ rounds to 0 or 1.

# %%
logits = np.array([[-30.0], [-3.0], [0.0], [2.0], [30.0]])       # (N, 1): five one-pixel images
p0 = np.exp(bernoulli_forward(np.zeros((5, 1)), logits)[0])       # (N,) p(x = 0)
p1 = np.exp(bernoulli_forward(np.ones((5, 1)), logits)[0])        # (N,) p(x = 1)
np.testing.assert_allclose(p0 + p1, 1.0, rtol=1e-12)              # normalized, pixel by pixel

x_bin = (rng.random((4, 5)) < 0.5).astype(float)                  # (N, D) binary
s = sigmoid(np.array([[-3.0, -1.0, 0.0, 1.0, 3.0]]))              # moderate logits: both forms work
textbook = np.sum(x_bin * np.log(s) + (1 - x_bin) * np.log(1 - s), axis=1)
np.testing.assert_allclose(bernoulli_forward(x_bin, np.log(s / (1 - s)))[0], textbook, rtol=1e-12)

huge = np.array([[1e4, -1e4, 1e4, -1e4, 0.0]])                    # saturated logits
with np.errstate(divide="ignore", invalid="ignore"):
    naive = np.sum(x_bin * np.log(sigmoid(huge)) + (1 - x_bin) * np.log(1 - sigmoid(huge)), axis=1)
logp_huge = bernoulli_forward(x_bin, huge)[0]                     # (N,)
print("textbook form at |logit| = 1e4:", naive, "  logit form:", logp_huge)
assert np.all(np.isfinite(logp_huge))

# %% [markdown]
# MNIST pixels are grey levels in $[0, 1]$, not bits. Plugging a grey $x_d$ into
# the formula still gives a number (the "binary cross-entropy"), but it is not the
# log of a density on $[0, 1]$: $\int_0^1 e^{x\ell - \mathrm{softplus}(\ell)}\,dx$ is not 1 (at $\ell = 0$ it is
# exactly $\tfrac12$). The missing normalizer is the *continuous Bernoulli*
# (Loaiza-Ganem and Cunningham, 2019). This course keeps the Bernoulli honest by
# training on *binarized* MNIST: each grey level is read as the probability of a
# black-or-white pixel (lesson 6).

# %%
u = np.linspace(0, 1, 20_001)[:, None]                            # (G, 1): grey values x in [0, 1]
mass = {l: integrate(np.exp(bernoulli_forward(u, np.array([[l]]))[0]), u[:, 0]) for l in (0.0, 3.0)}
print("integral over x in [0, 1] of exp(x l - softplus(l)):", {k: round(v, 4) for k, v in mass.items()})
assert abs(mass[0.0] - 0.5) < 1e-3 and abs(mass[3.0] - 1) > 0.05  # not a density on [0, 1]

# %% [markdown]
# ## 3. Gaussian with a fixed $\sigma$: the L2 distortion
#
# $$ \log p(x \mid m) = \sum_d \log\mathcal N(x_d; m_d, \sigma^2)
#    = -\frac{\lVert x - m\rVert_2^2}{2\sigma^2} - \frac D2\log(2\pi\sigma^2),
#    \qquad \frac{\partial\log p}{\partial m_d} = \frac{x_d - m_d}{\sigma^2}. $$
#
# The constant $-\frac D2\log(2\pi\sigma^2)$ makes the density integrate to one; it does
# not depend on $m$, so it changes neither the gradient nor the best decoder, but
# it is part of the ELBO and of every number we report. We check both halves: the
# density integrates to one on a grid, and $-\log p$ is the squared error over
# $2\sigma^2$ plus exactly that constant.

# %%
sigma = 0.1
grid = np.linspace(-1.5, 2.5, 40_001)[:, None]                    # (G, 1) values of one pixel
density = np.exp(gaussian_forward(grid, np.array([[0.5]]), sigma)[0])  # (G,)
assert abs(integrate(density, grid[:, 0]) - 1) < 1e-6

x_img = rng.random((3, 784))                                      # (N, D) grey images
m_img = rng.random((3, 784))                                      # (N, D) decoder means
nll = -gaussian_forward(x_img, m_img, sigma)[0]                   # (N,)
l2 = np.sum((x_img - m_img) ** 2, axis=1)                         # (N,)
const = 784 / 2 * math.log(2 * math.pi * sigma**2)
np.testing.assert_allclose(nll, l2 / (2 * sigma**2) + const, rtol=1e-12)
print(f"sigma = {sigma}: -log p = L2 / {2 * sigma**2:g} + ({const:.2f} nats)")

# %% [markdown]
# Multiply the negative ELBO by $2\sigma^2$:
#
# $$ 2\sigma^2\,\big(-\mathrm{ELBO}\big) = \lVert x - m\rVert^2 + 2\sigma^2\,\mathrm{KL} + \text{const}: $$
#
# a Gaussian VAE with a fixed $\sigma$ is "squared error plus $\beta$ times KL" with
# $\beta = 2\sigma^2$. The popular "sum of squared errors + KL" silently picks
# $\sigma^2 = \tfrac12$, a huge noise level for pixels in $[0, 1]$, and gets
# reconstructions so blurry that the KL wins; `TrainConfig` uses $\sigma = 0.1$. Lesson 7
# explores the trade-off that $\beta$ sets.
#
# **Learning $\sigma$** instead (`gaussian_learned`, the decoder outputs a
# log-variance $v$ too) removes the guess. For one $v$ shared by the $D$ pixels,
# $\partial\log p/\partial v = \frac12\big(\lVert x - m\rVert^2 e^{-v} - D\big) = 0$ gives
#
# $$ \sigma^{2}_\star = e^{v_\star} = \tfrac1D\lVert x - m\rVert^2, $$
#
# the mean squared error: the model learns how wrong it is.

# %%
v_grid = np.linspace(-3, -1, 2001)                                # candidate log-variances
residual_x, residual_m = x_img[:1], m_img[:1]                     # (1, D) each
mse = float(np.mean((residual_x - residual_m) ** 2))
outs = np.concatenate([np.broadcast_to(residual_m, (len(v_grid), 1, 784)),
                       np.broadcast_to(v_grid[:, None, None], (len(v_grid), 1, 784))], axis=-1)  # (G, 1, 2D)
best_v = v_grid[np.argmax(gaussian_learned_forward(residual_x, outs)[0][:, 0])]
print(f"best log-variance {best_v:.3f}, log of the mean squared error {math.log(mse):.3f}")
assert abs(best_v - math.log(mse)) < 2e-3

# %% [markdown]
# ## 4. Laplace: the L1 distortion
#
# $$ p(x_d \mid m_d) = \frac{1}{2b}\,e^{-\lvert x_d - m_d\rvert / b}, \qquad
#    \log p(x \mid m) = -\frac{\lVert x - m\rVert_1}{b} - D\log 2b, \qquad
#    \frac{\partial\log p}{\partial m_d} = \frac{\mathrm{sign}(x_d - m_d)}{b}. $$
#
# The gradient has the same size for a small error and a large one: L1 cares
# about *how many* pixels are off, L2 about *how far* (a pixel off by 0.5 costs L2 as
# much as 25 pixels off by 0.1). Its variance is $2b^2$, so $b = \sigma/\sqrt2$ matches a
# Gaussian's spread.

# %%
b = sigma / math.sqrt(2)
density = np.exp(laplace_forward(grid, np.array([[0.5]]), b)[0])  # (G,)
assert abs(integrate(density, grid[:, 0]) - 1) < 1e-6
second_moment = integrate(density * (grid[:, 0] - 0.5) ** 2, grid[:, 0])
assert abs(second_moment - 2 * b**2) < 1e-6                       # variance 2 b^2 = sigma^2

nll = -laplace_forward(x_img, m_img, b)[0]                        # (N,)
l1 = np.sum(np.abs(x_img - m_img), axis=1)                        # (N,)
np.testing.assert_allclose(nll, l1 / b + 784 * math.log(2 * b), rtol=1e-12)

# %% [markdown]
# ## 5. Why Gaussian decoders are blurry: the mean sits between the modes
#
# Take one pixel and all the training images whose posteriors put mass near the
# same $z$. The decoder must answer with *one* value $m$ for all of them, the one
# that maximizes their total log-likelihood. Setting the derivatives to zero:
#
# $$ \text{Gaussian:}\ \ \frac{\partial}{\partial m}\sum_i \frac{-(x_i - m)^2}{2\sigma^2} = \sum_i \frac{x_i - m}{\sigma^2} = 0
#    \ \Rightarrow\ m_\star = \frac1n\sum_i x_i \ \text{(the mean)}, $$
#
# $$ \text{Laplace:}\ \ \frac{\partial}{\partial m}\sum_i \frac{-\lvert x_i - m\rvert}{b} = \frac1b\sum_i \mathrm{sign}(x_i - m) = 0
#    \ \Rightarrow\ m_\star = \text{the median}\ \text{(as many points above as below)}. $$
#
# When the pixel is *bimodal* (the stroke is there in 60% of those images and a
# few pixels to the left in the rest), the mean is a grey value that no image
# has: a ghost of both strokes, a blur. The median lands inside the bigger mode.
# Neither is the data distribution; a unimodal $p(x \mid z)$ can only choose where to
# be wrong. Below, both optima are found by brute force over a grid of $m$, with the
# library's log-densities.

# %%
n_pix = 600 if QUICK else 3000
is_on = np.arange(n_pix) < 0.6 * n_pix                            # 60% of the images: stroke on
pixel = np.where(is_on, 0.85, 0.12) + 0.04 * rng.standard_normal(n_pix)  # (n,) one pixel's values
x_pix = pixel[:, None]                                            # (n, 1): n one-pixel "images"

m_grid = np.linspace(0, 1, 1001)                                  # candidate decoder outputs
step = m_grid[1] - m_grid[0]
locs = m_grid[:, None, None]                                      # (G, 1, 1), broadcast over (n, 1)
total_gauss = gaussian_forward(x_pix, locs, sigma)[0].sum(axis=1)  # (G,) sum over the n images
total_laplace = laplace_forward(x_pix, locs, b)[0].sum(axis=1)     # (G,)
m_gauss, m_laplace = m_grid[np.argmax(total_gauss)], m_grid[np.argmax(total_laplace)]
print(f"best Gaussian mean {m_gauss:.3f} (data mean {pixel.mean():.3f}); "
      f"best Laplace location {m_laplace:.3f} (data median {np.median(pixel):.3f})")
assert abs(m_gauss - pixel.mean()) <= step and abs(m_laplace - np.median(pixel)) <= step

near_mean = np.mean(np.abs(pixel - m_gauss) < 0.1)               # how typical is the fit?
near_median = np.mean(np.abs(pixel - m_laplace) < 0.1)
print(f"data within 0.1 of the Gaussian fit: {near_mean:.1%}; of the Laplace fit: {near_median:.1%}")
assert near_mean < 0.02 and near_median > 0.4                    # the mean is in the empty valley

# %% [markdown]
# The same in pictures: 28 x 28 images of one vertical stroke, at column 9 in 60% of
# them and at column 16 in the rest. The Gaussian's best single image (the
# pixelwise mean) has two faint strokes; the Laplace's (the pixelwise median) one
# crisp stroke, and it has all but dropped the minority.

# %%
n_img = 100 if QUICK else 500
where = np.where(np.arange(n_img) < 0.6 * n_img, 9, 16)           # (n,) stroke column
images = np.zeros((n_img, 28, 28))                                # (n, H, W)
for i, col in enumerate(where):
    images[i, 5:23, col:col + 3] = 1.0
images = np.clip(images + 0.05 * rng.standard_normal(images.shape), 0, 1).reshape(n_img, 784)  # (n, D)
mean_image, median_image = images.mean(axis=0), np.median(images, axis=0)  # (D,) each
print(f"brightest pixel: data {images.max(axis=1).mean():.2f}, mean image {mean_image.max():.2f}, "
      f"median image {median_image.max():.2f}")
assert mean_image.max() < 0.7 < 0.9 < median_image.max()        # the mean is never as bright as a stroke

# %% [markdown]
# In a VAE the same averaging happens at every $z$: the Gaussian decoder's best
# output is $\mathbb E[x \mid z]$, the average of every image the encoder maps near $z$.
# And the pictures we show are those means: an actual *sample* from $p(x \mid z)$
# adds independent noise of standard deviation $\sigma$ to every pixel, which looks
# worse, not sharper. Sharp samples need a multimodal $p(x \mid z)$ (an
# autoregressive decoder, or a discrete variable such as the class label of lesson 8).
#
# ## 6. The picture
#
# Top left: what each decoder charges for an error of size $r = x_d - m_d$ (per
# pixel, in nats, constants included; same variance). Top right: the bimodal
# pixel, its data, and the two objectives as functions of $m$ (dashed, each shifted
# to a maximum of 0). Bottom: some of the stroke images, then the Gaussian and
# the Laplace fits.

# %%
fig = Figure(figsize=(12, 8), layout="constrained")
axes = fig.subplot_mosaic([["penalty", "pixel"], ["images", "images"]], height_ratios=[3, 1.4])
ax1, ax2, ax3 = axes["penalty"], axes["pixel"], axes["images"]

r = np.linspace(-0.6, 0.6, 601)[:, None]                          # (G, 1) residuals
zero = np.zeros((1, 1))
ax1.plot(r[:, 0], -gaussian_forward(r, zero, sigma)[0], label=rf"Gaussian $\sigma={sigma}$ (L2)")
ax1.plot(r[:, 0], -laplace_forward(r, zero, b)[0], label=rf"Laplace $b=\sigma/\sqrt{{2}}$ (L1)")
ax1.set_xlabel(r"error $r = x_d - m_d$")
ax1.set_ylabel(r"$-\log p(x_d \mid m_d)$  [nats]")
ax1.set_title("penalty per pixel (same variance)")
ax1.grid(alpha=0.3)
ax1.legend()

ax2.hist(pixel, bins=80, range=(0, 1), density=True, color="0.75", label="data: one pixel")
ax2.axvline(m_gauss, color="C0", lw=2, label=f"Gaussian fit = mean {m_gauss:.2f}")
ax2.axvline(m_laplace, color="C1", lw=2, label=f"Laplace fit = median {m_laplace:.2f}")
ax2.set_xlabel("pixel value")
ax2.set_ylabel("density")
twin = ax2.twinx()
twin.plot(m_grid, (total_gauss - total_gauss.max()) / n_pix, color="C0", ls="--")
twin.plot(m_grid, (total_laplace - total_laplace.max()) / n_pix, color="C1", ls="--")
twin.set_ylim(-16, 1)
twin.set_ylabel(r"mean $\log p$ as a function of $m$ (dashed)")
ax2.set_title("a bimodal pixel: where each decoder puts its one value")
ax2.legend(loc="lower center", fontsize=8)

strip = np.concatenate([images[[0, 1, n_img - 2, n_img - 1]], mean_image[None], median_image[None]])
ax3.imshow(tile(strip, ncol=6), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
ax3.set_xticks(np.arange(6) * 29 + 13.5, ["data", "data", "data", "data", "Gaussian\n(mean)",
                                          "Laplace\n(median)"])
ax3.set_yticks([])
ax3.set_title("images: 60% with the stroke at the left, 40% at the right; the best single image of each decoder")

show(fig, "05_decoders.png")

# %% [markdown]
# ## 7. Categorical: one of $C$ outcomes, or counts
#
# With logits $\ell \in \mathbb R^C$, $p(k) = \mathrm{softmax}(\ell)_k = e^{\ell_k} / \sum_j e^{\ell_j}$. For a
# one-hot $x$ (one draw) or counts $x$ with $n = \sum_k x_k$ draws,
#
# $$ \log p(x \mid \ell) = \log\frac{n!}{\prod_k x_k!} + \sum_k x_k\log\mathrm{softmax}(\ell)_k,
#    \qquad \frac{\partial\log p}{\partial\ell_k} = x_k - n\,\mathrm{softmax}(\ell)_k . $$
#
# `categorical_forward` leaves out the multinomial coefficient (it does not depend
# on the decoder, and it is 0 for a one-hot $x$); it is then the log-probability
# of the *ordered* sequence of draws. This decoder serves bag-of-words documents
# (lesson 12) and, with one softmax per pixel over 256 grey levels, images
# without any Gaussian assumption. The checks: the one-hot probabilities sum to one,
# and, with the coefficient added back, the probabilities of *all* count vectors
# with $n = 4$ over $C = 3$ categories sum to one.

# %%
C = 5
cat_logits = 2 * rng.standard_normal((1, C))                      # (1, C)
one_hots = np.eye(C)                                              # (C, C): every outcome
probs = np.exp(categorical_forward(one_hots, np.repeat(cat_logits, C, axis=0))[0])  # (C,)
np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)

n_draws, C3 = 4, 3
counts = np.array([[a, b_, n_draws - a - b_] for a in range(n_draws + 1) for b_ in range(n_draws + 1 - a)],
                  dtype=float)                                    # (15, 3): all compositions of 4
log_coef = np.array([math.lgamma(n_draws + 1) - sum(math.lgamma(c + 1) for c in row) for row in counts])
l3 = rng.standard_normal((1, C3))                                 # (1, C)
log_pmf = log_coef + categorical_forward(counts, np.repeat(l3, len(counts), axis=0))[0]  # (15,)
print(f"{len(counts)} count vectors, total probability {np.exp(log_pmf).sum():.12f}")
np.testing.assert_allclose(np.exp(log_pmf).sum(), 1.0, rtol=1e-12)

# %% [markdown]
# ## 8. The four gradients, checked
#
# Each backward above is one line, derived by hand; `gradcheck.check_backward`
# compares it with central differences for a random upstream gradient (float64).
# The Laplace kink at $x = m$ is never hit by random data.

# %%
N_c, D_c = 4, 7
x_c = rng.random((N_c, D_c))                                      # (N, D) grey values
x_b = (rng.random((N_c, D_c)) < 0.5).astype(float)                # (N, D) bits
x_k = rng.integers(0, 4, (N_c, D_c)).astype(float)                # (N, D) counts
out_c = rng.standard_normal((2, N_c, D_c))                        # (S, N, D): two latent samples
checks = {
    "bernoulli": (bernoulli_forward, bernoulli_backward, x_b),
    "gaussian": (lambda x, m: gaussian_forward(x, m, sigma), gaussian_backward, x_c),
    "laplace": (lambda x, m: laplace_forward(x, m, b), laplace_backward, x_c),
    "categorical": (categorical_forward, categorical_backward, x_k),
}
for name, (fwd, bwd, data) in checks.items():
    err = gradcheck.check_backward(fwd, lambda dy, cache, bwd=bwd: (None, bwd(dy, cache)),
                                   [data, out_c], rng, wrt=[1])[0]
    print(f"{name:12s} relative error of d log p / d out: {err:.1e}")
    assert err < 1e-7

# %% [markdown]
# ## 9. Nats, bits, and bits per dimension
#
# Everything in minivae is in nats (natural logs), summed over the $D$ dimensions
# of an example. Papers on images often report **bits per dimension**:
#
# $$ \text{bits/dim} = \frac{\text{nats}}{D \ln 2} . $$
#
# A yardstick: a decoder that says $p = \tfrac12$ for every binary pixel costs exactly
# $\ln 2$ nats per pixel, 1 bit per dimension, $784\ln 2 = 543.4$ nats per image,
# whatever the image. The default VAE's test $-$ELBO of about 98 nats is 0.18 bits per
# dimension.

# %%
x_any = (rng.random((5, 784)) < 0.3).astype(float)                # (N, D) any binary images
coin = -bernoulli_forward(x_any, np.zeros((5, 784)))[0]           # (N,) nats
np.testing.assert_allclose(coin, 784 * math.log(2), rtol=1e-12)
assert abs(nats_to_bits_per_dim(784 * math.log(2), 784) - 1) < 1e-12
bpd_98 = nats_to_bits_per_dim(98.0, 784)
print(f"coin-flip decoder: {coin[0]:.1f} nats = 1 bit/dim; 98 nats = {bpd_98:.3f} bits/dim")
assert abs(bpd_98 - 0.1803) < 1e-4

# %% [markdown]
# **Densities are not probabilities.** A Bernoulli or Categorical $\log p$ is a log
# *probability*, never above 0. A Gaussian or Laplace $\log p$ is a log *density*, and
# a density can exceed 1: at $x = m$ with $\sigma = 0.1$ it is
# $-\log(\sigma\sqrt{2\pi}) = +1.38$ nats per pixel, a "negative cost", and its value
# changes if you rescale the pixels. To compare it with a discrete model, discretize:
# for 8-bit images (bins of width $\Delta = 1/256$ on $[0, 1]$) the probability of a bin
# is about $p(x)\,\Delta$, so
#
# $$ \text{bits/dim (discrete)} \approx \text{bits/dim (density)} + \log_2 256 = \text{bits/dim (density)} + 8 . $$
#
# The check: the exact probability of a bin, from the Gaussian's cdf, against $p(x)\Delta$.

# %%
at_mean = float(gaussian_forward(np.array([[0.5]]), np.array([[0.5]]), sigma)[0][0])
assert at_mean > 1.38                                             # a positive log-density
print(f"log density at the mean, sigma = {sigma}: {at_mean:+.3f} nats")

delta, x0 = 1 / 256, 0.53                         # the 8-bit bin [x0 - delta/2, x0 + delta/2]
cdf = lambda t: 0.5 * (1 + math.erf((t - 0.5) / (sigma * math.sqrt(2))))  # noqa: E731
bin_prob = cdf(x0 + delta / 2) - cdf(x0 - delta / 2)
density_times_width = math.exp(gaussian_forward(np.array([[x0]]), np.array([[0.5]]), sigma)[0][0]) * delta
print(f"bin probability {bin_prob:.6f} vs p(x) * delta {density_times_width:.6f}")
assert abs(bin_prob / density_times_width - 1) < 1e-3
bits_density = nats_to_bits_per_dim(-math.log(density_times_width / delta), 1)
bits_discrete = nats_to_bits_per_dim(-math.log(bin_prob), 1)
assert abs(bits_discrete - (bits_density + 8)) < 1e-3

# %% [markdown]
# ## Summary
#
# * The decoder outputs the parameters of a factorized $p(x \mid z)$; the likelihood
#   turns them into nats, constants included: Bernoulli
#   $x\ell - \mathrm{softplus}(\ell)$; Gaussian $-\lVert x - m\rVert^2/2\sigma^2 - \frac D2\log 2\pi\sigma^2$; Laplace
#   $-\lVert x - m\rVert_1/b - D\log 2b$; Categorical $\sum_k x_k\log\mathrm{softmax}(\ell)_k$.
# * Gaussian = L2 (and $\sigma$ acts like $\beta = 2\sigma^2$), Laplace = L1; with a learned $\sigma$,
#   $\sigma^2$ becomes the mean squared error.
# * A unimodal decoder answers an ambiguous $z$ with one value: the mean (Gaussian),
#   which blurs modes together, or the median (Laplace), which picks the majority.
# * bits/dim = nats / $(D\ln 2)$; continuous densities need $+\log_2(1/\Delta)$ bits per
#   dimension before they can be compared with discrete probabilities.
#
# Next, lesson 6: the whole VAE, trained on MNIST with the Bernoulli decoder.
