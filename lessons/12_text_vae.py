# %% [markdown]
# # 12. Text: a bag-of-words VAE and document clustering
#
# **Goal.** Model documents instead of images. A document becomes a vector of word counts,
# the decoder a softmax over the vocabulary (the multinomial likelihood), and the VAE is
# the neural variational document model of Miao, Yu & Blunsom (2016). We train it on a
# synthetic corpus drawn from a known topic model, so that everything it learns can be
# checked against the truth: its perplexity against a unigram model and against an oracle,
# whether documents of different topics separate in the latent space, and whether the
# decoder has found the topics.
#
# **Builds on** lesson 5 (decoders and their likelihoods), lesson 6 (training) and
# lesson 9 (importance-sampled $\log p(x)$).
#
# **Runtime** on a laptop CPU: about 10 seconds (a few seconds with `MINIVAE_QUICK=1`).

# %% [markdown]
# ## Documents as counts, and the multinomial likelihood
#
# Fix a vocabulary of $V$ words. Document $n$ becomes $x_n \in \mathbb N^V$, $x_{nd}$ = how
# often word $d$ occurs, with length $L_n = \sum_d x_{nd}$; the word order is thrown away.
# The decoder maps $z$ to one distribution over the vocabulary,
#
# $$ p_d(z) = \mathrm{softmax}(zW + b)_d = \frac{e^{(zW + b)_d}}{\sum_{d'} e^{(zW+b)_{d'}}}, $$
#
# and the document's words are $L_n$ independent draws from it:
#
# $$ p(x \mid z) = \frac{L!}{\prod_d x_d!} \prod_d p_d(z)^{x_d}, \qquad
#    \log p(x \mid z) = \underbrace{\log\frac{L!}{\prod_d x_d!}}_{\text{no parameters}} + \sum_d x_d \log p_d(z). $$
#
# The multinomial coefficient counts the orderings of the words; it depends on neither $z$ nor
# the decoder, so the `categorical` likelihood leaves it out and scores the document as the
# ordered sequence of its words. The gradient with respect to the logits $\ell = zW + b$ is
#
# $$ \frac{\partial}{\partial \ell_d}\Big[\sum_{d'} x_{d'} \ell_{d'} - L \log\sum_{d'} e^{\ell_{d'}}\Big] = x_d - L\, p_d(z): $$
#
# observed counts minus expected counts.
#
# With a *linear* decoder (`decoder_hidden=()`), $b$ holds the log-frequencies of an average
# document and each latent coordinate $z_k$ adds the word profile $W_k$ to the logits: a
# log-linear topic model. The encoder stays an MLP from counts to $(\mu, \log\sigma^2)$.
#
# **Perplexity** measures a language model per word:
#
# $$ \mathrm{PPL} = \exp\Big(-\frac{\sum_n \log p(x_n)}{\sum_n L_n}\Big). $$
#
# A model that spreads its probability evenly over $V$ words has perplexity exactly $V$; a
# perplexity of 60 means the model is as uncertain about each next word as a uniform choice
# among 60. With the ELBO in place of $\log p(x_n)$ we get an upper bound on the model's
# perplexity; with the importance-weighted bound $\mathcal L_S$ of lesson 9 a tighter one.

# %%
import shutil

import numpy as np
from matplotlib.figure import Figure

from minivae.diagnostics import kl_per_dimension
from minivae.estimate import estimate_log_px
from minivae.lessons import out_dir, quick, show
from minivae.plots import pca_2d
from minivae.text import perplexity, top_words, topic_recovery
from minivae.train import (TOPICS, TrainConfig, corpus_splits, load_run, load_split, top_words_text,
                           train)

QUICK = quick()
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## The corpus
#
# `TrainConfig(dataset="topics")` uses a fixed corpus from `minivae.text.make_topic_corpus`:
# 6000 documents of 40 to 80 words over $V = 200$ words, from $T = 4$ topics (sport, music,
# science, food). Each topic owns a block of 40 words ("sport0" ... "sport39") and puts 90%
# of its mass there and 10% on 40 shared background words ("the", "and", ...). Each document
# has a dominant topic (its label) and a little of the others, drawn from a Dirichlet. The
# corpus is split 80/20 into training and test documents, and it keeps the truth: the topic
# distributions $\beta_t$ and every document's mixture $\theta_n$.

# %%
train_corpus, test_corpus = corpus_splits("topics", "")
vocab, names, topics = train_corpus.vocab, train_corpus.label_names, train_corpus.topics  # topics (T, V)
T, V = topics.shape
print(f"{len(train_corpus.counts)} training and {len(test_corpus.counts)} test documents, V = {V}, "
      f"T = {T} topics: {', '.join(names)}")
for t in range(T):
    print(f"  {names[t]:8s} most probable words: {' '.join(top_words(topics[t], vocab, 8))}")
assert (T, V) == (TOPICS["n_topics"], TOPICS["vocab_size"])

# %% [markdown]
# ## Training the document VAE
#
# Encoder 200-100-4 (ReLU), a 4-dimensional latent, a linear softmax decoder. Training is
# fast: the data are small.

# %%
run = out_dir() / "runs" / "12_text_vae"
shutil.rmtree(run, ignore_errors=True)
cfg = TrainConfig(dataset="topics", likelihood="categorical", hidden=(100,), decoder_hidden=(), z_dim=4,
                  batch_size=64, epochs=15 if QUICK else 40, seed=0)
last = train(cfg, run, progress=False, figures=False)
_, vae, _, state = load_run(run)
x_train, y_train = load_split(cfg, "train")                      # (N, V) counts, (N,) topics
x_test, y_test = load_split(cfg, "test")                         # (M, V), (M,)
assert np.array_equal(x_test, test_corpus.counts.astype(cfg.dtype))
print(f"trained {cfg.epochs} epochs in {state.seconds:.1f} s; test -ELBO {last['test_loss']:.1f} nats per document")

# %% [markdown]
# ## Perplexity, against three references
#
# * **uniform**: every word probability $1/V$, perplexity $V = 200$;
# * **unigram**: one word distribution for every document, the training corpus's word
#   frequencies (add-one smoothed), $\log p(x_n) = \sum_d x_{nd}\log u_d$;
# * **oracle**: the true generative model *given each test document's true mixture*,
#   $\log p(x_n \mid \theta_n) = \sum_d x_{nd} \log(\theta_n^\top\beta)_d$. No model of $p(x)$ can
#   match it on average: it knows $\theta_n$, which the text only hints at. (The difference
#   is the mutual information between a document and its mixture.)
#
# For the VAE we use the ELBO (averaged over 20 samples of $z$ per document) and the
# importance-weighted estimate $\mathcal L_S$ with the encoder as proposal.

# %%
S_IW = 50 if QUICK else 500
elbo = vae.elbo(x_test, np.random.default_rng(1).standard_normal((20, len(x_test), cfg.z_dim)))  # (M,)
iw = estimate_log_px(vae, x_test, S_IW, np.random.default_rng(2))
unigram = (x_train.sum(axis=0) + 1) / (x_train.sum() + V)       # (V,), add-one smoothed
oracle = np.sum(test_corpus.counts * np.log(test_corpus.mixtures @ topics), axis=1)  # (M,)
ppl = {"uniform": perplexity(-x_test.sum(axis=1) * np.log(V), x_test),
       "unigram": perplexity(x_test @ np.log(unigram), x_test),
       "VAE (ELBO)": perplexity(elbo, x_test),
       f"VAE (L_{S_IW})": perplexity(iw.log_px, x_test),
       "oracle (knows theta_n)": perplexity(oracle, x_test)}
for name, value in ppl.items():
    print(f"  {name:24s} perplexity {value:7.2f}")
assert abs(ppl["uniform"] - V) < 1e-6 * V
assert ppl["VAE (ELBO)"] < 0.7 * ppl["unigram"] < 0.7 * V       # far better than word frequencies
assert ppl[f"VAE (L_{S_IW})"] < ppl["VAE (ELBO)"]                 # the tighter bound
assert ppl["oracle (knows theta_n)"] < ppl[f"VAE (L_{S_IW})"]     # and nothing beats the oracle

# %% [markdown]
# ## Do the topics separate in the latent space?
#
# The encoder's means $\mu(x)$ of test documents, projected onto their first two principal
# axes, coloured by the true dominant topic. A simple quantitative check: compute each
# topic's centroid of $\mu$ on the *training* documents and label every test document by
# the nearest centroid. Chance is about 1/4; its binomial standard error on
# $M$ test documents is $\sqrt{p(1-p)/M}$.

# %%
mu_train, _ = vae.encode(x_train)                                # (N, K)
mu_test, log_var_test = vae.encode(x_test)                       # (M, K) each
centroids = np.stack([mu_train[y_train == t].mean(axis=0) for t in range(T)])  # (T, K)
pred = np.argmin(np.sum((mu_test[:, None, :] - centroids[None]) ** 2, axis=-1), axis=1)  # (M,)
accuracy = float(np.mean(pred == y_test))
chance = float(np.max(np.bincount(y_test, minlength=T)) / len(y_test))  # always guessing the largest topic
se = np.sqrt(chance * (1 - chance) / len(y_test))
print(f"nearest-centroid accuracy {accuracy:.3f}  (chance {chance:.3f}, its se {se:.3f})")
assert accuracy > chance + 20 * se

# %% [markdown]
# ## What did the decoder learn?
#
# **Latent directions.** `top_words_text` lists, for each latent coordinate, the words whose
# logits rise most (+) and fall most (−) when $z_k$ goes from 0 to 2. Read them: a direction
# is typically a *contrast*, one topic up and another down, sometimes a blend.
#
# That is not a failure of training but a symmetry of the model: the prior $\mathcal N(0, I)$
# is unchanged by a rotation $z \mapsto zR$, and the decoder $\mathrm{softmax}(zW + b)$ is
# unchanged if $W \mapsto R^\top W$ at the same time, so the ELBO cannot prefer one basis of
# the latent space over another. (Topic models with a Dirichlet-like prior, e.g. ProdLDA,
# break this symmetry on purpose.) We still measure how close the directions come:
# `topic_recovery` takes the cosine similarity of each mean-centred row of $W$ with each true
# topic and averages, over topics, the best match. As a reference, rows of random numbers.
#
# **Topic centroids.** The centroids of the four topics in latent space do not depend on the
# basis. Decoded, $\mathrm{softmax}(\bar\mu_t W + b)$, they should be the word distributions of
# documents of topic $t$, mostly $\beta_t$ with a little of the others. And the words whose
# log-probability rises most from the average document to centroid $t$ should be words of
# topic $t$.

# %%
kl_dims = kl_per_dimension(mu_test, log_var_test)               # (K,)
print(top_words_text(vae, vocab, kl_dims, k=8))

W = vae.params["dec.out.W"].astype(np.float64)                  # (K, V)
W_centred = W - W.mean(axis=1, keepdims=True)
by_direction = topic_recovery(W_centred, topics)
rng = np.random.default_rng(3)
random_scores = np.array([topic_recovery(rng.standard_normal(W.shape), topics).score for _ in range(200)])
print(f"topic recovery by latent directions: {by_direction.score:.3f}  "
      f"(random directions: {random_scores.mean():.3f} +- {random_scores.std():.3f})")
assert by_direction.score > random_scores.mean() + 5 * random_scores.std()

decoded = vae.decode_mean(centroids).astype(np.float64)          # (T, V) word distributions
by_centroid = topic_recovery(decoded, topics)
print(f"topic recovery by decoded centroids: {by_centroid.score:.3f}, matches {by_centroid.match.tolist()}")
assert by_centroid.score > 0.9 and by_centroid.match.tolist() == list(range(T))

mean_doc = vae.decode_mean(mu_train.mean(axis=0, keepdims=True)).astype(np.float64)  # (1, V)
lift = np.log(decoded) - np.log(mean_doc)                        # (T, V) log-probability gain
for t in range(T):
    words = top_words(lift[t], vocab, 10)
    print(f"  centroid of {names[t]:8s} promotes: {' '.join(words)}")
    assert all(w.startswith(names[t]) for w in words)

# %% [markdown]
# ## The figure
#
# (a) The latent means of test documents (first two principal axes), coloured by topic.
# (b) The true topics $\beta_t$ and (c) the decoded topic centroids, as heat maps over the
# vocabulary (the four blocks, then the background words). (d) The cosine similarity of each
# latent direction with each topic: directions are contrasts, not topics.

# %%
fig = Figure(figsize=(13, 9), layout="constrained")
(ax_a, ax_d), (ax_b, ax_c) = fig.subplots(2, 2)
xy, explained = pca_2d(mu_test)                                  # (M, 2), (2,)
centre = mu_test.mean(axis=0)                                    # (K,)
axes_2d = np.linalg.lstsq(mu_test - centre, xy, rcond=None)[0]   # (K, 2): the projection pca_2d used
for t in range(T):
    ax_a.scatter(xy[y_test == t, 0], xy[y_test == t, 1], s=5, alpha=0.6, color=f"C{t}", label=names[t])
ax_a.scatter(*((centroids - centre) @ axes_2d).T, marker="X", s=120, color="k", label="training centroids")
ax_a.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
ax_a.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of variance)")
ax_a.set_title(f"(a) posterior means of test documents; nearest-centroid accuracy {accuracy:.2f}")
legend = ax_a.legend()
for handle in legend.legend_handles:
    handle.set_sizes([40])

vmax = max(topics.max(), decoded.max())
for ax, data, title in [(ax_b, topics, r"(b) true topics $\beta_t$"),
                        (ax_c, decoded, r"(c) decoded centroids softmax$(\bar\mu_t W + b)$")]:
    image = ax.imshow(data, aspect="auto", cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_yticks(range(T), names)
    ax.set_xlabel("word index (four topic blocks, then background words)")
    ax.set_title(title)
fig.colorbar(image, ax=[ax_b, ax_c], label="word probability")

image = ax_d.imshow(by_direction.similarity, cmap="RdBu_r", vmin=-1, vmax=1)
for k in range(W.shape[0]):
    for t in range(T):
        ax_d.text(t, k, f"{by_direction.similarity[k, t]:.2f}", ha="center", va="center", fontsize=9)
ax_d.set_xticks(range(T), names)
ax_d.set_yticks(range(W.shape[0]), [f"z{k}" for k in range(W.shape[0])])
ax_d.set_title(f"(d) cosine of latent directions with topics (score {by_direction.score:.2f})")
fig.colorbar(image, ax=ax_d, label="cosine similarity")
show(fig, "12_text_vae.png")

# %% [markdown]
# ## Takeaways
#
# * A bag-of-words VAE is the image VAE with a different likelihood: one softmax over the
#   vocabulary, scored by the counts; its gradient is observed minus expected counts.
# * Perplexity turns a (bound on the) log-likelihood into "how many equally likely words";
#   the ELBO gives an upper bound on it, the importance-weighted bound a tighter one.
# * The latent space clusters documents by topic, and the topic centroids decode to the true
#   topics. Individual latent directions need not: a Gaussian prior does not care about the
#   basis, so interpret regions (or rotate) rather than reading single coordinates.
