"""The student copy: builds, imports, every task fails with NotImplementedError, no solution left."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minivae.assign import TASKS, AssignError, build_student_copy, strip_solutions

ROOT = Path(__file__).resolve().parent.parent


def test_strip_keeps_indentation_and_refuses_malformed_regions():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION task_kl\n    return x + y\n    ### END SOLUTION\n"
    text, tasks = strip_solutions(src)
    assert tasks == ["task_kl"]
    assert text.splitlines()[2].startswith('    raise NotImplementedError("task_kl: ')
    assert "return x + y" not in text
    compile(text, "f", "exec")
    for bad, match in [(src.replace("    ### END SOLUTION\n", ""), "never closed"),
                       (src.replace("task_kl", "task_nope"), "unknown task"),
                       ("    ### END SOLUTION\n", "without BEGIN"),
                       (src.replace("    return x + y\n", "    ### BEGIN SOLUTION task_kl\n"), "inside another")]:
        with pytest.raises(AssignError, match=match):
            strip_solutions(bad)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "copy"
    stubbed = build_student_copy(out)
    return out, stubbed


def test_every_task_is_stubbed_and_no_solution_text_remains(student):
    out, stubbed = student
    assert {t for tasks in stubbed.values() for t in tasks} == set(TASKS)
    for path in out.rglob("*.py"):
        assert "SOLUTION" not in path.read_text(), path
    assert not (out / "minivae" / "assign.py").exists() and not (out / "tests" / "test_assign.py").exists()
    # the solution's own lines are gone from every stubbed file
    for rel in stubbed:
        solution = (ROOT / rel).read_text()
        regions = re.findall(r"### BEGIN SOLUTION \w+\n(.*?)### END SOLUTION", solution, re.S)
        copy = (out / rel).read_text()
        for region in regions:
            for line in region.splitlines():
                code = line.strip()
                if len(code) > 25:  # a distinctive line of the solution
                    assert code not in copy, f"{rel}: {code}"
    assert "python -m pytest -m task_kl" in (out / "ASSIGNMENT.md").read_text()
    with pytest.raises(AssignError, match="already exists"):
        build_student_copy(out)


def _run(out, *args):
    env = dict(os.environ, PYTHONPATH=str(out), COLUMNS="1000")  # wide: failure reasons are not cut
    return subprocess.run([sys.executable, *args], cwd=out, env=env, capture_output=True, text=True, timeout=600)


def test_student_copy_imports_its_own_package(student):
    out, _ = student
    r = _run(out, "-c", "import minivae, minivae.vae, minivae.estimate; print(minivae.__file__)")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve().is_relative_to(out.resolve())


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_fails_with_not_implemented_error_only(student, task):
    out, _ = student
    r = _run(out, "-m", "pytest", "-m", task, "-q", "-rf", "-p", "no:cacheprovider")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert failed, r.stdout[-3000:]
    assert all("NotImplementedError" in line for line in failed), "\n".join(failed)
    assert not re.search(r"SyntaxError|ImportError|ModuleNotFoundError|NameError", r.stdout + r.stderr)
    assert " error" not in r.stdout.splitlines()[-1]  # collection errors would show as "N error(s)"


def test_student_copy_derivations_table_names_the_missing_tasks(student):
    out, _ = student
    r = _run(out, "-m", "minivae", "derivations", "--quick")
    assert r.returncode == 1 and r.stderr == "", r.stderr[-2000:]
    rows = r.stdout.splitlines()[1:-1]
    stubbed = [row for row in rows if row.endswith("FAIL")]
    assert stubbed and all(re.search(r" task_\w+  FAIL$", row) for row in stubbed)
    assert any(row.endswith("pass") for row in rows)          # the identities no task touches still hold
