# %% [markdown]
# # 11. A convolutional VAE and sub-pixel "deconvolution"
#
# **Goal.** Replace the MLPs of the VAE by convolutions: derive a convolution layer as one
# matrix product (im2col), its backward pass (col2im, the adjoint), and the decoder's
# upsampling by *sub-pixel convolution* (a convolution followed by depth-to-space), and see
# why it avoids the checkerboard artifacts of the strided transposed convolution. Then
# check every gradient by finite differences and train a small convolutional VAE on MNIST.
#
# **Builds on** lesson 6 (the VAE, its backward pass and the training loop); the ELBO,
# the reparameterization and the likelihoods are unchanged.
#
# **Runtime** on a laptop CPU: under a minute (a few seconds with `MINIVAE_QUICK=1`).

# %% [markdown]
# ## A convolution is a matrix product
#
# Images are channels-last arrays, `x` (N, H, W, C): each pixel's C values sit side by side.
# A layer of $F$ filters `w` (F, C, kh, kw) with bias `b` (F,), stride $s$ and zero padding $p$
# computes the cross-correlation
#
# $$ y_{n h w f} = b_f + \sum_{i=0}^{k_h-1}\sum_{j=0}^{k_w-1}\sum_{c=1}^{C} w_{f c i j}\; \tilde x_{n,\,s h + i,\,s w + j,\,c}, \qquad
#    H' = \Big\lfloor \frac{H + 2p - k_h}{s} \Big\rfloor + 1 , $$
#
# where $\tilde x$ is $x$ padded with $p$ zeros on every side. For fixed $(n, h, w)$ the sum over
# $(i, j, c)$ is a dot product between the filter, flattened to a vector of length $k_h k_w C$,
# and the *receptive field* under output pixel $(h, w)$, flattened the same way. So copy
# every receptive field into one row of a matrix (**im2col**):
#
# $$ \mathrm{cols} \in \mathbb R^{(N H' W') \times (k_h k_w C)}, \qquad
#    Y = \mathrm{cols}\; W + b, \qquad W = \texttt{filters\_matrix(w)} \in \mathbb R^{k_h k_w C \times F}, $$
#
# and the whole layer is one GEMM, the operation CPUs do best. The price is memory: each
# input pixel is copied into up to $k_h k_w$ rows. Channels last, the copy is cheap to make:
# the window under one kernel offset $(i, j)$ is, for every output pixel, a run of $C$
# contiguous numbers, so im2col is $k_h k_w$ block copies.
#
# **Backward.** Given $\bar Y = \partial L/\partial Y$ laid out as (N H' W', F), the layer is the
# affine map of lesson 1 applied to the rows of `cols`, so
#
# $$ \bar W = \mathrm{cols}^\top \bar Y, \qquad \bar b = \textstyle\sum_{\text{rows}} \bar Y, \qquad
#    \overline{\mathrm{cols}} = \bar Y\, W^\top, \qquad \bar x = \mathrm{col2im}\big(\overline{\mathrm{cols}}\big). $$
#
# im2col is linear in $x$, so its backward is its adjoint (transpose) **col2im**: every entry
# of $\overline{\mathrm{cols}}$ is *added* back onto the pixel it was copied from. A pixel that sat
# in several overlapping windows collects the sum of their gradients; entries that came from
# the zero padding are dropped. The defining property of the adjoint,
#
# $$ \langle \mathrm{im2col}(x),\ G\rangle = \langle x,\ \mathrm{col2im}(G)\rangle \quad\text{for all } x, G, $$
#
# is something we can test numerically, and we do.

# %%
import shutil

import numpy as np
from matplotlib.figure import Figure

from minivae import VAE
from minivae import plots
from minivae.conv import (col2im, conv2d_backward, conv2d_forward, conv2d_scatter_forward, depth_to_space,
                          depth_to_space_backward, depth_to_space_forward, im2col,
                          space_to_depth_backward, space_to_depth_forward)
from minivae.convvae import ConvVAE
from minivae.gradcheck import check_backward, check_params
from minivae.lessons import out_dir, quick, show
from minivae.train import TrainConfig, evaluate_elbo, load_run, load_split, train
from minivae import winograd
from minivae.winograd import winograd_conv3x3_backward, winograd_conv3x3_forward

QUICK = quick()
rng = np.random.default_rng(11)
print(f"quick mode: {QUICK}")


def conv2d_by_definition(x, w, b, stride, pad):
    """The defining triple sum, one output pixel at a time: slow, obviously right."""
    N, H, W, C = x.shape
    F, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))      # (N, H+2p, W+2p, C)
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    y = np.empty((N, Ho, Wo, F))
    for n in range(N):
        for f in range(F):
            for h in range(Ho):
                for v in range(Wo):
                    window = xp[n, stride * h:stride * h + kh, stride * v:stride * v + kw, :]  # (kh, kw, C)
                    y[n, h, v, f] = b[f] + np.sum(w[f].transpose(1, 2, 0) * window)
    return y


x = rng.standard_normal((2, 7, 6, 3))                            # (N, H, W, C)
w = rng.standard_normal((4, 3, 3, 3))                            # (F, C, kh, kw)
b = rng.standard_normal(4)                                       # (F,)
y, cache = conv2d_forward(x, w, b, stride=2, pad=1)
cols = im2col(x, 3, 3, stride=2, pad=1)
print(f"x {x.shape} -> cols {cols.shape} -> y {y.shape}")
assert y.shape == (2, 4, 3, 4) and cols.shape == (2 * 4 * 3, 3 * 3 * 3)
assert np.max(np.abs(y - conv2d_by_definition(x, w, b, 2, 1))) < 1e-12

G = rng.standard_normal(cols.shape)                              # any matrix of cols' shape
lhs, rhs = np.sum(cols * G), np.sum(x * col2im(G, x.shape, 3, 3, stride=2, pad=1))
print(f"<im2col(x), G> = {lhs:.12f},  <x, col2im(G)> = {rhs:.12f}")
assert abs(lhs - rhs) < 1e-10 * abs(lhs)

# %% [markdown]
# ## Every backward against finite differences
#
# `minivae.gradcheck.check_backward` draws a random upstream gradient $\bar y$, forms
# $L = \sum \bar y \odot y$ and compares each analytic gradient with central differences,
# entry by entry, in float64. We check the convolution with stride 1 and 2 and with and
# without padding, and the two rearrangements of the next section.

# %%
errors = {}
for stride, pad, k in [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 0, 2), (2, 1, 4)]:
    xs = rng.standard_normal((2, 6, 5, 2))                       # (N, H, W, C)
    ws = rng.standard_normal((3, 2, k, k))                       # (F, C, k, k)
    bs = rng.standard_normal(3)
    errs = check_backward(lambda x_, w_, b_: conv2d_forward(x_, w_, b_, stride, pad), conv2d_backward,
                          [xs, ws, bs], rng)
    errors[f"conv2d k{k} s{stride} p{pad} (dx, dw, db)"] = errs
errors["depth_to_space r=2"] = check_backward(lambda x_: depth_to_space_forward(x_, 2), depth_to_space_backward,
                                              [rng.standard_normal((2, 3, 4, 8))], rng)
errors["space_to_depth r=2"] = check_backward(lambda y_: space_to_depth_forward(y_, 2), space_to_depth_backward,
                                              [rng.standard_normal((2, 6, 8, 2))], rng)
for name, errs in errors.items():
    print(f"{name:36s} " + "  ".join(f"{e:.1e}" for e in errs))
assert max(max(e) for e in errors.values()) <= 1e-7

# %% [markdown]
# ## Upsampling in the decoder: transposed convolution vs sub-pixel convolution
#
# The encoder halves the resolution twice (stride-2 convolutions, 28 → 14 → 7); the decoder
# must double it twice. The classic tool is the **transposed convolution** ("deconvolution"):
# the adjoint of a strided convolution, exactly the map $\bar y \mapsto \bar x$ that
# `conv2d_backward` computes. Each *input* pixel stamps a scaled copy of the $k \times k$ kernel
# onto the output, the stamps $s$ pixels apart. When $k$ is not a multiple of $s$ the stamps
# overlap unevenly: with $k = 3, s = 2$ some output pixels are covered by one stamp, some by
# two, some by four. Even with a smooth input and smooth weights the output inherits this
# pattern: the **checkerboard artifact** (Odena, Dumoulin & Olah 2016, *Deconvolution and
# Checkerboard Artifacts*, Distill).
#
# **Sub-pixel convolution** (Shi et al. 2016) computes the $r \times r$ output pixels that sit
# above each low-resolution pixel as $r^2$ separate channels of an ordinary stride-1
# convolution at low resolution, then rearranges them (**depth-to-space**):
#
# $$ y_{n,\,h r + i,\,w r + j,\,c} = x_{n,\,h,\,w,\,c r^2 + i r + j}, \qquad
#    (N, H, W, C r^2) \to (N, H r, W r, C). $$
#
# Depth-to-space only moves entries, so its backward is its inverse, space-to-depth (checked
# above). Every output pixel is now computed by one full $k \times k$ kernel on the
# low-resolution map: the coverage is uniform by construction. (It is equivalent to a
# transposed convolution whose kernel size $r k$ is a multiple of its stride $r$.) The $r^2$
# phases still have their own filters, so a network *can* learn a periodic pattern, but it is
# no longer built into the architecture.
#
# We count coverage directly: feed an all-ones input through all-ones kernels and look at
# the interior of the output (away from the zero-padded border).

# %%
def transposed_conv(u, w, stride, pad, out_hw):
    """The adjoint of conv2d_forward(., w, stride, pad) on (N, *out_hw, C): u (N, H', W', F) -> (N, *out_hw, C)."""
    F, C = w.shape[:2]
    _, c = conv2d_forward(np.zeros((len(u),) + out_hw + (C,)), w, np.zeros(F), stride, pad)
    return conv2d_backward(u, c)[0]


ones = np.ones((1, 7, 7, 1))                                     # a constant 7 x 7 input
cover_t3 = transposed_conv(ones, np.ones((1, 1, 3, 3)), 2, 1, (14, 14))[0, :, :, 0]  # k = 3, s = 2
cover_t4 = transposed_conv(ones, np.ones((1, 1, 4, 4)), 2, 1, (14, 14))[0, :, :, 0]  # k = 4, s = 2
low = conv2d_forward(ones, np.ones((4, 1, 3, 3)), np.zeros(4), 1, 1)[0]       # (1, 7, 7, 4)
cover_sp = depth_to_space(low, 2)[0, :, :, 0]                    # (14, 14), sub-pixel k = 3, r = 2
inner = (slice(2, -2), slice(2, -2))
for name, cov in [("transposed, k=3 s=2", cover_t3), ("transposed, k=4 s=2", cover_t4),
                  ("sub-pixel,  k=3 r=2", cover_sp)]:
    print(f"{name}: interior coverage values {sorted(set(cov[inner].ravel().tolist()))}")
assert set(cover_t3[inner].ravel().tolist()) == {1.0, 2.0, 4.0}   # uneven: a checkerboard
assert np.ptp(cover_t4[inner]) == 0 and np.ptp(cover_sp[inner]) == 0  # even

# %% [markdown]
# ## The same convolution in fewer steps: what the model runs
#
# im2col is the idea; two rearrangements of the same sum make the model's layers cheaper,
# and both are held equal to it (here, and in the tests).
#
# **Taps first.** Swap the order of the sums: multiply every *input* pixel by every kernel
# tap first, $Z_{n h w, (i j f)} = \sum_c x_{n h w c}\, w_{f c i j}$ (one GEMM with $k_h k_w F$
# columns), then let each output add up the $k_h k_w$ products that reach it,
# $y_{n h w f} = b_f + \sum_{i,j} Z_{n,\,s h + i - p,\,s w + j - p,\,(i j f)}$. Same numbers;
# the buffer holds $k_h k_w F$ values per pixel where im2col's holds $k_h k_w C$. The decoder's
# last layer has $C = 32$ inputs and $F = 4$ outputs: 8 times less to write and read.
# (Its backward is the mirror image, an im2col of $\bar y$.)
#
# **Winograd's minimal filtering** (Lavin & Gray 2016) saves multiplications. In one dimension,
# four outputs of a 3-tap filter, $y_k = \sum_{i<3} g_i d_{k+i}$, need 12 products done directly,
# but only 6 as $y = A^\top\big[(G g) \odot (B^\top d)\big]$: transform the 6 inputs and the 3
# taps, multiply elementwise, transform back. The constant matrices come from evaluating the
# polynomials $d(t)$ and $g(t)$ at 6 points and interpolating their product (a polynomial of
# degree 7, whose middle coefficients are the $y_k$). Nested over rows and columns, a 6 × 6
# input tile gives a 4 × 4 output tile with 36 products instead of 144, and since each of
# the 36 is summed over input channels, each is a matrix product: (tiles, C) @ (C, F). The
# transforms are fixed linear maps, so the backward pass is their transposes, as for any
# linear layer. The decoder's first convolution (the model's largest) runs this way.

# %%
d6, g3 = rng.standard_normal(6), rng.standard_normal(3)
direct = np.array([d6[k:k + 3] @ g3 for k in range(4)])        # 12 multiplications
minimal = winograd.AT @ ((winograd.G @ g3) * (winograd.BT @ d6))  # 6 (G g is computed once per filter)
print(f"4 outputs of a 3-tap filter: direct {np.round(direct, 6)}, Winograd {np.round(minimal, 6)}")
assert np.allclose(direct, minimal, rtol=1e-12, atol=1e-12)

xs = rng.standard_normal((2, 7, 7, 5))                           # (N, H, W, C), 7 x 7 like the decoder's
ws, bs = rng.standard_normal((6, 5, 3, 3)), rng.standard_normal(6)
y_im2col, _ = conv2d_forward(xs, ws, bs, stride=1, pad=1)
for name, y_fast in [("taps first", conv2d_scatter_forward(xs, ws, bs, 1, 1)[0]),
                     ("Winograd", winograd_conv3x3_forward(xs, ws, bs)[0])]:
    print(f"{name:10s}: largest difference from im2col {np.abs(y_fast - y_im2col).max():.1e}")
    assert np.allclose(y_fast, y_im2col, rtol=1e-11, atol=1e-11)
wino_errors = check_backward(winograd_conv3x3_forward, winograd_conv3x3_backward, [xs, ws, bs], rng)
print("Winograd backward vs finite differences (dx, dw, db): " + "  ".join(f"{e:.1e}" for e in wino_errors))
assert max(wino_errors) <= 1e-7
C_in, F_out, tiles = 64, 128, 2 * 2                               # the decoder's layer: 7 x 7 -> 2 x 2 tiles
print(f"multiply-adds per image, decoder's 3x3 layer: im2col {49 * 9 * C_in * F_out:,}, "
      f"Winograd {tiles * 36 * C_in * F_out:,} (its 4 x 4 tiles cover 8 x 8)")

# %% [markdown]
# ## The convolutional VAE
#
# `minivae.convvae.ConvVAE` keeps everything of `VAE` except the two networks:
#
#     x (N,28,28,1) ─conv 3x3 s2─▶ (N,14,14,c1) ─conv 3x3 s2─▶ (N,7,7,c2) ─flatten─▶ mu, log_var
#     z ─affine─▶ (N,7,7,c2) ─conv 3x3 → 4 c1─▶ depth-to-space ─▶ (N,14,14,c1)
#                            ─conv 3x3 → 4─▶ depth-to-space ─▶ (N,28,28,1) logits
#
# Weight sharing makes it small: a 3 × 3 filter is reused at every position. Before training,
# the end-to-end check of lesson 6, now through convolutions and depth-to-space: the gradient
# of the whole loss (fixed noise, float64) against finite differences, for every parameter.
# The step is $h = 10^{-4}$ rather than the default $10^{-6}$: the loss is a sum of some 45 nats
# over 64 pixels, and its round-off error, about $10^{-16}\cdot 45 / h$, would swamp the
# smallest gradients at $h = 10^{-6}$; the truncation error, $O(h^2)$, is still negligible.

# %%
small = ConvVAE(image_shape=(1, 8, 8), channels=(2, 3), z_dim=2, activation="tanh", seed=1, dtype="float64")
xb = (rng.random((3, 64)) < 0.5).astype(float)                   # (N, 64) binary 8 x 8 images
eps = rng.standard_normal((2, 3, 2))                             # (S, N, K) fixed noise
out = small.loss_and_grads(xb, eps)
param_errors = check_params(lambda: small.loss_and_grads(xb, eps).loss, small.params, out.grads, h=1e-4)
worst = max(param_errors, key=param_errors.get)
print(f"whole-model check, {len(param_errors)} parameter arrays: worst {worst} {param_errors[worst]:.1e}")
assert param_errors[worst] <= 1e-7

CHANNELS, Z = (8, 16), 16
conv_params = ConvVAE(channels=CHANNELS, z_dim=Z).n_params
mlp_params = VAE(hidden=(400,), z_dim=Z).n_params
print(f"parameters: ConvVAE{CHANNELS} {conv_params:,}  vs  MLP 784-400-{Z} {mlp_params:,}")
assert conv_params < mlp_params / 5

# %% [markdown]
# ## Training
#
# The trainer is the one of lesson 6; `TrainConfig(model="conv", channels=...)` builds a
# `ConvVAE`. A training step of the convolutional model costs far more arithmetic per
# parameter than the MLP's, so we keep it small (8 and 16 channels) and train on part of
# MNIST for a few epochs. We score the untrained model first, with the same test images
# and the same noise as the trained one.

# %%
run = out_dir() / "runs" / "11_conv_vae"
shutil.rmtree(run, ignore_errors=True)
cfg = TrainConfig(model="conv", channels=CHANNELS, z_dim=Z, batch_size=32 if QUICK else 64, seed=0,
                  train_size=3000 if QUICK else 30_000, test_size=500 if QUICK else 1000,
                  epochs=1 if QUICK else 5)
x_test, y_test = load_split(cfg, "test")                         # (M, 784), binarized once
before = evaluate_elbo(cfg.build(), x_test)["loss"]
last = train(cfg, run, progress=False, figures=False)
_, vae, _, state = load_run(run)
after = evaluate_elbo(vae, x_test)["loss"]
print(f"test -ELBO: untrained {before:.1f} -> trained {after:.1f} nats per image "
      f"(training took {state.seconds:.0f} s)")
assert abs(after - last["test_loss"]) < 1e-3 * after             # the trainer's own score agrees
assert after < before - 100                                      # the loss went down, a lot
train_losses = [row["train_loss"] for row in state.history]
assert all(b < a for a, b in zip(train_losses, train_losses[1:]))  # and it fell in every epoch

# %% [markdown]
# ## What it learned
#
# Reconstructions (posterior means decoded) of test digits, and samples from the prior,
# decoded to pixel probabilities. To put a number on checkerboards: the checkerboard pattern
# is the image $(-1)^{h + w}$, and the share of an image's variance along it is
# $c^2 / \mathrm{Var}(y)$ with $c = \frac1{784}\sum_{h,w} (-1)^{h+w} y_{hw}$. For white noise that
# share is $1/784$ on average; a smooth image has almost none.
#
# A surprise first: the *untrained* decoder's samples are strongly checkered. Sub-pixel
# convolution removed the uneven overlap, but the four output phases of the last layer are
# four independently initialized filters, so at initialization neighbouring pixels come from
# different random filters. Training makes the phases agree. (ICNR initialization, Aitken et
# al. 2017, starts them equal: the layer is then nearest-neighbour upsampling followed by a
# convolution, checkerboard-free from step one.)

# %%
mu, _ = vae.encode(x_test[:16])                                  # (16, K)
z = np.random.default_rng(0).standard_normal((64, Z))            # (64, K) from the prior
samples = vae.decode_mean(z)                                     # (64, 784)
samples_untrained = cfg.build().decode_mean(z)                   # (64, 784), the same z, initial weights
checker = (-1.0) ** np.add.outer(np.arange(28), np.arange(28)).ravel()  # (784,)


def checker_share(images):
    """Mean share of each image's variance along the (-1)^(h+w) pattern.  (M, 784) -> float."""
    return float(np.mean((images @ checker / 784) ** 2 / images.var(axis=1)))


share_before, share_after = checker_share(samples_untrained), checker_share(samples)
print(f"checkerboard share of the samples' variance: untrained {share_before:.1e}, "
      f"trained {share_after:.1e} (white noise: {1 / 784:.1e})")
assert share_before > 10 / 784                                   # initialization: checkered
assert share_after < share_before / 5                            # training smooths it away
lo = samples_untrained[:16].min(axis=1, keepdims=True)
hi = samples_untrained[:16].max(axis=1, keepdims=True)
show(plots.reconstructions(x_test[:16], vae.decode_mean(mu)), "11_reconstructions.png")
show(plots.image_grid((samples_untrained[:16] - lo) / (hi - lo), ncol=8,
                      title="untrained ConvVAE samples, contrast stretched per image"), "11_samples_untrained.png")
show(plots.image_grid(samples, ncol=8, title="ConvVAE samples from the prior (pixel means)"), "11_samples.png")

fig = Figure(figsize=(11, 3.8), layout="constrained")
axes = fig.subplots(1, 3)
for ax, (title, cov) in zip(axes, [("transposed conv, k=3, s=2", cover_t3),
                                   ("transposed conv, k=4, s=2", cover_t4),
                                   ("sub-pixel conv, k=3, r=2", cover_sp)]):
    image = ax.imshow(cov, cmap="viridis", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="kernel taps per output pixel")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("How many kernel taps reach each output pixel (all-ones input and kernel)")
show(fig, "11_upsampling_coverage.png")

# %% [markdown]
# ## Takeaways
#
# * A convolution is an affine map applied to the rows of im2col; its backward is the affine
#   backward followed by col2im, the adjoint that sums overlapping windows.
# * The same sum can be computed in other orders: taps first (cheaper with few filters), or
#   by Winograd's minimal filtering (36 products per 4 × 4 tile instead of 144). The model
#   runs these; tests hold them equal to im2col.
# * Upsampling by a strided transposed convolution stamps kernels with uneven overlap when the
#   kernel size is not a multiple of the stride: checkerboards. Sub-pixel convolution (a
#   stride-1 convolution to $r^2$ times the channels, then depth-to-space) gives every output
#   pixel the same coverage. Its $r^2$ phases are separate filters, though: at random
#   initialization they disagree and the output is checkered until training aligns them.
# * Nothing else in the VAE changes: the same ELBO, reparameterization and trainer, and the
#   same end-to-end gradient check.
