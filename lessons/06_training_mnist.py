# %% [markdown]
# # 06. Training a VAE on MNIST
#
# **Goal.** Put the pieces together and train a VAE on binarized MNIST with a
# **two-dimensional** latent space, small enough to look at directly. First a few
# training steps written out by hand (batch, noise, `loss_and_grads`, Adam), then
# the real loop, `minivae.train.train`. Then read what the model learned: the
# training curves as distortion plus rate, reconstructions, samples from the
# prior, the latent space coloured by digit, the decoded manifold, and
# interpolations between two digits.
#
# **Builds on** lessons 1 to 5: the VAE idea (1), the KL (2), the
# reparameterization (3), the ELBO (4) and the Bernoulli decoder (5).
#
# **Runtime** about 1 minute on a laptop CPU (12 epochs over the 60,000 training
# images); about 10 seconds with `MINIVAE_QUICK=1` (10,000 images, 3 epochs, a
# smaller network).

# %%
import shutil

import numpy as np

from minivae import optim
from minivae.data import binarize
from minivae.lessons import out_dir, quick, show
from minivae.likelihoods import bernoulli_forward
from minivae.plots import image_grid, latent_scatter, manifold, pca_2d, reconstructions, training_curves
from minivae.train import TrainConfig, load_dataset, load_run, train

QUICK = quick()
rng = np.random.default_rng(6)

# %% [markdown]
# ## 1. The model and the data
#
# Encoder 784 → H → $(\mu, \log\sigma^2) \in \mathbb R^2 \times \mathbb R^2$, decoder 2 → H → 784 logits, ReLU, a
# Bernoulli likelihood; Adam with learning rate $10^{-3}$. Everything about a run
# is one frozen `TrainConfig`.
#
# The pixels of MNIST are grey levels in $[0, 1]$. The Bernoulli likelihood is a
# distribution over *bits* (lesson 5), so each grey level is read as the probability
# that the pixel is on: every training batch draws fresh bits
# (*dynamic binarization*, a free regularizer), and the test set is binarized once
# with a fixed seed so that every run is scored on the same bits.

# %%
if QUICK:
    cfg = TrainConfig(z_dim=2, hidden=(128,), epochs=3, batch_size=32, train_size=10_000, test_size=1000)
else:
    cfg = TrainConfig(z_dim=2, hidden=(400,), epochs=12)
data = load_dataset(cfg)
print(f"train {data.x_train.shape} grey levels, test {data.x_test.shape} bits; "
      f"config: K = {cfg.z_dim}, hidden {cfg.hidden}, {cfg.epochs} epochs, batch {cfg.batch_size}")
assert set(np.unique(data.x_test)) <= {0.0, 1.0}

# %% [markdown]
# ## 2. The number to beat
#
# A decoder that ignores $z$ can do no better than independent pixels with
# $p_d$ equal to the training frequency of pixel $d$ (the maximum-likelihood fit). It is a
# VAE whose posterior equals the prior: rate 0, and a distortion of
#
# $$ -\log p(x) = -\sum_d \big[x_d\log p_d + (1 - x_d)\log(1 - p_d)\big] . $$
#
# Whatever the latent adds must show up as a test $-$ELBO below that number. (The
# coin flip of lesson 5, $p_d = \tfrac12$, costs 543.4 nats.)

# %%
p = data.x_train.mean(axis=0).clip(1e-3, 1 - 1e-3)                # (D,) pixel frequencies
baseline = float(-bernoulli_forward(data.x_test, np.log(p / (1 - p)))[0].mean())
print(f"independent pixels: {baseline:.1f} nats per test image")

# %% [markdown]
# ## 3. Training steps by hand
#
# One step: draw a batch and its bits, draw the noise $\epsilon$ (an argument, so the
# step is reproducible), compute the mean $-$ELBO and all its gradients with the
# hand-derived backward pass, and let Adam update the parameters in place.
# The model keeps its parameters in one flat buffer `vae.flat`; `vae.views(buffer)`
# gives a dict of named views into any buffer of the same size, so
# `loss_and_grads` writes the gradients straight into `gflat`, and one
# whole-array Adam step updates everything.
#
# At initialization the logits are close to 0, every pixel is a coin flip, and
# the loss starts near $784\ln 2 = 543$ nats.

# %%
vae = cfg.build()
adam = optim.init_state(cfg.optimizer, vae.flat)
gflat = np.zeros(vae.n_params, dtype=vae.dtype)                   # (P,) every gradient
grads = vae.views(gflat)                                          # name -> view into gflat
losses = []
for step in range(60 if QUICK else 150):
    idx = rng.integers(0, len(data.x_train), cfg.batch_size)      # (B,)
    xb = binarize(data.x_train[idx], rng)                          # (B, D) fresh bits
    eps = rng.standard_normal((cfg.batch_size, cfg.z_dim), dtype=vae.dtype)  # (B, K)
    res = vae.loss_and_grads(xb, eps, grads=grads)                # mean -ELBO, grads into gflat
    adam = optim.step(vae.flat, gflat, adam, cfg.lr)               # in place
    losses.append(res.loss)
print(f"{vae.n_params:,} parameters; loss {losses[0]:.1f} -> {np.mean(losses[-10:]):.1f} "
      f"after {len(losses)} steps")
assert abs(losses[0] - 784 * np.log(2)) < 30                      # starts as a coin flip
assert np.mean(losses[-10:]) < 0.6 * losses[0]

# %% [markdown]
# ## 4. The training loop
#
# `train` runs exactly those steps and adds the bookkeeping: a shuffled order per
# epoch, a random generator per step seeded by (seed, epoch, step) so that a run
# interrupted and resumed is bit-for-bit the run that never stopped, the test
# $-$ELBO after every epoch (one latent sample per test image, fixed noise), a
# `metrics.csv`, and a checkpoint in the run folder. It refuses to overwrite a
# folder that holds a checkpoint, so the lesson starts from a clean one.
# (From the command line: `python -m minivae train --z-dim 2 --epochs 12`.)

# %%
run = out_dir() / "06_mnist_2d"
shutil.rmtree(run, ignore_errors=True)
train(cfg, run, progress=False, figures=False, data=data)
cfg, vae, _, state = load_run(run)                                # the trained model, from disk
history = state.history                                           # one dict per epoch
test = np.array([row["test_loss"] for row in history])            # (E,) test -ELBO
last = history[-1]
print("test -ELBO per epoch:", np.round(test, 1))
print(f"final: test -ELBO {last['test_loss']:.1f} = distortion {last['test_recon']:.1f} "
      f"+ rate {last['test_kl']:.2f} nats; independent pixels {baseline:.1f}")

assert np.all(np.diff(test) < 0.5)                                # down epoch over epoch (noise: 0.5 nat)
assert test[-1] < test[0] - 5
assert test[-1] < baseline - 15                                   # the 2-D latent buys > 15 nats
assert test[-1] < (185 if QUICK else 160)                         # sane for a 2-D latent at this budget
assert abs(last["test_loss"] - last["test_recon"] - last["test_kl"]) < 1e-6 * last["test_loss"]
assert last["test_kl"] > 1                                         # the latent is used

# %% [markdown]
# ## 5. Reading the curves: distortion and rate
#
# Split the loss as in lesson 4:
#
# $$ -\mathrm{ELBO}(x) = \underbrace{-\mathbb E_{q(z\mid x)}\log p(x \mid z)}_{\text{distortion}}
#    + \underbrace{\mathrm{KL}(q(z \mid x)\,\|\,p(z))}_{\text{rate}} . $$
#
# The rate is what the encoder pays, in nats, to tell the decoder about $x$; the
# distortion is what is still unexplained. With two latent dimensions the rate
# stays at a few nats: a 2-D Gaussian code cannot say much, and most of the
# $-$ELBO is distortion. Lesson 7 moves along this trade-off on purpose.
#
# The train curve lies above the test curve early on: it is averaged over the
# epoch while the model is still improving, and each training image comes with
# fresh bits; the test value is measured at the end of the epoch.

# %%
show(training_curves(history), "06_curves.png")

# %% [markdown]
# ## 6. Reconstructions and samples
#
# A reconstruction decodes the posterior mean, $\mathbb E[x \mid z = \mu(x)]$ (pixel
# probabilities, not bits); a sample decodes $z \sim \mathcal N(0, I)$. With only two
# latent numbers the reconstructions keep the digit's identity and rough shape
# and lose the details: the blur of lesson 5, since many images share each $z$.

# %%
x_test, y_test = data.x_test, data.y_test
mu, log_var = vae.encode(x_test)                                  # (M, K) each
recon = vae.decode_mean(mu[:16])                                  # (16, D) in [0, 1]
samples = vae.decode_mean(rng.standard_normal((64, cfg.z_dim), dtype=vae.dtype))  # (64, D)
assert recon.min() >= 0 and recon.max() <= 1 and samples.min() >= 0 and samples.max() <= 1
show(reconstructions(x_test[:16], recon), "06_reconstructions.png")
show(image_grid(samples, ncol=8, title="samples from the prior (pixel means)"), "06_samples.png")

# %% [markdown]
# ## 7. The latent space
#
# Nothing told the model about digit labels, yet the posterior means of the test
# images form a region per digit. One way to put a number on it: a
# *nearest-class-mean* classifier on $\mu$ (the class means computed on training
# images) predicts the label far better than chance (10%). The same classifier on
# the best *linear* 2-D summary of the pixels, their first two principal
# components, does worse: the encoder's nonlinear map arranges digits better.
#
# The *manifold* decodes a grid of $z$ at the prior's quantiles, so that equal
# steps in the picture are equal amounts of prior mass: digits morph into their
# neighbours.

# %%
from minivae.diagnostics import nearest_mean_accuracy  # noqa: E402

n_fit = min(10_000, len(data.x_train))
x_fit = binarize(data.x_train[:n_fit], rng)                       # (n, D) bits, like training
mu_fit = vae.encode(x_fit)[0]                                     # (n, K)
acc_vae = nearest_mean_accuracy(mu_fit, data.y_train[:n_fit], mu, y_test)
pcs = pca_2d(np.concatenate([x_fit, x_test]))[0]                  # (n + M, 2), labels unused
acc_pca = nearest_mean_accuracy(pcs[:n_fit], data.y_train[:n_fit], pcs[n_fit:], y_test)
print(f"nearest class mean on the 2-D code: {acc_vae:.1%}; on 2 principal components: {acc_pca:.1%}")
assert acc_vae > 0.30 and acc_vae > acc_pca

show(latent_scatter(mu[:2000], y_test[:2000]), "06_latent.png")
show(manifold(vae.decode_mean), "06_manifold.png")

# %% [markdown]
# ## 8. Interpolating between two digits
#
# Take two test images $x_a, x_b$, encode them, and decode the straight line
# $z(t) = (1 - t)\,\mu(x_a) + t\,\mu(x_b)$ for $t$ from 0 to 1. The path starts and ends
# at the two reconstructions, every point on it is an image (the decoder's
# sigmoid keeps each pixel in $[0, 1]$), and it changes gradually: the decoder is a
# continuous function of $z$, so on a fine path no single step jumps from one
# image to the other. Compare blending pixels, $(1 - t)\,x_a + t\,x_b$: the midpoint is
# two digits on top of each other.

# %%
pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]                 # test indices: 7-2, 1-0, 4-1, 4-9, 5-9
t = np.linspace(0, 1, 10)[:, None]                                # (T, 1) figure steps
t_fine = np.linspace(0, 1, 50)[:, None]                           # (T', 1) for the continuity check
rows = []
for a, b in pairs:
    z_line = (1 - t) * mu[a] + t * mu[b]                          # (T, K)
    path = vae.decode_mean(z_line)                                # (T, D)
    np.testing.assert_allclose(path[[0, -1]], vae.decode_mean(mu[[a, b]]), rtol=1e-5, atol=1e-6)
    fine = vae.decode_mean((1 - t_fine) * mu[a] + t_fine * mu[b])  # (T', D)
    jumps = np.linalg.norm(np.diff(fine, axis=0), axis=1)          # (T'-1,) step sizes
    assert jumps.max() < 0.35 * np.linalg.norm(fine[-1] - fine[0])
    assert fine.min() >= 0 and fine.max() <= 1
    blend = (1 - t) * x_test[a] + t * x_test[b]                   # (T, D) pixel blending
    rows += [path, blend]
    print(f"digit {y_test[a]} -> {y_test[b]}: largest of 49 steps = "
          f"{jumps.max() / np.linalg.norm(fine[-1] - fine[0]):.0%} of the total change")
grid = np.concatenate(rows)                                       # (2 * pairs * T, D)
show(image_grid(grid, ncol=len(t), title="pairs of rows: decoded latent line, then pixel blend"),
     "06_interpolation.png")

# %% [markdown]
# ## Summary
#
# * A training step is: a batch and fresh bits, noise $\epsilon$, `loss_and_grads`
#   (the whole hand-derived backward pass), one Adam step on the flat buffer.
#   `train` adds shuffling, per-step seeds, evaluation, metrics and checkpoints.
# * The test $-$ELBO falls epoch after epoch, well below the independent-pixel
#   baseline; it is mostly distortion, because a 2-D code carries only a few nats.
# * Without labels, the 2-D latent space groups the digits (a nearest-class-mean
#   classifier on $\mu$ beats chance and beats two principal components), its grid
#   decodes to a continuous map of digits, and straight lines in it decode to
#   gradual morphs, not superpositions.
#
# Next, lesson 7: the weight on the KL, $\beta$, and the rate-distortion trade-off.
