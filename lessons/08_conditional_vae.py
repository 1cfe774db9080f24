# %% [markdown]
# # 08. The conditional VAE: content from the label, style from z
#
# **Goal.** Give both the encoder and the decoder the digit's label $c$:
# $q(z \mid x, c)$ and $p(x \mid z, c)$. Derive the conditional ELBO and what the label
# can be worth in nats; train a conditional and an unconditional VAE the same way
# and compare them; show that the conditional model's latent stops encoding the
# digit's identity and keeps its *style*; and generate every digit from the same
# $z$'s, so that each column holds one handwriting and each row one digit.
#
# **Builds on** lesson 6 (training an MNIST VAE with a 2-D latent) and lesson 7
# (rate and distortion).
#
# **Runtime** about 40 seconds on a laptop CPU (two runs of 6 epochs); a few
# seconds with `MINIVAE_QUICK=1`.

# %%
import math
import shutil

import numpy as np
from matplotlib.figure import Figure

from minivae.data import binarize
from minivae.lessons import out_dir, quick, show
from minivae.plots import image_grid, tile
from minivae.train import TrainConfig, load_dataset, load_run, one_hot, train

QUICK = quick()
rng = np.random.default_rng(8)

# %% [markdown]
# ## 1. The model
#
# The conditional VAE (Sohn, Lee and Yan, 2015; Kingma et al., 2014) models
# $p(x \mid c) = \int p(z)\,p(x \mid z, c)\,dz$ with the same prior $p(z) = \mathcal N(0, I)$ for every
# class. The derivation of lesson 4, with $c$ carried along, gives
#
# $$ \log p(x \mid c) \ \ge\ \mathbb E_{q(z \mid x, c)}\big[\log p(x \mid z, c)\big] - \mathrm{KL}\big(q(z \mid x, c)\,\|\,p(z)\big). $$
#
# Nothing else changes: the label, one-hot in $\mathbb R^{10}$, is concatenated to the
# encoder's input ($x$ becomes $[x, c]$, 794 numbers) and to the decoder's input
# ($z$ becomes $[z, c]$). The backward pass is the same; the gradient that reaches
# $c$ is dropped, as for $x$, since both are data.
#
# **Why $z$ should lose the label.** The decoder gets $c$ for free. Any nat of rate
# that $z$ spends on saying which digit it is would be wasted, so the KL pushes
# the code toward what the label does not say: thickness, slant, width, the
# handwriting. In the ideal case $z$ is independent of $c$.

# %%
if QUICK:
    base = TrainConfig(z_dim=2, hidden=(128,), epochs=3, batch_size=32, train_size=10_000, test_size=1000)
else:
    base = TrainConfig(z_dim=2, hidden=(256,), epochs=6)
data = load_dataset(base)
c_test = one_hot(data.y_test)                                     # (M, 10)
cvae_shapes = TrainConfig(**{**base.to_json(), "conditional": True}).build().shapes
print("conditional:", {k: cvae_shapes[k] for k in ("enc.0.W", "dec.0.W")},
      " unconditional:", {k: base.build().shapes[k] for k in ("enc.0.W", "dec.0.W")})
assert cvae_shapes["enc.0.W"][0] == 784 + 10 and cvae_shapes["dec.0.W"][0] == base.z_dim + 10

# %% [markdown]
# ## 2. Two models, trained the same way
#
# Same data, seed, network and budget; one with `conditional=True`. The trainer
# feeds `one_hot(label)` with every batch, and evaluates the test $-$ELBO with
# the true labels.

# %%
models = {}
for conditional in (False, True):
    cfg = TrainConfig(**{**base.to_json(), "conditional": conditional})
    folder = out_dir() / ("08_cvae" if conditional else "08_vae")
    shutil.rmtree(folder, ignore_errors=True)                     # train refuses an existing run
    row = train(cfg, folder, progress=False, figures=False, data=data)
    models[conditional] = dict(vae=load_run(folder)[1], loss=row["test_loss"], rate=row["test_kl"],
                               distortion=row["test_recon"])
vae, cvae = models[False]["vae"], models[True]["vae"]
for conditional, m in models.items():
    print(f"{'conditional  ' if conditional else 'unconditional'}: test -ELBO {m['loss']:.2f} = "
          f"distortion {m['distortion']:.2f} + rate {m['rate']:.2f}")

# %% [markdown]
# ## 3. What is the label worth?
#
# The two numbers bound different things: the VAE's $-$ELBO bounds $-\log p(x)$, the
# conditional one bounds $-\log p(x \mid c)$. For the true distribution of the data,
#
# $$ \mathbb E[-\log p(x \mid c)] = H(X \mid C) = H(X) - I(X; C), \qquad I(X; C) \le H(C) = \log 10 = 2.30 \text{ nats}: $$
#
# knowing the label can save at most 2.30 nats per image, the cost of writing
# the label down. The gap we measure is many times larger. It is not information
# in the label: it says the unconditional model is the worse model. A fair
# comparison turns the conditional model into a model of $x$ alone by drawing the
# label uniformly, $\tilde p(x) = \sum_c \tfrac1{10}\,p(x \mid c) \ge \tfrac1{10}\,p(x \mid c_{\text{true}})$, so
#
# $$ -\log\tilde p(x) \ \le\ -\mathrm{ELBO}(x \mid c_{\text{true}}) + \log 10 . $$
#
# Even after paying $\log 10$ nats for the label, the conditional model describes
# the test digits better than the VAE does. The label is, in effect, a 10-valued
# discrete latent variable (observed here) on top of the 2-D Gaussian one; a 2-D
# Gaussian alone has to squeeze ten separate clusters into one blob, and pays
# for it in distortion. The conditional model also needs less rate: its $z$ no
# longer says which digit it is.

# %%
gap = models[False]["loss"] - models[True]["loss"]
print(f"-ELBO gap {gap:.1f} nats; with log 10 = {math.log(10):.2f} paid for the label: "
      f"{gap - math.log(10):.1f} nats in favour of the conditional model")
assert gap > 3 * math.log(10)                                      # many times the label's worth
assert models[True]["loss"] + math.log(10) < models[False]["loss"]
assert models[True]["rate"] < models[False]["rate"]

# %% [markdown]
# ## 4. The latent keeps the style, not the digit
#
# Lesson 6's test: classify the test images by the nearest class mean of their
# posterior means $\mu$. On the VAE's latent this works well; on the conditional
# model's latent (encoded with the true labels) it falls toward chance (10%):
# the digit's identity has left $z$.

# %%
from minivae.diagnostics import nearest_mean_accuracy  # noqa: E402

n_fit = min(10_000, len(data.x_train))
x_fit, y_fit = binarize(data.x_train[:n_fit], rng), data.y_train[:n_fit]  # (n, D), (n,)
mu_vae = vae.encode(data.x_test)[0]                               # (M, 2)
mu_cvae = cvae.encode(data.x_test, c_test)[0]                     # (M, 2)
acc_vae = nearest_mean_accuracy(vae.encode(x_fit)[0], y_fit, mu_vae, data.y_test)
acc_cvae = nearest_mean_accuracy(cvae.encode(x_fit, one_hot(y_fit))[0], y_fit, mu_cvae, data.y_test)
print(f"digit from z by nearest class mean: VAE {acc_vae:.1%}, conditional VAE {acc_cvae:.1%} (chance 10%)")
assert acc_cvae < acc_vae - 0.15

fig = Figure(figsize=(11, 4.6), layout="constrained")
for ax, mu_, title in zip(fig.subplots(1, 2), [mu_vae, mu_cvae],
                          ["VAE: q(z | x)", "conditional VAE: q(z | x, c)"]):
    points = ax.scatter(mu_[:2000, 0], mu_[:2000, 1], c=data.y_test[:2000], cmap="tab10",
                        vmin=-0.5, vmax=9.5, s=4, alpha=0.7, linewidths=0)
    ax.set_xlabel(r"$\mu_1$")
    ax.set_ylabel(r"$\mu_2$")
    ax.set_title(f"posterior means of test digits, {title}")
fig.colorbar(points, ax=fig.axes, ticks=range(10), label="digit")
show(fig, "08_latents.png")

# %% [markdown]
# ## 5. Generating every digit in the same handwriting
#
# Draw eight $z \sim \mathcal N(0, I)$ and decode each with each of the ten labels: a row
# per digit, a column per $z$. Content comes from $c$, style from $z$.
#
# Two checks. *The label sets the content:* a nearest-class-mean classifier on
# pixels (class means of real training images) reads the intended digit from
# most generated images. *The label matters more than the style:* switching the
# label changes the decoded image far more than nudging $z$ by 0.1 in a random
# direction, and more than moving $z$ by a whole prior standard deviation.

# %%
z = rng.standard_normal((8, base.z_dim), dtype=cvae.dtype)        # (8, K): eight styles
Z = np.tile(z, (10, 1))                                           # (80, K): row-major, class by class
C = one_hot(np.repeat(np.arange(10), 8))                          # (80, 10)
grid = cvae.decode_mean(Z, C)                                     # (80, D)
show(image_grid(grid, ncol=8, title="one row per label (0 to 9), the same z in each column"), "08_same_style.png")

images = grid.reshape(10, 8, -1)                                  # (class, style, D)
d_label = np.mean([np.linalg.norm(images[a] - images[b], axis=-1).mean()
                   for a in range(10) for b in range(10) if a != b])
u = rng.standard_normal(Z.shape)
u = (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(cvae.dtype)  # (80, K) unit directions
d_nudge = np.linalg.norm(cvae.decode_mean(Z + 0.1 * u, C) - grid, axis=-1).mean()
d_step = np.linalg.norm(cvae.decode_mean(Z + 1.0 * u, C) - grid, axis=-1).mean()
print(f"mean image distance: other label {d_label:.2f}, z moved by 0.1: {d_nudge:.2f}, by 1: {d_step:.2f}")
assert d_label > 5 * d_nudge and d_label > d_step

pixel_means = np.stack([data.x_train[data.y_train == k].mean(axis=0) for k in range(10)])  # (10, D)
labels = np.arange(1000) % 10                                     # (1000,) intended digits
generated = cvae.decode_mean(rng.standard_normal((1000, base.z_dim), dtype=cvae.dtype), one_hot(labels))
acc_generated = nearest_mean_accuracy(pixel_means, np.arange(10), generated, labels)
acc_real = nearest_mean_accuracy(pixel_means, np.arange(10), data.x_test, data.y_test)
print(f"pixel nearest-class-mean reads the intended digit in {acc_generated:.1%} of generated images "
      f"({acc_real:.1%} of real test images)")
assert acc_generated > 0.6

# %% [markdown]
# ## 6. Style transfer
#
# Encode a real test digit with its own label, $z = \mu(x, c_{\text{true}})$, and decode that $z$
# with every label: the same handwriting writes all ten digits. One measurable
# piece of style is the amount of ink: a test digit written with more ink than
# is usual for its class should give ten digits with more ink than usual too.
# Across test images, the input's ink (relative to its class's average) and the
# mean ink of its ten transfers are positively correlated.

# %%
n_style = min(1000, len(data.x_test))
x_s, y_s = data.x_test[:n_style], data.y_test[:n_style]           # (n, D), (n,)
z_s = cvae.encode(x_s, one_hot(y_s))[0]                           # (n, K) the style of each image
transfers = np.stack([cvae.decode_mean(z_s, one_hot(np.full(n_style, k))) for k in range(10)])  # (10, n, D)
ink_in = x_s.mean(axis=1)                                         # (n,)
ink_in_rel = ink_in - np.array([ink_in[y_s == k].mean() for k in range(10)])[y_s]  # minus class average
ink_out = transfers.mean(axis=(0, 2))                             # (n,) mean over labels and pixels
corr = float(np.corrcoef(ink_in_rel, ink_out)[0, 1])
print(f"correlation of input ink (relative to its class) with the transfers' ink: {corr:.2f}")
assert corr > 0.2

shown = np.arange(8)                                              # the first eight test digits
rows = np.concatenate([x_s[shown, None], transfers[:, shown].transpose(1, 0, 2)], axis=1)  # (8, 11, D)
fig = Figure(figsize=(8, 6.4), layout="constrained")
ax = fig.add_subplot()
ax.imshow(tile(rows.reshape(-1, rows.shape[-1]), ncol=11), cmap="gray", vmin=0, vmax=1,
          interpolation="nearest")
ax.set_xticks(np.arange(11) * 29 + 13.5, ["input"] + [f"c={k}" for k in range(10)])
ax.set_yticks([])
ax.set_title("style transfer: z from the input (with its label), decoded with every label")
show(fig, "08_style_transfer.png")

# %% [markdown]
# ## Summary
#
# * The conditional VAE feeds the label to both networks; its ELBO bounds
#   $\log p(x \mid c)$ and its backward pass is unchanged.
# * The label is worth at most $\log 10 = 2.30$ nats of true likelihood; the
#   conditional model's much larger lead in $-$ELBO, still there after paying
#   $\log 10$, shows how much a 2-D Gaussian latent struggles to hold ten clusters.
# * With the content supplied by $c$, the latent keeps the style: the digit can
#   no longer be read from $z$, and one $z$ writes all ten digits in one hand.
#
# Next, lesson 9: estimating $\log p(x)$ itself, beyond the ELBO.
