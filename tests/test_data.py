"""Tests for minivae.data: MNIST loading and verification, IDX parsing, binarization, toy sets, validation."""

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minivae import data
from minivae.data import (
    DataError,
    binarize,
    binarize_static,
    load_mnist,
    mnist_dir,
    parse_idx,
    toy_binary_patterns,
    toy_gaussian_mixture,
    validate_data,
)

from strategies import assert_one_line

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


# ---------------------------------------------------------------------------
# Real MNIST
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_train():
    return load_mnist("train")


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test")


@pytest.mark.parametrize(
    "split, n, counts, mean, first_labels",
    [
        ("train", 60000, TRAIN_COUNTS, 0.13066, [5, 0, 4, 1, 9]),
        ("test", 10000, TEST_COUNTS, 0.13251, [7, 2, 1, 0, 4]),
    ],
)
def test_mnist_shapes_dtypes_counts(request, split, n, counts, mean, first_labels):
    x, y = request.getfixturevalue(f"mnist_{split}")
    assert x.shape == (n, 784) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y, minlength=10).tolist() == counts
    assert y[:5].tolist() == first_labels
    assert abs(float(x.mean(dtype=np.float64)) - mean) < 1e-4
    # Pixels are k / 255 for integers k.
    k = x[:100] * 255
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)


def test_mnist_cache_is_read_only_and_shared(mnist_test):
    x, y = mnist_test
    assert not x.flags.writeable and not y.flags.writeable
    with pytest.raises(ValueError):
        x[0, 0] = 0.5
    x2, y2 = load_mnist("test")
    assert x2 is x and y2 is y


def test_mnist_env_var_and_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIVAE_DATA", str(tmp_path))
    assert mnist_dir() == tmp_path.resolve()
    assert mnist_dir(data.MNIST_DIR) == data.MNIST_DIR.resolve()
    monkeypatch.delenv("MINIVAE_DATA")
    assert mnist_dir() == data.MNIST_DIR.resolve()


def test_mnist_missing_folder(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        mnist_dir(missing)
    assert_one_line(err, str(missing), "MINIVAE_DATA")
    monkeypatch.setenv("MINIVAE_DATA", str(missing))
    with pytest.raises(DataError) as err:
        load_mnist("test")
    assert_one_line(err, str(missing), "MINIVAE_DATA")


def test_mnist_unknown_split():
    with pytest.raises(DataError) as err:
        load_mnist("validation")
    assert_one_line(err, "validation", "train", "test")


# ---------------------------------------------------------------------------
# Damaged copies of the test split
# ---------------------------------------------------------------------------


@pytest.fixture
def test_copy(tmp_path):
    """A folder holding the test-split files and the checksum file."""
    for name in (TEST_IMAGES, TEST_LABELS, data.SUMS_FILE):
        shutil.copy(data.MNIST_DIR / name, tmp_path / name)
    return tmp_path


def read_idx(folder, name):
    return gzip.decompress((folder / name).read_bytes())


def write_idx(folder, name, raw, update_sums):
    (folder / name).write_bytes(gzip.compress(raw))
    if update_sums:
        sums = folder / data.SUMS_FILE
        idx_name = name.removesuffix(".gz")
        lines = [
            f"{hashlib.sha256(raw).hexdigest()}  {idx_name}" if line.endswith(idx_name) else line
            for line in sums.read_text().splitlines()
        ]
        sums.write_text("\n".join(lines) + "\n")


def test_copy_loads(test_copy, mnist_test):
    x, y = load_mnist("test", root=test_copy)
    np.testing.assert_array_equal(x, mnist_test[0])
    np.testing.assert_array_equal(y, mnist_test[1])


@pytest.mark.parametrize("name", [TEST_IMAGES, TEST_LABELS])
def test_missing_file(test_copy, name):
    (test_copy / name).unlink()
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, str(test_copy / name), "missing")


@pytest.mark.parametrize("name", [TEST_IMAGES, TEST_LABELS])
@pytest.mark.parametrize("keep", [0.5, 0.99, 10 / 4517])
def test_truncated_gzip(test_copy, name, keep):
    packed = (test_copy / name).read_bytes()
    (test_copy / name).write_bytes(packed[: int(len(packed) * keep)])
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, name, "corrupt or truncated")


def test_not_gzip_at_all(test_copy):
    (test_copy / TEST_LABELS).write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, TEST_LABELS, "corrupt or truncated")


@pytest.mark.parametrize("name, offset", [(TEST_IMAGES, 16 + 5000), (TEST_LABELS, 8 + 3)])
def test_modified_content_fails_checksum(test_copy, name, offset):
    raw = bytearray(read_idx(test_copy, name))
    raw[offset] ^= 0x01
    write_idx(test_copy, name, bytes(raw), update_sums=False)
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    expected = {"t10k-images-idx3-ubyte": "0fa7898d509279e4", "t10k-labels-idx1-ubyte": "ff7bcfd416de3373"}
    actual = hashlib.sha256(bytes(raw)).hexdigest()[:16]
    assert_one_line(err, name, "checksum", expected[name.removesuffix(".gz")], actual)


@pytest.mark.parametrize(
    "name, magic, expected",
    [
        (TEST_IMAGES, 0x00000801, "0x00000803"),
        (TEST_LABELS, 0x00000803, "0x00000801"),
        (TEST_LABELS, 0x08000801, "0x00000801"),
    ],
)
def test_wrong_magic(test_copy, name, magic, expected):
    raw = bytearray(read_idx(test_copy, name))
    raw[:4] = struct.pack(">I", magic)
    write_idx(test_copy, name, bytes(raw), update_sums=True)
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, name, f"0x{magic:08X}", expected)


def test_label_count_disagrees(test_copy):
    raw = read_idx(test_copy, TEST_LABELS)
    short = struct.pack(">II", 0x801, 9999) + raw[8:-1]
    write_idx(test_copy, TEST_LABELS, short, update_sums=True)
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, "10000 images", "9999 labels")


def test_missing_sums_file(test_copy):
    (test_copy / data.SUMS_FILE).unlink()
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, str(test_copy / data.SUMS_FILE), "missing")


def test_sums_file_without_entry(test_copy):
    sums = test_copy / data.SUMS_FILE
    sums.write_text("".join(l + "\n" for l in sums.read_text().splitlines() if "t10k-labels" not in l))
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, "t10k-labels-idx1-ubyte", data.SUMS_FILE)


def test_malformed_sums_file(test_copy):
    (test_copy / data.SUMS_FILE).write_text("not a checksum line\n")
    with pytest.raises(DataError) as err:
        load_mnist("test", root=test_copy)
    assert_one_line(err, "line 1", data.SUMS_FILE)


def test_failed_load_is_not_cached(test_copy):
    (test_copy / TEST_LABELS).write_bytes(b"junk")
    with pytest.raises(DataError):
        load_mnist("test", root=test_copy)
    shutil.copy(data.MNIST_DIR / TEST_LABELS, test_copy / TEST_LABELS)
    x, y = load_mnist("test", root=test_copy)
    assert x.shape == (10000, 784) and y.shape == (10000,)


# ---------------------------------------------------------------------------
# parse_idx
# ---------------------------------------------------------------------------


def idx_bytes(dims, payload=None, magic=None):
    """Build an IDX file: header for uint8 data with ``dims`` and the payload."""
    if magic is None:
        magic = 0x0800 | len(dims)
    if payload is None:
        payload = bytes(i % 256 for i in range(int(np.prod(dims, dtype=np.int64))))
    return struct.pack(f">I{len(dims)}i", magic, *dims) + payload


def test_parse_idx_tiny_images():
    raw = idx_bytes((2, 3, 3))
    assert raw[:4] == b"\x00\x00\x08\x03" and len(raw) == 16 + 18
    out = parse_idx(raw, "tiny")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, np.arange(18, dtype=np.uint8).reshape(2, 3, 3))
    assert out[1, 0, 2] == 11  # row-major: image 1, row 0, col 2
    assert out.flags.writeable
    out[0, 0, 0] = 99  # a fresh array: the bytes are untouched
    assert raw[16] == 0


def test_parse_idx_labels_and_expected_magic():
    raw = idx_bytes((5,), bytes([3, 1, 4, 1, 5]))
    np.testing.assert_array_equal(parse_idx(raw, "labels", expected_magic=0x801), [3, 1, 4, 1, 5])
    with pytest.raises(DataError) as err:
        parse_idx(raw, "labels", expected_magic=0x803)
    assert_one_line(err, "labels", "0x00000801", "0x00000803")


def test_parse_idx_zero_items():
    out = parse_idx(idx_bytes((0, 28, 28)), "empty")
    assert out.shape == (0, 28, 28) and out.dtype == np.uint8


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x07", "0x01000801"),
        (b"\x00\x00\x09\x01" + b"\x00\x00\x00\x01" + b"\x07", "type code 0x09"),
        (b"\x00\x00\x08\x00" + b"\x07", "zero dimensions"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02", "too short"),
        (idx_bytes((2, -3), b""), "negative"),
        (idx_bytes((2**31 - 1,) * 3, b"\x00" * 8), "data bytes"),
        (idx_bytes((2, 3, 3))[:-1], "17"),
        (idx_bytes((2, 3, 3)) + b"\x00", "19"),
        (idx_bytes((255,) * 255, b""), "data bytes"),
    ],
)
def test_parse_idx_malformed(raw, fragment):
    with pytest.raises(DataError) as err:
        parse_idx(raw, "bad.idx")
    assert_one_line(err, "bad.idx", fragment)


def test_parse_idx_rejects_non_bytes():
    with pytest.raises(DataError) as err:
        parse_idx("\x00\x00\x08\x01", "text")
    assert_one_line(err, "text", "str")


def parse_or_error(raw):
    """Parse ``raw``; return the array or None for a DataError. Anything else propagates."""
    try:
        out = parse_idx(raw, "fuzz")
    except DataError as e:
        assert "\n" not in str(e)
        return None
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert out.ndim == raw[3] and 4 + 4 * out.ndim + out.size == len(raw)
    return out


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_idx_fuzz_arbitrary_bytes(raw):
    parse_or_error(raw)


@st.composite
def mutated_idx(draw):
    dims = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    raw = bytearray(idx_bytes(tuple(dims)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "truncate", "append", "dim"]))
        if kind == "set" and raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del raw[draw(st.integers(0, len(raw))) :]
        elif kind == "append":
            raw += draw(st.binary(min_size=1, max_size=8))
        elif kind == "dim" and len(raw) >= 8:
            i = 4 * draw(st.integers(1, (len(raw) - 4) // 4))
            raw[i : i + 4] = struct.pack(">i", draw(st.integers(-(2**31), 2**31 - 1)))
    return dims, bytes(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_idx())
def test_parse_idx_fuzz_mutated_headers(case):
    dims, raw = case
    out = parse_or_error(raw)
    if raw == idx_bytes(tuple(dims)):
        assert out is not None and out.shape == tuple(dims)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_parse_idx_roundtrip(dims, random):
    n = int(np.prod(dims))
    payload = bytes(random.randrange(256) for _ in range(n))
    out = parse_idx(idx_bytes(tuple(dims), payload), "roundtrip")
    assert out.shape == tuple(dims)
    assert out.tobytes() == payload


# ---------------------------------------------------------------------------
# Binarization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binarize_values_dtype_and_mean(dtype):
    rng = np.random.default_rng(0)
    x = np.full((1000, 200), 0.3, dtype=dtype)  # (N, D)
    b = binarize(x, rng)
    assert b.dtype == dtype and b.shape == x.shape
    assert set(np.unique(b).tolist()) <= {0.0, 1.0}
    se = np.sqrt(0.3 * 0.7 / x.size)
    assert abs(b.mean(dtype=np.float64) - 0.3) < 5 * se
    assert np.all(x == dtype(0.3))  # input untouched


def test_binarize_per_entry_probabilities():
    rng = np.random.default_rng(1)
    p = np.linspace(0.0, 1.0, 11)  # (D,)
    x = np.tile(p, (20000, 1))  # (N, D)
    b = binarize(x, rng)
    se = np.sqrt(p * (1 - p) / x.shape[0])  # (D,)
    assert np.all(np.abs(b.mean(axis=0) - p) <= 5 * se + 1e-12)
    assert np.all(b[:, 0] == 0.0) and np.all(b[:, -1] == 1.0)


class EdgeUniforms:
    """Stands in for a Generator whose uniforms hit the ends of [0, 1)."""

    def random(self, shape, dtype):
        u = np.zeros(shape, dtype=dtype)
        u.flat[1::2] = np.nextafter(dtype(1), dtype(0))
        return u


def test_binarize_exact_at_zero_and_one():
    x = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)  # (1, 4), uniforms 0, ~1, 0, ~1
    np.testing.assert_array_equal(binarize(x, EdgeUniforms()), [[0.0, 0.0, 1.0, 1.0]])


def test_binarize_fresh_draws_and_static_reproducible(mnist_test):
    x = mnist_test[0][:500]  # (500, 784)
    rng = np.random.default_rng(2)
    a, b = binarize(x, rng), binarize(x, rng)
    assert a.dtype == np.float32
    assert np.mean(a != b) > 0.01
    s0, s0_again, s1 = binarize_static(x), binarize_static(x, seed=0), binarize_static(x, seed=1)
    np.testing.assert_array_equal(s0, s0_again)
    assert np.any(s0 != s1)
    np.testing.assert_array_equal(s0, binarize(x, np.random.default_rng(0)))
    # On MNIST the binarized mean tracks the grey-level mean.
    assert abs(s0.mean() - x.mean()) < 0.01


def test_binarize_rejects_non_probabilities():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError) as err:
        binarize(np.array([[0.0, 255.0]]), rng)
    assert_one_line(err, "[0, 255]")
    with pytest.raises(DataError) as err:
        binarize(np.array([0.5, np.nan]), rng)
    assert_one_line(err, "1 NaN")


# ---------------------------------------------------------------------------
# validate_data
# ---------------------------------------------------------------------------

NAME = "x_train"


def ragged():
    return [[0.0, 1.0], [1.0]]


def with_bad(value, cells):
    x = np.zeros((4, 5))
    for r, c in cells:
        x[r, c] = value
    return x


@pytest.mark.parametrize(
    "x, likelihood, fragments",
    [
        (np.array([["a", "b"]]), "gaussian", ["<U1"]),
        (np.array([[1.0, None]], dtype=object), "gaussian", ["object"]),
        (ragged(), "gaussian", ["not a numeric array"]),
        (np.ones((2, 2), dtype=complex), "gaussian", ["complex"]),
        (np.zeros(5), "gaussian", ["(5,)", "(N, D)"]),
        (np.zeros((2, 3, 4)), "bernoulli", ["(2, 3, 4)", "(N, D)"]),
        (np.float64(1.0), "gaussian", ["()", "(N, D)"]),
        (np.zeros((0, 5)), "gaussian", ["empty", "(0, 5)"]),
        (np.zeros((5, 0)), "bernoulli", ["empty", "(5, 0)"]),
        (with_bad(np.nan, [(1, 2), (3, 0)]), "gaussian", ["2 non-finite", "(1, 2)"]),
        (with_bad(np.inf, [(2, 4)]), "laplace", ["1 non-finite", "(2, 4)"]),
        (with_bad(-np.inf, [(0, 1), (0, 3), (3, 3)]), "gaussian_learned", ["3 non-finite", "(0, 1)"]),
        (np.array([[0.0, 1.5]]), "bernoulli", ["[0, 1.5]", "bernoulli"]),
        (np.array([[-0.25, 1.0]]), "bernoulli", ["[-0.25, 1]", "bernoulli"]),
        (np.array([[0, 255]], dtype=np.uint8), "bernoulli", ["[0, 255]"]),
        (np.array([[1.0, -2.0]]), "categorical", ["-2", "categorical"]),
        (np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]), "categorical", ["2 rows", "row 1"]),
        (np.zeros((2, 2)), "no-such-likelihood", ["no-such-likelihood", "bernoulli", "categorical"]),
    ],
)
def test_validate_data_rejects(x, likelihood, fragments):
    with pytest.raises(DataError) as err:
        validate_data(x, likelihood, name=NAME)
    assert_one_line(err, NAME, *fragments)


def test_validate_data_default_name():
    with pytest.raises(DataError) as err:
        validate_data(np.zeros(3), "gaussian")
    assert_one_line(err, "data has shape (3,)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_validate_data_keeps_float_arrays(dtype):
    x = np.array([[0.0, 0.25], [1.0, 0.5]], dtype=dtype)  # probabilities allowed
    out = validate_data(x, "bernoulli", name=NAME)
    assert out is x and out.dtype == dtype


@pytest.mark.parametrize(
    "x, likelihood",
    [
        (np.array([[True, False], [False, False]]), "bernoulli"),
        (np.array([[0, 1], [1, 1]], dtype=np.int32), "bernoulli"),
        (np.array([[3, 0], [0, 1]], dtype=np.uint16), "categorical"),
        ([[-5, 2], [7, 0]], "gaussian"),
        ([[-1e300, 1e300]], "laplace"),
        ([[0.5, 0.0]], "categorical"),
    ],
)
def test_validate_data_converts_to_float64(x, likelihood):
    out = validate_data(x, likelihood, name=NAME)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, np.asarray(x, dtype=np.float64))


def test_validate_data_on_mnist_and_toys(mnist_test):
    x = mnist_test[0]
    assert validate_data(x, "bernoulli", name="mnist test") is x
    xb, _ = toy_binary_patterns(50, np.random.default_rng(0))
    assert validate_data(xb, "bernoulli") is xb
    xg, _ = toy_gaussian_mixture(50, np.random.default_rng(0))
    assert validate_data(xg, "gaussian") is xg
    with pytest.raises(DataError):
        validate_data(xg, "bernoulli")


# ---------------------------------------------------------------------------
# Toy data
# ---------------------------------------------------------------------------


def test_gaussian_mixture_shapes_and_reproducible():
    x, y = toy_gaussian_mixture(300, np.random.default_rng(5))
    assert x.shape == (300, 2) and x.dtype == np.float64
    assert y.shape == (300,) and y.dtype == np.int64
    assert set(y.tolist()) == {0, 1, 2, 3}
    x2, y2 = toy_gaussian_mixture(300, np.random.default_rng(5))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = toy_gaussian_mixture(300, np.random.default_rng(6))
    assert not np.array_equal(x, x3)


def test_gaussian_mixture_components_on_circle():
    n, scale = 20000, 0.5
    x, y = toy_gaussian_mixture(n, np.random.default_rng(7), n_components=4, spread=3.0, scale=scale)
    expected = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [0.0, -3.0]])  # (4, 2)
    for c in range(4):
        xc = x[y == c]  # (n_c, 2)
        assert abs(len(xc) / n - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)
        np.testing.assert_allclose(xc.mean(axis=0), expected[c], atol=5 * scale / np.sqrt(len(xc)))
        np.testing.assert_allclose(xc.std(axis=0), scale, rtol=0.05)


def test_gaussian_mixture_higher_dim():
    x, y = toy_gaussian_mixture(400, np.random.default_rng(8), n_components=3, dim=5, spread=10.0, scale=0.1)
    assert x.shape == (400, 5) and y.max() <= 2
    for c in range(3):
        centre = x[y == c].mean(axis=0)  # (5,)
        assert abs(np.linalg.norm(centre) - 10.0) < 0.1


def test_binary_patterns_shapes_and_reproducible():
    x, y = toy_binary_patterns(200, np.random.default_rng(3), side=4, flip=0.05)
    assert x.shape == (200, 16) and x.dtype == np.float64
    assert y.shape == (200,) and y.dtype == np.int64
    assert set(np.unique(x).tolist()) <= {0.0, 1.0}
    assert 0 <= y.min() and y.max() < 8
    x2, y2 = toy_binary_patterns(200, np.random.default_rng(3), side=4, flip=0.05)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_binary_patterns_noise_free_are_bars():
    x, y = toy_binary_patterns(64, np.random.default_rng(4), side=5, flip=0.0)
    images = x.reshape(64, 5, 5)  # (n, side, side)
    for img, label in zip(images, y):
        if label < 5:
            assert img[label].sum() == 5 and img.sum() == 5  # horizontal bar on row `label`
        else:
            assert img[:, label - 5].sum() == 5 and img.sum() == 5  # vertical bar
    np.testing.assert_array_equal(x, data.bar_prototypes(5)[y])


def test_binary_patterns_flip_rate():
    n, flip = 5000, 0.1
    x, y = toy_binary_patterns(n, np.random.default_rng(9), side=4, flip=flip)
    flipped = np.mean(x != data.bar_prototypes(4)[y])
    assert abs(flipped - flip) < 5 * np.sqrt(flip * (1 - flip) / x.size)


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_toys_reject_bad_n(n):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        toy_gaussian_mixture(n, rng)
    with pytest.raises(ValueError):
        toy_binary_patterns(n, rng)
