r"""Save and load training state safely: parameters, optimizer state and metadata.

A checkpoint is one uncompressed ``.npz`` archive, the layout ``np.savez``
writes: a zip file whose members are ``<name>.npy`` arrays. Besides the
caller's arrays it holds one extra member, ``__header__``, a 1-D ``uint8``
array of UTF-8 JSON::

    {"format": "minivae-checkpoint",
     "format_version": 1,
     "checksum": "<sha256 hex>",
     "meta": {...the caller's JSON-serializable dict...}}

The checksum is SHA-256 over the arrays in sorted name order; for each array
it hashes the JSON line ``[name, dtype.str, shape]`` followed by the array's
C-order bytes, so it depends on names, dtypes, shapes and values, and not on
how the arrays happen to be laid out in memory.

Guarantees:

- Saving is atomic. The archive is written to a temporary file in the target's
  folder, flushed and fsynced, then moved over the target with ``os.replace``.
  A crash or kill at any moment leaves either the previous checkpoint or the
  new one, never a mix; at worst a stray temporary file named like
  ``.checkpoint.npz.<random>.tmp`` stays behind in the folder.
- Loading never runs code. Files are read with ``allow_pickle=False``; a member
  holding pickled or object data is refused with a :class:`CheckpointError`.
- Loading checks the format name, the format version and the checksum, and
  reads every array fully into memory before the file is closed.
- Every failure caused by the file's content is a :class:`CheckpointError`
  whose one-line message names the path and what is wrong.

The caller's ``meta`` is where the step, the configuration, the state of the
random generator and the data position go. It travels as JSON, so tuples come
back as lists; integers of any size (such as a PCG64 state) survive exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .data import OneLineError, one_line

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HEADER_KEY",
    "CheckpointError",
    "arrays_checksum",
    "check_compatible",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]

FORMAT_NAME = "minivae-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"
HEADER_KEY = "__header__"

# Array kinds a checkpoint may hold: bool, signed int, unsigned int, float, complex.
_ALLOWED_KINDS = "biufc"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_PICKLE_PROTO_OPCODE = b"\x80"  # first byte of every pickle of protocol 2 or later


class CheckpointError(OneLineError):
    """A checkpoint cannot be saved or loaded; the message says why and where, on one
    line (line breaks in a path are shown escaped, as ``\\n``)."""


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Return the checkpoint file that ``path`` names.

    A folder stands for the file ``CHECKPOINT_NAME`` inside it; a file stands for
    itself. If that file does not exist a :class:`CheckpointError` is raised.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p}")
    return p


def _save_target(path: str | os.PathLike) -> Path:
    """Return the file ``save_checkpoint`` writes for ``path``.

    A path ending in ``.npz``, or naming an existing file, is the file itself.
    Anything else (an existing folder, a path ending in a separator, or a new
    path without the ``.npz`` suffix such as ``runs/exp1``) is a folder, and the
    file is ``CHECKPOINT_NAME`` inside it.
    """
    text = os.fspath(path)
    separators = tuple(s for s in (os.sep, os.altsep) if s)
    p = Path(text)
    if text.endswith(separators) or p.is_dir():
        return p / CHECKPOINT_NAME
    if p.suffix == ".npz" or p.exists():
        return p
    return p / CHECKPOINT_NAME


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """Return the SHA-256 hex digest of ``arrays`` as the checkpoint header stores it.

    Names are visited in sorted order. Each array contributes the UTF-8 JSON line
    ``[name, dtype.str, shape]`` and then its bytes in C order, so two dicts have
    the same checksum exactly when their names, dtypes, shapes and bytes agree.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8"))
        h.update(b"\n")
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # (nbytes,)
    return h.hexdigest()


def _describe_json_problem(value: Any, where: str, open_containers: set[int]) -> str | None:
    """Return why ``value`` (found at ``where``) cannot round-trip through JSON, or None."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return None
    if isinstance(value, (list, tuple, dict)):
        if id(value) in open_containers:
            return f"{where} contains itself"
        open_containers.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        return (f"{where} has key {key!r} of type {type(key).__name__}; "
                                "JSON object keys must be str")
                    problem = _describe_json_problem(item, f"{where}[{key!r}]", open_containers)
                    if problem:
                        return problem
            else:
                for i, item in enumerate(value):
                    problem = _describe_json_problem(item, f"{where}[{i}]", open_containers)
                    if problem:
                        return problem
        finally:
            open_containers.discard(id(value))
        return None
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    hint = " (convert it with .item() or .tolist())" if isinstance(value, (np.generic, np.ndarray)) else ""
    return f"{where} is a {kind}, which JSON cannot store{hint}"


def _encode_header(meta: Mapping[str, Any], checksum: str, target: Path) -> np.ndarray:
    """Return the ``__header__`` member: the JSON header as a (B,) uint8 array."""
    if not isinstance(meta, Mapping):
        raise CheckpointError(
            f"cannot save checkpoint to {target}: meta must be a dict, got {type(meta).__name__}")
    meta = dict(meta)
    problem = _describe_json_problem(meta, "meta", set())
    if problem:
        raise CheckpointError(f"cannot save checkpoint to {target}: {one_line(problem)}")
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "checksum": checksum, "meta": meta}
    try:
        text = json.dumps(header)
    except (TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(
            f"cannot save checkpoint to {target}: meta is not JSON-serializable ({one_line(err)})"
        ) from err
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)  # (B,)


def _validated_arrays(arrays: Mapping[str, np.ndarray], target: Path) -> dict[str, np.ndarray]:
    """Return ``arrays`` as a dict of ndarrays, or raise if one cannot go in a checkpoint."""
    if not isinstance(arrays, Mapping):
        raise CheckpointError(
            f"cannot save checkpoint to {target}: arrays must be a dict, got {type(arrays).__name__}")
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(
                f"cannot save checkpoint to {target}: array name {name!r} is not a non-empty str")
        if name.startswith("__"):
            raise CheckpointError(
                f"cannot save checkpoint to {target}: array name {name!r} starts with '__', "
                "which is reserved for the checkpoint's own members")
        if "\x00" in name or "\\" in name:
            raise CheckpointError(
                f"cannot save checkpoint to {target}: array name {name!r} contains a NUL or backslash, "
                "which zip member names do not keep")
        if isinstance(value, np.ndarray):
            a = value
        else:
            try:
                a = np.asarray(value)
            except (TypeError, ValueError) as err:
                raise CheckpointError(
                    f"cannot save checkpoint to {target}: array {name!r} is not an array ({one_line(err)})"
                ) from err
        if a.dtype.hasobject or a.dtype.kind not in _ALLOWED_KINDS or a.dtype.fields is not None:
            raise CheckpointError(
                f"cannot save checkpoint to {target}: array {name!r} has dtype {a.dtype}; "
                "only numeric and bool arrays can be saved")
        out[name] = a
    return out


def _write_npz(fileobj, members: Mapping[str, np.ndarray]) -> None:
    """Write ``members`` to ``fileobj`` as an uncompressed .npz, never pickling."""
    with zipfile.ZipFile(fileobj, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in members.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def _fsync_dir(folder: Path) -> None:
    """Flush the folder's entry list to disk where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and ``meta`` atomically to a checkpoint and return its path.

    ``path`` is a file or a folder: a path ending in ``.npz`` or naming an
    existing file is written itself; any other path is a folder that receives
    ``CHECKPOINT_NAME``. Missing folders are created. Array names are non-empty str not starting with ``"__"``; arrays are
    numeric or bool; ``meta`` is a dict of JSON values (None, bool, int, float,
    str, lists, tuples and dicts with str keys). Anything else is refused with a
    :class:`CheckpointError` before the disk is touched.

    The archive goes to a temporary file beside the target, which is flushed,
    fsynced and then moved over the target with ``os.replace``; the folder is
    fsynced afterwards where the platform allows it. If anything fails the
    temporary file is removed, the exception propagates and the previous
    checkpoint is left as it was.
    """
    target = _save_target(path)
    members = _validated_arrays(arrays, target)
    members[HEADER_KEY] = _encode_header(meta, arrays_checksum(members), target)

    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".tmp",
                                      delete=False)
    try:
        with tmp:
            _write_npz(tmp, members)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, target)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
    return target


def _read_members(fileobj, p: Path) -> dict[str, np.ndarray]:
    """Read every member of the .npz in ``fileobj`` into memory, refusing pickles."""
    arrays = {}
    with np.load(fileobj, allow_pickle=False) as npz:
        for name in npz.files:
            try:
                value = npz[name]
            except ValueError as err:
                if "pickle" in str(err).lower():
                    raise CheckpointError(
                        f"refusing to load {p}: member {name!r} contains pickled/object data; "
                        "checkpoints never run code") from err
                raise
            if not isinstance(value, np.ndarray):
                raise CheckpointError(
                    f"{p} is not a readable minivae checkpoint (member {name!r} is not a NumPy array)")
            arrays[name] = value
    return arrays


def _parse_header(raw: np.ndarray | None, p: Path, expect_format_version: int) -> dict[str, Any]:
    """Decode the ``__header__`` member and check its format name and version."""
    if raw is None:
        raise CheckpointError(
            f"{p} is not a minivae checkpoint (it has no {HEADER_KEY} member)")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(
            f"{p} is not a readable minivae checkpoint ({HEADER_KEY} is not a 1-D uint8 array)")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(
            f"{p} is not a readable minivae checkpoint (header is not UTF-8 JSON: {one_line(err)})"
        ) from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{p} is not a readable minivae checkpoint (header is not a JSON object)")
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{p} is not a minivae checkpoint (header format is {header.get('format')!r}, "
            f"expected {FORMAT_NAME!r})")
    found = header.get("format_version")
    if found != expect_format_version or type(found) is not int:
        raise CheckpointError(
            f"{p} has checkpoint format_version {found!r}, but only format_version "
            f"{expect_format_version} is supported")
    if not isinstance(header.get("checksum"), str):
        raise CheckpointError(f"{p} is not a readable minivae checkpoint (header has no checksum)")
    if not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"{p} is not a readable minivae checkpoint (header has no meta dict)")
    return header


def load_checkpoint(path: str | os.PathLike, expect_format_version: int = FORMAT_VERSION
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint and return ``(arrays, meta)``.

    ``path`` is the checkpoint file or the folder holding ``CHECKPOINT_NAME``.
    The file is opened once, every array is read into memory and the file is
    closed before returning. Nothing is ever unpickled: pickled or object
    members are refused. A file that is not an intact minivae checkpoint of
    format version ``expect_format_version`` (unreadable, truncated, foreign,
    another version, or failing its checksum) raises a :class:`CheckpointError`
    whose one-line message names the path.
    """
    p = resolve_checkpoint(path)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
            if not magic.startswith(_ZIP_MAGIC):
                if magic.startswith(_PICKLE_PROTO_OPCODE):
                    raise CheckpointError(
                        f"refusing to load {p}: the file is a pickle, which contains pickled/object "
                        "data; checkpoints never run code")
                what = "the file is empty" if not magic else "not an .npz archive"
                raise CheckpointError(f"{p} is not a readable minivae checkpoint ({what})")
            f.seek(0)
            arrays = _read_members(f, p)
    except CheckpointError:
        raise
    except Exception as err:  # anything the zip or .npy readers raise on a damaged file
        raise CheckpointError(
            f"{p} is not a readable minivae checkpoint ({one_line(err)})"
        ) from err

    header = _parse_header(arrays.pop(HEADER_KEY, None), p, expect_format_version)
    for name, a in arrays.items():
        if a.dtype.kind not in _ALLOWED_KINDS or a.dtype.fields is not None:
            raise CheckpointError(
                f"{p} is not a readable minivae checkpoint (array {name!r} has dtype {a.dtype})")
    actual = arrays_checksum(arrays)
    if not hmac.compare_digest(actual, header["checksum"]):
        raise CheckpointError(
            f"{p} failed its checksum (header says {header['checksum'][:16]}..., the arrays hash to "
            f"{actual[:16]}...); the file was modified or corrupted")
    return arrays, header["meta"]


def _as_json_value(value: Any) -> Any:
    """Return ``value`` as it reads back from JSON (tuples become lists), if it can."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        return value


_UNSET = object()


def check_compatible(meta_config: Mapping[str, Any], expected_config: Mapping[str, Any],
                     keys: Iterable[str]) -> None:
    """Raise a :class:`CheckpointError` if the two configs disagree on any of ``keys``.

    ``meta_config`` is the configuration stored in a checkpoint, ``expected_config``
    the one the current run asks for. Values are compared as JSON reads them back,
    so a tuple in the run's config matches the list stored in the checkpoint. All
    disagreements are reported in one line, for example
    ``checkpoint was written with K=2, this run asks for K=8``, so that resuming
    with another architecture fails with that sentence and not a shape error.
    """
    problems = []
    for key in keys:
        stored = meta_config.get(key, _UNSET)
        wanted = expected_config.get(key, _UNSET)
        if stored is _UNSET or wanted is _UNSET:
            if stored is wanted:
                continue
            shown_stored = "<unset>" if stored is _UNSET else repr(_as_json_value(stored))
            shown_wanted = "<unset>" if wanted is _UNSET else repr(_as_json_value(wanted))
        else:
            stored, wanted = _as_json_value(stored), _as_json_value(wanted)
            try:
                if bool(stored == wanted):
                    continue
            except (TypeError, ValueError):  # e.g. arrays, whose == is elementwise
                pass
            shown_stored, shown_wanted = repr(stored), repr(wanted)
        problems.append(f"checkpoint was written with {key}={shown_stored}, "
                        f"this run asks for {key}={shown_wanted}")
    if problems:
        raise CheckpointError(one_line("; ".join(problems)))
