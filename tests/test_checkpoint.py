"""Tests for minivae.checkpoint: round trips, atomic saves, refusal of pickles and damage."""

import io
import json
import os
import pickle
import random
import re
import signal
import string
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minivae.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    HEADER_KEY,
    CheckpointError,
    arrays_checksum,
    check_compatible,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)

from strategies import assert_one_line

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers

def assert_same_arrays(got, want):
    """Assert two dicts of arrays agree in names, dtypes, shapes and every byte."""
    assert sorted(got) == sorted(want)
    for name in want:
        g, w = got[name], np.asarray(want[name])
        assert type(g) is np.ndarray, name
        assert g.dtype.str == w.dtype.str, name
        assert g.shape == w.shape, name
        assert g.tobytes() == w.tobytes(), name


def raw_members(path):
    """Return every member of an .npz as a dict, header included, without any checks."""
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def write_members(path, members):
    """Write ``members`` (which may include ``__header__``) as a plain .npz."""
    with open(path, "wb") as f:
        np.savez(f, **members)


def header_of(members):
    """Decode the JSON header member of a raw member dict."""
    return json.loads(members[HEADER_KEY].tobytes().decode("utf-8"))


def encode_header(header):
    """Encode a header dict the way the checkpoint format stores it."""
    return np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)


def small_state(step=3):
    """Return a small (arrays, meta) pair with several dtypes and a live RNG state."""
    rng = np.random.default_rng(step)
    arrays = {
        "enc.0.W": rng.standard_normal((4, 3)).astype(np.float32),  # (D, H)
        "enc.0.b": rng.standard_normal(3),  # (H,) float64
        "data.order": rng.permutation(10).astype(np.int64),  # (N,)
        "opt.t": np.array(step, dtype=np.int64),  # ()
        "mask": np.array([True, False, True]),
    }
    meta = {
        "step": step,
        "config": {"K": 2, "hidden": [8, 4], "lr": 1e-3, "act": "relu", "beta": None},
        "rng": rng.bit_generator.state,
        "big": [2**200, -(2**100)],
        "flags": {"warm": True, "note": "β-VAE ✓"},
        "best": float("inf"),
    }
    return arrays, meta


class PickleBomb:
    """An object whose unpickling creates ``marker``, proving that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------- round trips

def test_round_trip_is_exact_for_arrays_and_meta(tmp_path):
    arrays, meta = small_state()
    path = save_checkpoint(tmp_path / "run.npz", arrays, meta)
    assert path == tmp_path / "run.npz"

    got_arrays, got_meta = load_checkpoint(path)

    assert_same_arrays(got_arrays, arrays)
    assert got_meta == meta
    assert got_meta["big"][0] == 2**200
    assert got_meta["rng"]["state"]["state"] == meta["rng"]["state"]["state"]


def test_restored_rng_state_continues_the_same_stream(tmp_path):
    rng = np.random.default_rng(123)
    rng.standard_normal(17)
    save_checkpoint(tmp_path, {}, {"rng": rng.bit_generator.state})
    expected = rng.standard_normal(5)

    _, meta = load_checkpoint(tmp_path)
    resumed = np.random.default_rng()
    resumed.bit_generator.state = meta["rng"]

    assert np.array_equal(resumed.standard_normal(5), expected)


def test_folder_path_saves_and_loads_the_named_file(tmp_path):
    arrays, meta = small_state()
    path = save_checkpoint(tmp_path, arrays, meta)

    assert path == tmp_path / CHECKPOINT_NAME
    assert resolve_checkpoint(tmp_path) == tmp_path / CHECKPOINT_NAME
    assert resolve_checkpoint(path) == path
    got_arrays, got_meta = load_checkpoint(tmp_path)
    assert_same_arrays(got_arrays, arrays)
    assert got_meta == meta


@pytest.mark.parametrize("spelling, relative_file", [
    ("runs/exp1", "runs/exp1/" + CHECKPOINT_NAME),
    ("runs/exp1" + os.sep, "runs/exp1/" + CHECKPOINT_NAME),
    ("runs/exp1/step10.npz", "runs/exp1/step10.npz"),
])
def test_save_path_spellings(tmp_path, spelling, relative_file):
    path = save_checkpoint(str(tmp_path / spelling), {"w": np.ones(2)}, {"step": 1})

    assert path == tmp_path / relative_file
    assert path.is_file()
    assert load_checkpoint(path)[1] == {"step": 1}
    assert load_checkpoint(path.parent if path.name == CHECKPOINT_NAME else path)[1] == {"step": 1}


def test_existing_file_without_suffix_is_overwritten_in_place(tmp_path):
    path = tmp_path / "latest"
    save_checkpoint(tmp_path / "latest.npz", {"w": np.ones(2)}, {"step": 1}).rename(path)
    assert save_checkpoint(path, {"w": np.zeros(2)}, {"step": 2}) == path
    assert load_checkpoint(path)[1] == {"step": 2}


def test_missing_checkpoint_is_reported_with_its_path(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at") as excinfo:
        resolve_checkpoint(tmp_path / "nowhere")
    assert_one_line(excinfo, str(tmp_path / "nowhere"))

    with pytest.raises(CheckpointError, match="no checkpoint at") as excinfo:
        load_checkpoint(tmp_path)  # an empty folder
    assert_one_line(excinfo, str(tmp_path / CHECKPOINT_NAME))
    assert issubclass(CheckpointError, ValueError)


def test_tuples_in_meta_come_back_as_lists(tmp_path):
    save_checkpoint(tmp_path, {}, {"hidden": (8, 4)})
    assert load_checkpoint(tmp_path)[1] == {"hidden": [8, 4]}


def test_memory_layout_does_not_matter(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)  # (4, 6)
    arrays = {"fortran": np.asfortranarray(base), "strided": base[:, ::2], "t": base.T}
    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    assert arrays_checksum(arrays) == arrays_checksum(contiguous)

    save_checkpoint(tmp_path, arrays, {})
    got, _ = load_checkpoint(tmp_path)
    for name in arrays:
        assert np.array_equal(got[name], arrays[name])


def test_checksum_depends_on_names_dtypes_shapes_and_values():
    a = np.arange(6, dtype=np.int32)
    reference = arrays_checksum({"a": a})
    assert arrays_checksum({"a": a.copy()}) == reference
    assert arrays_checksum({"b": a}) != reference
    assert arrays_checksum({"a": a.view(np.float32)}) != reference
    assert arrays_checksum({"a": a.reshape(2, 3)}) != reference
    assert arrays_checksum({"a": a + 1}) != reference


def test_loaded_arrays_are_in_memory_and_the_file_is_closed(tmp_path):
    arrays, meta = small_state()
    path = save_checkpoint(tmp_path, arrays, meta)

    got, _ = load_checkpoint(path)

    fd_dir = Path("/proc/self/fd")
    if fd_dir.is_dir():
        open_files = set()
        for fd in os.listdir(fd_dir):
            try:
                open_files.add(os.path.realpath(os.readlink(fd_dir / fd)))
            except OSError:
                pass
        assert os.path.realpath(path) not in open_files
    path.unlink()
    for name, a in got.items():
        assert a.flags.writeable, name
        assert np.array_equal(a, arrays[name]), name
    got["enc.0.b"] += 1.0  # owned memory, not a view of a closed file


names = st.text(alphabet=string.ascii_letters + string.digits + "._-/", min_size=1, max_size=8).filter(
    lambda s: not s.startswith("__"))
numeric_dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
)
small_arrays = numeric_dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))


@settings(max_examples=60, deadline=None)
@given(arrays=st.dictionaries(names, small_arrays, max_size=5), step=st.integers())
def test_random_numeric_arrays_round_trip(arrays, step):
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(folder, arrays, {"step": step})
        got, meta = load_checkpoint(folder)
    assert_same_arrays(got, arrays)
    assert meta == {"step": step}


# ---------------------------------------------------------------- atomic saves

def _fail_fsync(fd):
    raise OSError(5, "simulated I/O error in fsync")


def _fail_replace(src, dst):
    raise OSError(28, "simulated failure in replace")


def _fail_mid_write(fp, array, *args, **kwargs):
    fp.write(b"\x93NUMPY partial")
    raise OSError(28, "No space left on device (simulated)")


@pytest.mark.parametrize("target, replacement", [
    (os, ("fsync", _fail_fsync)),
    (os, ("replace", _fail_replace)),
    (np.lib.format, ("write_array", _fail_mid_write)),
])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, target, replacement):
    old_arrays, old_meta = small_state(step=1)
    save_checkpoint(tmp_path, old_arrays, old_meta)
    new_arrays, new_meta = small_state(step=2)

    monkeypatch.setattr(target, *replacement)
    with pytest.raises(OSError, match="simulated|No space"):
        save_checkpoint(tmp_path, new_arrays, new_meta)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]
    got_arrays, got_meta = load_checkpoint(tmp_path)
    assert_same_arrays(got_arrays, old_arrays)
    assert got_meta == old_meta


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    assert os.listdir(tmp_path) == []


CHILD = """
import sys
import numpy as np
from minivae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

folder = sys.argv[1]
try:
    step = load_checkpoint(folder)[1]["step"] + 1
except CheckpointError:
    step = 0
first = True
while True:
    arrays = {
        "enc.0.W": np.full((512, 256), step, dtype=np.float64),  # 1 MiB
        "count": np.full(3, step, dtype=np.int64),
    }
    save_checkpoint(folder, arrays, {"step": step, "pad": "x" * (step % 97)})
    if first:
        print("ready", flush=True)
        first = False
    step += 1
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_saves_leaves_a_complete_checkpoint(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    folder = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    delays = random.Random(20240607).sample([0.0, 0.004, 0.013, 0.029, 0.061, 0.11], 5)
    last_step = -1

    for delay in delays:
        proc = subprocess.Popen([sys.executable, str(script), str(folder)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline() == "ready\n", proc.stderr.read()
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                stream.close()
        assert proc.returncode == -signal.SIGKILL  # killed while saving, not crashed

        arrays, meta = load_checkpoint(folder)
        step = meta["step"]
        assert step > last_step  # the resumed child wrote at least one newer version
        assert meta["pad"] == "x" * (step % 97)
        assert arrays["enc.0.W"].shape == (512, 256)
        assert np.all(arrays["enc.0.W"] == step)
        assert np.array_equal(arrays["count"], np.full(3, step))
        leftovers = set(os.listdir(folder)) - {CHECKPOINT_NAME}
        assert all(re.fullmatch(r"\.checkpoint\.npz\..+\.tmp", name) for name in leftovers)
        last_step = step


# ---------------------------------------------------------------- never unpickle

def test_object_member_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    arrays, meta = small_state()
    with open(path, "wb") as f:
        np.savez(f, evil=np.array([PickleBomb(marker)], dtype=object), **arrays)

    with pytest.raises(CheckpointError, match="pickled/object data; checkpoints never run code") as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))
    assert not marker.exists()

    # Control: the payload is live, so the check above could have failed.
    with np.load(path, allow_pickle=True) as npz:
        npz["evil"]
    assert marker.exists()


def test_object_member_beside_a_valid_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = save_checkpoint(tmp_path, *small_state())
    members = raw_members(path)
    members["evil"] = np.array([PickleBomb(marker)], dtype=object)
    write_members(path, members)

    with pytest.raises(CheckpointError, match="refusing") as excinfo:
        load_checkpoint(tmp_path)
    assert_one_line(excinfo, str(path))
    assert not marker.exists()


def test_plain_pickle_renamed_npz_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(pickle.dumps(PickleBomb(marker)))

    with pytest.raises(CheckpointError, match="never run code") as excinfo:
        load_checkpoint(tmp_path)
    assert_one_line(excinfo, str(path))
    assert not marker.exists()

    pickle.loads(path.read_bytes())  # control: the payload is live
    assert marker.exists()


def test_structured_dtype_with_object_field_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    rec = np.zeros(2, dtype=[("a", "O"), ("b", "f8")])
    write_members(path, {"rec": rec})
    with pytest.raises(CheckpointError, match="refusing") as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))


# ---------------------------------------------------------------- damaged and foreign files

def test_truncated_files_are_rejected(tmp_path):
    data = save_checkpoint(tmp_path / "full.npz", *small_state()).read_bytes()
    cuts = sorted({0, 1, 3, 4, 30, 100, len(data) // 3, len(data) // 2,
                   len(data) - 100, len(data) - 22, len(data) - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as excinfo:
            load_checkpoint(path)
        assert_one_line(excinfo, str(path))


@pytest.mark.parametrize("prefix", [b"", b"PK\x03\x04", b"\x93NUMPY"])
def test_random_bytes_are_rejected(tmp_path, prefix):
    path = tmp_path / "noise.npz"
    path.write_bytes(prefix + random.Random(7).randbytes(4000))
    with pytest.raises(CheckpointError, match="not a readable minivae checkpoint") as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))


def test_bare_npy_and_foreign_zip_are_rejected(tmp_path):
    npy = tmp_path / "a.npz"
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    npy.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="not a readable") as excinfo:
        load_checkpoint(npy)
    assert_one_line(excinfo, str(npy))

    foreign = tmp_path / "b.npz"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not a NumPy array") as excinfo:
        load_checkpoint(foreign)
    assert_one_line(excinfo, str(foreign))


def test_plain_npz_without_header_is_rejected(tmp_path):
    path = tmp_path / "plain.npz"
    write_members(path, {"w": np.ones(3)})
    with pytest.raises(CheckpointError, match="not a minivae checkpoint") as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))


def test_wrong_format_version_names_both_versions(tmp_path):
    path = save_checkpoint(tmp_path, *small_state())
    members = raw_members(path)
    header = header_of(members)
    header["format_version"] = 999
    members[HEADER_KEY] = encode_header(header)
    write_members(path, members)

    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))
    message = str(excinfo.value)
    assert "999" in message
    assert f"only format_version {FORMAT_VERSION} is supported" in message


def test_reader_expecting_another_version_refuses_current_files(tmp_path):
    path = save_checkpoint(tmp_path, *small_state())
    with pytest.raises(CheckpointError, match=f"format_version {FORMAT_VERSION}, but only "
                                              f"format_version {FORMAT_VERSION + 1}") as excinfo:
        load_checkpoint(path, expect_format_version=FORMAT_VERSION + 1)
    assert_one_line(excinfo, str(path))


@pytest.mark.parametrize("edit", [
    lambda h: h.update(format="someone-elses-checkpoint"),
    lambda h: h.pop("format"),
    lambda h: h.update(format_version=True),
    lambda h: h.pop("checksum"),
    lambda h: h.update(meta=[1, 2]),
])
def test_malformed_headers_are_rejected(tmp_path, edit):
    path = save_checkpoint(tmp_path, *small_state())
    members = raw_members(path)
    header = header_of(members)
    edit(header)
    members[HEADER_KEY] = encode_header(header)
    write_members(path, members)
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))


def test_header_that_is_not_json_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path, *small_state())
    members = raw_members(path)
    members[HEADER_KEY] = np.frombuffer(b"\xff{not json", dtype=np.uint8)
    write_members(path, members)
    with pytest.raises(CheckpointError, match="header") as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))


@pytest.mark.parametrize("tamper", ["value", "rename", "dtype", "drop", "add"])
def test_tampered_arrays_fail_the_checksum(tmp_path, tamper):
    path = save_checkpoint(tmp_path, *small_state())
    members = raw_members(path)
    if tamper == "value":
        members["enc.0.b"] = members["enc.0.b"].copy()
        members["enc.0.b"][1] = np.nextafter(members["enc.0.b"][1], np.inf)
    elif tamper == "rename":
        members["enc.0.bias"] = members.pop("enc.0.b")
    elif tamper == "dtype":
        members["enc.0.W"] = members["enc.0.W"].view(np.int32)
    elif tamper == "drop":
        del members["mask"]
    else:
        members["extra"] = np.zeros(1)
    write_members(path, members)

    with pytest.raises(CheckpointError, match="checksum") as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))


def test_flipped_byte_in_the_file_is_rejected(tmp_path):
    arrays = {"w": np.full(1000, 0.25)}
    path = save_checkpoint(tmp_path, arrays, {"step": 0})
    data = bytearray(path.read_bytes())
    at = data.find(np.full(8, 0.25).tobytes())
    assert at > 0
    data[at + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    assert_one_line(excinfo, str(path))


# ---------------------------------------------------------------- save refuses bad input

@pytest.mark.parametrize("arrays, fragment", [
    ({"w": np.array([1, "a"], dtype=object)}, "dtype object"),
    ({"w": np.array(["a", "b"])}, "only numeric and bool"),
    ({"w": np.array(["2024-01-01"], dtype="datetime64[D]")}, "only numeric and bool"),
    ({"w": np.zeros(2, dtype=[("a", "f8"), ("b", "i4")])}, "only numeric and bool"),
    ({"__header__": np.zeros(2)}, "reserved"),
    ({"__w": np.zeros(2)}, "reserved"),
    ({"": np.zeros(2)}, "non-empty str"),
    ({3: np.zeros(2)}, "non-empty str"),
    ({"a\x00b": np.zeros(2)}, "NUL"),
])
def test_save_refuses_arrays_it_cannot_store(tmp_path, arrays, fragment):
    with pytest.raises(CheckpointError, match=re.escape(fragment)) as excinfo:
        save_checkpoint(tmp_path, arrays, {})
    assert_one_line(excinfo, str(tmp_path / CHECKPOINT_NAME))
    assert os.listdir(tmp_path) == []


circular = {"a": []}
circular["a"].append(circular)


@pytest.mark.parametrize("meta, fragment", [
    ({"cfg": {"lr": np.float32(0.1)}}, "meta['cfg']['lr'] is a numpy.float32"),
    ({"step": np.int64(3)}, ".item()"),
    ({"seen": {1, 2}}, "meta['seen'] is a builtins.set"),
    ({"obj": object()}, "meta['obj']"),
    ({"by_layer": {0: "enc"}}, "key 0 of type int"),
    ({"xs": [1, 2, b"raw"]}, "meta['xs'][2] is a builtins.bytes"),
    (circular, "contains itself"),
    ([("step", 1)], "meta must be a dict"),
])
def test_save_refuses_meta_json_cannot_store(tmp_path, meta, fragment):
    old_arrays, old_meta = small_state()
    save_checkpoint(tmp_path, old_arrays, old_meta)
    with pytest.raises(CheckpointError, match=re.escape(fragment)) as excinfo:
        save_checkpoint(tmp_path, {"w": np.zeros(2)}, meta)
    assert_one_line(excinfo, str(tmp_path / CHECKPOINT_NAME))
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]
    assert load_checkpoint(tmp_path)[1] == old_meta


# ---------------------------------------------------------------- compatibility

def test_check_compatible_names_the_differing_key():
    stored = {"K": 2, "hidden": [8, 4], "act": "relu", "lr": 1e-3}
    wanted = {"K": 8, "hidden": (8, 4), "act": "relu", "lr": 3e-4}

    with pytest.raises(CheckpointError) as excinfo:
        check_compatible(stored, wanted, ["K", "hidden", "act"])
    message = str(excinfo.value)
    assert message == "checkpoint was written with K=2, this run asks for K=8"

    check_compatible(stored, wanted, ["hidden", "act"])  # a tuple matches the stored list


def test_check_compatible_reports_every_difference_and_missing_keys():
    with pytest.raises(CheckpointError) as excinfo:
        check_compatible({"K": 2, "act": "relu"}, {"K": 3, "act": "tanh", "D": 784}, ["K", "act", "D"])
    message = str(excinfo.value)
    assert "\n" not in message
    assert "checkpoint was written with K=2, this run asks for K=3" in message
    assert "checkpoint was written with act='relu', this run asks for act='tanh'" in message
    assert "checkpoint was written with D=<unset>, this run asks for D=784" in message


def test_check_compatible_after_a_round_trip(tmp_path):
    config = {"D": 784, "hidden": (256, 128), "K": 16}
    save_checkpoint(tmp_path, {"w": np.zeros(1)}, {"config": config})
    _, meta = load_checkpoint(tmp_path)

    check_compatible(meta["config"], config, config.keys())
    with pytest.raises(CheckpointError, match=r"hidden=\[256, 128\], this run asks for hidden=\[512, 128\]"):
        check_compatible(meta["config"], {**config, "hidden": (512, 128)}, ["hidden"])
