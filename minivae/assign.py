"""The student copy of minivae: every solution region replaced by a stub, and the proof that it works.

**Markers.** A solution region sits inside a function body, between a line
``### BEGIN SOLUTION task_name`` and a line ``### END SOLUTION``; the copy has
``raise NotImplementedError("task_name: ...")`` in its place, at its indentation.
An instructor region, ``### BEGIN INSTRUCTOR`` ... ``### END INSTRUCTOR``, is code
the copy leaves out altogether (the commands and tests of this module, say).
Tests carry one pytest marker per task (``@pytest.mark.task_kl``), declared with
its title in setup.cfg, in the order a student does them.

**The copy** (:func:`build_student_copy`) holds the package, the tests, the data
and the lessons, less what is the instructor's (:data:`INSTRUCTOR_ONLY`) and the
lessons that derive an assigned result in the open (:data:`WITHHELD_LESSONS`),
plus ASSIGNMENT.md and a README of its own. It is checked before it is written
(:func:`check_copy`): every stubbed file compiles, no marker is left, and no line
of any solution region appears anywhere in it (whitespace normalized), nor any
of the tell-tale forms of an answer (:data:`TELLTALES`).

**The proof** (:func:`prove`) runs the copy's own tests with a Python that can
import nothing of the solution: (a) with the tasks before each task solved, that
task's tests fail, each with that task's NotImplementedError; (b) with every
region solved, its whole suite passes; (c) with a plausible wrong answer
(:data:`MUTANTS`) in a task, that task's tests fail, with messages that name the
case and the section of ASSIGNMENT.md to re-read.

    python -m minivae assign build OUT      # write the copy
    python -m minivae assign check OUT      # prove it (a few minutes)
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = ["TASKS", "Region", "functions", "Mutant", "MUTANTS", "TELLTALES", "WITHHELD_LESSONS", "INSTRUCTOR_ONLY",
           "AssignError", "regions", "render", "student_source", "strip_instructor", "strip_solutions",
           "solution_lines", "build_student_copy", "check_copy", "write_variant", "isolated_python", "prove", "Proof"]

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION (\w+)\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
BEGIN_INSTRUCTOR = re.compile(r"^\s*### BEGIN INSTRUCTOR\b.*$")
END_INSTRUCTOR = re.compile(r"^\s*### END INSTRUCTOR\s*$")


def _read_tasks(setup_cfg: Path) -> dict[str, str]:
    """task marker -> its title, in the order setup.cfg declares them (the order to do them in)."""
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg, encoding="utf-8")
    tasks = {}
    for line in cfg.get("tool:pytest", "markers", fallback="").splitlines():
        name, _, title = line.partition(":")
        if name.strip().startswith("task_"):
            tasks[name.strip()] = title.strip().removeprefix("assignment task:").strip()
    return tasks


#: task -> title, in order (from setup.cfg's pytest markers)
TASKS = _read_tasks(ROOT / "setup.cfg")

#: what each task asks, as ASSIGNMENT.md states it: the contract and how the tests judge it
GUIDE = {
    "task_layers": "Given the upstream gradient $\\bar y = \\partial L / \\partial y$, return the gradient "
                   "to each input of the layer, of that input's shape and dtype. The tests compare your "
                   "gradients with central differences of the forward pass (`minivae.gradcheck`, relative "
                   "error at most 1e-7) on several shapes, and with small cases worked out by hand.",
    "task_kl": "`kl_std_normal_forward` returns $\\mathrm{KL}(\\mathcal N(\\mu, \\sigma^2)\\,\\|\\,\\mathcal N(0, I))$ "
               "summed over the last axis, for any leading shape; `kl_diag_forward` the KL between two "
               "diagonal Gaussians; each backward its gradients. Start from the definition "
               "$\\mathrm{KL}(q\\,\\|\\,p) = \\mathbb E_q[\\log q(z) - \\log p(z)]$. The tests compare your "
               "values with Monte Carlo estimates of that expectation and with exact cases (KL(q, q) = 0, "
               "KL >= 0), and your gradients with central differences, also for inputs with leading axes.",
    "task_reparam": "The forward pass is $z = \\mu + \\sigma \\odot \\epsilon$ with $\\sigma = e^{\\log\\sigma^2 / 2}$ "
                    "and eps of shape (N, K) or (S, N, K). Return the gradients to mu, log_var and eps, each of "
                    "its input's shape. The tests use central differences with the noise held fixed.",
    "task_bernoulli": "The log-likelihood of binary (or [0, 1]) data under pixel probabilities "
                      "$\\sigma(\\ell)$, summed over the pixels, must stay finite and accurate for logits of "
                      "$\\pm 10^4$, where $\\sigma(\\ell)$ itself rounds to 0 or 1. The tests check values "
                      "worked out by hand, that the probabilities of all outcomes sum to one, extreme logits, "
                      "and the gradient against central differences.",
    "task_elbo": "`VAE._backward` receives the loss's gradients to the ELBO's pieces and the forward pass's "
                 "cache, and fills the gradient of every parameter. It needs the four tasks before it. The "
                 "tests compare every parameter's gradient with central differences of the whole loss, for "
                 "every likelihood and activation, with several samples, a context, IWAE and free bits.",
    "task_adam": "One step of Adam (Kingma & Ba 2015, Algorithm 1) as `minivae/optim.py`'s docstring states "
                 "it, updating the parameters and both moments in place. The tests compare with numbers "
                 "worked out by hand, the first step's size, and a minimization.",
    "task_iw": "The importance-sampled estimate of log p(x) from S samples in chunks, without overflow "
               "whatever the log-weights, and its Monte Carlo standard error. The tests check that chunking "
               "changes nothing, huge log-weights, and S = 1 against the ELBO.",
}

#: files of the solution that the student copy leaves out
INSTRUCTOR_ONLY = ("minivae/assign.py", "minivae/grade.py", "minivae/sandbox.py", "minivae/grading_cases.py",
                   "minivae/points.ini", "tests/test_assign.py", "tests/test_grade.py", "tests/test_readme.py",
                   "tests/test_install.py")
COPIED = ("minivae", "tests", "lessons", "data", "setup.cfg", "pyproject.toml")

#: lessons that derive an assigned result in the open: withheld from the copy (lesson -> task)
WITHHELD_LESSONS = {2: "task_kl", 3: "task_reparam", 5: "task_bernoulli", 9: "task_iw"}

#: regular expressions of an answer's tell-tale forms: the copy must contain none of them
TELLTALES = {
    "task_kl": [r"\+\s*\\sigma(_k)?\^2\s*-\s*1\b", r"\(\\sigma(_k)?\^2\s*-\s*1\)", r"sigma_k\^2 - 1",
                r"expm1\(log_var"],
    "task_reparam": [r"\\epsilon(_s)?\s*\\odot\s*\\sigma\s*/\s*2", r"\beps\b.*\bsigma\s*/\s*2"],
    "task_bernoulli": [r"x\s*-\s*\\sigma\(\\ell\)", r"x_d\s*\\ell_d\s*-\s*\\mathrm\{softplus\}"],
    "task_layers": [r"\\bar y W\^\\top", r"1 - \\tanh\^2"],
}


class Mutant(NamedTuple):
    """A plausible wrong answer: in ``file``'s region of the task, ``old`` becomes ``new``."""
    file: str
    old: str
    new: str
    what: str


#: task -> plausible wrong answers; each must make that task's tests fail
MUTANTS = {
    "task_layers": [
        Mutant("minivae/nn.py", "dW = cache.x.T @ dy", "dW = cache.x.T @ dy / len(dy)", "dW averaged over the batch"),
        Mutant("minivae/nn.py", "return dy * (1 - cache.a**2)", "return dy * (1 - cache.a)", "tanh' as 1 - y"),
        Mutant("minivae/nn.py", "return dy * cache.a * (1 - cache.a)", "return dy * cache.a", "sigmoid' as y"),
    ],
    "task_kl": [
        Mutant("minivae/gaussian.py", "kl = 0.5 * np.sum(", "kl = np.sum(", "the missing 1/2"),
        Mutant("minivae/gaussian.py", "var_m1 = np.expm1(log_var)", "var_m1 = np.expm1(0.5 * log_var)",
               "sigma where sigma^2 belongs"),
        Mutant("minivae/gaussian.py", "d = dkl[..., None]  # (..., 1): one factor per KL value",
               "d = dkl[:, None]  # (..., 1): one factor per KL value", "dkl[:, None]: only one leading axis"),
        Mutant("minivae/gaussian.py", "dlv_p = -d * 0.5 *", "dlv_p = d * 0.5 *", "a sign in d/dlog sigma_p^2"),
    ],
    "task_reparam": [
        Mutant("minivae/gaussian.py", "* (0.5 * cache.sigma)", "* cache.sigma", "d sigma / d log sigma^2 as sigma"),
        Mutant("minivae/gaussian.py", "dmu = dz.sum(axis=lead)", "dmu = dz.mean(axis=lead)",
               "the samples averaged, not summed"),
    ],
    "task_bernoulli": [
        Mutant("minivae/likelihoods.py", "logp = np.sum(x * logits - softplus(logits), axis=-1)",
               "logp = np.sum(x * np.log(sigmoid(logits)) + (1 - x) * np.log(1 - sigmoid(logits)), axis=-1)",
               "the naive form: log 0 at extreme logits"),
        Mutant("minivae/likelihoods.py", "(cache.x - sigmoid(cache.logits))", "(sigmoid(cache.logits) - cache.x)",
               "the gradient's sign"),
    ],
    "task_elbo": [
        Mutant("minivae/vae.py", "self._posterior_backward(dterms.mu + dmu, dterms.log_var + dlog_var,",
               "self._posterior_backward(dmu, dlog_var,", "the objective's own gradients to mu and log_var dropped"),
        Mutant("minivae/vae.py", "dz = dterms.z + self._decoder_backward(", "dz = self._decoder_backward(",
               "the direct gradient to z dropped (IWAE)"),
    ],
    "task_adam": [
        Mutant("minivae/optim.py", "(lr * correction / (1 - beta1**t))", "lr", "no bias correction"),
        Mutant("minivae/optim.py", "v += (1 - beta2) * grad**2", "v += (1 - beta2) * grad", "v from g, not g^2"),
    ],
    "task_iw": [
        Mutant("minivae/estimate.py", "scale = np.exp(m - m_new)", "scale = 1.0", "the old sums not rescaled"),
        Mutant("minivae/estimate.py", "out.se[i:i + n] = np.sqrt(var_w / S) / mean_w",
               "out.se[i:i + n] = np.sqrt(var_w) / mean_w", "the standard error without 1/sqrt(S)"),
    ],
}


class AssignError(ValueError):
    """A malformed region (unclosed, nested, unknown task), a mutant that does not apply, or a
    copy that fails its checks; the message says which file and line."""


class Region(NamedTuple):
    task: str
    begin: int            # index of the BEGIN line
    end: int              # index of the END line
    indent: str
    lines: list[str]      # the solution's lines, between the markers


def regions(source: str, name: str = "<source>") -> list[Region]:
    """The solution regions of ``source``, checked (closed, not nested, known task)."""
    found, open_ = [], None
    lines = source.splitlines(keepends=True)
    for n, line in enumerate(lines):
        begin = BEGIN.match(line)
        if begin:
            if open_ is not None:
                raise AssignError(f"{name}:{n + 1}: a solution region opens inside another")
            if begin.group(2) not in TASKS:
                raise AssignError(f"{name}:{n + 1}: unknown task {begin.group(2)!r}; tasks: {', '.join(TASKS)}")
            open_ = (n, begin.group(1), begin.group(2))
        elif END.match(line):
            if open_ is None:
                raise AssignError(f"{name}:{n + 1}: END SOLUTION without BEGIN")
            b, indent, task = open_
            found.append(Region(task, b, n, indent, lines[b + 1:n]))
            open_ = None
    if open_ is not None:
        raise AssignError(f"{name}: the region of {open_[2]} is never closed")
    return found


def stub(task: str, indent: str) -> str:
    return f'{indent}raise NotImplementedError("{task}: {TASKS[task]} (see ASSIGNMENT.md, section {task})")\n'


def render(source: str, name: str = "<source>", solved: frozenset | set = frozenset(),
           mutant: Mutant | None = None) -> str:
    """``source`` with each region's markers removed: a solved task keeps its solution (with
    ``mutant`` applied if it is that task's), any other becomes a stub."""
    lines = source.splitlines(keepends=True)
    out, last = [], 0
    mutated = False
    for r in regions(source, name):
        out += lines[last:r.begin]
        if r.task in solved:
            body = "".join(r.lines)
            if mutant is not None and mutant.file == name and mutant.old in body:
                body, mutated = body.replace(mutant.old, mutant.new, 1), True
            out.append(body)
        else:
            out.append(stub(r.task, r.indent))
        last = r.end + 1
    out += lines[last:]
    if mutant is not None and mutant.file == name and not mutated:
        raise AssignError(f"{name}: the wrong answer '{mutant.what}' does not apply: {mutant.old!r} is in no "
                          f"solved region")
    return "".join(out)


def strip_solutions(source: str, name: str = "<source>") -> tuple[str, list[str]]:
    """Every region of ``source`` replaced by its stub; returns (text, tasks found)."""
    return render(source, name), [r.task for r in regions(source, name)]


def strip_instructor(source: str, name: str = "<source>") -> str:
    """``source`` without its instructor regions (markers included)."""
    out, inside = [], None
    for n, line in enumerate(source.splitlines(keepends=True), 1):
        if BEGIN_INSTRUCTOR.match(line):
            if inside is not None:
                raise AssignError(f"{name}:{n}: an instructor region opens inside another")
            inside = n
        elif END_INSTRUCTOR.match(line):
            if inside is None:
                raise AssignError(f"{name}:{n}: END INSTRUCTOR without BEGIN")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise AssignError(f"{name}:{inside}: the instructor region is never closed")
    return "".join(out)


def _normalize(line: str) -> str:
    return " ".join(line.split())


def solution_lines(root: Path = ROOT) -> dict[str, str]:
    """Every non-blank line of every solution region, normalized -> 'file:line (task)'."""
    found = {}
    for path in sorted((root / "minivae").rglob("*.py")):
        rel = str(path.relative_to(root))
        for r in regions(path.read_text(encoding="utf-8"), rel):
            for k, line in enumerate(r.lines):
                if line.strip():
                    found.setdefault(_normalize(line), f"{rel}:{r.begin + k + 2} ({r.task})")
    return found


def _copy_files(out: Path) -> list[Path]:
    return [p for p in sorted(out.rglob("*")) if p.is_file() and p.suffix in
            {".py", ".md", ".cfg", ".toml", ".txt", ".ipynb", ".json", ".ini", ".html"}]


def check_copy(out: Path, root: Path = ROOT) -> None:
    """Raise AssignError unless the copy in ``out`` is clean: no marker, every .py compiles,
    no line of a solution region and no tell-tale of an answer in any file of it."""
    answers = solution_lines(root)
    long_answers = [a for a in answers if len(a) >= 20]
    problems = []
    for path in _copy_files(out):
        rel = path.relative_to(out)
        text = path.read_text(encoding="utf-8", errors="replace")
        if "### BEGIN" in text or "### END" in text:
            problems.append(f"{rel}: a region marker is left")
        if path.suffix == ".py":
            try:
                compile(text, str(path), "exec")
            except SyntaxError as e:
                problems.append(f"{rel}:{e.lineno}: does not compile ({e.msg})")
        lines = {_normalize(line) for line in text.splitlines()}
        flat = _normalize(text)
        for answer in lines & answers.keys():
            problems.append(f"{rel}: holds the solution line {answer!r} of {answers[answer]}")
        for answer in long_answers:
            if answer in flat and answer not in lines:
                problems.append(f"{rel}: holds the solution text {answer!r} of {answers[answer]}")
        for task, patterns in TELLTALES.items():
            for pattern in patterns:
                m = re.search(pattern, text)
                if m:
                    problems.append(f"{rel}: states part of the answer to {task}: {m.group(0)!r}")
    if problems:
        raise AssignError(f"the student copy in {out} is not clean: " + "; ".join(problems[:20])
                          + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))


def build_student_copy(out: str | Path, root: Path = ROOT) -> dict[str, list[str]]:
    """Write the student copy into the new folder ``out`` and check it (:func:`check_copy`);
    returns {file: tasks stubbed}. Nothing is left behind if a check fails."""
    out = Path(out)
    if out.exists():
        raise AssignError(f"{out} already exists; choose a new folder")
    try:
        stubbed = _write_copy(out, root)
        check_copy(out, root)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return stubbed


def functions(source: str, name: str = "<source>") -> dict[str, list[str]]:
    """task -> the functions holding its regions, as a student finds them: a top-level
    function's name, or ``Class.method`` (a function nested in either counts as it)."""
    lines = source.splitlines()
    found: dict[str, list[str]] = {}
    for r in regions(source, name):
        chain, indent = [], len(r.indent)
        for line in reversed(lines[:r.begin]):  # the enclosing definitions, innermost first
            m = re.match(r"(\s*)(def|class) (\w+)", line)
            if m and len(m.group(1)) < indent:
                chain.insert(0, (m.group(2), m.group(3)))
                indent = len(m.group(1))
        if not chain or chain[0][0] == "class" and len(chain) < 2:
            raise AssignError(f"{name}:{r.begin + 1}: {r.task}'s region is not inside a function")
        qual = chain[0][1] if chain[0][0] == "def" else f"{chain[0][1]}.{chain[1][1]}"
        if qual not in found.setdefault(r.task, []):
            found[r.task].append(qual)
    return found


def _write_copy(out: Path, root: Path) -> dict[str, list[str]]:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "out", "minivae-out", ".pytest_cache", ".hypothesis",
                                    "*.egg-info")
    for item in COPIED:
        src = root / item
        if src.is_dir():
            shutil.copytree(src, out / item, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, out / item)
    for rel in INSTRUCTOR_ONLY:
        (out / rel).unlink(missing_ok=True)
    from .lessons import find_lessons
    for number in WITHHELD_LESSONS:
        lesson = find_lessons(out / "lessons").get(number)
        if lesson is not None:
            lesson.unlink()
    stubbed, names = {}, {}
    for path in sorted(p for p in out.rglob("*.py") if "data" not in p.relative_to(out).parts[:1]):
        rel = str(path.relative_to(out))
        text = strip_instructor(path.read_text(encoding="utf-8"), rel)
        tasks = [r.task for r in regions(text, rel)]
        if tasks:
            for task, fns in functions(text, rel).items():
                names.setdefault(task, []).extend(f"`{f}` ({rel})" for f in fns)
            text = render(text, rel)
            stubbed[rel] = tasks
        path.write_text(text, encoding="utf-8")
    (out / "ASSIGNMENT.md").write_text(guide(stubbed, names), encoding="utf-8")
    (out / "README.md").write_text(student_readme(), encoding="utf-8")
    readme = out / "lessons" / "README.md"
    if readme.exists():
        readme.write_text(readme.read_text(encoding="utf-8") + withheld_note(), encoding="utf-8")
    return stubbed


def student_source(root: Path, rel: str, solved: set | frozenset = frozenset(), mutant: Mutant | None = None) -> str:
    """The module ``rel`` of the package in ``root`` as the student copy has it: no instructor
    regions, every task a stub, or, for the tasks ``solved``, its solution (with ``mutant``
    applied if it is that task's)."""
    return render(strip_instructor((root / rel).read_text(encoding="utf-8"), rel), rel, solved, mutant)


def write_variant(copy: Path, root: Path, solved: set | frozenset, mutant: Mutant | None = None) -> None:
    """Rewrite the stubbed files of the copy in ``copy`` as if the tasks ``solved`` were done
    (their solution regions pasted back), with ``mutant`` applied: the proof's states."""
    for path in sorted((root / "minivae").rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel not in INSTRUCTOR_ONLY and regions(path.read_text(encoding="utf-8"), rel):
            (copy / rel).write_text(student_source(root, rel, solved, mutant), encoding="utf-8")


# ---------------------------------------------------------------- the documents of the copy
def section(task: str) -> str:
    """The title of a task's section in ASSIGNMENT.md (the tests name it when they fail)."""
    return f"{task}: {TASKS[task]}"


def guide(stubbed: dict[str, list[str]], names: dict[str, list[str]] | None = None) -> str:
    where = {t: sorted(f for f, ts in stubbed.items() if t in ts) for t in TASKS}
    names = names or {}
    rows = "\n".join(f"| {i} | `{t}` | {TASKS[t]} | {', '.join(f'`{f}`' for f in where[t])} |"
                     for i, t in enumerate(TASKS, 1))
    sections = "\n\n".join(
        f"## {section(t)}\n\nImplement {', '.join(names.get(t, [])) or ', '.join(where[t])}: every "
        f"`NotImplementedError(\"{t}: ...\")`. {GUIDE.get(t, '')}\n\nGrade it: `python -m pytest -m {t}`."
        for t in TASKS)
    return f"""# minivae: the assignment

Every gradient in minivae is derived by hand. In this copy the functions named below
raise `NotImplementedError`: derive each result on paper first (the docstring of each
function states what it must compute, with shapes), implement it vectorized in NumPy,
then grade yourself with the task's tests. A test that fails names the input case, what
it expected and what it got, and the section below to re-read.

| # | task | implement | where |
|---|---|---|---|
{rows}

Setup, in this folder (a virtual environment is a good idea:
`python -m venv .venv && . .venv/bin/activate` first):

```bash
python -m pip install -e '.[test]'
python -m pytest -m task_layers        # one task's tests
```

Do the tasks in this order: a task's tests need only the tasks before it (`task_elbo`
runs the whole model, so it needs the four before it). When every task passes,
`python -m pytest` runs the whole suite and `python -m minivae train` trains your VAE on
MNIST. Lessons {', '.join(str(n) for n in WITHHELD_LESSONS)} derive results this assignment
asks you to derive; they are not in this copy.

{sections}
"""


def student_readme() -> str:
    return """# minivae (student copy)

Variational autoencoders from scratch in NumPy: no autograd, every gradient derived by
hand and checked against finite differences. Some of those gradients are yours to
derive: see [ASSIGNMENT.md](ASSIGNMENT.md).

```bash
python -m pip install -e '.[test]' && python -m pytest -m task_layers   # grade one task
python -m pytest                                                          # the whole suite
python -m minivae train                # train the default VAE on MNIST (data/mnist/, bundled)
python -m minivae lessons              # the lessons; python -m minivae lessons run N
```
"""


def withheld_note() -> str:
    withheld = ", ".join(f"{n} ({task})" for n, task in WITHHELD_LESSONS.items())
    return (f"\n## Not in this copy\nLessons {withheld} derive results this assignment asks you to "
            f"derive yourself; your instructor hands them out afterwards.\n")


# ---------------------------------------------------------------- the proof
def isolated_python(folder: Path) -> Path:
    """A new virtual environment in ``folder``, holding nothing of minivae: its python, for
    running a copy's tests in isolation (:func:`prove` installs the copy into it)."""
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    return folder / ("Scripts" if os.name == "nt" else "bin") / "python"


class TestResult(NamedTuple):
    name: str
    outcome: str      # "passed", "failed" (an assertion or exception), "error" (in setup), "skipped"
    message: str


def run_tests(copy: Path, python: Path, marker: str | None = None, files: list[str] | None = None,
              timeout: float = 1800) -> list[TestResult]:
    """Run the copy's tests (those with ``marker``, from ``files``) with ``python``, in ``copy``,
    with no PYTHONPATH; one TestResult per test."""
    report = Path(tempfile.mkdtemp()) / "report.xml"
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(report),
           "-o", "junit_family=xunit1"]
    cmd += ["-m", marker] if marker else []
    cmd += files or []
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    if not report.exists():
        raise AssignError(f"pytest wrote no report ({' '.join(cmd[2:])}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    results = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('file') or case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or "") + "\n" + (node.text or "")
                break
        results.append(TestResult(name, outcome, message))
    shutil.rmtree(report.parent, ignore_errors=True)
    return results


@dataclass
class Proof:
    """What :func:`prove` found: one line per check, and whether all held."""
    lines: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        return "\n".join(self.lines + [f"PROBLEM: {p}" for p in self.problems]
                         + [f"proof {'holds' if self.ok else 'fails'}"])


def _marked_files(copy: Path, task: str) -> list[str]:
    return sorted(str(p.relative_to(copy)) for p in (copy / "tests").glob("test_*.py")
                  if f"mark.{task}" in p.read_text(encoding="utf-8"))


def prove(copy: str | Path, python: str | Path, root: Path = ROOT) -> Proof:
    """Prove the student copy in ``copy`` with ``python``, an interpreter that cannot import
    the solution (see :func:`isolated_python`), into which the copy is installed (editable,
    as ASSIGNMENT.md tells the student): the checks (a), (b), (c) of the module's docstring.
    Rewrites the copy's stubbed files while it works and leaves them stubbed."""
    copy, python = Path(copy), Path(python)
    lines, problems = [], []
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{copy}[test]"],
                             capture_output=True, text=True)  # as ASSIGNMENT.md tells the student
    if install.returncode:
        raise AssignError(f"cannot install the copy with {python}: {install.stderr[-1000:]}")
    where = _run_where(copy, python)
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        problems.append(f"the copy's tests import minivae from {where}, not from the copy")
    tasks = list(TASKS)
    try:
        for k, task in enumerate(tasks):
            write_variant(copy, root, set(tasks[:k]))
            results = run_tests(copy, python, task, _marked_files(copy, task))
            stubbed = [r for r in results if r.outcome != "failed" or f"NotImplementedError: {task}:" not in r.message]
            if not results:
                problems.append(f"{task}: no test carries its marker")
            for r in stubbed:
                problems.append(f"{task}, tasks before it solved: {r.name} {r.outcome} "
                                f"without the task's NotImplementedError: {_first_line(r.message)}")
            write_variant(copy, root, set(tasks[:k + 1]))
            results = run_tests(copy, python, task, _marked_files(copy, task))
            solved = [r for r in results if r.outcome != "passed"]
            for r in solved:
                problems.append(f"{task}, solved: {r.name} {r.outcome}: {_first_line(r.message)}")
            lines.append(f"{task}: {len(results)} tests; each fails with {task}'s NotImplementedError until "
                         f"it is done, passes when it is ({len(stubbed) + len(solved)} exceptions)")
            for mutant in MUTANTS.get(task, []):
                write_variant(copy, root, set(tasks), mutant)
                results = run_tests(copy, python, task, _marked_files(copy, task))
                failed = [r for r in results if r.outcome == "failed"]
                if not failed:
                    problems.append(f"{task}: the wrong answer '{mutant.what}' passes every test of the task")
                for r in failed:
                    if "NotImplementedError" in r.message or "ASSIGNMENT.md" not in r.message:
                        problems.append(f"{task} with '{mutant.what}': {r.name} fails without naming its "
                                        f"ASSIGNMENT.md section: {_first_line(r.message)}")
                lines.append(f"{task}, {mutant.what}: {len(failed)} of {len(results)} tests fail")
        write_variant(copy, root, set(tasks))
        results = run_tests(copy, python)
        bad = [r for r in results if r.outcome in ("failed", "error")]
        problems += [f"all tasks solved: {r.name} {r.outcome}: {_first_line(r.message)}" for r in bad]
        lines.append(f"all tasks solved: {len(results) - len(bad)} of {len(results)} tests of the whole suite pass")
    finally:
        write_variant(copy, root, set())
    return Proof(lines, problems)


def _run_where(copy: Path, python: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    code = "import minivae, os; print(os.path.dirname(minivae.__file__))"
    r = subprocess.run([str(python), "-c", code], cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    return r.stdout.strip() if r.returncode == 0 else f"nowhere ({_first_line(r.stderr)})"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""
