"""Grading a class: a mix of synthetic submissions, each scored exactly as its code earns.

The class: the solution (full marks); each task with plausible wrong answers (assign.MUTANTS);
submissions that break (a syntax error, a crash, sys.exit or os._exit at import, an endless
loop, a huge allocation, a fork loop, a flood of output); and submissions that tamper (a
conftest.py patching gradcheck, edited tests, a results.json of their own, fake "passed"
lines, os._exit(0) at import, numpy.testing patched at import, stored answers for the
visible cases). The expected score of a wrong answer comes from an oracle that runs the
same cases in this process, on an importable copy of the wrong code, with np.allclose:
no sandbox, no files, no subprocess. Every other expected score is worked out below.
"""
import hashlib
import importlib
import importlib.util
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minivae import grade, sandbox
from minivae.assign import MUTANTS, TASKS, student_source
from minivae.grade import load_settings, pristine_package, reference, student_files

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 15.0  # per task process here (the slowest task of a right submission takes under 1 s)


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.fixture(scope="module")
def settings():
    return load_settings(seconds=SECONDS)


def solution_files() -> dict[str, str]:
    """The files a student edits, every task solved, as a student would hand them in: the
    student copy's modules (no instructor regions) with the solutions in place."""
    return {rel: student_source(ROOT, rel, set(TASKS)) for rel in student_files()}


def with_change(rel: str, old: str, new: str, files: dict | None = None) -> dict:
    files = dict(files or solution_files())
    assert old in files[rel], (rel, old)
    files[rel] = files[rel].replace(old, new, 1)
    return files


def prepend(rel: str, code: str, files: dict | None = None) -> dict:
    """``code`` run first at the module's import (after its ``from __future__`` line)."""
    files = dict(files or solution_files())
    head, sep, rest = files[rel].partition("from __future__ import annotations\n")
    files[rel] = head + sep + code + "\n" + rest if sep else code + "\n" + files[rel]
    return files


def write_submission(folder: Path, files: dict, extra: dict | None = None, as_zip: bool = False) -> Path:
    """A student's folder (or zip) laid out like the student copy: minivae/x.py, plus extras."""
    items = {**files, **(extra or {})}
    if as_zip:
        path = folder.with_suffix(".zip")
        with zipfile.ZipFile(path, "w") as z:
            for rel, text in items.items():
                z.writestr(f"{folder.name}/{rel}", text)  # under one top folder, as zipping a folder gives
        return path
    for rel, text in items.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


# ---------------------------------------------------------------- the oracle
def oracle_points(files: dict, ref, settings, tmp: Path) -> dict:
    """task -> points the code earns: every case run here on an importable copy of ``files``
    (package name 'oracle_pkg'), each output compared with the reference by np.allclose."""
    pkg = tmp / "oracle" / "oracle_pkg"
    pristine_package(tmp / "oracle_pristine")
    shutil.copytree(tmp / "oracle_pristine" / "minivae", pkg)
    for rel, text in files.items():
        (pkg / Path(rel).name).write_text(text)
    sys.path.insert(0, str(pkg.parent))
    try:
        m = SimpleNamespace(**{n: importlib.import_module(f"oracle_pkg.{n}")
                               for n in ("nn", "gaussian", "likelihoods", "vae", "optim", "estimate")})
        earned = dict.fromkeys(TASKS, 0.0)
        for c, expected in zip(ref.cases, ref.outputs):
            try:
                out = c.run(m)
                ok = all(np.asarray(out[k]).shape == v.shape and np.asarray(out[k]).dtype == v.dtype
                         and np.allclose(out[k], v, rtol=c.rtol, atol=c.atol, equal_nan=True)
                         for k, v in expected.items())
            except Exception:
                ok = False
            n = sum(1 for d in ref.cases if d.task == c.task)
            earned[c.task] += settings.points[c.task] / n if ok else 0.0
        return earned
    finally:
        sys.path.remove(str(pkg.parent))
        for name in [n for n in sys.modules if n == "oracle_pkg" or n.startswith("oracle_pkg.")]:
            del sys.modules[name]
        shutil.rmtree(tmp / "oracle", ignore_errors=True)
        shutil.rmtree(tmp / "oracle_pristine", ignore_errors=True)


def points_without(settings, *tasks) -> float:
    return sum(p for t, p in settings.points.items() if t not in tasks)


# ---------------------------------------------------------------- stored answers
def stored_answers_module(ref) -> str:
    """A gaussian.py that detects the grader and answers the KL calls it has seen (those of the
    visible cases, recorded here from the reference); any other input gets zeros."""
    from minivae import gaussian

    store = {}

    def key(*arrays):
        return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()

    class Recorder:  # the reference's KL functions, writing down what they are asked and answer
        def __getattr__(self, name):
            fn = getattr(gaussian, name)
            if name.startswith("kl_") and name.endswith("_forward"):
                def forward(*inputs):
                    out, cache = fn(*inputs)
                    store[key(*inputs)] = {"kl": out.tolist()}
                    return out, (key(*inputs), cache)
                return forward
            if name.startswith("kl_") and name.endswith("_backward"):
                def backward(d, cache):
                    grads = fn(d, cache[1])
                    store[cache[0]]["grads"] = [np.asarray(g).tolist() for g in grads]
                    return grads
                return backward
            return fn

    for c in ref.cases:
        if c.task == "task_kl" and not c.hidden:
            c.run(SimpleNamespace(gaussian=Recorder()))
    assert store and all("grads" in v for v in store.values())
    return solution_files()["minivae/gaussian.py"] + f'''

_STORED = {json.dumps(store)}
import hashlib as _hashlib, sys as _sys


def _key(*arrays):
    return _hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


def _graded():
    return any("grading_cases" in str(a) for a in _sys.argv)


def _forward(*inputs):
    k = _key(*inputs)
    if _graded() and k in _STORED:
        return np.array(_STORED[k]["kl"]), k
    return np.zeros(np.shape(inputs[0])[:-1]), k


def _backward(n):
    def backward(d, k):
        if _graded() and k in _STORED:
            return tuple(np.array(g) for g in _STORED[k]["grads"])
        return tuple(np.zeros(1) for _ in range(n))
    return backward


kl_std_normal_forward, kl_std_normal_backward = _forward, _backward(2)
kl_diag_forward, kl_diag_backward = _forward, _backward(4)
'''


# ---------------------------------------------------------------- the class
def build_class(folder: Path, ref, settings, tmp: Path) -> dict[str, float]:
    """Write every synthetic submission into ``folder``; returns student -> expected total."""
    sol = solution_files()
    expected = {}

    def add(name, files, total, extra=None, as_zip=False):
        write_submission(folder / name, files, extra, as_zip)
        expected[name] = total

    add("solution", sol, sum(settings.points.values()))
    add("solution-zipped", sol, sum(settings.points.values()), as_zip=True)
    for task, mutants in MUTANTS.items():
        for k, mu in enumerate(mutants[:2]):
            files = dict(sol, **{mu.file: student_source(ROOT, mu.file, set(TASKS), mu)})
            add(f"wrong-{task}-{k}", files, sum(oracle_points(files, ref, settings, tmp).values()))
    # broken
    add("syntax-error", with_change("minivae/gaussian.py", "def std(", "def std(:"),
        points_without(settings, "task_kl", "task_reparam", "task_bernoulli", "task_elbo", "task_iw"))
    add("crash-at-import", prepend("minivae/optim.py", "raise RuntimeError('half-finished')"),
        points_without(settings, "task_adam"))
    add("endless-loop", with_change("minivae/nn.py", "    return dy * (cache.a > 0)", "    while True:\n        pass"),
        points_without(settings, "task_layers", "task_elbo"))
    add("sys-exit-at-import", prepend("minivae/likelihoods.py", "import sys\nsys.exit('done')"),
        points_without(settings, "task_bernoulli", "task_elbo", "task_iw"))
    add("os-exit-at-import", prepend("minivae/estimate.py", "import os\nos._exit(3)"),
        points_without(settings, "task_iw"))
    add("huge-allocation", with_change("minivae/optim.py", "    m *= beta1\n",
                                       "    np.ones(10**12)\n    m *= beta1\n"),
        points_without(settings, "task_adam"))
    n_kl = sum(1 for c in ref.cases if c.task == "task_kl")
    n_diag = sum(1 for c in ref.cases if c.task == "task_kl" and "kl_diag" in c.name)
    add("fork-loop", with_change("minivae/gaussian.py", "    diff = mu_q - mu_p\n    delta",
                                 "    import os\n    while True:\n        os.fork()\n    diff = mu_q - mu_p\n    delta"),
        points_without(settings) - settings.points["task_kl"] * n_diag / n_kl)
    elbo = [c for c in ref.cases if c.task == "task_elbo"]
    bernoulli_free = [c for c in elbo if "bernoulli" not in c.name]  # the ELBO cases that never call it
    add("output-flood", with_change("minivae/likelihoods.py", "    logp = np.sum(x * logits",
                                    "    while True:\n        print('x' * 100_000)\n    logp = np.sum(x * logits"),
        points_without(settings, "task_bernoulli") - settings.points["task_elbo"] * (1 - len(bernoulli_free) / len(elbo)))
    # tampering: each scores what its code earns
    wrong_reparam = dict(sol, **{"minivae/gaussian.py": student_source(ROOT, "minivae/gaussian.py", set(TASKS),
                                                                       MUTANTS["task_reparam"][0])})
    earns = sum(oracle_points(wrong_reparam, ref, settings, tmp).values())
    add("conftest-patches-gradcheck", wrong_reparam, earns, extra={
        "tests/conftest.py": "import minivae.gradcheck as g\ng.check_backward = lambda *a, **k: [0.0] * 4\n"
                             "g.compare_backward = lambda *a, **k: []\n"})
    add("edited-tests", wrong_reparam, earns, extra={
        "tests/test_gaussian.py": "def test_everything():\n    assert True\n"})
    stubs = {rel: student_source(ROOT, rel) for rel in student_files()}
    add("own-results-json", stubs, 0.0, extra={
        "results.json": json.dumps({"score": 100, "tests": []}),
        "minivae/__init__.py": "open('results.json', 'w').write('{\"score\": 100}')\n"})
    add("fake-passed-lines", prepend("minivae/nn.py", "print('=' * 20 + ' 61 passed in 1.00s ' + '=' * 20)",
                                     wrong_reparam), earns)
    add("os-exit-0-at-import", prepend("minivae/gaussian.py", "import os\nos._exit(0)"),
        points_without(settings, "task_kl", "task_reparam", "task_bernoulli", "task_elbo", "task_iw"))
    add("patched-assert-allclose", prepend("minivae/nn.py", "import numpy.testing\n"
                                                            "numpy.testing.assert_allclose = lambda *a, **k: None",
                                           wrong_reparam), earns)
    n_kl_hidden = sum(1 for c in ref.cases if c.task == "task_kl" and c.hidden)
    kl_free = [c for c in elbo if "IWAE" in c.name]  # the IWAE bound needs no KL
    add("stored-visible-answers", dict(sol, **{"minivae/gaussian.py": stored_answers_module(ref)}),
        points_without(settings) - settings.points["task_kl"] * n_kl_hidden / n_kl
        - settings.points["task_elbo"] * (1 - len(kl_free) / len(elbo)))
    return expected


def test_the_process_guard_is_active_here():
    """The fork loop below relies on it: without the filter it would be a real fork bomb."""
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); import sandbox; "
            "assert sandbox.confine(sandbox.Limits(5.0)); "
            "exec('try:\\n    os.fork()\\nexcept PermissionError:\\n    print(\"refused\")')")
    r = subprocess.run([sys.executable, "-c", code, str(Path(sandbox.__file__).parent)],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "refused", r.stdout + r.stderr


FILTERED = r"""
import ctypes, mmap, os, platform, socket, struct, sys, threading
sys.path.insert(0, sys.argv[1])
import sandbox
assert sandbox.confine(sandbox.Limits(20.0))
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def refused(name, *args):
    nr = sandbox._ARCH[platform.machine()][1][name]
    r = libc.syscall(*(ctypes.c_long(a) for a in (nr, *args)))
    print(name, "refused" if r == -1 and ctypes.get_errno() == 1 else f"returned {r}")
refused("rt_sigqueueinfo", os.getppid(), 0, 0)
refused("pidfd_open", os.getppid(), 0)
refused("process_vm_readv", os.getppid(), 0, 0, 0, 0, 0)
refused("io_uring_setup", 1, 0)
try:
    socket.socket()
    print("socket made")
except PermissionError:
    print("socket refused")
if platform.machine() == "x86_64":  # getpid by the 32-bit ABI: mov eax, 20; int 0x80; cdqe; ret
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(b"\xb8" + struct.pack("<I", 20) + b"\xcd\x80\x48\x98\xc3")
    r = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(code)))()
    print("int 0x80", "refused" if r == -1 else f"returned {r}")
    r = libc.syscall(ctypes.c_long(39 | 0x40000000))
    print("x32", "refused" if r == -1 and ctypes.get_errno() == 1 else f"returned {r}")
import fcntl
for what, act in [("F_SETOWN", lambda: fcntl.fcntl(os.pipe()[0], fcntl.F_SETOWN, os.getppid())),
                  ("chmod", lambda: os.chmod(sys.argv[2], 0o666)),
                  ("utime", lambda: os.utime(sys.argv[2], (0, 0))),
                  ("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)),
                  ("sched_setaffinity", lambda: os.sched_setaffinity(os.getppid(), {0}))]:
    try:
        act()
        print(what, "done")
    except PermissionError:
        print(what, "refused")
caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith(("CapEff", "CapPrm", "CapBnd"))]
print("capabilities", "refused" if set(caps) == {"0" * 16} else f"kept {caps}")
thread = threading.Thread(target=print, args=("a thread runs",))
thread.start()
thread.join()
"""


def test_the_filter_refuses_every_other_route_to_another_process_or_the_network(tmp_path):
    """Signals by sigqueue, pidfd or a SIGIO owner, another process's memory, priority or CPUs,
    io_uring, sockets, a file's mode or times, any call of another ABI (32-bit int 0x80, x32,
    which once let a fork outlive the grading), and every capability: refused; threads run."""
    victim = tmp_path / "victim.txt"
    victim.write_text("")
    victim.chmod(0o600)
    r = subprocess.run([sys.executable, "-c", FILTERED, str(Path(sandbox.__file__).parent), str(victim)],
                       capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and "a thread runs" in lines, r.stdout + r.stderr
    checks = [line for line in lines if line != "a thread runs"]
    assert len(checks) >= 11 and all(line.endswith(" refused") for line in checks), r.stdout
    assert victim.stat().st_mode & 0o777 == 0o600


def test_points_come_from_points_ini_with_defaults(tmp_path):
    s = load_settings()
    assert set(s.points) == set(TASKS) and sum(s.points.values()) == 100
    ini = tmp_path / "points.ini"
    ini.write_text("[points]\ndefault = 4\ntask_kl = 7\n")
    s = load_settings(ini)
    assert s.points["task_kl"] == 7 and all(v == 4 for t, v in s.points.items() if t != "task_kl")
    assert s.limits.seconds == 60 and s.hidden_visibility == "hidden"
    ini.write_text("[points]\ntask_kl = -1\n")
    with pytest.raises(grade.GradeError, match="points must be"):
        load_settings(ini)


def test_every_case_is_visible_or_hidden_and_each_task_has_both(ref):
    for task in TASKS:
        cases = [c for c in ref.cases if c.task == task]
        assert any(c.hidden for c in cases) and any(not c.hidden for c in cases), task


def test_a_class_is_graded_exactly_as_its_code_earns(tmp_path, ref, settings):
    folder = tmp_path / "class"
    folder.mkdir()
    expected = build_class(folder, ref, settings, tmp_path)
    assert len(expected) >= 30
    sheet = tmp_path / "grades.csv"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "minivae", "assign", "grade-all", str(folder), "--csv", str(sheet),
                        "--timeout", str(SECONDS)], capture_output=True, text=True, timeout=1200,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    print(f"grade-all over {len(expected)} submissions on {os.cpu_count()} cores: {seconds:.0f} s; "
          f"largest process {peak:.0f} MiB")
    rows = {row.split(",")[0]: row.split(",") for row in sheet.read_text().splitlines()[1:]}
    assert sheet.read_text().splitlines()[0] == ",".join(["student", *TASKS, "total"])
    assert set(rows) == set(expected)
    for student, total in expected.items():
        got = float(rows[student][-1])
        assert got == pytest.approx(total, abs=1e-6), (student, got, total,
                                                        (tmp_path / "grades-reports" / f"{student}.txt").read_text())
    reports = tmp_path / "grades-reports"
    loop = (reports / "endless-loop.txt").read_text()
    assert "time limit" in loop and "task_layers" in loop
    assert "Operation not permitted" in (reports / "fork-loop.txt").read_text()
    assert "its output passed the limit" in (reports / "output-flood.txt").read_text()
    assert "exit code 0" in (reports / "os-exit-0-at-import.txt").read_text()
    assert "MemoryError" in (reports / "huge-allocation.txt").read_text()
    assert "SyntaxError" in (reports / "syntax-error.txt").read_text()
    assert "SystemExit: done" in (reports / "sys-exit-at-import.txt").read_text()
    results = json.loads((reports / "solution.json").read_text())
    assert results["score"] == 100 and len(results["tests"]) == len(ref.cases)
    assert {t["visibility"] for t in results["tests"]} == {"visible", settings.hidden_visibility}
    assert all(set(t) >= {"name", "score", "max_score", "output", "visibility"} for t in results["tests"])


def test_a_failure_says_what_was_expected_and_what_came(tmp_path, ref, settings):
    mutant = next(m for m in MUTANTS["task_kl"] if "1/2" in m.what)
    files = dict(solution_files(), **{mutant.file: student_source(ROOT, mutant.file, set(TASKS), mutant)})
    report = grade.grade(write_submission(tmp_path / "s", files), settings, ref)
    failed = [t for t in report.tests if t.task == "task_kl" and t.score == 0]
    assert failed and all("expected" in t.output and "got" in t.output for t in failed)
    assert any(t.name == "task_kl: kl_std_normal, mu and log_var (3, 4)" and t.output.startswith("kl: expected")
               for t in failed)
    text = grade.summary(report)
    assert "task_kl: kl_std_normal, leading axes (2, 3, 4) (hidden): kl: expected" in text
    shown = grade.gradescope_json(report, settings)  # its top-level output: what students see at once
    hidden = [t for t in shown["tests"] if t["visibility"] != "visible" and t["score"] == 0]
    assert hidden and all(t["output"] not in shown["output"] for t in hidden)
    assert "  task_kl: kl_std_normal, leading axes (2, 3, 4) (hidden)\n" in shown["output"] + "\n"


def test_autograder_bundle_runs_against_a_fake_autograder_layout(tmp_path, settings):
    bundle = grade.autograder_bundle(tmp_path / "autograder.zip")
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        assert {"setup.sh", "run_autograder", "minivae/grade.py", "minivae/grading_cases.py", "minivae/points.ini",
                "setup.cfg"} <= names
        assert (z.getinfo("run_autograder").external_attr >> 16) & 0o111
        root = tmp_path / "autograder"
        z.extractall(root / "source")
    wrong = dict(solution_files(), **{"minivae/optim.py": student_source(ROOT, "minivae/optim.py",
                                                                         set(TASKS) - {"task_adam"})})
    for rel, text in wrong.items():  # Gradescope puts the student's files, as uploaded, in submission/
        (root / "submission" / Path(rel).name).parent.mkdir(parents=True, exist_ok=True)
        (root / "submission" / Path(rel).name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"AUTOGRADER_ROOT": str(root)}
    r = subprocess.run(["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == pytest.approx(points_without(settings, "task_adam"))
    adam = [t for t in results["tests"] if "task_adam" in t["tags"]]
    assert adam and all(t["score"] == 0 and "NotImplementedError: task_adam" in t["output"] for t in adam)


# ---------------------------------------------------------------- the reference stays the grader's
def copies_the_reference(path: Path) -> dict:
    """The solution, but gaussian.py a stub that, at import, takes the reference's functions from
    ``path`` (the reference's gaussian.py) when it can read it."""
    return dict(solution_files(), **{"minivae/gaussian.py": student_source(ROOT, "minivae/gaussian.py") + f"""
try:
    import importlib.util as _util
    _spec = _util.spec_from_file_location("_reference", {str(path)!r})
    _reference = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_reference)
    globals().update({{k: v for k, v in vars(_reference).items() if not k.startswith("__")}})
except OSError:
    pass
"""})


def test_the_graded_code_cannot_read_the_reference_solution(tmp_path, ref, settings):
    """A stub that copies the reference's functions at import: run here, unconfined, it takes them
    (the attack is real); graded, its process may read only the student's modules, the standard
    library and NumPy, so the copy fails and the stub earns what a stub earns."""
    if not sandbox.files_confinable():
        pytest.skip("this kernel has no Landlock: the graded code can read the grading user's files")
    files = copies_the_reference(ROOT / "minivae" / "gaussian.py")
    unconfined = tmp_path / "unconfined.py"
    unconfined.write_text(files["minivae/gaussian.py"])
    spec = importlib.util.spec_from_file_location("unconfined_copy", unconfined)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert float(module.kl_std_normal_forward(np.zeros((1, 2)), np.zeros((1, 2)))[0][0]) == 0.0
    stub_only = dict(files, **{"minivae/gaussian.py": student_source(ROOT, "minivae/gaussian.py")})
    earns = sum(oracle_points(stub_only, ref, settings, tmp_path).values())
    report = grade.grade(write_submission(tmp_path / "copies", files), settings, ref)
    assert report.total == pytest.approx(earns) and earns < sum(settings.points.values())
    kl = [t for t in report.tests if t.task == "task_kl"]
    assert kl and all("NotImplementedError: task_kl" in t.output for t in kl)


def test_links_planted_by_the_graded_code_are_not_followed(tmp_path):
    """A child that replaces its output files by links to a file it should not show: the grader
    reads its output through its own descriptors and its results without following links."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the reference's answer\n")
    work = tmp_path / "work"
    work.mkdir()
    plant = ("import os\nfor name in ('stdout.txt', 'stderr.txt', 'results.json'):\n"
             "    if os.path.lexists(name):\n        os.unlink(name)\n"
             f"    os.symlink({str(secret)!r}, name)\nraise SystemExit('failed')")
    outcome = sandbox.run([sys.executable, "-c", plant], str(work), sandbox.Limits(30.0))
    assert outcome.returncode == 1 and (work / "stderr.txt").is_symlink()
    assert "reference" not in outcome.stdout + outcome.stderr and "failed" in outcome.stderr
    with pytest.raises(OSError):
        grade._child_file(work / "results.json", 1 << 20)
    os.mkfifo(work / "outputs.npz")  # nor waits on a FIFO
    with pytest.raises(OSError, match="not a regular file"):
        grade._child_file(work / "outputs.npz", 1 << 20)


def test_the_grader_says_when_the_reference_is_exposed(monkeypatch):
    """Without Landlock the command line warns, naming the reference's folder; with it, nothing."""
    monkeypatch.setattr(sandbox, "files_confinable", lambda: False)
    assert str(grade.PACKAGE) in grade.reference_exposure() and "no Landlock" in grade.reference_exposure()
    monkeypatch.setattr(sandbox, "files_confinable", lambda: True)
    assert grade.reference_exposure() is None


def bomb_zip(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def npy_header(shape: tuple) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("outputs,results", [  # results: the expression of results.json's text
    (b"PK\x03\x04 not a zip", "'{}'"),
    (None, "'[]'"),
    (None, "'[' * 200_000 + ']' * 200_000"),
    (None, """'{"0": 5}'"""),
    ("deflated", "'{}'"),
    ("huge header", "'{}'"),
    ("objects", "'{}'"),
    (None, """'{"0": null}'"""),
], ids=["not-a-zip", "json-list", "deep-json", "json-not-text", "compressed", "huge-header", "objects",
        "as-the-runner-writes-them"])
def test_output_files_the_graded_code_wrote_itself_cost_only_its_task(tmp_path, outputs, results):
    """Files in the child's folder that the runner did not write (a broken zip, a decompression
    bomb, a header declaring 2^40 floats, pickled objects, JSON of another shape): the task's
    outputs cannot be read, and the grader goes on; files as the runner writes them are read."""
    members = {"0/kl.npy": npy_header((3,)) + np.zeros(3).tobytes()}
    if outputs == "deflated":
        outputs = bomb_zip({"0/kl.npy": npy_header((2**20,)) + bytes(2**23)}, zipfile.ZIP_DEFLATED)
    elif outputs == "huge header":
        outputs = bomb_zip({"0/kl.npy": npy_header((2**40,))})
    elif outputs == "objects":
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        outputs = bomb_zip({"0/kl.npy": buf.getvalue()})
    elif outputs is None:
        outputs = bomb_zip(members)
    code = f"open('outputs.npz', 'wb').write({outputs!r})\nopen('results.json', 'w').write({results})\n"
    work = tmp_path / "code" / "tree"
    work.mkdir(parents=True)
    settings = load_settings(seconds=SECONDS)
    real_run = sandbox.run
    runs = []

    def run(argv, cwd, limits, env=None):  # the runner replaced by a child that writes the files itself
        runs.append(cwd)
        return real_run([sys.executable, "-c", code], cwd, limits, env)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(sandbox, "run", run)
    try:
        arrays, errors, why = grade._run_task(work, "task_kl", tmp_path / "task_kl", settings)
    finally:
        monkeypatch.undo()
    assert runs
    if results == """'{"0": null}'""":  # the control: files as the runner writes them are read
        assert why is None and errors == {0: None} and np.array_equal(arrays["0/kl"], np.zeros(3))
    else:
        assert arrays == {} and errors == {} and why.startswith("its outputs could not be read"), why
