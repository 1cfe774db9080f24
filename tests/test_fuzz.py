"""Fuzz tests: the loaders and the command line take arbitrary input and either
succeed with a well-formed result or fail with the library's own one-line error.

- ``parse_idx`` and ``load_mnist``: arbitrary bytes, IDX headers with random
  magic, rank and sizes, damaged copies of the real test-split files.
- ``load_text_folder``: folders of random files (random bytes, names, nesting,
  empty files, symlinks, folders named like files) in several encodings.
- ``validate_data``: arrays of every dtype, rank, size and value, for each likelihood.
- the command line's ``main(argv)``: argv built from the real option names with
  random values, and fully random strings. Training, lesson scripts and the
  student-copy builder are replaced by stubs, so no argv starts long work.
- ``load_checkpoint`` and ``load_run``: random and mutated checkpoint bytes,
  pickles, random edits of a run's stored configuration and state.

On POSIX every test runs under an alarm, so a hang fails its test and the suite goes on.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import math
import os
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minivae import __main__ as cli
from minivae import data, derivations, optim, plots
from minivae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minivae.data import DataError, load_mnist, parse_idx, validate_data
from minivae.likelihoods import LIKELIHOODS
from minivae.text import load_text_folder
from minivae.train import RunState, TrainConfig, load_run, save_run

from strategies import assert_one_line

TIME_LIMIT = 60  # seconds per test; the whole file takes well under that


class Hang(BaseException):
    """Raised by the alarm. A BaseException, so that no ``except Exception`` in the code swallows it."""


@pytest.fixture(autouse=True)
def no_hang():
    """Fail the test that is still running after TIME_LIMIT seconds (POSIX, main thread only)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise Hang(f"still running after {TIME_LIMIT} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


FUZZ = settings(deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


class Fixed(dict):
    """A module fixture's data, with a short repr for hypothesis' reports."""

    def __repr__(self):
        return f"<{', '.join(self)}>"


def mutate(raw: bytes, ops) -> bytes:
    """Apply edits drawn by ``edits()`` to ``raw``: flip, set, cut, insert, delete, append."""
    b = bytearray(raw)
    for op, where, value in ops:
        i = int(where * len(b))  # where in [0, 1): a relative position
        if op == "flip" and b:
            b[min(i, len(b) - 1)] ^= 1 << (value % 8)
        elif op == "set" and b:
            b[min(i, len(b) - 1)] = value % 256
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b[i:i] = bytes([value % 256]) * (1 + value % 5)
        elif op == "delete":
            del b[i:i + 1 + value % 7]
        elif op == "append":
            b += bytes([value % 256]) * (1 + value % 9)
    return bytes(b)


def edits(min_size=1, max_size=3):
    """Lists of (operation, relative position, value) for ``mutate``."""
    op = st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append"]),
                   st.floats(0, 1, exclude_max=True), st.integers(0, 2**16))
    return st.lists(op, min_size=min_size, max_size=max_size)


# ---------------------------------------------------------------------------
# (a) IDX parsing and MNIST loading
# ---------------------------------------------------------------------------

def check_idx(raw: bytes, name: str = "fuzz.idx"):
    """Parse ``raw``: a uint8 array exactly as the header says, or a one-line DataError."""
    try:
        out = parse_idx(raw, name)
    except DataError as e:
        assert_one_line(str(e), name)
        event("DataError")
        return None
    event("array")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    assert raw[:3] == b"\x00\x00\x08"
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.flags.writeable
    assert out.shape == dims and out.tobytes() == raw[4 + 4 * ndim:]
    return out


SIZES = st.one_of(st.integers(0, 4), st.sampled_from([28, 255, 2**16, 2**31 - 1, -1, -(2**31)]),
                  st.integers(-(2**31), 2**31 - 1))


@st.composite
def idx_files(draw):
    """IDX-like bytes: a mostly plausible magic, any rank 0..255, sizes from tiny to 2**31 - 1,
    a payload that often fits the sizes exactly, sometimes cut short."""
    ndim = draw(st.one_of(st.integers(1, 4), st.integers(0, 255)))
    prefix = draw(st.sampled_from([b"\x00\x00\x08"] * 3 + [b"\x00\x00\x09", b"\x01\x00\x08"]))
    dims = draw(st.lists(st.one_of(st.integers(0, 4), SIZES), min_size=ndim, max_size=ndim))
    size = math.prod(dims) if all(d >= 0 for d in dims) else -1
    if 0 <= size <= 512 and draw(st.integers(0, 3)) > 0:
        payload = draw(st.binary(min_size=size, max_size=size))
    else:
        payload = draw(st.binary(max_size=40))
    raw = prefix + bytes([ndim]) + struct.pack(f">{ndim}i", *dims) + payload
    cut = draw(st.one_of(st.none(), st.none(), st.integers(0, len(raw))))
    return raw if cut is None else raw[:cut]


@settings(FUZZ, max_examples=600)
@given(st.one_of(idx_files(), st.binary(max_size=300)))
def test_parse_idx_gives_an_array_or_a_data_error(raw):
    check_idx(raw)


def test_parse_idx_rank_beyond_numpy_is_a_data_error():
    """Regression: 65 dimensions, or sizes whose product overflows, but no data bytes
    needed (a zero size), passed the length check and failed in numpy's reshape."""
    for dims, payload in [((0,) * 65, b""), ((1,) * 70, b"\x07"), ((0, 2**31 - 1, 2**31 - 1, 2**31 - 1), b"")]:
        raw = struct.pack(f">I{len(dims)}i", 0x0800 | len(dims), *dims) + payload
        with pytest.raises(DataError) as err:
            parse_idx(raw, "deep.idx")
        assert_one_line(str(err.value), "deep.idx", "cannot")


def test_parse_idx_message_stays_one_line_for_a_name_with_line_breaks():
    """Regression: a path holding a newline split the error message in two."""
    with pytest.raises(DataError) as err:
        parse_idx(b"\x00", "odd\nname\u2028.idx")
    assert_one_line(str(err.value), "odd\\nname\\u2028.idx")


TEST_IMAGES, TEST_LABELS = data.MNIST_FILES["test"]
N_SMALL = 64


def write_mnist_folder(folder: Path, raws: dict[str, bytes], sums: dict[str, bytes]) -> None:
    """Write gzip files ``raws`` (name -> decompressed IDX) and the checksum file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in raws.items():
        (folder / name).write_bytes(gzip.compress(raw, mtime=0))
    lines = [f"{hashlib.sha256(r).hexdigest()}  {n.removesuffix('.gz')}" for n, r in sums.items()]
    (folder / data.SUMS_FILE).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def small_mnist():
    """The first 64 images and labels of the real test split, as IDX bytes with their own sums."""
    images = gzip.decompress((data.MNIST_DIR / TEST_IMAGES).read_bytes())
    labels = gzip.decompress((data.MNIST_DIR / TEST_LABELS).read_bytes())
    return Fixed({
        TEST_IMAGES: struct.pack(">4i", 0x803, N_SMALL, 28, 28) + images[16:16 + N_SMALL * 784],
        TEST_LABELS: struct.pack(">2i", 0x801, N_SMALL) + labels[8:8 + N_SMALL],
    })


def check_mnist(folder: Path, intact: bool):
    """load_mnist: well-formed images and digit labels, or a one-line DataError naming the folder."""
    try:
        try:
            x, y = load_mnist("test", root=folder)
        except DataError as e:
            assert not intact, e
            assert_one_line(str(e), str(folder.resolve()))
            event("DataError")
            return None
    finally:
        data._MNIST_CACHE.pop((str(folder.resolve()), "test"), None)
    event("loaded")
    n = len(x)
    assert n >= 1 and x.shape == (n, 784) and x.dtype == np.float32 and not x.flags.writeable
    assert np.all((x >= 0) & (x <= 1))
    assert y.shape == (n,) and y.dtype == np.int64 and np.all((y >= 0) & (y <= 9))
    return x, y


@st.composite
def damaged_mnist(draw):
    """What to damage and how: the gzip bytes, the IDX bytes (with the checksum file
    updated to match or not), the checksum file, or a file replaced by a folder or removed."""
    target = draw(st.sampled_from([TEST_IMAGES, TEST_LABELS, data.SUMS_FILE]))
    layer = draw(st.sampled_from(["gz", "idx, sums updated", "idx, sums updated", "idx, sums stale",
                                  "folder", "missing"]))
    header_ints = st.lists(st.tuples(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1)), max_size=2)
    return target, layer, draw(edits(0, 3)), draw(header_ints)


@settings(FUZZ, max_examples=250)
@given(damaged_mnist())
def test_load_mnist_on_damaged_small_copies(small_mnist, tmp_path_factory, case):
    target, layer, ops, header_ints = case
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    raws, sums = dict(small_mnist), dict(small_mnist)
    if target != data.SUMS_FILE and layer.startswith("idx"):
        raw = bytearray(mutate(raws[target], ops))
        for slot, value in header_ints:  # overwrite the magic or a size with any int32
            if len(raw) >= 4 * slot + 4:
                raw[4 * slot:4 * slot + 4] = struct.pack(">i", value)
        raws[target] = bytes(raw)
        if layer == "idx, sums updated":
            sums[target] = raws[target]
    write_mnist_folder(folder, raws, sums)
    intact = raws == sums == small_mnist  # so far
    path = folder / target
    if layer == "gz" or (target == data.SUMS_FILE and layer.startswith("idx")):
        before = path.read_bytes()
        path.write_bytes(mutate(before, ops))
        intact = intact and path.read_bytes() == before
    elif layer == "folder":
        path.unlink()
        path.mkdir()
        intact = False
    elif layer == "missing":
        path.unlink()
        intact = False
    out = check_mnist(folder, intact)
    if intact:
        x, y = out
        assert len(x) == N_SMALL and y[:5].tolist() == [7, 2, 1, 0, 4]


@pytest.fixture(scope="module")
def real_test_split():
    return Fixed({n: (data.MNIST_DIR / n).read_bytes() for n in (TEST_IMAGES, TEST_LABELS, data.SUMS_FILE)})


@settings(FUZZ, max_examples=12)
@given(st.sampled_from([TEST_IMAGES, TEST_LABELS]), edits(1, 2))
def test_load_mnist_on_damaged_copies_of_the_real_files(real_test_split, tmp_path_factory, name, ops):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    for n, raw in real_test_split.items():
        (folder / n).write_bytes(mutate(raw, ops) if n == name else raw)
    check_mnist(folder, intact=(folder / name).read_bytes() == real_test_split[name])
    shutil.rmtree(folder)


def test_mnist_labels_outside_0_to_9_are_a_data_error(small_mnist, tmp_path):
    """Regression: a label byte of 200 with a matching checksum loaded as digit 200
    (and a conditional VAE then failed in one_hot with an IndexError)."""
    raws = dict(small_mnist)
    raws[TEST_LABELS] = raws[TEST_LABELS][:8] + b"\xc8" + raws[TEST_LABELS][9:]
    write_mnist_folder(tmp_path, raws, raws)
    with pytest.raises(DataError) as err:
        load_mnist("test", root=tmp_path)
    assert_one_line(str(err.value), str(tmp_path / TEST_LABELS), "200", "0..9")


def test_mnist_with_zero_images_is_a_data_error(tmp_path):
    """Regression: matching files with N = 0 loaded as an empty split."""
    raws = {TEST_IMAGES: struct.pack(">4i", 0x803, 0, 28, 28), TEST_LABELS: struct.pack(">2i", 0x801, 0)}
    write_mnist_folder(tmp_path, raws, raws)
    with pytest.raises(DataError) as err:
        load_mnist("test", root=tmp_path)
    assert_one_line(str(err.value), str(tmp_path / TEST_IMAGES), "no images")


# ---------------------------------------------------------------------------
# (b) folders of text files
# ---------------------------------------------------------------------------

NAME_CHARS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))
names = st.text(NAME_CHARS, min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
WORDS = ["apple", "river", "stone", "cloud", "night", "green", "été", "naïve", "über", "the", "42"]
word_files = st.lists(st.sampled_from(WORDS), max_size=25).map(lambda w: " ".join(w).encode("utf-8"))
contents = st.one_of(
    st.just(b""),
    st.binary(max_size=120),
    word_files, word_files, word_files,
    st.lists(st.sampled_from(WORDS), max_size=25).map(lambda w: " ".join(w).encode("latin-1", "replace")),
    st.text(max_size=60).map(lambda s: s.encode("utf-8")),
)


@st.composite
def text_trees(draw):
    """Entries (path parts, kind, payload): files with random names and bytes, folders,
    and symlinks to the folder above, the folder itself, nothing, or themselves."""
    entries = []
    layout = draw(st.sampled_from(["flat", "labelled", "any"]))  # the first two often load
    for _ in range(draw(st.integers(0, 8))):
        if layout == "flat":
            folders = []
        elif layout == "labelled":
            folders = [draw(st.sampled_from(["neg", "pos"]))]
        else:
            folders = draw(st.lists(st.one_of(names, st.sampled_from(["neg", "pos", ".hidden", "x.txt"])),
                                    max_size=2))
        leaf = draw(names) + draw(st.sampled_from([".txt", ".txt", ".TXT", "", ".md"]))
        kind = draw(st.sampled_from(["file"] * 6 + ["folder", "symlink"]))
        payload = draw(contents) if kind == "file" else draw(st.sampled_from(["..", ".", "missing", "self"]))
        entries.append((folders + [leaf], kind, payload))
    return entries


def build_tree(root: Path, entries) -> None:
    root.mkdir()
    for parts, kind, payload in entries:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_bytes(payload)
            elif kind == "folder":
                path.mkdir()
            else:
                os.symlink(path.name if payload == "self" else payload, path)
        except (OSError, ValueError):
            pass  # the name is taken, a parent is a file, or the name is too long: skip it


@settings(FUZZ, max_examples=250)
@given(text_trees(), st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16", "no-such-codec"]),
       st.integers(1, 3))
def test_load_text_folder_gives_a_corpus_or_a_data_error(tmp_path_factory, entries, encoding, min_count):
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "corpus"
    build_tree(root, entries)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # documents with no vocabulary word are dropped with a warning
            c = load_text_folder(root, min_count=min_count, encoding=encoding)
    except DataError as e:
        assert_one_line(str(e), str(root))
        event("DataError")
        return
    finally:
        shutil.rmtree(root.parent)
    event("corpus")
    N, V = c.counts.shape
    assert N >= 1 and V >= 1 and c.counts.dtype == np.float64
    assert np.all(c.counts >= 0) and np.all(c.counts == np.round(c.counts)) and np.all(c.counts.sum(1) > 0)
    assert len(c.vocab) == V == len(set(c.vocab)) and all(isinstance(w, str) and w for w in c.vocab)
    assert c.labels.shape == (N,) and c.labels.dtype == np.int64
    classes = 1 if c.label_names is None else len(c.label_names)
    assert 0 <= c.labels.min() and c.labels.max() < classes
    assert len(c.doc_names) == N and all(n.lower().endswith(".txt") for n in c.doc_names)


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(), "no .txt files"),
    (lambda p: p.write_text("apple apple"), "is not a folder"),
    (lambda p: (p.mkdir(), (p / "a.txt").mkdir()), "no .txt files"),
    (lambda p: None, "does not exist"),
])
def test_text_folder_edge_cases_name_the_folder(tmp_path, make, fragment):
    path = tmp_path / "in\nput.txt"
    make(path)
    with pytest.raises(DataError) as err:
        load_text_folder(path)
    assert_one_line(str(err.value), str(tmp_path), fragment)


# ---------------------------------------------------------------------------
# (c) data arrays for each likelihood
# ---------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
fuzzed_arrays = st.one_of(
    hnp.arrays(hnp.scalar_dtypes(), shapes),  # bool, ints, floats (NaN, inf), complex, datetimes
    hnp.arrays(st.one_of(hnp.byte_string_dtypes(), hnp.unicode_string_dtypes()), shapes),
    hnp.arrays(object, shapes, elements=st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=3))),
    hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(min_dims=2, max_dims=2, max_side=4),
               elements=st.one_of(st.sampled_from([0.0, 1.0, 2.0]), st.floats(0, 1, width=32))),  # often valid
    hnp.arrays(st.sampled_from([np.int64, np.uint8, np.bool_]), hnp.array_shapes(min_dims=2, max_dims=2, max_side=4)),
    st.lists(st.lists(st.one_of(st.floats(), st.integers(), st.booleans(), st.text(max_size=2)), max_size=3),
             max_size=3),
    st.one_of(st.none(), st.floats(), st.text(max_size=3)),
)


@settings(FUZZ, max_examples=800)
@given(fuzzed_arrays, st.sampled_from(list(LIKELIHOODS) + ["no-such-likelihood"]))
def test_validate_data_gives_checked_floats_or_a_data_error(x, likelihood):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float32 row sums may overflow to inf
        try:
            out = validate_data(x, likelihood, "fuzz data")
        except DataError as e:
            assert_one_line(str(e), "fuzz data")
            event("DataError")
            return
        event("accepted")
        assert likelihood in LIKELIHOODS
        assert isinstance(out, np.ndarray) and out.dtype in (np.float32, np.float64)
        assert out.ndim == 2 and out.size > 0 and np.all(np.isfinite(out))
        np.testing.assert_array_equal(out, np.asarray(x).astype(out.dtype))
        if likelihood == "bernoulli":
            assert out.min() >= 0 and out.max() <= 1
        if likelihood == "categorical":
            assert out.min() >= 0 and np.all(out.sum(axis=1) > 0)


# ---------------------------------------------------------------------------
# (d) the command line
# ---------------------------------------------------------------------------

def _subparsers():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    return sub.choices


COMMANDS = {name: [a for a in p._actions if a.dest != "help"] for name, p in _subparsers().items()}
#: folders and files the fuzzed argv may name, made in the test's working folder
PATHS = ["run-ok", "not-a-run", "corrupt.npz", "empty", "texts", "missing", "runs/new", "", "."]
SAFE_TEXT = st.text(st.characters(blacklist_characters="/\\", blacklist_categories=("Cs",)), max_size=8) \
    .filter(lambda s: s != "..")
VALUES = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "-1", "1e400", "nan", "inf", "-inf", "0.5", "5e-324", "1_0", " 7 ",
                     "", "none", "None", "400,x", "1,2", "16,16", "1,,2", "٣", "1e-5", "0x10", "10" * 40]),
    st.integers().map(str), st.floats().map(repr), SAFE_TEXT,
)
PATH_DESTS = {"out", "checkpoint", "data_dir", "output"}
PLAUSIBLE = {cli.positive_int: ["1", "2", "16"], cli.nonneg_int: ["0", "1", "20"],
             cli.positive_float: ["0.001", "1", "2.5"], cli.nonneg_float: ["0", "0.5", "4"],
             cli.hidden_widths: ["16", "8,8", "none"], None: ["0.5,1", "2"]}


@st.composite
def cli_argv(draw):
    """A command (or junk) and up to six options of that command with random values:
    exact or abbreviated names, ``--opt=value``, missing values, positionals, junk tokens."""
    command = draw(st.one_of(st.sampled_from(list(COMMANDS)), st.sampled_from(list(COMMANDS)), SAFE_TEXT))
    argv = [command]
    actions = COMMANDS.get(command, [])
    for _ in range(draw(st.integers(0, 6))):
        if not actions or draw(st.integers(0, 14)) == 0:
            argv.append(draw(st.one_of(SAFE_TEXT, st.sampled_from(["-h", "--help", "--", "-", "--=", "-n"]))))
            continue
        action = draw(st.sampled_from(actions))
        if action.dest in PATH_DESTS:  # sampling from a real run could start long work: not fuzzed here
            value = draw(st.one_of(st.sampled_from([p for p in PATHS if command != "sample" or p != "run-ok"]),
                                   SAFE_TEXT))
        elif draw(st.integers(0, 3)) > 0:  # a plausible value, so that whole argv lists are often valid
            value = draw(st.sampled_from([str(c) for c in action.choices] if action.choices
                                         else PLAUSIBLE.get(action.type, ["1"])))
        else:
            value = draw(VALUES)
        if not action.option_strings:
            argv.append(value)
            continue
        name = draw(st.sampled_from(action.option_strings))
        if name.startswith("--") and draw(st.integers(0, 4)) == 0:
            name = name[:draw(st.integers(3, len(name)))]  # an abbreviation, maybe ambiguous
        if action.nargs == 0:  # a flag
            argv.append(name)
        elif draw(st.integers(0, 4)) == 0:
            argv.append(f"{name}={value}")
        elif draw(st.integers(0, 9)) == 0:
            argv.append(name)  # the value is missing
        else:
            argv += [name, value]
    return argv


@pytest.fixture
def cli_sandbox(tmp_path, monkeypatch):
    """A working folder holding PATHS; training, evaluation, lessons, the student copy and the
    derivations catalogue replaced by recorders."""
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(epochs=1, z_dim=2, hidden=(4,), train_size=10, test_size=10)
    vae = cfg.build()
    save_run(tmp_path / "run-ok", cfg, vae, optim.init_state(cfg.optimizer, vae.flat), RunState())
    save_checkpoint(tmp_path / "not-a-run", {"params": np.zeros(3)}, {"hello": 1})
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04" + bytes(range(200)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts" / "a").mkdir(parents=True)
    (tmp_path / "texts" / "b").mkdir()
    for i in range(6):
        (tmp_path / "texts" / "ab"[i % 2] / f"{i}.txt").write_text("apple river stone " * (i + 1))
    calls = []

    def fake_train(cfg, out, resume=False, progress=True, figures=True, **kw):
        assert isinstance(cfg, TrainConfig) and isinstance(out, Path) and isinstance(resume, bool)
        calls.append(("train", cfg))
        return {"epoch": cfg.epochs, "test_loss": 100.0, "test_recon": 90.0, "test_kl": 10.0, "seconds": 1.0,
                "warnings": []}

    def fake_evaluate(vae, x, iw=0, progress=None, c=None, threads=None):
        assert x.ndim == 2 and len(x) >= 1 and isinstance(iw, int) and iw >= 0
        calls.append(("evaluate",))
        out = {"elbo": {"loss": 100.0, "recon": 90.0, "kl": 10.0}, "active_units": 1,
               "kl_per_dim": np.ones(vae.z_dim)}
        if iw:
            out.update(iw_bound=-99.0, nll=99.0, nll_se=0.1, ess=1.0, iw_samples_per_s=1.0)
        return out

    monkeypatch.setattr(cli, "train", fake_train)
    monkeypatch.setattr(cli, "evaluate", fake_evaluate)
    monkeypatch.setattr(plots, "rate_distortion", lambda *a, **kw: calls.append(("plot",)))
    monkeypatch.setattr(runpy, "run_path", lambda *a, **kw: calls.append(("lesson",)))
    ### BEGIN INSTRUCTOR
    monkeypatch.setattr(cli, "cmd_assign", lambda args: calls.append(("assign",)) or 0)
    ### END INSTRUCTOR
    monkeypatch.setattr(derivations, "run", lambda quick=False: calls.append(("derivations", quick)) or iter(()))
    monkeypatch.delenv("MINIVAE_QUICK", raising=False)  # `lessons run --quick` sets it
    monkeypatch.setenv("MINIVAE_LESSONS_OUT", str(tmp_path / "lesson-out"))
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    return calls


def run_cli(argv, capsys, calls):
    """Run main(argv) in-process and check the outcome is one the CLI promises."""
    calls.clear()
    try:
        code, exited = cli.main(list(argv)), False
    except SystemExit as e:
        code, exited = e.code, True
    out, err = capsys.readouterr()
    if currently_in_test_context():
        event(f"{'exit' if exited else 'return'} {code}")
    if exited and code == 0:  # --help
        assert "usage:" in out and err == ""
    elif code == 2:  # a usage error (argparse) or a user error (the command)
        assert err.endswith("\n")
        assert_one_line(err, "error:")
        if not exited:
            assert err.startswith(f"minivae {argv[0]}: error: ")
    else:
        assert code == 0 and not exited and err == "", (code, err)
        if argv[0] in ("train", "sweep"):
            assert calls and all(c == ("train", c[1]) for c in calls if c[0] == "train")
    return code, exited, err


@settings(FUZZ, max_examples=700)
@given(cli_argv())
def test_cli_with_random_options(cli_sandbox, capsys, argv):
    run_cli(argv, capsys, cli_sandbox)


@settings(FUZZ, max_examples=200)
@given(st.lists(st.text(max_size=12), max_size=5))
def test_cli_with_random_strings(cli_sandbox, capsys, argv):
    run_cli(argv, capsys, cli_sandbox)


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--likelihood", "no-such-likelihood"], "bernoulli"),
    (["train", "--activation", "no-such-activation"], "relu"),
    (["train", "--z-dim", "2.5"], "positive integer"),
    (["sample", "-n", "0", "--checkpoint", "x"], "positive integer"),
])
def test_cli_bad_option_lists_the_valid_choices(cli_sandbox, capsys, argv, fragment):
    code, exited, err = run_cli(argv, capsys, cli_sandbox)
    assert (code, exited) == (2, True) and fragment in err


@pytest.mark.parametrize("argv, shown", [
    (["train", "a\nb"], "a\\nb"),  # argparse: unrecognized arguments
    (["train", "--ep\rochs", "3"], "--ep\\rochs"),
    (["evaluate", "--checkpoint", "x\ny"], "x\\ny"),  # the command: no checkpoint at ...
    (["train", "--dataset", "text", "--likelihood", "categorical", "--data-dir", "no\u2028such"],
     "no\\u2028such"),
])
def test_cli_messages_stay_one_line_when_the_argument_has_a_line_break(cli_sandbox, capsys, argv, shown):
    """Regression: arguments echoed into an error message kept their line breaks."""
    code, _, err = run_cli(argv, capsys, cli_sandbox)
    assert code == 2 and shown in err


@pytest.mark.parametrize("argv", [["lessons", "copy", "--"], ["lessons", "run", "--"]])
def test_cli_positional_given_only_as_double_dashes_is_missing(cli_sandbox, capsys, argv):
    """Regression: a positional given only as '--' once reached a command as [] and failed
    with a TypeError traceback; it is a missing argument, one line."""
    code, exited, err = run_cli(argv, capsys, cli_sandbox)
    assert (code, exited) == (2, True) and "required:" in err


def test_cli_memory_error_is_one_line(cli_sandbox, capsys, monkeypatch):
    """Regression: an out-of-memory failure (e.g. ``sample -n 10**9``) printed a traceback."""
    def too_big(*a, **kw):
        raise MemoryError("Unable to allocate 7.45 TiB for an array with shape (1000000000, 1000)")

    monkeypatch.setattr(cli, "train", too_big)
    code, _, err = run_cli(["train", "--epochs", "1"], capsys, cli_sandbox)
    assert code == 2 and "out of memory" in err and "7.45 TiB" in err


# ---------------------------------------------------------------------------
# (e) checkpoints
# ---------------------------------------------------------------------------

class PickleBomb:
    """An object whose unpickling creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    """A valid checkpoint, the same with a pickled member added, and what the valid one holds."""
    folder = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(0)
    arrays = {"params": rng.standard_normal(40).astype(np.float32), "opt.m": np.zeros(40),
              "order": rng.permutation(7), "flags": np.array([True, False])}
    meta = {"step": 3, "config": {"z_dim": 2, "hidden": [4]}, "rng": rng.bit_generator.state}
    valid = save_checkpoint(folder / "valid.npz", arrays, meta).read_bytes()
    marker = folder / "pwned"
    buf = io.BytesIO(valid)
    with zipfile.ZipFile(buf, "a") as zf:
        with zf.open("evil.npy", "w") as member:
            np.lib.format.write_array(member, np.array([PickleBomb(marker)], dtype=object), allow_pickle=True)
    return Fixed({"valid": valid, "pickled": buf.getvalue(), "arrays": arrays,
                  "meta": json.loads(json.dumps(meta)), "marker": marker})


@settings(FUZZ, max_examples=400)
@given(st.sampled_from(["valid", "valid", "pickled"]), edits(0, 3),
       st.one_of(st.none(), st.binary(max_size=200).map(lambda b: b"PK\x03\x04" + b), st.binary(max_size=200)))
def test_load_checkpoint_gives_the_saved_content_or_a_checkpoint_error(checkpoint_bytes, tmp_path_factory,
                                                                       base, ops, replacement):
    raw = mutate(checkpoint_bytes[base], ops) if replacement is None else replacement
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "checkpoint.npz"
    path.write_bytes(raw)
    event(f"from the {base} file" if replacement is None else "random bytes")
    try:
        arrays, meta = load_checkpoint(path)
    except CheckpointError as e:
        assert_one_line(str(e), str(path))
        if base == "pickled" and replacement is None and not ops:
            assert "never run code" in str(e)
        event("CheckpointError")
        return
    finally:
        assert not checkpoint_bytes["marker"].exists(), "a pickle in the checkpoint ran"
    event("loaded")
    # a damaged file either fails or still holds exactly what was saved
    assert base == "valid" and meta == checkpoint_bytes["meta"]
    assert arrays.keys() == checkpoint_bytes["arrays"].keys()
    for name, a in checkpoint_bytes["arrays"].items():
        assert arrays[name].dtype == a.dtype and np.array_equal(arrays[name], a)


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory):
    """The arrays and meta of a small, valid, untrained run."""
    folder = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=2, z_dim=2, hidden=(4,), train_size=10, test_size=10)
    vae = cfg.build()
    save_run(folder, cfg, vae, optim.init_state(cfg.optimizer, vae.flat), RunState())
    arrays, meta = load_checkpoint(folder)
    return Fixed(arrays=arrays, meta=meta)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


@st.composite
def edited_runs(draw, arrays, meta):
    """A run's meta with keys of its config, state or optimizer count set to random JSON
    values, deleted or added, and sometimes parameters of another size or dtype."""
    meta, arrays = json.loads(json.dumps(meta)), dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["config", "state", "state", "train_sums", "top"]))
        where = meta
        for part in {"config": ["config"], "state": ["state"], "train_sums": ["state", "train_sums"],
                     "top": []}[section]:
            where = where.get(part) if isinstance(where, dict) else None
        if not isinstance(where, dict):  # an earlier edit replaced it
            continue
        key = draw(st.one_of(st.sampled_from(sorted(where)), st.text(max_size=5)) if where else st.text(max_size=5))
        if draw(st.integers(0, 4)) == 0:
            where.pop(key, None)
        else:
            where[key] = draw(json_values)
    if draw(st.integers(0, 5)) == 0:
        arrays["params"] = draw(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8]),
                                           st.integers(0, 30)))
    return arrays, meta


@settings(FUZZ, max_examples=250)
@given(st.data())
def test_load_run_gives_a_usable_run_or_a_checkpoint_error(run_checkpoint, tmp_path_factory, draw):
    arrays, meta = draw.draw(edited_runs(run_checkpoint["arrays"], run_checkpoint["meta"]))
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    save_checkpoint(folder, arrays, meta)
    try:
        cfg, vae, opt_state, rs = load_run(folder)
    except CheckpointError as e:
        assert_one_line(str(e), str(folder))
        event("CheckpointError")
        return
    event("loaded")
    assert isinstance(cfg, TrainConfig) and TrainConfig(**dataclasses.asdict(cfg)) == cfg
    assert np.array_equal(vae.flat, arrays["params"])
    assert type(opt_state.t) is int and opt_state.t >= 0
    for count in (rs.epoch, rs.batch, rs.step):
        assert type(count) is int and count >= 0
    assert type(rs.seconds) in (int, float)
    assert all(type(rs.train_sums.get(k)) in (int, float) for k in ("loss", "recon", "kl", "n"))
    assert isinstance(rs.history, list) and all(isinstance(row, dict) for row in rs.history)


@pytest.mark.parametrize("section, key, value", [
    ("config", "batch_size", 1.5),  # reached the training loop's slicing: TypeError
    ("config", "epochs", "2"),
    ("top", "opt_t", None),  # int(None): TypeError
    ("state", "epoch", "1"),  # '>=' between str and int in the training loop
    ("state", "seconds", [1]),
    ("train_sums", "n", None),
    ("state", "history", [{"epoch": "one"}]),
])
def test_load_run_refuses_a_state_the_training_loop_cannot_use(run_checkpoint, tmp_path, monkeypatch, capsys,
                                                              section, key, value):
    """Regression: these edits of a run's stored meta loaded without complaint, and
    ``train --resume`` then stopped with a traceback."""
    meta = json.loads(json.dumps(run_checkpoint["meta"]))
    where = {"config": meta["config"], "top": meta, "state": meta["state"],
             "train_sums": meta["state"]["train_sums"]}[section]
    where[key] = value
    save_checkpoint(tmp_path / "run", run_checkpoint["arrays"], meta)
    with pytest.raises(CheckpointError) as err:
        load_run(tmp_path / "run")
    assert_one_line(str(err.value), str(tmp_path / "run"), "not a minivae run")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--resume", "--out", "run", "--no-figures", "--no-progress"]) == 2
    assert_one_line(capsys.readouterr().err, "minivae train: error:", "not a minivae run")


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(batch_size=1.5), "batch-size must be of type int"),
    (dict(z_dim=True), "z-dim must be of type int"),
    (dict(lr="0.1"), "lr must be of type float"),
    (dict(likelihood=None), "likelihood must be of type str"),
    (dict(conditional=1), "conditional must be of type bool"),
])
def test_config_refuses_values_of_the_wrong_type(kwargs, fragment):
    """Regression: TrainConfig(batch_size=1.5) was accepted and training failed in a slice."""
    with pytest.raises(ValueError, match=fragment):
        TrainConfig(**kwargs)


def test_config_accepts_numpy_numbers():
    cfg = TrainConfig(z_dim=np.int64(3), lr=np.float32(0.5), epochs=2)
    assert cfg.z_dim == 3 and cfg.lr == 0.5


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="needs POSIX signals")
def test_ctrl_c_in_the_cli_saves_a_checkpoint_and_exits_130(tmp_path):
    """SIGINT (Ctrl-C) to ``python -m minivae train`` mid-run: a checkpoint at the step it
    stopped, one line on stderr, exit code 130, and the run continues with --resume."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "minivae", "train", "--epochs", "30", "--z-dim", "2", "--hidden", "16",
            "--train-size", "2000", "--test-size", "100", "--no-figures", "--no-progress", "--out", str(out)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not proc.stdout.readline().startswith("epoch 1/30"):  # training is under way
            assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr == "minivae train: interrupted\n"
    assert "interrupted: checkpoint saved" in stdout and "--resume" in stdout
    rs = load_run(out)[3]
    assert 1 <= rs.epoch < 30 and rs.step >= 16  # past the first epoch (16 steps of 128), not at the end
    done = subprocess.run(args + ["--resume", "--epochs", str(rs.epoch + 1)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert load_run(out)[3].epoch == rs.epoch + 1
