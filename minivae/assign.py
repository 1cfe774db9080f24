"""Build the student copy of minivae: every solution region replaced by a stub.

Solution regions sit inside function bodies, between a line
``### BEGIN SOLUTION task_name`` and a line ``### END SOLUTION``. The builder
copies the project, replaces each region by
``raise NotImplementedError("task_name: ...")`` at the region's indentation,
checks that no marker is left and that every stubbed file still compiles, and
writes ASSIGNMENT.md. Tests carry one pytest marker per task, so

    python -m pytest -m task_kl

grades one task. ``python -m minivae assign build OUT`` runs it.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["TASKS", "strip_solutions", "build_student_copy", "AssignError"]

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION (\w+)\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")

#: task -> (what to implement, where); in the order a student should do them.
TASKS = {
    "task_layers": ("the backward passes of the affine map and the five activations", "minivae/nn.py"),
    "task_kl": ("the closed-form KL to N(0, I) and between two diagonal Gaussians, and their gradients",
                "minivae/gaussian.py"),
    "task_reparam": ("the backward pass of the reparameterization z = mu + sigma * eps", "minivae/gaussian.py"),
    "task_bernoulli": ("the Bernoulli log-likelihood with logits and its gradient", "minivae/likelihoods.py"),
    "task_elbo": ("the backward pass of the whole ELBO (needs the four tasks above)", "minivae/vae.py"),
    "task_adam": ("one Adam step, in place", "minivae/optim.py"),
    "task_iw": ("the importance-sampled log-likelihood: a running log-sum-exp and its standard error",
                "minivae/estimate.py"),
}

#: files of the solution that the student copy leaves out
INSTRUCTOR_ONLY = ("minivae/assign.py", "tests/test_assign.py")
COPIED = ("minivae", "tests", "lessons", "data", "setup.cfg", "pyproject.toml", "README.md")


class AssignError(ValueError):
    """A malformed solution region (unclosed, nested, unknown task) or a failed check."""


def strip_solutions(source: str, name: str = "<source>") -> tuple[str, list[str]]:
    """Replace every solution region of ``source`` by a stub; returns (text, tasks found)."""
    out, tasks, task = [], [], None
    for n, line in enumerate(source.splitlines(keepends=True), 1):
        begin = BEGIN.match(line)
        if begin:
            if task is not None:
                raise AssignError(f"{name}:{n}: a solution region opens inside another")
            indent, task = begin.groups()
            if task not in TASKS:
                raise AssignError(f"{name}:{n}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
            tasks.append(task)
            out.append(f'{indent}raise NotImplementedError("{task}: {TASKS[task][0]} (see ASSIGNMENT.md)")\n')
        elif END.match(line):
            if task is None:
                raise AssignError(f"{name}:{n}: END SOLUTION without BEGIN")
            task = None
        elif task is None:
            out.append(line)
    if task is not None:
        raise AssignError(f"{name}: the region of {task} is never closed")
    return "".join(out), tasks


def build_student_copy(out: str | Path, root: Path = ROOT) -> dict[str, list[str]]:
    """Write the student copy into the new folder ``out``; returns {file: tasks stubbed}."""
    out = Path(out)
    if out.exists():
        raise AssignError(f"{out} already exists; choose a new folder")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "out", ".pytest_cache", ".hypothesis")
    for item in COPIED:
        src = root / item
        if src.is_dir():
            shutil.copytree(src, out / item, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, out / item)
    for rel in INSTRUCTOR_ONLY:
        (out / rel).unlink(missing_ok=True)
    stubbed = {}
    for path in sorted((out / "minivae").rglob("*.py")):
        text, tasks = strip_solutions(path.read_text(encoding="utf-8"), str(path))
        if tasks:
            compile(text, str(path), "exec")  # a stub that breaks the syntax is a bug of the builder
            path.write_text(text, encoding="utf-8")
            stubbed[str(path.relative_to(out))] = tasks
    leftovers = [str(p) for p in out.rglob("*.py") if "SOLUTION" in p.read_text(encoding="utf-8")]
    if leftovers:
        raise AssignError(f"solution markers left in {', '.join(leftovers)}")
    (out / "ASSIGNMENT.md").write_text(guide(stubbed), encoding="utf-8")
    return stubbed


def guide(stubbed: dict[str, list[str]]) -> str:
    rows = "\n".join(f"| `{t}` | {what} | `{where}` | `python -m pytest -m {t}` |"
                     for t, (what, where) in TASKS.items())
    return f"""# minivae: the assignment

Every gradient in minivae is derived by hand. In this copy the regions below
raise `NotImplementedError`: derive each formula on paper first (the docstring
above each stub states what the function computes, with shapes), implement it
vectorized in NumPy, then grade yourself with the task's tests.

| task | implement | file | grade it |
|---|---|---|---|
{rows}

Setup: `python -m pip install -e '.[test]'`. Do the tasks in this order:
`task_elbo` runs the whole model, so it needs the four before it. A task's
tests fail with `NotImplementedError` until you write it; they check your
backward passes against finite differences (`minivae.gradcheck`) with a
relative error of at most 1e-7, so an almost-right formula does not pass.
When every task passes, `python -m pytest` runs the whole suite and
`python -m minivae train` trains your VAE on MNIST.

## For instructors
`python -m minivae assign build OUT` (in the solution repository) writes this
copy. Solution regions are marked in the solution's source by
`### BEGIN SOLUTION task_name` / `### END SOLUTION` inside function bodies;
tests carry the marker `@pytest.mark.task_name`. Grade one task with
`python -m pytest -m task_name` in the student's folder. The solution's CI builds
this copy and checks that it imports, that every task's tests fail with
`NotImplementedError` (not a syntax or import error), and that no solution
text or marker remains.

Stubbed here: {", ".join(f"{f} ({', '.join(sorted(set(t)))})" for f, t in stubbed.items())}.
"""
