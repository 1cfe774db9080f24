"""Tests for minivae.text: the synthetic topic corpus, tokenizing and loading text, perplexity."""
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae.data import DataError
from minivae.likelihoods import categorical_forward
from minivae.text import (
    STOPWORDS,
    Corpus,
    bag_of_words,
    build_vocab,
    load_text_folder,
    make_topic_corpus,
    perplexity,
    tokenize,
    top_words,
    topic_recovery,
    train_test_split,
)


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    """Assert a DataError message is one line and holds every fragment; return it."""
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    return msg


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


# ---------------------------------------------------------------------------
# Synthetic corpus
# ---------------------------------------------------------------------------


def test_corpus_has_the_asked_shapes_and_a_consistent_truth():
    c = make_topic_corpus(300, np.random.default_rng(0), n_topics=5, vocab_size=120, doc_length=(10, 20))
    assert c.counts.shape == (300, 120) and c.counts.dtype == np.float64
    assert c.labels.shape == (300,) and c.labels.dtype == np.int64
    assert c.topics.shape == (5, 120) and c.mixtures.shape == (300, 5)
    assert len(c.vocab) == len(set(c.vocab)) == 120
    assert c.label_names == ("sport", "music", "science", "food", "travel")
    assert c.doc_names is None

    assert np.all(c.counts >= 0) and np.array_equal(c.counts, np.round(c.counts))
    lengths = c.counts.sum(axis=1)
    assert lengths.min() >= 10 and lengths.max() <= 20
    assert set(np.unique(c.labels)) <= set(range(5))
    np.testing.assert_allclose(c.topics.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.mixtures.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(c.topics >= 0) and np.all(c.mixtures >= 0)
    np.testing.assert_array_equal(c.mixtures.argmax(axis=1), c.labels)


def test_lengths_cover_the_whole_range_both_ends_included():
    c = make_topic_corpus(500, np.random.default_rng(1), doc_length=(3, 5))
    assert set(c.counts.sum(axis=1).astype(int)) == {3, 4, 5}


@pytest.mark.parametrize("seed", range(10))
def test_each_topic_puts_its_top_words_in_its_own_block(seed):
    c = make_topic_corpus(10, np.random.default_rng(seed))
    for t, (name, words) in enumerate(zip(c.label_names, top_words(c.topics, c.vocab, k=5))):
        assert all(w.startswith(name) for w in words), (name, words)
        assert words[0] == f"{name}0"  # block words are sorted, most frequent first
        others = [d for d, w in enumerate(c.vocab) if w.rstrip("0123456789") in c.label_names
                  and not w.startswith(name)]
        assert np.all(c.topics[t, others] == 0)  # no mass on other topics' blocks


def test_background_words_are_shared_and_readable():
    c = make_topic_corpus(10, np.random.default_rng(0), vocab_size=200, topic_sharpness=0.8)
    background = [d for d, w in enumerate(c.vocab) if w.rstrip("0123456789") not in c.label_names]
    assert len(background) == 40 and c.vocab[background[0]] == "the"
    np.testing.assert_allclose(c.topics[:, background].sum(axis=1), 0.2, rtol=1e-12)
    np.testing.assert_allclose(c.topics[:, background], c.topics[:1, background].repeat(4, axis=0))


def test_same_seed_same_corpus_other_seed_other_corpus():
    a = make_topic_corpus(50, np.random.default_rng(7))
    b = make_topic_corpus(50, np.random.default_rng(7))
    c = make_topic_corpus(50, np.random.default_rng(8))
    for field in ("counts", "labels", "topics", "mixtures"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.vocab == b.vocab == c.vocab
    assert not np.array_equal(a.counts, c.counts) and not np.array_equal(a.topics, c.topics)


def test_single_topic_documents_reproduce_their_topic():
    """With mixing=0 the pooled words of one label are draws from that topic."""
    c = make_topic_corpus(2000, np.random.default_rng(2), mixing=0.0)
    np.testing.assert_array_equal(c.mixtures, np.eye(4)[c.labels])
    for t in range(4):
        pooled = c.counts[c.labels == t].sum(axis=0)  # (V,)
        assert pooled.sum() > 20000
        assert total_variation(pooled / pooled.sum(), c.topics[t]) < 0.04
        for u in range(4):  # and are far from every other topic
            if u != t:
                assert total_variation(pooled / pooled.sum(), c.topics[u]) > 0.8


def test_mixed_documents_match_their_length_weighted_mixture():
    c = make_topic_corpus(2000, np.random.default_rng(3), mixing=0.3)
    lengths = c.counts.sum(axis=1)  # (N,)
    for t in range(4):
        mask = c.labels == t
        pooled = c.counts[mask].sum(axis=0)
        expected = (lengths[mask, None] * c.mixtures[mask]).sum(axis=0) @ c.topics / lengths[mask].sum()
        assert total_variation(pooled / pooled.sum(), expected) < 0.04
        # the mixture is visible: the pooled words are not the pure topic
        assert total_variation(pooled / pooled.sum(), c.topics[t]) > 0.1


def test_mixing_sets_the_share_of_the_dominant_topic():
    share = [make_topic_corpus(2000, np.random.default_rng(4), mixing=m).mixtures.max(axis=1).mean()
             for m in (0.0, 0.1, 1.0)]
    assert share[0] == 1.0 and share[0] > share[1] > share[2] > 0.25
    assert share[1] > 0.75


@pytest.mark.parametrize("kwargs", [
    dict(n_docs=0), dict(n_docs=2.5), dict(n_topics=0), dict(vocab_size=3),
    dict(doc_length=(0, 5)), dict(doc_length=(6, 5)), dict(topic_sharpness=0.0),
    dict(topic_sharpness=1.5), dict(mixing=-0.1), dict(mixing=float("nan")),
])
def test_bad_arguments_are_refused(kwargs):
    args = dict(n_docs=10, rng=np.random.default_rng(0)) | kwargs
    with pytest.raises(ValueError):
        make_topic_corpus(**args)


def test_many_topics_and_a_tiny_vocabulary():
    c = make_topic_corpus(20, np.random.default_rng(0), n_topics=14, vocab_size=20)
    assert c.label_names[12:] == ("topic12", "topic13")
    assert "topic12_0" in c.vocab and c.counts.shape == (20, 20)
    c = make_topic_corpus(20, np.random.default_rng(0), n_topics=2, vocab_size=4)  # no background
    np.testing.assert_allclose(c.topics.sum(axis=1), 1.0)


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def test_tokenize_folds_case_and_splits_on_punctuation():
    assert tokenize("The Cat SAT", stopwords=()) == ["the", "cat", "sat"]
    assert tokenize("hello, world!(foo)-bar...baz\tqux\nend", stopwords=()) == [
        "hello", "world", "foo", "bar", "baz", "qux", "end"]
    assert tokenize("snake_case it's", stopwords=()) == ["snake", "case", "it"]


def test_tokenize_keeps_unicode_letters_and_accents_in_one_token():
    decomposed = "cafe\u0301"  # e + combining acute accent
    assert tokenize(f"Café CAFÉ {decomposed}", stopwords=()) == ["café"] * 3
    assert tokenize("naïve Straße Ελληνικά हिन्दी", stopwords=()) == ["naïve", "straße", "ελληνικά", "हिन्दी"]


def test_tokenize_drops_numbers_and_single_characters():
    assert tokenize("in 1984 there were 3 ½ 2nd x2 3.14 1,000", stopwords=()) == ["in", "there", "were",
                                                                                   "2nd", "x2"]
    assert tokenize("a b c é ok", stopwords=()) == ["ok"]
    assert tokenize("") == [] and tokenize(" \n\t ... 42 ") == []


def test_tokenize_drops_stopwords_by_default():
    assert tokenize("The cat and the hat, don't you think?") == ["cat", "hat", "think"]
    assert tokenize("the cat", stopwords={"cat"}) == ["the"]
    for word in STOPWORDS:  # every stopword is a token the tokenizer can produce
        assert tokenize(word, stopwords=()) == [word] and tokenize(word) == []


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokenize_never_raises_and_returns_lowercase_words(text):
    tokens = tokenize(text)
    folded = unicodedata.normalize("NFC", text).lower()
    for tok in tokens:
        assert tok == tok.lower() and len(tok) > 1
        assert not tok.isnumeric() and tok not in STOPWORDS
        assert not any(ch.isspace() or ch == "_" for ch in tok)
        assert tok in folded
    assert len(tokenize(text, stopwords=())) >= len(tokens)


# ---------------------------------------------------------------------------
# Vocabulary and bag of words
# ---------------------------------------------------------------------------

DOCS = [["dog", "cat", "dog", "emu"], ["cat", "dog", "bee"], ["bee", "ant", "cat"]]


def test_build_vocab_most_frequent_first_ties_alphabetical():
    assert build_vocab(DOCS, max_vocab=None, min_count=1) == ("cat", "dog", "bee", "ant", "emu")
    assert build_vocab(DOCS, max_vocab=None, min_count=2) == ("cat", "dog", "bee")
    assert build_vocab(DOCS, max_vocab=2, min_count=1) == ("cat", "dog")
    assert build_vocab(DOCS[::-1], max_vocab=None, min_count=1) == build_vocab(DOCS, None, 1)
    assert build_vocab([[], []]) == ()


@pytest.mark.parametrize("kwargs", [dict(min_count=0), dict(max_vocab=0), dict(min_count=1.5)])
def test_build_vocab_refuses_bad_limits(kwargs):
    with pytest.raises(ValueError):
        build_vocab(DOCS, **kwargs)


def test_bag_of_words_counts_and_ignores_unknown_words():
    counts = bag_of_words(DOCS, ("dog", "cat", "bee"))
    np.testing.assert_array_equal(counts, [[2, 1, 0], [1, 1, 1], [0, 1, 1]])
    assert counts.dtype == np.float64
    assert bag_of_words([], ("a",)).shape == (0, 1)
    with pytest.raises(ValueError, match="more than once"):
        bag_of_words(DOCS, ("dog", "dog"))
    with pytest.raises(TypeError, match="tokenize"):
        bag_of_words(["a raw string"], ("dog",))


# ---------------------------------------------------------------------------
# Loading a folder of .txt files
# ---------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def test_load_plain_folder(tmp_path):
    write(tmp_path / "b.txt", "The goalkeeper saved the penalty. Penalty!")
    write(tmp_path / "a.txt", "A goalkeeper, a striker and a referee.")
    write(tmp_path / "c.txt", "The striker scored; the referee smiled")
    write(tmp_path / "notes.md", "goalkeeper goalkeeper goalkeeper")  # not a .txt file
    write(tmp_path / ".hidden.txt", "goalkeeper goalkeeper goalkeeper")  # hidden
    c = load_text_folder(tmp_path, min_count=2)
    assert isinstance(c, Corpus)
    assert c.doc_names == ("a.txt", "b.txt", "c.txt")
    assert c.vocab == ("goalkeeper", "penalty", "referee", "striker")
    np.testing.assert_array_equal(c.counts, [[1, 0, 1, 1], [1, 2, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(c.labels, [0, 0, 0])
    assert c.labels.dtype == np.int64 and c.counts.dtype == np.float64
    assert c.topics is None and c.mixtures is None and c.label_names is None
    with pytest.warns(UserWarning, match="dropped 1 of 3"):  # c.txt has no "goalkeeper"
        assert load_text_folder(str(tmp_path), max_vocab=1).vocab == ("goalkeeper",)


def test_load_sub_folders_as_labels(tmp_path):
    write(tmp_path / "pos" / "1.txt", "great film, great cast")
    write(tmp_path / "pos" / "more" / "2.txt", "great fun")
    write(tmp_path / "neg" / "1.txt", "dull film, dull cast")
    write(tmp_path / ".ipynb_checkpoints" / "x.txt", "ignored words ignored words")
    (tmp_path / "empty_dir").mkdir()
    c = load_text_folder(tmp_path, min_count=1)
    assert c.label_names == ("neg", "pos")
    assert c.doc_names == ("neg/1.txt", "pos/1.txt", "pos/more/2.txt")
    np.testing.assert_array_equal(c.labels, [0, 1, 1])
    assert "ignored" not in c.vocab and c.vocab[:2] == ("great", "cast")


def test_load_missing_or_empty_folder_raises(tmp_path):
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path / "nowhere")
    assert_one_line(err, "nowhere", "does not exist")
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path)
    assert_one_line(err, str(tmp_path), "no .txt files")
    write(tmp_path / "a.txt", "some words")
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path / "a.txt")
    assert_one_line(err, "a.txt", "not a folder")


def test_load_refuses_files_both_at_top_level_and_in_sub_folders(tmp_path):
    write(tmp_path / "top.txt", "word word")
    write(tmp_path / "class" / "doc.txt", "word word")
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path)
    assert_one_line(err, "top level", "class")


def test_load_undecodable_file_names_it_and_suggests_an_encoding(tmp_path):
    write(tmp_path / "good.txt", "un café, un café")
    write(tmp_path / "latin.txt", b"un caf\xe9, un caf\xe9")
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path, encoding="utf-8")
    assert_one_line(err, "latin.txt", "utf-8", "0xe9", "encoding=")
    c = load_text_folder(tmp_path, encoding="latin-1", min_count=1)  # decodes both (wrongly for good.txt)
    assert "café" in c.vocab
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path, encoding="no-such-codec")
    assert_one_line(err, "no-such-codec")


def test_load_unreadable_file_raises(tmp_path, monkeypatch):
    write(tmp_path / "ok.txt", "words words")
    write(tmp_path / "locked.txt", "words words")
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path)
    assert_one_line(err, "locked.txt", "cannot read", "Permission denied")


def test_load_all_empty_documents_raises(tmp_path):
    write(tmp_path / "a.txt", "")
    write(tmp_path / "b.txt", "1984 - 42 a b ... the and of")
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path)
    assert_one_line(err, "all 2 .txt files", "empty")


def test_load_empty_vocabulary_raises(tmp_path):
    write(tmp_path / "a.txt", "alpha beta")
    write(tmp_path / "b.txt", "gamma delta")
    with pytest.raises(DataError) as err:
        load_text_folder(tmp_path, min_count=2)
    assert_one_line(err, "min_count=2", "4 tokens")


def test_load_drops_an_empty_document_with_a_warning(tmp_path):
    write(tmp_path / "a.txt", "river bank river")
    write(tmp_path / "b.txt", "the 2024 and of")  # nothing left after tokenizing
    write(tmp_path / "c.txt", "bank loan bank")
    write(tmp_path / "d.txt", "loan")
    with pytest.warns(UserWarning, match=r"dropped 1 of 4 documents .*b\.txt"):
        c = load_text_folder(tmp_path, min_count=2)
    assert c.doc_names == ("a.txt", "c.txt", "d.txt")
    assert c.counts.shape == (3, 3) and np.all(c.counts.sum(axis=1) > 0)
    assert c.labels.shape == (3,)


# ---------------------------------------------------------------------------
# Evaluation helpers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("per_document", [False, True])
def test_uniform_model_has_perplexity_exactly_v(per_document):
    c = make_topic_corpus(50, np.random.default_rng(0), vocab_size=137)
    log_px, _ = categorical_forward(c.counts, np.zeros_like(c.counts))  # (N,) softmax of zeros: uniform
    assert perplexity(log_px, c.counts, per_document=per_document) == pytest.approx(137, rel=1e-12)


def test_perplexity_by_hand_per_word_and_per_document():
    counts = np.array([[1.0, 0.0, 0.0], [2.0, 1.0, 1.0]])  # 1 and 4 words
    log_px = np.array([-1.0, -8.0])
    assert perplexity(log_px, counts) == pytest.approx(np.exp(9.0 / 5.0))
    assert perplexity(log_px, counts, per_document=True) == pytest.approx(np.exp((1.0 + 2.0) / 2))


def test_true_model_beats_unigram_beats_uniform():
    """Perplexity ranks models the way their knowledge of the corpus says it should."""
    c = make_topic_corpus(1000, np.random.default_rng(5), vocab_size=200)
    train, test = train_test_split(c, 0.2, np.random.default_rng(0))
    V = test.counts.shape[1]
    unigram = (train.counts.sum(axis=0) + 1.0) / (train.counts.sum() + V)  # (V,) add-one smoothed
    log_unigram = test.counts @ np.log(unigram)  # (N,)
    true_probs = test.mixtures @ test.topics  # (N, V)
    log_true = np.sum(test.counts * np.log(true_probs), axis=1)  # (N,)
    ppl_true, ppl_unigram = perplexity(log_true, test.counts), perplexity(log_unigram, test.counts)
    assert 1.0 < ppl_true < 0.8 * ppl_unigram and ppl_unigram < 0.9 * V


def test_perplexity_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError):
        perplexity(np.zeros(3), np.ones((2, 4)))
    with pytest.raises(ValueError):
        perplexity(np.array([np.nan]), np.ones((1, 4)))
    with pytest.raises(DataError, match="no words"):
        perplexity(np.zeros(2), np.zeros((2, 4)))
    with pytest.raises(DataError):
        perplexity(np.zeros(2), np.array([[1.0, 0.0], [0.0, 0.0]]), per_document=True)


def test_top_words_order_ties_and_shapes():
    vocab = ("ant", "bee", "cat", "dog")
    assert top_words(np.array([0.1, 0.5, 0.3, 0.5]), vocab, k=3) == ["bee", "dog", "cat"]
    assert top_words([[4.0, 3.0, 2.0, 1.0], [-1.0, 0.0, -2.0, 5.0]], vocab, k=2) == [
        ["ant", "bee"], ["dog", "bee"]]
    assert top_words(np.arange(4.0), vocab, k=10) == ["dog", "cat", "bee", "ant"]
    with pytest.raises(ValueError):
        top_words(np.ones(3), vocab)
    with pytest.raises(ValueError):
        top_words(np.ones(4), vocab, k=0)


def test_topic_recovery_of_the_truth_is_perfect():
    c = make_topic_corpus(10, np.random.default_rng(0))
    m = topic_recovery(c.topics, c.topics)
    np.testing.assert_allclose(np.diag(m.similarity), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(m.match, np.arange(4))
    assert m.score == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.abs(m.similarity) <= 1.0)
    assert np.all(m.similarity[~np.eye(4, dtype=bool)] < 0.5)  # distinct topics are far apart


def test_topic_recovery_finds_permuted_scaled_rows_and_merged_topics():
    c = make_topic_corpus(10, np.random.default_rng(1), topic_sharpness=1.0)
    perm = np.array([2, 0, 3, 1])
    rows = np.vstack([3.0 * c.topics[perm], np.zeros((1, 200))])  # (5, V), one dead row
    m = topic_recovery(rows, c.topics)
    assert m.similarity.shape == (5, 4)
    np.testing.assert_array_equal(perm[m.match], np.arange(4))
    assert m.score == pytest.approx(1.0)
    np.testing.assert_array_equal(m.similarity[4], 0.0)
    # with sharpness 1 the blocks are disjoint: cross similarities are exactly 0
    own = topic_recovery(c.topics, c.topics).similarity
    np.testing.assert_allclose(own, np.eye(4), rtol=0, atol=1e-15)
    assert np.all(own[~np.eye(4, dtype=bool)] == 0.0)
    merged = topic_recovery(c.topics[:1] + c.topics[1:2], c.topics)  # one row for two topics
    assert merged.match.tolist() == [0, 0, 0, 0] and merged.score < 0.5


def test_topic_recovery_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        topic_recovery(np.ones((2, 5)), np.ones((3, 4)))


def test_train_test_split_partitions_the_documents():
    c = make_topic_corpus(101, np.random.default_rng(0))
    c = c._replace(doc_names=tuple(f"doc{n}" for n in range(101)))
    train, test = train_test_split(c, 0.25, np.random.default_rng(3))
    assert test.counts.shape == (25, 200) and train.counts.shape == (76, 200)
    names = train.doc_names + test.doc_names
    assert sorted(names) == sorted(c.doc_names) and not set(train.doc_names) & set(test.doc_names)
    for part in (train, test):
        idx = np.array([int(n[3:]) for n in part.doc_names])
        assert np.all(np.diff(idx) > 0)  # original order kept
        np.testing.assert_array_equal(part.counts, c.counts[idx])
        np.testing.assert_array_equal(part.labels, c.labels[idx])
        np.testing.assert_array_equal(part.mixtures, c.mixtures[idx])
        assert part.vocab is c.vocab and part.topics is c.topics and part.label_names == c.label_names
    again, _ = train_test_split(c, 0.25, np.random.default_rng(3))
    assert again.doc_names == train.doc_names


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001, 0.999])
def test_train_test_split_refuses_an_empty_part(fraction):
    c = make_topic_corpus(20, np.random.default_rng(0))
    with pytest.raises(ValueError):
        train_test_split(c, fraction, np.random.default_rng(0))
