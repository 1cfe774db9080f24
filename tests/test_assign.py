"""The student copy: its builder, its static checks, and the proof that it works in isolation.

The proof runs the copy's own tests with a fresh virtual environment that holds NumPy,
Matplotlib, pytest and hypothesis and nothing of the solution (the copy is installed into it,
as ASSIGNMENT.md tells a student): each task's tests fail with that task's NotImplementedError
until it is done and pass when it is, the whole suite passes with every task done, and each
plausible wrong answer makes its task's tests fail with messages that teach.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minivae.assign import (INSTRUCTOR_ONLY, MUTANTS, TASKS, WITHHELD_LESSONS, AssignError, build_student_copy,
                            check_copy, functions, isolated_python, prove, regions, render, run_tests, solution_lines,
                            strip_instructor, strip_solutions, write_variant)
from minivae.lessons import find_lessons

ROOT = Path(__file__).resolve().parent.parent


def test_strip_keeps_indentation_and_refuses_malformed_regions():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION task_kl\n    return x + y\n    ### END SOLUTION\n"
    text, tasks = strip_solutions(src)
    assert tasks == ["task_kl"]
    assert text.splitlines()[2].startswith('    raise NotImplementedError("task_kl: ')
    assert "return x + y" not in text
    compile(text, "f", "exec")
    assert render(src, solved={"task_kl"}) == "def f(x):\n    y = 1\n    return x + y\n"
    for bad, match in [(src.replace("    ### END SOLUTION\n", ""), "never closed"),
                       (src.replace("task_kl", "task_nope"), "unknown task"),
                       ("    ### END SOLUTION\n", "without BEGIN"),
                       (src.replace("    return x + y\n", "    ### BEGIN SOLUTION task_kl\n"), "inside another")]:
        with pytest.raises(AssignError, match=match):
            strip_solutions(bad)


def test_functions_name_where_each_region_sits_and_refuse_one_outside_a_function():
    body = "    ### BEGIN SOLUTION task_kl\n    return 1\n    ### END SOLUTION\n"
    assert functions("def f():\n" + body) == {"task_kl": ["f"]}
    assert functions("class A:\n    def g(self):\n    " + body.replace("\n    ", "\n        ")) == {"task_kl": ["A.g"]}
    for outside in ("### BEGIN SOLUTION task_kl\nx = 1\n### END SOLUTION\n", "class A:\n" + body):
        with pytest.raises(AssignError, match="not inside a function"):
            functions(outside, "m.py")


def test_instructor_regions_leave_the_copy_altogether():
    src = "a = 1\n### BEGIN INSTRUCTOR: not for students\nb = 2\n### END INSTRUCTOR\nc = 3\n"
    assert strip_instructor(src) == "a = 1\nc = 3\n"
    with pytest.raises(AssignError, match="never closed"):
        strip_instructor("### BEGIN INSTRUCTOR\nb = 2\n")
    with pytest.raises(AssignError, match="without BEGIN"):
        strip_instructor("### END INSTRUCTOR\n")


def test_every_mutant_applies_to_its_task_region():
    """A wrong answer whose text no longer matches the solution would test nothing."""
    assert set(MUTANTS) == set(TASKS)
    for task, mutants in MUTANTS.items():
        for m in mutants:
            source = (ROOT / m.file).read_text()
            assert any(m.old in "".join(r.lines) for r in regions(source, m.file) if r.task == task), m
            render(source, m.file, set(TASKS), m)  # raises if it does not apply


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "copy"
    return out, build_student_copy(out)


def test_every_task_is_stubbed_and_nothing_of_the_instructor_is_left(student):
    out, stubbed = student
    assert {t for tasks in stubbed.values() for t in tasks} == set(TASKS)
    for rel in INSTRUCTOR_ONLY:
        assert not (out / rel).exists(), rel
    for path in out.rglob("*.py"):
        text = path.read_text()
        assert "SOLUTION" not in text and "INSTRUCTOR" not in text, path
    lessons = find_lessons(out / "lessons")
    assert set(WITHHELD_LESSONS).isdisjoint(lessons) and len(lessons) + len(WITHHELD_LESSONS) == len(find_lessons())
    assert "Not in this copy" in (out / "lessons" / "README.md").read_text()
    guide = (out / "ASSIGNMENT.md").read_text()
    for task, title in TASKS.items():
        assert f"## {task}: {title}" in guide and f"python -m pytest -m {task}" in guide
    with pytest.raises(AssignError, match="already exists"):
        build_student_copy(out)


def test_check_copy_finds_a_solution_line_or_a_tell_tale_anywhere_in_the_copy(student, tmp_path):
    out, _ = student
    check_copy(out)  # the built copy is clean
    answer = next(line for line in solution_lines() if "expm1" in line)
    leaky = out / "tests" / "notes.md"
    try:
        leaky.write_text(f"A hint:\n\n    {answer}\n")
        with pytest.raises(AssignError, match="notes.md: holds the solution line"):
            check_copy(out)
        leaky.write_text(r"the KL's gradient in log_var is $(\sigma^2 - 1)/2$" + "\n")
        with pytest.raises(AssignError, match="notes.md: states part of the answer to task_kl"):
            check_copy(out)
    finally:
        leaky.unlink()


def _run(out, *args, env=None):
    """Run this interpreter in the copy; ``env`` defaults to this one's, without PYTHONPATH."""
    env = env if env is not None else {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=out, env=dict(env, COLUMNS="1000"), capture_output=True,
                          text=True, timeout=600)


def test_the_copy_has_no_instructor_command(student):
    out, _ = student
    r = _run(out, "-P", "-m", "minivae", "assign", "build", "x", env=dict(os.environ, PYTHONPATH=str(out)))
    assert r.returncode == 2 and "invalid choice: 'assign'" in r.stderr


def test_plain_pytest_in_the_copy_tests_the_copy_even_where_the_solution_is_installed(student):
    """Here the solution is importable (this suite's environment); pytest in the copy still
    imports the copy's package (setup.cfg's pythonpath), so its stubs fail, they do not pass."""
    out, _ = student
    r = _run(out, "-P", "-m", "pytest", "-m", "task_reparam", "-q", "-p", "no:cacheprovider")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all("NotImplementedError: task_reparam" in line for line in failed), r.stdout[-3000:]


def test_student_copy_derivations_table_names_the_missing_tasks(student):
    out, _ = student
    r = _run(out, "-m", "minivae", "derivations", "--quick", env=dict(os.environ, PYTHONPATH=str(out)))
    assert r.returncode == 1 and r.stderr == "", r.stderr[-2000:]
    rows = r.stdout.splitlines()[1:-1]
    stubbed = [row for row in rows if row.endswith("FAIL")]
    assert stubbed and all(re.search(r" task_\w+  FAIL$", row) for row in stubbed)
    assert any(row.endswith("pass") for row in rows)          # the identities no task touches still hold


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, student):
    """An interpreter that cannot import the solution: a new virtual environment, into which the
    copy is installed as ASSIGNMENT.md tells a student (with its dependencies)."""
    python = isolated_python(tmp_path_factory.mktemp("venv") / "v")
    r = subprocess.run([str(python), "-c", "import minivae"], capture_output=True, text=True,
                       cwd=tmp_path_factory.mktemp("elsewhere"))
    assert r.returncode != 0 and "No module named 'minivae'" in r.stderr
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{student[0]}[test]"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return python


@pytest.mark.slow
def test_the_proof_holds_for_the_copy(student, isolated):
    out, _ = student
    proof = prove(out, isolated)
    print(proof)
    assert proof.ok, str(proof)
    assert len([line for line in proof.lines if "NotImplementedError until" in line]) == len(TASKS)
    assert sum(len(m) for m in MUTANTS.values()) == len([line for line in proof.lines if " of " in line
                                                         and "tests fail" in line])
    assert "of the whole suite pass" in proof.lines[-1]


def test_a_wrong_answer_fails_with_a_message_that_teaches(student, isolated):
    """The sign of one gradient flipped: the failure names the case, the input whose gradient
    is off, the expected and obtained values, and the section of ASSIGNMENT.md to re-read."""
    out, _ = student
    mutant = next(m for m in MUTANTS["task_kl"] if "sign" in m.what)
    try:
        write_variant(out, ROOT, set(TASKS), mutant)
        results = run_tests(out, isolated, "task_kl", ["tests/test_gaussian.py"])
    finally:
        write_variant(out, ROOT, set())
    failed = [r for r in results if r.outcome == "failed"]
    assert failed
    message = next(r.message for r in failed if "gradcheck" in r.name)
    assert "kl_diag_backward, all four of shape" in message        # the case
    assert "dlog_var_p: relative error" in message and "central differences give" in message
    assert "Re-read ASSIGNMENT.md, section 'task_kl: the closed-form KL" in message
