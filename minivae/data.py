r"""Data for minivae: MNIST from its IDX files, binarization, toy sets, validation.

This module provides everything lesson 6 needs to move from toy problems to
real images:

- ``load_mnist``: reads the four original gzip-compressed IDX files, verifies
  the sha256 of the decompressed bytes against ``SHA256SUMS.uncompressed``,
  parses the IDX format with ``parse_idx`` and returns images as float32
  $x \in [0, 1]^{784}$ and labels as int64.
- ``binarize`` / ``binarize_static``: Bernoulli draws
  $\tilde x_{nd} \sim \mathrm{Bernoulli}(x_{nd})$, dynamic (a fresh draw per
  call) or static (a fixed seed).
- ``toy_gaussian_mixture`` / ``toy_binary_patterns``: small data sets generated
  in code, for tests and for the first lessons.
- ``validate_data``: checks a data matrix (N, D) against the support of a
  likelihood before training or evaluating on it.

Every data problem raises ``DataError`` with a one-line message that says what
is wrong and where (a file path or the name of an array).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .likelihoods import LIKELIHOODS, get_likelihood
from .resources import bundled

__all__ = [
    "OneLineError",
    "DataError",
    "one_line",
    "MNIST_DIR",
    "mnist_dir",
    "parse_idx",
    "load_mnist",
    "binarize",
    "binarize_static",
    "toy_gaussian_mixture",
    "bar_prototypes",
    "toy_binary_patterns",
    "validate_data",
]


class OneLineError(ValueError):
    """An error whose message is one line: line breaks inside it (a file name may
    hold one) are shown escaped, as ``\\n``. The base of DataError and CheckpointError."""

    def __init__(self, message: str):
        super().__init__(escape_line_breaks(str(message)))


class DataError(OneLineError):
    """A data file or a data array is missing, corrupt or unfit for its use.

    The message is a single line that names the file path or the array and
    says what was found.
    """


#: every character ``str.splitlines`` breaks a line at, and how it is shown instead
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def escape_line_breaks(text: str) -> str:
    """Return ``text`` with its line breaks escaped (``"a\\nb"``), so that it prints as one line."""
    return text.translate(_LINE_BREAKS)


# ---------------------------------------------------------------------------
# Where the MNIST files live
# ---------------------------------------------------------------------------

MNIST_DIR = bundled("mnist")
"""Default MNIST folder: the repository's ``data/mnist``, or its copy inside an installed wheel."""

MNIST_ENV_VAR = "MINIVAE_DATA"
SUMS_FILE = "SHA256SUMS.uncompressed"

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IDX_IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dims (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # uint8 data, 1 dim (N,)
_IDX_UBYTE = 0x08  # the only IDX type code MNIST uses


def mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """Return the folder that holds the MNIST IDX files, resolved to an absolute path.

    The folder is, in order of preference: ``root`` when given; else the
    environment variable ``MINIVAE_DATA``; else ``MNIST_DIR``. A folder that
    does not exist raises ``DataError`` naming it.
    """
    if root is not None:
        folder, origin = Path(root), "root argument"
    elif os.environ.get(MNIST_ENV_VAR):
        folder, origin = Path(os.environ[MNIST_ENV_VAR]), f"${MNIST_ENV_VAR}"
    else:
        folder, origin = MNIST_DIR, "default location"
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise DataError(
            f"MNIST folder {folder} ({origin}) does not exist; set {MNIST_ENV_VAR} "
            f"to the folder holding the IDX .gz files or pass root=..."
        )
    return folder


# ---------------------------------------------------------------------------
# IDX parsing
# ---------------------------------------------------------------------------


def parse_idx(raw: bytes, name: str, *, expected_magic: int | None = None) -> np.ndarray:
    """Parse the bytes of one decompressed IDX file into a uint8 array.

    The IDX layout is a big-endian int32 magic ``0x0000TTNN`` (``TT`` the type
    code, ``NN`` the number of dimensions), then ``NN`` big-endian int32
    dimension sizes, then the data, row-major. Only type code 0x08 (unsigned
    byte) is supported, which is what MNIST uses.

    Args:
        raw: the whole decompressed file (bytes, bytearray or memoryview).
        name: the file name or path, used in error messages.
        expected_magic: when given, the magic the file must carry, e.g.
            ``IDX_IMAGES_MAGIC`` (0x00000803) or ``IDX_LABELS_MAGIC`` (0x00000801).

    Returns:
        A new, writeable uint8 array whose shape is the dimensions in the header.

    Raises:
        DataError: on any malformed input (too short, bad magic, unsupported
        type code, negative dimensions, data length not matching the dimensions).
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise DataError(f"{name}: expected the raw bytes of an IDX file, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) < 4:
        raise DataError(f"{name}: {len(raw)} bytes is too short for an IDX header (needs at least 4)")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{name}: wrong IDX magic 0x{magic:08X}, expected 0x{expected_magic:08X}")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name}: bad IDX magic 0x{magic:08X} (the first two bytes must be zero)")
    type_code, ndim = raw[2], raw[3]
    if type_code != _IDX_UBYTE:
        raise DataError(
            f"{name}: IDX magic 0x{magic:08X} has type code 0x{type_code:02X}; "
            f"only 0x{_IDX_UBYTE:02X} (unsigned byte) is supported"
        )
    if ndim == 0:
        raise DataError(f"{name}: IDX magic 0x{magic:08X} declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{name}: {len(raw)} bytes is too short for an IDX header with {ndim} dimensions "
            f"({header} bytes)"
        )
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if any(d < 0 for d in dims):
        raise DataError(f"{name}: IDX header has negative dimensions {dims}")
    expected = 1
    for d in dims:  # Python ints: no overflow whatever the header says
        expected *= d
    found = len(raw) - header
    if found != expected:
        raise DataError(
            f"{name}: IDX dimensions {dims} need {expected} data bytes but the file has {found}"
        )
    try:  # sizes can fit the data yet not make a NumPy array: more than 64 dimensions, or a
        # zero size beside sizes whose product overflows
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()
    except ValueError as e:
        raise DataError(f"{name}: IDX dimensions {dims} cannot form an array ({one_line(e)})") from e


# ---------------------------------------------------------------------------
# MNIST loading with checksum verification
# ---------------------------------------------------------------------------

_MNIST_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
"""Decoded MNIST splits keyed by (resolved folder, split); arrays are read-only."""


def _read_sums(folder: Path) -> dict[str, str]:
    """Read ``SHA256SUMS.uncompressed`` in ``folder`` into {file name: hex digest}."""
    path = folder / SUMS_FILE
    if not path.is_file():
        raise DataError(
            f"checksum file {path} is missing; it lists the sha256 of each decompressed IDX file"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read checksum file {path} ({one_line(e)})") from e
    sums = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        digest = parts[0].lower()
        if (
            len(parts) != 2
            or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)
        ):
            raise DataError(f"line {lineno} of {path} is not '<sha256 hex>  <file name>'")
        sums[parts[1].strip().lstrip("*")] = digest  # sha256sum marks binary mode with '*'
    return sums


def one_line(what: object) -> str:
    """``what`` as text on a single line, white space collapsed; an exception as ``Type: message``."""
    text = f"{type(what).__name__}: {what}" if isinstance(what, BaseException) else str(what)
    return " ".join(text.split())


#: how to get a good copy back: the files ship with minivae, nothing is downloaded
_RESTORE = ("restore the bundled files (`git checkout -- data/mnist` in a clone, or reinstall minivae), "
            f"or set {MNIST_ENV_VAR} to a folder holding all four files and {SUMS_FILE}")


def _read_verified_idx(path: Path, sums: dict[str, str], expected_magic: int) -> np.ndarray:
    """Decompress one .gz IDX file, check its sha256, parse it; uint8 array out."""
    if not path.is_file():
        raise DataError(
            f"MNIST file {path} is missing; {_RESTORE}"
        )
    try:
        packed = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path} ({one_line(e)})") from e
    try:
        raw = gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is corrupt or truncated ({one_line(e)}); {_RESTORE}") from e

    idx_name = path.name.removesuffix(".gz")
    expected = sums.get(idx_name)
    if expected is None:
        raise DataError(f"{path.parent / SUMS_FILE} has no checksum for {idx_name} ({path})")
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: sha256 of the decompressed bytes is {actual[:16]}..., "
            f"expected {expected[:16]}... from {SUMS_FILE}; the file is corrupt; {_RESTORE}"
        )
    return parse_idx(raw, str(path), expected_magic=expected_magic)


def load_mnist(
    split: str = "train", root: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split from the gzip-compressed IDX files, verified by sha256.

    The folder is found by ``mnist_dir(root)``. Each file is decompressed, its
    sha256 is compared with ``SHA256SUMS.uncompressed`` in the same folder, and
    its IDX header is checked (magic, dimensions, length).

    Decoded splits are cached per (folder, split), so a second call costs
    nothing. The arrays returned are the cached ones, marked read-only
    (``flags.writeable`` is False): a caller that wants to modify them takes a
    copy, ``x = x.copy()``, and the cache stays intact.

    Args:
        split: "train" (60000 images) or "test" (10000 images).
        root: folder holding the files; see ``mnist_dir`` for the default.

    Returns:
        images: float32 (N, 784), pixel intensities divided by 255, in [0, 1].
        labels: int64 (N,), digits 0..9.

    Raises:
        DataError: unknown split, missing folder, file or checksum file,
        corrupt gzip, checksum mismatch, malformed IDX, or counts that disagree.
    """
    if split not in MNIST_FILES:
        raise DataError(f"unknown MNIST split {split!r}; choose one of {sorted(MNIST_FILES)}")
    folder = mnist_dir(root)
    key = (str(folder), split)
    if key in _MNIST_CACHE:
        return _MNIST_CACHE[key]

    sums = _read_sums(folder)
    images_name, labels_name = MNIST_FILES[split]
    images = _read_verified_idx(folder / images_name, sums, IDX_IMAGES_MAGIC)  # (N, 28, 28)
    labels = _read_verified_idx(folder / labels_name, sums, IDX_LABELS_MAGIC)  # (N,)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{folder / images_name}: images are {images.shape[1:]}, expected (28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{folder}: {images_name} has {images.shape[0]} images but "
            f"{labels_name} has {labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise DataError(f"{folder / images_name} holds no images")
    if labels.max() > 9:
        first = int(np.argmax(labels > 9))
        raise DataError(
            f"{folder / labels_name}: label {labels[first]} at index {first}; MNIST labels are digits 0..9"
        )

    x = images.reshape(images.shape[0], -1).astype(np.float32)  # (N, 784)
    x /= np.float32(255.0)
    y = labels.astype(np.int64)  # (N,)
    x.flags.writeable = False
    y.flags.writeable = False
    _MNIST_CACHE[key] = (x, y)
    return x, y


# ---------------------------------------------------------------------------
# Binarization
# ---------------------------------------------------------------------------


def binarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r"""Draw binary data $\tilde x \sim \mathrm{Bernoulli}(x)$, one fresh draw per call.

    Each entry of ``x`` is read as the probability that the pixel is on. This
    is dynamic binarization: calling it on every minibatch (or once per epoch)
    shows the model a new binary sample of each image every time, which is the
    protocol of the IWAE paper (Burda, Grosse and Salakhutdinov, 2016) and acts
    as a regularizer. ``x`` is not modified.

    Args:
        x: probabilities in [0, 1], any shape, e.g. (N, D).
        rng: the random generator that draws the uniforms.

    Returns:
        An array of x's shape holding 0.0 and 1.0, in x's float dtype
        (float32 stays float32, float64 stays float64; other dtypes give float64).

    Raises:
        DataError: x holds NaN or values outside [0, 1].
    """
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"binarize: x has dtype {x.dtype}; expected probabilities as a real numeric array")
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if x.size and not (np.all(x >= 0) and np.all(x <= 1)):  # NaN fails both comparisons
        nan = np.isnan(x)
        seen = x[~nan]
        found = f"[{seen.min():g}, {seen.max():g}]" if seen.size else "none"
        raise DataError(
            f"binarize: x must hold probabilities in [0, 1]; found values in {found} "
            f"and {int(nan.sum())} NaN"
        )
    u = rng.random(x.shape, dtype=np.float32)  # same shape as x, uniform in [0, 1)
    return (u < x).astype(dtype)


def binarize_static(x: np.ndarray, seed: int = 0) -> np.ndarray:
    r"""Binarize once with a fixed seed, so the result is the same on every run.

    This is ``binarize(x, np.random.default_rng(seed))``; it is used to turn the
    test set into one fixed binary test set, so that test log-likelihoods are
    comparable across runs and models.
    """
    return binarize(x, np.random.default_rng(seed))


# ---------------------------------------------------------------------------
# Toy data sets
# ---------------------------------------------------------------------------


def _check_n(n: int) -> int:
    """Return ``n`` as an int after checking it is a positive count."""
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def toy_gaussian_mixture(
    n: int,
    rng: np.random.Generator,
    n_components: int = 4,
    dim: int = 2,
    spread: float = 3.0,
    scale: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Sample from an equal-weight mixture of isotropic Gaussians.

    $x_n = \mu_{c_n} + \sigma \epsilon_n$ with $c_n$ uniform on the components
    and $\epsilon_n \sim \mathcal N(0, I)$. For ``dim == 2`` the means sit evenly
    on a circle of radius ``spread`` (fixed, so the picture is the same on
    every run); for any other ``dim`` they are random directions, drawn from
    ``rng``, scaled to length ``spread``.

    Args:
        n: number of points.
        rng: the random generator.
        n_components: number of Gaussians.
        dim: dimension D of each point.
        spread: distance of each mean from the origin.
        scale: standard deviation sigma of each Gaussian.

    Returns:
        x: float64 (n, dim).
        labels: int64 (n,), the component of each point, in [0, n_components).
    """
    n = _check_n(n)
    if n_components < 1 or dim < 1 or scale < 0:
        raise ValueError(
            f"need n_components >= 1, dim >= 1, scale >= 0; got {n_components}, {dim}, {scale}"
        )
    if dim == 2:
        angle = 2 * np.pi * np.arange(n_components) / n_components  # (C,)
        means = spread * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (C, 2)
    else:
        v = rng.standard_normal((n_components, dim))  # (C, D)
        means = spread * v / np.linalg.norm(v, axis=1, keepdims=True)  # (C, D)
    labels = rng.integers(0, n_components, size=n).astype(np.int64)  # (n,)
    x = means[labels] + scale * rng.standard_normal((n, dim))  # (n, D)
    return x, labels


def bar_prototypes(side: int = 4) -> np.ndarray:
    """Return the prototype images of ``toy_binary_patterns``: one bar per row and per column.

    Prototype ``i < side`` is the horizontal bar on row ``i``; prototype
    ``side + j`` is the vertical bar on column ``j``.

    Returns:
        float64 (2 * side, side * side) of 0.0 and 1.0, each row a flattened image.
    """
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    protos = np.zeros((2 * side, side, side))  # (P, side, side)
    for i in range(side):
        protos[i, i, :] = 1.0
        protos[side + i, :, i] = 1.0
    return protos.reshape(2 * side, side * side)  # (P, side*side)


def toy_binary_patterns(
    n: int, rng: np.random.Generator, side: int = 4, flip: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Sample noisy bar images: a small binary stand-in for MNIST in fast tests.

    Each sample picks one of the ``2 * side`` prototypes of ``bar_prototypes``
    uniformly at random, then flips each pixel independently with probability
    ``flip``.

    Args:
        n: number of images.
        rng: the random generator.
        side: the images are side x side.
        flip: probability that a pixel is flipped, in [0, 1].

    Returns:
        x: float64 (n, side * side) holding 0.0 and 1.0.
        labels: int64 (n,), the prototype of each image, in [0, 2 * side).
    """
    n = _check_n(n)
    if not 0.0 <= flip <= 1.0:
        raise ValueError(f"flip must be a probability in [0, 1], got {flip}")
    protos = bar_prototypes(side)  # (P, D)
    labels = rng.integers(0, protos.shape[0], size=n).astype(np.int64)  # (n,)
    flips = rng.random((n, protos.shape[1])) < flip  # (n, D)
    x = np.where(flips, 1.0 - protos[labels], protos[labels])  # (n, D)
    return x, labels


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

def validate_data(x, likelihood: str, name: str = "data") -> np.ndarray:
    """Check a data matrix before training or evaluating on it, and return it as floats.

    Checks, in order: ``likelihood`` is known; ``x`` converts to a real numeric
    array; it is 2-D (N, D); it is not empty; every entry is finite; and the
    values lie in the support of the likelihood (its ``support`` check in
    :data:`minivae.likelihoods.LIKELIHOODS`):

    - "bernoulli": values in [0, 1]. Values strictly between 0 and 1 are
      allowed, read as probabilities (or continuous Bernoulli data).
    - "categorical": non-negative values (counts) and a positive sum per row.
    - "gaussian", "gaussian_learned", "laplace": any finite value.

    Args:
        x: array-like (N, D).
        likelihood: a name of :data:`minivae.likelihoods.LIKELIHOODS`.
        name: the name of the array, used in error messages.

    Returns:
        x as a float array (N, D): float32 and float64 are kept (x itself is
        returned when it already is such an ndarray, no copy); bool and integer
        data become float64.

    Raises:
        DataError: with a one-line message naming ``name``.
    """
    if likelihood not in LIKELIHOODS:
        raise DataError(f"{name}: unknown likelihood {likelihood!r}; choose one of {list(LIKELIHOODS)}")
    support = get_likelihood(likelihood).support
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise DataError(f"{name} is not a numeric array ({one_line(e)})") from e
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} has dtype {arr.dtype}; expected a real numeric array (bool, int or float)")
    if arr.ndim != 2:
        raise DataError(f"{name} has shape {arr.shape}; expected a 2-D (N, D) matrix")
    if arr.size == 0:
        raise DataError(f"{name} is empty: shape {arr.shape}; expected N >= 1 rows and D >= 1 columns")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)  # (N, D)

    bad = ~np.isfinite(arr)  # (N, D)
    if bad.any():
        row, col = np.unravel_index(np.argmax(bad), arr.shape)
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite values (NaN or inf), "
            f"the first at (row, col) = ({row}, {col})"
        )

    problem = support(arr)
    if problem:
        raise DataError(f"{name} {problem}")
    return arr
