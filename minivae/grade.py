"""Grading a class: each submission's own modules, run confined, judged against the reference.

From a submission (a student's folder or zip) the grader takes only the files a student
was meant to edit, the modules holding solution regions (:func:`student_files`), and
puts them in a pristine student copy of the package: nothing else the student changed
or added (tests, conftest.py, gradcheck.py, setup files, .pth files) is read. Then,
for each assignment task, one process:

* **runs** the task's cases (:mod:`minivae.grading_cases`) with the student's modules,
  confined by :mod:`minivae.sandbox` (time, memory, output, no new processes), and only
  writes their outputs down (an ``.npz``, read back without pickles);
* the grader's own process, which **never imports the student's code**, computes the same
  cases with the reference and **judges** the outputs, case by case.

So a submission cannot grade itself: whatever it patches, prints, exits with or writes
in its own process, only the outputs of the cases count, and those are compared
elsewhere. A syntax error, a crash or ``sys.exit`` at import, an endless loop, a huge
allocation, a fork loop or a flood of output costs the tasks it breaks, with the reason
in the report. Where the kernel offers Landlock (Linux 5.13 and later), a task process
reads only the student's modules, the Python standard library, NumPy and threadpoolctl,
and writes only its own folder: it cannot read the reference solution, whoever runs the
grader. Elsewhere it can read what the grading user can; :func:`reference_exposure` says
so, and so does the command line.

Points per task come from ``points.ini`` beside this module; within a task every case
is worth the same. Reports: Gradescope's ``results.json`` and a readable summary.

    python -m minivae assign grade SUBMISSION [--json results.json]
    python -m minivae assign grade-all DIR --csv grades.csv
    python -m minivae assign autograder OUT.zip
"""
from __future__ import annotations

import concurrent.futures
import configparser
import csv
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import sandbox
from .assign import INSTRUCTOR_ONLY, ROOT, TASKS, regions, student_source
from .gradcheck import mismatch

__all__ = ["Settings", "load_settings", "student_files", "Submission", "read_submission", "Reference",
           "reference", "CaseResult", "Report", "grade", "grade_all", "gradescope_json", "summary",
           "autograder_bundle", "reference_exposure", "reports_folder", "GradeError"]

PACKAGE = Path(__file__).resolve().parent
POINTS_FILE = PACKAGE / "points.ini"
CASES_FILE = PACKAGE / "grading_cases.py"
MAX_FILE = 1 << 20  # bytes: a module larger than this in a submission is not read

#: the modules each task's cases call (the runner imports nothing else of the student's)
TASK_MODULES = {"task_layers": ("nn",), "task_kl": ("gaussian",), "task_reparam": ("gaussian",),
                "task_bernoulli": ("likelihoods",), "task_elbo": ("vae",), "task_adam": ("optim",),
                "task_iw": ("vae", "estimate")}


class GradeError(ValueError):
    """A grading problem of the instructor's making (a missing folder, a bad points.ini)."""


@dataclass(frozen=True)
class Settings:
    points: dict                 # task -> points
    limits: sandbox.Limits       # per task process
    hidden_visibility: str = "hidden"


def load_settings(path: Path = POINTS_FILE, seconds: float | None = None) -> Settings:
    """The points per task and the limits of ``points.ini`` (``seconds`` overrides the wall clock)."""
    cfg = configparser.ConfigParser(inline_comment_prefixes=("#",))
    if not cfg.read(path, encoding="utf-8"):
        raise GradeError(f"cannot read {path}")
    try:
        default = cfg.getfloat("points", "default", fallback=10.0)
        points = {t: cfg.getfloat("points", t, fallback=default) for t in TASKS}
        limits = sandbox.Limits(seconds=seconds or cfg.getfloat("limits", "seconds", fallback=60.0),
                                memory=int(cfg.getfloat("limits", "memory_mib", fallback=2048) * 2**20),
                                output=int(cfg.getfloat("limits", "output_mib", fallback=8) * 2**20))
    except ValueError as e:
        raise GradeError(f"{path}: {e}") from None
    visibility = cfg.get("report", "hidden_visibility", fallback="hidden")
    if visibility not in ("hidden", "after_due_date", "after_published", "visible"):
        raise GradeError(f"{path}: hidden_visibility must be hidden, after_due_date, after_published or visible")
    if any(p < 0 for p in points.values()) or not limits.seconds > 0:
        raise GradeError(f"{path}: points must be >= 0 and seconds > 0")
    return Settings(points, limits, visibility)


def student_files(root: Path = ROOT) -> list[str]:
    """The files a student edits: the package's modules that hold solution regions."""
    return sorted(str(p.relative_to(root)) for p in (root / "minivae").glob("*.py")
                  if str(p.relative_to(root)) not in INSTRUCTOR_ONLY and regions(p.read_text(encoding="utf-8")))


def pristine_package(dest: Path, root: Path = ROOT) -> Path:
    """The student copy's package (stubs in place, no instructor module) in ``dest/minivae``."""
    pkg = dest / "minivae"
    pkg.mkdir(parents=True)
    for path in sorted((root / "minivae").glob("*.py")):
        rel = str(path.relative_to(root))
        if rel not in INSTRUCTOR_ONLY:
            (pkg / path.name).write_text(student_source(root, rel), encoding="utf-8")
    return pkg


# ---------------------------------------------------------------- submissions
@dataclass
class Submission:
    name: str
    files: dict = field(default_factory=dict)   # relative path -> bytes, for the student files found
    notes: list = field(default_factory=list)   # what was missing or refused


def read_submission(path: str | Path, wanted: list[str]) -> Submission:
    """The ``wanted`` files of a submission folder or zip (found at their own path or below one
    top folder). Nothing is extracted; each file is read at most once, up to MAX_FILE bytes."""
    path = Path(path)
    sub = Submission(path.stem if path.suffix == ".zip" else path.name)
    if path.is_dir():
        entries = {str(p.relative_to(path)): p for p in path.rglob("*.py") if p.is_file() and not p.is_symlink()}
        read = lambda key: entries[key].read_bytes() if entries[key].stat().st_size <= MAX_FILE else None  # noqa
    elif path.suffix == ".zip" and path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            sub.notes.append(f"the zip cannot be read ({e}); graded as an empty submission")
            return sub
        entries = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        read = lambda key: archive.read(entries[key]) if entries[key].file_size <= MAX_FILE else None  # noqa
    else:
        raise GradeError(f"{path} is neither a folder nor a .zip file")
    for rel in wanted:
        base = rel.rsplit("/", 1)[-1]  # a student may upload the bare module, as Gradescope lets them
        candidates = sorted((k for k in entries if k in (rel, base) or k.endswith("/" + rel)), key=len)
        if not candidates:
            sub.notes.append(f"{rel} is missing from the submission: its tasks are graded on the stub")
            continue
        data = read(candidates[0])
        if data is None:
            sub.notes.append(f"{candidates[0]} is larger than {MAX_FILE} bytes: not read")
        else:
            sub.files[rel] = data
    return sub


# ---------------------------------------------------------------- the two sides
def _load_cases():
    spec = importlib.util.spec_from_file_location("minivae_grading_cases", CASES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


@dataclass
class Reference:
    """The reference outputs of every case (computed once, before any student code runs)."""
    cases: list
    outputs: list   # per case: {name: array}


def reference() -> Reference:
    """Every case run with this package's own (reference) modules, in this process."""
    from . import estimate, gaussian, likelihoods, nn, optim, vae
    m = SimpleNamespace(nn=nn, gaussian=gaussian, likelihoods=likelihoods, vae=vae, optim=optim, estimate=estimate)
    cases = _load_cases()
    return Reference(cases, [{k: np.asarray(v) for k, v in c.run(m).items()} for c in cases])


#: the confined process: limits first, then the student's modules, then the cases; outputs only
RUNNER = r'''
import importlib.util, json, os, sys, traceback, types
import numpy as np
tree, task, cases_file, sandbox_file, out_dir, limits = sys.argv[1:7]
modules = sys.argv[7].split(",")
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
sandbox = load("minivae_sandbox", sandbox_file)
cases = [c for c in load("minivae_grading_cases", cases_file).CASES if c.task == task]
sandbox.confine(sandbox.Limits(*json.loads(limits)))
import site, sysconfig, threadpoolctl, zipfile, zlib  # what the runner and the modules need, while it may
paths = sysconfig.get_paths()
closed = [*site.getsitepackages(), site.getusersitepackages(), *(p for p in sys.path if p.endswith("-packages"))]
libraries = [os.path.dirname(np.__file__), os.path.dirname(np.__file__) + ".libs", threadpoolctl.__file__]
readable = sandbox.below([paths["stdlib"], paths["platstdlib"], *libraries, os.path.dirname(os.path.abspath(tree)),
                          f"/proc/{os.getpid()}"], closed)  # its own /proc entry: threadpoolctl reads its maps
if not sandbox.confine_files(readable, [out_dir]) and sandbox.files_confinable():
    sys.exit("the grader could not limit the files the graded code may read")
def describe(e):
    text = "".join(traceback.format_exception_only(type(e), e)).strip().replace("\n", " ")[:600]
    if isinstance(e, OSError) and e.errno == 27:  # EFBIG: the output limit (Python ignores SIGXFSZ)
        return "its output passed the limit of the grader (" + text + ")"
    if isinstance(e, MemoryError):
        return "it ran out of memory under the grader's limit (" + text + ")"
    return text
results, arrays = {}, {}
package = types.ModuleType("minivae")  # the package without its __init__: only the modules asked for run
package.__path__, package.__file__ = [os.path.join(tree, "minivae")], os.path.join(tree, "minivae", "__init__.py")
sys.modules["minivae"] = package
try:
    import importlib
    m = types.SimpleNamespace(**{name: importlib.import_module("minivae." + name) for name in modules})
    problem = None
except BaseException as e:
    problem = "importing the submission failed: " + describe(e)
for i, c in enumerate(cases):
    if problem:
        results[i] = problem
        continue
    try:
        out = c.run(m)
        for key, value in out.items():
            arrays[f"{i}/{key}"] = np.asarray(value)
        results[i] = None
    except BaseException as e:
        results[i] = describe(e)
np.savez(os.path.join(out_dir, "outputs.npz"), **arrays)
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({str(i): r for i, r in results.items()}, f)
sys.stdout.flush()
os._exit(0)
'''


def reference_exposure() -> str | None:
    """Why the student's code could read the reference solution here, or None if it cannot."""
    if sandbox.files_confinable():
        return None
    return (f"this system has no Landlock (Linux 5.13 or later), so the graded code can read whatever the "
            f"grading user can, the reference solution in {PACKAGE} included")


def _run_task(tree: Path, task: str, work: Path, settings: Settings) -> tuple[dict, dict, str | None]:
    """Run one task's cases with the submission's modules (``tree``) in a confined process,
    which writes into ``work``; the runner's own files are beside ``tree``, and the process
    reads nothing else of the grader's (see the module's docstring). Returns
    (arrays by 'case/name', errors by case index, why the process failed or None)."""
    work.mkdir()
    limits = settings.limits
    argv = [sys.executable, "-I", "-c", RUNNER, str(tree), task, str(tree.parent / CASES_FILE.name),
            str(tree.parent / Path(sandbox.__file__).name), str(work), json.dumps(list(limits)),
            ",".join(TASK_MODULES[task])]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8"}
    outcome = sandbox.run(argv, str(work), limits, env=env)
    outputs, results = work / "outputs.npz", work / "results.json"
    why = None
    if outcome.timed_out:
        why = f"it ran past the time limit of {limits.seconds:g} s (an endless loop?)"
    elif outcome.returncode != 0 or not (outputs.exists() and results.exists()):
        why = _why_it_ended(outcome, limits)
    if why:
        return {}, {}, why
    try:  # whatever the child's code wrote there: any failure to read it costs the task only
        arrays = _read_outputs(_child_file(outputs, limits.output))
        errors = json.loads(_child_file(results, limits.output))
        if not (isinstance(errors, dict) and all(isinstance(v, (str, type(None))) for v in errors.values())):
            raise ValueError("results.json is not the runner's")
        errors = {int(k): v for k, v in errors.items()}
    except Exception as e:  # noqa: BLE001  (MemoryError, RecursionError and BadZipFile included)
        return {}, {}, f"its outputs could not be read ({type(e).__name__}: {str(e)[:300]})"
    return arrays, errors, None


def _child_file(path: Path, limit: int) -> bytes:
    """A file the child wrote, at most ``limit`` bytes, read without following a link it may
    have put in its place (to a file that only the grader may read), nor waiting on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path.name} is larger than the output limit")
    return data


#: .npy format version -> its header's reader (np.savez writes 1.0, or 2.0 for a huge header)
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_outputs(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of an ``outputs.npz``, refusing what ``np.savez`` does not write: only
    uncompressed ``.npy`` members (no decompression bombs), no object arrays, and each
    header declaring no more data than its member holds (no huge allocation)."""
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                raise ValueError(f"{info.filename}: not an uncompressed .npy member")
            member = io.BytesIO(archive.read(info))
            version = np.lib.format.read_magic(member)
            if version not in _NPY_HEADERS:
                raise ValueError(f"{info.filename}: .npy version {version}")
            shape, _, dtype = _NPY_HEADERS[version](member)
            if dtype.hasobject or math.prod(shape) * dtype.itemsize > len(member.getbuffer()) - member.tell():
                raise ValueError(f"{info.filename}: its header declares more data than it holds")
            member.seek(0)
            arrays[info.filename[:-len(".npy")]] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _why_it_ended(outcome: sandbox.Outcome, limits: sandbox.Limits) -> str:
    code = outcome.returncode
    tail = (outcome.stderr or outcome.stdout).strip().splitlines()[-1:] or [""]
    if code is not None and code < 0:
        sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        reason = {"SIGXFSZ": f"its output passed the limit of {limits.output / 2**20:g} MiB",
                  "SIGXCPU": f"it used more than {int(limits.seconds) + 1} s of CPU",
                  "SIGKILL": "it was killed", "SIGSEGV": "it crashed (segmentation fault)"}.get(sig, "")
        return f"the process was ended by {sig}" + (f": {reason}" if reason else "")
    return (f"the process ended (exit code {code}) before writing its results"
            + (f"; the last line of its first 4 KB of output: {tail[0][:300]}" if tail[0] else ""))


# ---------------------------------------------------------------- the judge
@dataclass
class CaseResult:
    name: str
    task: str
    hidden: bool
    score: float
    max_score: float
    output: str

    @property
    def label(self) -> str:
        """The case's name as reports show it."""
        return self.name + (" (hidden)" if self.hidden else "")


@dataclass
class Report:
    student: str
    tests: list
    notes: list
    points: dict          # task -> (score, max)

    @property
    def total(self) -> float:
        return sum(score for score, _ in self.points.values())

    @property
    def max_total(self) -> float:
        return sum(top for _, top in self.points.values())


def _judge(case, expected: dict, arrays: dict, index: int, error: str | None) -> str | None:
    """Why the case failed, or None if every output matches the reference."""
    if error:
        return error
    for key, want in expected.items():
        got = arrays.get(f"{index}/{key}")
        if got is None:
            return f"{key}: missing from the outputs"
        problem = mismatch(got, want, case.rtol, case.atol, dtype=True)
        if problem:
            return f"{key}: {problem}"
    return None


def grade(path: str | Path, settings: Settings, ref: Reference | None = None, pristine: Path | None = None,
          work: Path | None = None) -> Report:
    """Grade the submission at ``path`` (a folder or a zip); see the module's docstring."""
    ref = ref or reference()
    wanted = student_files()
    sub = read_submission(path, wanted)
    with tempfile.TemporaryDirectory(dir=work, ignore_cleanup_errors=True) as tmp:  # whatever the code left
        tmp = Path(tmp)
        tree = tmp / "code" / "tree"
        if pristine is None:
            pristine = pristine_package(tmp / "pristine")
        shutil.copytree(pristine, tree / "minivae")
        for rel, data in sub.files.items():
            (tree / rel).write_bytes(data)
        for runner_file in (CASES_FILE, Path(sandbox.__file__)):  # the child reads these, never the package
            shutil.copyfile(runner_file, tree.parent / runner_file.name)
        tests, points = [], {}
        for task in TASKS:
            indices = [i for i, c in enumerate(ref.cases) if c.task == task]
            arrays, errors, why = _run_task(tree, task, tmp / task, settings)
            worth = settings.points[task] / len(indices) if indices else 0.0
            got = 0.0
            for k, i in enumerate(indices):
                c = ref.cases[i]
                problem = why or _judge(c, ref.outputs[i], arrays, k, errors.get(k, "no result"))
                score = 0.0 if problem else worth
                got += score
                tests.append(CaseResult(f"{task}: {c.name}", task, c.hidden, score, worth, problem or "ok"))
            points[task] = (got, settings.points[task])
    return Report(sub.name, tests, sub.notes, points)


# ---------------------------------------------------------------- reports
def gradescope_json(report: Report, settings: Settings) -> dict:
    """Gradescope's results.json: every case a test, hidden ones with the configured visibility;
    the top-level output, which students see at once, names the hidden cases that failed but
    not what they expected."""
    return {"score": round(report.total, 4), "output": summary(report, hidden_details=False),
            "tests": [{"name": t.label, "score": round(t.score, 4),
                       "max_score": round(t.max_score, 4), "output": t.output,
                       "visibility": settings.hidden_visibility if t.hidden else "visible", "tags": [t.task]}
                      for t in report.tests]}


def summary(report: Report, hidden_details: bool = True) -> str:
    """A readable summary: points per task, then every failed case with its reason (for a
    hidden case only its name unless ``hidden_details``)."""
    lines = [f"{report.student}: {report.total:g} of {report.max_total:g} points"]
    lines += [f"  {task:15s} {got:6.2f} / {top:g}" for task, (got, top) in report.points.items()]
    lines += [f"note: {n}" for n in report.notes]
    failed = [t for t in report.tests if t.score < t.max_score]
    if failed:
        lines.append("failed:")
        lines += [f"  {t.label}: {t.output}" if hidden_details or not t.hidden else f"  {t.label}"
                  for t in failed]
    return "\n".join(lines)


def _submissions(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise GradeError(f"{folder} is not a folder of submissions")
    found = sorted(p for p in folder.iterdir() if p.is_dir() or p.suffix == ".zip")
    if not found:
        raise GradeError(f"{folder} holds no submission (a sub-folder or a .zip per student)")
    return found


def reports_folder(csv_path: str | Path) -> Path:
    """Where :func:`grade_all` writes each student's reports by default: beside the grade sheet."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + "-reports")


def grade_all(folder: str | Path, csv_path: str | Path, settings: Settings, jobs: int | None = None,
              reports: str | Path | None = None) -> list[Report]:
    """Grade every submission in ``folder`` (a sub-folder or zip each), ``jobs`` at a time
    (default: the machine's cores); write the grade sheet (a row per student, a column per
    task, the total) and each student's results.json and summary into ``reports``
    (default: :func:`reports_folder`)."""
    paths = _submissions(Path(folder))
    csv_path = Path(csv_path)
    reports = Path(reports) if reports else reports_folder(csv_path)
    reports.mkdir(parents=True, exist_ok=True)
    ref = reference()
    with tempfile.TemporaryDirectory() as tmp:
        pristine = pristine_package(Path(tmp) / "pristine")
        with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
            results = list(pool.map(lambda p: grade(p, settings, ref, pristine, Path(tmp)), paths))
    for r in results:
        (reports / f"{r.student}.json").write_text(json.dumps(gradescope_json(r, settings), indent=1))
        (reports / f"{r.student}.txt").write_text(summary(r) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", *TASKS, "total"])
    for r in results:
        w.writerow([r.student, *(_number(r.points[t][0]) for t in TASKS), _number(r.total)])
    csv_path.write_text(buf.getvalue())
    return results


def _number(x: float) -> str:
    """A score as the grade sheet shows it: six decimals at most, no trailing zeros."""
    return f"{x:.6f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------- Gradescope
RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission: /autograder/submission holds the student's files,
# /autograder/results/results.json receives the grade. AUTOGRADER_ROOT replaces /autograder (tests).
set -euo pipefail
root="${AUTOGRADER_ROOT:-/autograder}"
mkdir -p "$root/results"
cd "$root/source"
PYTHONPATH="$root/source" exec python3 -m minivae assign grade "$root/submission" --json "$root/results/results.json"
"""

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder's image.
set -euo pipefail
apt-get update && apt-get install -y --no-install-recommends python3 python3-pip
python3 -m pip install --break-system-packages 'numpy>=1.24' 'matplotlib>=3.6' 'threadpoolctl>=3.1' || \\
    python3 -m pip install 'numpy>=1.24' 'matplotlib>=3.6' 'threadpoolctl>=3.1'
"""


def autograder_bundle(out: str | Path, root: Path = ROOT) -> Path:
    """A Gradescope autograder: setup.sh, run_autograder and the reference package, zipped."""
    out = Path(out)
    if out.suffix != ".zip":
        raise GradeError(f"{out}: the autograder bundle is a .zip file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (("run_autograder", RUN_AUTOGRADER), ("setup.sh", SETUP_SH)):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            z.writestr(info, text)
        for path in sorted((root / "minivae").glob("*")):
            if path.suffix in (".py", ".ini", ".html"):
                z.write(path, f"minivae/{path.name}")
        z.write(root / "setup.cfg", "setup.cfg")
    os.replace(tmp, out)
    return out
