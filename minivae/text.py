r"""Bag-of-words data for the document VAE: a synthetic topic corpus, a loader, perplexity.

A document becomes a **bag of words**: a vector $x \in \mathbb{N}^V$ of word counts
over a fixed vocabulary of $V$ words, word order thrown away. With the
"categorical" likelihood of :mod:`minivae.likelihoods` the decoder maps $z$ to
one softmax over the vocabulary and scores the document by

$$ \log p(x \mid z) = \sum_{d=1}^{V} x_d \log \mathrm{softmax}(\ell(z))_d , $$

the log-probability of its words drawn one after another (the multinomial
coefficient, which no model can change, is left out). This is the neural
variational document model of Miao, Yu & Blunsom (2016), "Neural Variational
Inference for Text Processing", ICML. Taught in lesson 12.

**The synthetic corpus** (``make_topic_corpus``) is drawn from a known topic
model, so that what a VAE learns can be checked against the truth. With $T$
topics, sharpness $s$ and mixing concentration $m$:

1. Topic $t$ owns a block $B_t$ of the vocabulary (words "sport0", "sport1", ...);
   its word distribution is $\beta_t = s\,u_t + (1 - s)\,b$, with
   $u_t \sim \mathrm{Dirichlet}(\mathbf 1)$ on $B_t$ (zero elsewhere, sorted so
   that "sport0" is the most frequent word of its block) and $b$ a fixed Zipf
   distribution on shared background words ("the", "and", ...).
2. Document $n$ has a dominant topic $y_n \sim \mathrm{Uniform}\{0..T-1\}$ (its
   label) and topic proportions $\theta_n \sim \mathrm{Dirichlet}(\alpha)$ with
   $\alpha_{y_n} = 1$ and $\alpha_t = m$ for the other topics (then the largest
   proportion is swapped into place $y_n$, so $y_n = \arg\max_t \theta_{nt}$ always).
3. Its length is $L_n \sim \mathrm{Uniform}\{L_{\min}..L_{\max}\}$ and its counts are
   $x_n \sim \mathrm{Multinomial}(L_n, \theta_n^\top \beta)$.

**Perplexity** is the exponentiated average negative log-likelihood per word,

$$ \mathrm{PPL} = \exp\Big(-\frac{\sum_n \log p(x_n)}{\sum_n L_n}\Big), \qquad L_n = \sum_d x_{nd}, $$

the size of a uniform vocabulary that would be as surprised by the text as the
model is: a model that spreads its mass uniformly over $V$ words has perplexity
exactly $V$. With the ELBO (or an importance-weighted bound) in place of
$\log p(x_n)$ the result is an upper bound on the model's perplexity.
"""
from __future__ import annotations

import codecs
import functools
import re
import sys
import unicodedata
import warnings
from collections import Counter
from os import PathLike
from pathlib import Path
from typing import Collection, Iterable, NamedTuple, Sequence

import numpy as np

from .data import DataError, one_line

__all__ = [
    "Corpus",
    "make_topic_corpus",
    "STOPWORDS",
    "tokenize",
    "build_vocab",
    "bag_of_words",
    "load_text_folder",
    "perplexity",
    "top_words",
    "TopicMatch",
    "topic_recovery",
    "train_test_split",
]


class Corpus(NamedTuple):
    """A bag-of-words corpus: N documents over a vocabulary of V words."""
    counts: np.ndarray               # (N, V) float64 word counts
    labels: np.ndarray               # (N,) int64: dominant topic, or sub-folder index
    vocab: tuple[str, ...]           # (V,) the word of each column
    topics: np.ndarray | None        # (T, V) true topic-word distributions (synthetic only)
    mixtures: np.ndarray | None      # (N, T) true topic proportions (synthetic only)
    label_names: tuple[str, ...] | None = None  # name of each label: topic or sub-folder
    doc_names: tuple[str, ...] | None = None    # (N,) file of each document (loaded only)


# ---------------------------------------------------------------------------
# Synthetic corpus from a known topic model
# ---------------------------------------------------------------------------

TOPIC_NAMES = ("sport", "music", "science", "food", "travel", "politics",
               "film", "health", "art", "money", "weather", "law")
"""Names of the synthetic topics, in order; topics beyond these are "topic12", ..."""

BACKGROUND_WORDS = (
    "the", "and", "of", "to", "in", "is", "it", "that", "for", "on",
    "was", "with", "as", "at", "by", "this", "from", "but", "not", "are",
    "or", "have", "be", "an", "they", "which", "one", "you", "all", "were",
    "her", "his", "there", "been", "if", "more", "when", "will", "would", "who",
)
"""Names of the shared background words, most frequent first; more are "w40", ..."""


def _topic_name(t: int) -> str:
    return TOPIC_NAMES[t] if t < len(TOPIC_NAMES) else f"topic{t}"


def _block_word(topic: str, i: int) -> str:
    return f"{topic}{i}" if topic in TOPIC_NAMES else f"{topic}_{i}"


def make_topic_corpus(
    n_docs: int,
    rng: np.random.Generator,
    n_topics: int = 4,
    vocab_size: int = 200,
    doc_length: tuple[int, int] = (40, 80),
    topic_sharpness: float = 0.9,
    mixing: float = 0.1,
) -> Corpus:
    r"""Draw a bag-of-words corpus from a topic model whose topics are known.

    The generative story is in the module docstring. The vocabulary is laid out
    as the topics' blocks, in topic order, then the background words:
    ``vocab_size // 5`` background words and the rest split as evenly as
    possible between the topics.

    Args:
        n_docs: number of documents N.
        rng: the random generator; the same seed gives the same corpus.
        n_topics: number of topics T.
        vocab_size: number of words V; needs at least one block word per topic.
        doc_length: (L_min, L_max), both included: each length is uniform on them.
        topic_sharpness: $s$ in (0, 1], the probability mass each topic puts on
            its own block; the rest, $1 - s$, goes to the background words.
        mixing: $m \ge 0$, the Dirichlet concentration of each non-dominant
            topic (1 for the dominant one). The expected share of the dominant
            topic is about $1/(1 + (T-1)m)$; 0 gives single-topic documents.

    Returns:
        A ``Corpus``: counts float64 (N, V) with row sums in ``doc_length``;
        labels int64 (N,) the dominant topics; vocab (V,) names like "sport3"
        and "the"; topics float64 (T, V), rows summing to 1; mixtures float64
        (N, T), rows summing to 1 with their largest entry at the label;
        label_names the topic names.
    """
    if int(n_docs) != n_docs or n_docs < 1:
        raise ValueError(f"n_docs must be a positive integer, got {n_docs!r}")
    if int(n_topics) != n_topics or n_topics < 1:
        raise ValueError(f"n_topics must be a positive integer, got {n_topics!r}")
    n_docs, n_topics = int(n_docs), int(n_topics)
    if int(vocab_size) != vocab_size or vocab_size - vocab_size // 5 < n_topics:
        raise ValueError(
            f"vocab_size must be an integer leaving at least one block word per topic, "
            f"got {vocab_size!r} for {n_topics} topics"
        )
    n_background = int(vocab_size) // 5  # one word in five is shared background
    n_block = int(vocab_size) - n_background
    lo, hi = (int(v) for v in doc_length)
    if not 1 <= lo <= hi:
        raise ValueError(f"doc_length must be (L_min, L_max) with 1 <= L_min <= L_max, got {doc_length!r}")
    if not 0 < topic_sharpness <= 1:
        raise ValueError(f"topic_sharpness must be in (0, 1], got {topic_sharpness!r}")
    if not mixing >= 0:
        raise ValueError(f"mixing must be >= 0, got {mixing!r}")
    V, T = n_block + n_background, n_topics

    # Vocabulary: block words of each topic, then the background words.
    names = tuple(_topic_name(t) for t in range(T))
    blocks = np.array_split(np.arange(n_block), T)  # T index arrays
    vocab = [_block_word(names[t], i) for t in range(T) for i in range(len(blocks[t]))]
    vocab += [BACKGROUND_WORDS[i] if i < len(BACKGROUND_WORDS) else f"w{i}" for i in range(n_background)]

    # Topics: beta_t = s u_t + (1 - s) b.
    background = np.zeros(V)  # (V,)
    if n_background:
        zipf = 1.0 / np.arange(1, n_background + 1)  # (B,)
        background[n_block:] = zipf / zipf.sum()
    else:
        topic_sharpness = 1.0  # nowhere else for the mass to go
    topics = np.zeros((T, V))  # (T, V)
    for t, block in enumerate(blocks):
        u = np.sort(rng.dirichlet(np.ones(len(block))))[::-1]  # (|B_t|,) "sport0" the most frequent
        topics[t, block] = topic_sharpness * u
        topics[t] += (1.0 - topic_sharpness) * background

    # Documents: dominant topic, proportions, length, counts.
    labels = rng.integers(0, T, size=n_docs).astype(np.int64)  # (N,)
    alpha = np.full((n_docs, T), float(mixing))  # (N, T)
    rows = np.arange(n_docs)  # (N,)
    alpha[rows, labels] = 1.0
    theta = rng.standard_gamma(alpha)  # (N, T), normalized gammas are Dirichlet(alpha)
    theta /= theta.sum(axis=1, keepdims=True)
    top = theta.argmax(axis=1)  # (N,)
    theta[rows, top], theta[rows, labels] = theta[rows, labels], theta[rows, top]
    lengths = rng.integers(lo, hi + 1, size=n_docs)  # (N,)
    word_probs = theta @ topics  # (N, V)
    word_probs /= word_probs.sum(axis=1, keepdims=True)
    counts = rng.multinomial(lengths, word_probs).astype(np.float64)  # (N, V)
    return Corpus(counts, labels, tuple(vocab), topics, theta, names)


# ---------------------------------------------------------------------------
# Tokenizing and loading a folder of .txt files
# ---------------------------------------------------------------------------

STOPWORDS = frozenset("""
about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how if in into is it its itself just
me more most my myself no nor not now of off on once only or other our ours ourselves out over
own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves
don doesn didn isn wasn aren weren won wouldn couldn shouldn hasn haven hadn ll ve re
""".split())
"""A small list of English function words, lowercase; ``tokenize`` drops them by default.

It includes the pieces that contractions split into ("don" of "don't", "ll" of
"we'll"). Pass ``stopwords=()`` to keep every word.
"""


@functools.cache
def _word_pattern() -> re.Pattern:
    """A word: a letter or digit, then letters, digits and combining marks.

    Combining marks (Unicode category M: accents written as separate code
    points, the vowel signs of Indic scripts) are not ``\\w`` for ``re``, yet
    they belong inside words. Their ranges are read once from ``unicodedata``.
    """
    ranges, start = [], None
    for cp in range(sys.maxunicode + 2):
        is_mark = cp <= sys.maxunicode and unicodedata.category(chr(cp)).startswith("M")
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(cp - 1))}")
            start = None
    return re.compile(rf"[^\W_](?:[^\W_]|[{''.join(ranges)}])*")


def tokenize(text: str, stopwords: Collection[str] = STOPWORDS) -> list[str]:
    """Split text into lowercase word tokens.

    The text is put in Unicode NFC form (so "café" is one token however its
    accent was typed) and lowercased; a token is a run of letters, digits and
    combining marks (punctuation, whitespace and "_" separate tokens, so
    "don't" gives "don" and "t"). Then tokens that are numbers ("1984", "½"),
    tokens of a single character, and ``stopwords`` are dropped.

    Args:
        text: any string.
        stopwords: lowercase words to drop; ``()`` keeps them all.

    Returns:
        The tokens in reading order.
    """
    stopwords = frozenset(stopwords)  # O(1) lookups; the same object for STOPWORDS
    text = unicodedata.normalize("NFC", text).lower()
    return [tok for tok in _word_pattern().findall(text)
            if len(tok) > 1 and not tok.isnumeric() and tok not in stopwords]


def build_vocab(docs: Iterable[Sequence[str]], max_vocab: int | None = 2000,
                min_count: int = 2) -> tuple[str, ...]:
    """The vocabulary of tokenized documents: frequent words, most frequent first.

    A word is kept when it occurs at least ``min_count`` times in all the
    documents together; of those, the ``max_vocab`` most frequent are kept.
    Ties in frequency are ordered alphabetically (by code point), so the
    result does not depend on the order of the documents.

    Args:
        docs: each document a list of tokens, e.g. from ``tokenize``.
        max_vocab: the largest vocabulary size, or None for no limit.
        min_count: the smallest total count of a kept word, >= 1.

    Returns:
        The words, a tuple of distinct strings.
    """
    if int(min_count) != min_count or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    if max_vocab is not None and (int(max_vocab) != max_vocab or max_vocab < 1):
        raise ValueError(f"max_vocab must be an integer >= 1 or None, got {max_vocab!r}")
    freq: Counter[str] = Counter()
    for doc in docs:
        freq.update(_tokens(doc))
    kept = sorted((w for w, c in freq.items() if c >= min_count), key=lambda w: (-freq[w], w))
    return tuple(kept if max_vocab is None else kept[: int(max_vocab)])


def _tokens(doc: Sequence[str]) -> Sequence[str]:
    if isinstance(doc, str):
        raise TypeError("each document must be a list of tokens, not a string; tokenize it first")
    return doc


def bag_of_words(docs: Sequence[Sequence[str]], vocab: Sequence[str]) -> np.ndarray:
    """Count the words of each document over a vocabulary; words outside it are ignored.

    Args:
        docs: N documents, each a list of tokens.
        vocab: V distinct words; column d counts ``vocab[d]``.

    Returns:
        counts float64 (N, V).
    """
    index = {w: d for d, w in enumerate(vocab)}
    if len(index) != len(vocab):
        dup = next(w for w, c in Counter(vocab).items() if c > 1)
        raise ValueError(f"vocab holds {dup!r} more than once")
    V = len(index)
    counts = np.zeros((len(docs), V))  # (N, V)
    for n, doc in enumerate(docs):
        ids = np.fromiter((index[w] for w in _tokens(doc) if w in index), dtype=np.intp)  # (L_n,)
        counts[n] = np.bincount(ids, minlength=V)
    return counts


def _is_txt(path: Path) -> bool:
    return path.suffix.lower() == ".txt" and not path.name.startswith(".") and path.is_file()


def _find_txt_files(root: Path) -> tuple[list[Path], list[int], tuple[str, ...] | None]:
    """The .txt files under ``root`` with their labels and the label names (None if flat)."""
    try:
        entries = sorted(root.iterdir())
        top = [p for p in entries if _is_txt(p)]
        classes = []
        for sub in entries:
            if sub.is_dir() and not sub.name.startswith("."):
                files = sorted(p for p in sub.rglob("*") if _is_txt(p)
                               and not any(part.startswith(".") for part in p.relative_to(sub).parts))
                if files:
                    classes.append((sub.name, files))
    except OSError as e:
        raise DataError(f"cannot list text folder {root} ({one_line(e)})") from e
    if top and classes:
        raise DataError(
            f"{root} has .txt files both at its top level ({len(top)}) and in sub-folders "
            f"({', '.join(name for name, _ in classes)}); put every file in a sub-folder "
            f"(one per label) or none"
        )
    if classes:
        files = [f for _, fs in classes for f in fs]
        labels = [i for i, (_, fs) in enumerate(classes) for _ in fs]
        return files, labels, tuple(name for name, _ in classes)
    if not top:
        raise DataError(f"no .txt files in text folder {root} nor in its sub-folders")
    return top, [0] * len(top), None


def _read_text(path: Path, encoding: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path} ({one_line(e)})") from e
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not valid {encoding}: byte 0x{e.object[e.start]:02x} at offset {e.start} "
            f"({e.reason}); pass encoding=... with the file's encoding, e.g. encoding='latin-1'"
        ) from e


def load_text_folder(
    path: str | PathLike,
    max_vocab: int | None = 2000,
    min_count: int = 2,
    encoding: str = "utf-8",
    stopwords: Collection[str] = STOPWORDS,
) -> Corpus:
    """Load a folder of .txt files, one document per file, as a bag-of-words corpus.

    Either every .txt file sits directly in ``path`` (all labels 0), or every
    file sits in a sub-folder (at any depth below it) and the label of a
    document is the index of its sub-folder in alphabetical order, e.g.
    ``reviews/neg/*.txt``, ``reviews/pos/*.txt`` give labels 0 and 1. Hidden
    files and folders (names starting with ".") are skipped.

    Each file is decoded with ``encoding``, split by ``tokenize``, and counted
    over the vocabulary of ``build_vocab(docs, max_vocab, min_count)``.
    Documents left with no word of the vocabulary are dropped, with a warning
    that says how many.

    Args:
        path: the folder.
        max_vocab: the largest vocabulary size, or None for no limit.
        min_count: the smallest total count of a vocabulary word.
        encoding: the text encoding of every file.
        stopwords: words to drop, passed to ``tokenize``.

    Returns:
        A ``Corpus`` with counts float64 (N, V), labels int64 (N,), vocab,
        label_names the sub-folder names (None for a flat folder), doc_names
        the file paths relative to ``path``; topics and mixtures are None.

    Raises:
        DataError: the folder is missing, holds no .txt files or mixes files
        and sub-folders; a file cannot be read or decoded; every document is
        empty after tokenizing; no word reaches ``min_count``.
    """
    root = Path(path).expanduser()
    if max_vocab is not None and (int(max_vocab) != max_vocab or max_vocab < 1):
        raise ValueError(f"max_vocab must be an integer >= 1 or None, got {max_vocab!r}")
    if int(min_count) != min_count or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    try:
        codecs.lookup(encoding)
    except LookupError as e:
        raise DataError(f"unknown text encoding {encoding!r} for {root}") from e
    if not root.exists():
        raise DataError(f"text folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the folder that holds the .txt files")

    files, labels, label_names = _find_txt_files(root)
    docs = [tokenize(_read_text(f, encoding), stopwords) for f in files]
    n_tokens = sum(len(doc) for doc in docs)
    if n_tokens == 0:
        raise DataError(
            f"all {len(files)} .txt files in {root} are empty after tokenizing "
            f"(no words of 2+ characters that are neither numbers nor stopwords)"
        )
    vocab = build_vocab(docs, max_vocab, min_count)
    if not vocab:
        n_distinct = len({w for doc in docs for w in doc})
        raise DataError(
            f"{root}: no word occurs min_count={min_count} times in {len(files)} documents "
            f"({n_tokens} tokens, {n_distinct} distinct words); lower min_count"
        )
    counts = bag_of_words(docs, vocab)  # (N, V)
    names = [f.relative_to(root).as_posix() for f in files]
    keep = counts.sum(axis=1) > 0  # (N,)
    if not keep.all():
        n_empty = int((~keep).sum())
        warnings.warn(
            f"{root}: dropped {n_empty} of {len(files)} documents with no word in the vocabulary "
            f"(the first is {names[int(np.argmin(keep))]})",
            stacklevel=2,
        )
    return Corpus(
        counts=counts[keep],
        labels=np.asarray(labels, dtype=np.int64)[keep],
        vocab=vocab,
        topics=None,
        mixtures=None,
        label_names=label_names,
        doc_names=tuple(n for n, k in zip(names, keep) if k),
    )


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def perplexity(log_px, counts, per_document: bool = False) -> float:
    r"""Perplexity of documents from their log-likelihoods: $\exp(-\sum_n \log p(x_n) / \sum_n L_n)$.

    ``log_px`` holds $\log p(x_n)$ in nats, or a lower bound on it such as
    the ELBO or an importance-weighted bound (the perplexity is then an upper
    bound). It must score the words in order, as the "categorical" likelihood
    does (no multinomial coefficient); $L_n$ is the number of words of
    document $n$.

    With ``per_document=True`` the per-word log-likelihood is averaged over
    documents instead of words, $\exp(-\frac1N \sum_n \log p(x_n) / L_n)$: the
    definition Miao, Yu & Blunsom (2016) report, which weighs short documents
    as much as long ones.

    Args:
        log_px: (N,) log-likelihoods (or bounds) of the documents, in nats.
        counts: (N, V) their word counts.
        per_document: average per document rather than per word.

    Returns:
        The perplexity, a float >= 1 for a proper likelihood; a uniform model
        over V words gives exactly V.
    """
    log_px = np.asarray(log_px, dtype=np.float64)  # (N,)
    counts = np.asarray(counts, dtype=np.float64)  # (N, V)
    if log_px.ndim != 1 or counts.ndim != 2 or counts.shape[0] != log_px.shape[0]:
        raise ValueError(f"need log_px (N,) and counts (N, V), got {log_px.shape} and {counts.shape}")
    if not np.all(np.isfinite(log_px)):
        raise ValueError(f"log_px has {int((~np.isfinite(log_px)).sum())} non-finite values")
    lengths = counts.sum(axis=1)  # (N,)
    if per_document:
        if log_px.size == 0 or np.any(lengths <= 0):
            raise DataError("perplexity: every document needs at least one word (counts rows sum to > 0)")
        return float(np.exp(-np.mean(log_px / lengths)))
    if lengths.sum() <= 0:
        raise DataError("perplexity: counts hold no words")
    return float(np.exp(-log_px.sum() / lengths.sum()))


def top_words(weights, vocab: Sequence[str], k: int = 10):
    """The ``k`` words with the largest weights, largest first (ties: lower index first).

    Args:
        weights: (V,) one weight per word, or (M, V) one row per topic or
            latent direction, e.g. a topic's word probabilities or a row of a
            linear decoder's weight matrix.
        vocab: the V words.
        k: how many words; at most V are returned.

    Returns:
        A list of k words for (V,) weights; a list of M such lists for (M, V).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim not in (1, 2) or w.shape[-1] != len(vocab):
        raise ValueError(f"weights must be (V,) or (M, V) with V = len(vocab) = {len(vocab)}, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights hold NaN or inf")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    order = np.argsort(-w, axis=-1, kind="stable")[..., : int(k)]  # (k,) or (M, k)
    if w.ndim == 1:
        return [vocab[i] for i in order]
    return [[vocab[i] for i in row] for row in order]


class TopicMatch(NamedTuple):
    """What ``topic_recovery`` returns."""
    similarity: np.ndarray  # (M, T) cosine of each recovered row with each true topic
    match: np.ndarray       # (T,) int64 index of the recovered row closest to each true topic
    score: float            # mean over true topics of their best cosine, 1.0 for perfect recovery


def topic_recovery(decoder_topics, true_topics) -> TopicMatch:
    r"""Compare recovered word profiles with the true topics by cosine similarity.

    $\mathrm{sim}_{mt} = \langle w_m, \beta_t\rangle / (\lVert w_m\rVert\,\lVert\beta_t\rVert)$;
    each true topic is matched to its most similar row and the score is the
    mean of those best similarities. A row may be the best match of several
    topics: ``len(set(match)) < T`` says that some topics were merged.

    The rows can be word distributions (e.g. the softmax of the decoder's
    output at a few points of latent space) or the rows of a linear decoder's
    weights ``vae.params["dec.out.W"]`` (K, V). Softmax ignores a constant
    added to every logit, so subtract each weight row's mean first: only the
    differences between words carry meaning. A row of zeros has similarity 0.

    Args:
        decoder_topics: (M, V) recovered word weights.
        true_topics: (T, V) the true topic-word distributions.

    Returns:
        A ``TopicMatch``.
    """
    W = np.asarray(decoder_topics, dtype=np.float64)  # (M, V)
    B = np.asarray(true_topics, dtype=np.float64)  # (T, V)
    if W.ndim != 2 or B.ndim != 2 or W.shape[1] != B.shape[1] or 0 in W.shape or 0 in B.shape:
        raise ValueError(f"need decoder_topics (M, V) and true_topics (T, V), got {W.shape} and {B.shape}")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(B))):
        raise ValueError("topic_recovery: the topics hold NaN or inf")

    def unit(A):
        norm = np.linalg.norm(A, axis=1, keepdims=True)  # (R, 1)
        return np.divide(A, norm, out=np.zeros_like(A), where=norm > 0)

    sim = np.clip(unit(W) @ unit(B).T, -1.0, 1.0)  # (M, T), clipped against rounding
    match = sim.argmax(axis=0).astype(np.int64)  # (T,)
    return TopicMatch(sim, match, float(sim.max(axis=0).mean()))


def train_test_split(corpus: Corpus, test_fraction: float,
                     rng: np.random.Generator) -> tuple[Corpus, Corpus]:
    """Split the documents at random into a training and a test corpus.

    ``round(test_fraction * N)`` documents, chosen by ``rng``, go to the test
    corpus; both parts keep the documents' original order. The vocabulary,
    the true topics and the label names are shared; counts, labels, mixtures
    and document names are split.

    Returns:
        (train, test), two ``Corpus`` with at least one document each.
    """
    n = corpus.counts.shape[0]
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = int(round(test_fraction * n))
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_fraction={test_fraction} of {n} documents leaves an empty part")
    is_test = np.zeros(n, dtype=bool)  # (N,)
    is_test[rng.permutation(n)[:n_test]] = True

    def part(mask):
        return corpus._replace(
            counts=corpus.counts[mask],
            labels=corpus.labels[mask],
            mixtures=None if corpus.mixtures is None else corpus.mixtures[mask],
            doc_names=None if corpus.doc_names is None else tuple(
                name for name, kept in zip(corpus.doc_names, mask) if kept),
        )

    return part(~is_test), part(is_test)
