"""minivae as a user meets it: the wheel, installed into a fresh virtual environment and
used from another folder; the lessons run there as scripts and as notebooks (nbclient),
every figure shown inline; the notebooks' first cell installing a missing minivae, as on
a fresh Colab runtime.

The virtual environment is new and holds only what the wheel and its ``[notebooks]``
extra pull in: the solution's own checkout is not importable from it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minivae.lessons import find_lessons

ROOT = Path(__file__).resolve().parent.parent
BUILD_FROM = ("setup.cfg", "pyproject.toml", "README.md", "minivae", "lessons", "data")
LESSONS = find_lessons(ROOT / "lessons")
MNIST_FILES = sorted(p.name for p in (ROOT / "data" / "mnist").iterdir())

#: executes notebooks with nbclient in the virtual environment; prints JSON per notebook
EXECUTE = r"""
import json, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

report = {}
for path in map(Path, sys.argv[1:]):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    cells = [{"source": c.source,
              "images": sum("image/png" in o.get("data", {}) for o in c.outputs),
              "text": "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")}
             for c in nb.cells if c.cell_type == "code"]
    report[path.name] = {"seconds": time.perf_counter() - start, "cells": cells}
print(json.dumps(report))
"""


def run(cmd, cwd, timeout=900):
    """Run ``cmd`` as a user would: no PYTHONPATH, no minivae settings from this process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MINIVAE_")}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime in ns) of every file below ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the files a clone has (not from this working tree)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "minivae-out", "out")
    for name in BUILD_FROM:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, src / name, **(
            {"ignore": ignore} if (ROOT / name).is_dir() else {}))
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src], cwd=dist)
    (path,) = dist.glob("minivae-*.whl")
    print(f"wheel {path.name}: {path.stat().st_size / 2**20:.1f} MiB")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel and its [notebooks] extra; its python."""
    home = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", home / "v"], cwd=home)
    python = home / "v" / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", f"{wheel}[notebooks]"], cwd=home)
    return python


def site_package(python: Path) -> Path:
    return Path(run([python, "-c", "import minivae, os; print(os.path.dirname(minivae.__file__))"],
                    cwd=python.parent).strip())


def test_wheel_ships_every_lesson_and_the_mnist_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in LESSONS.values():
        assert f"minivae/_bundled/lessons/{path.name}" in names, path.name
    for name in MNIST_FILES:
        assert f"minivae/_bundled/mnist/{name}" in names, name
    assert not any(n.startswith(("lessons/", "data/", "tests/")) for n in names)  # nothing outside the package


def test_installed_wheel_lists_and_runs_a_lesson_from_another_folder(venv, tmp_path):
    package = site_package(venv)
    assert "site-packages" in str(package) and not package.is_relative_to(ROOT)
    listing = run([venv, "-m", "minivae", "lessons"], cwd=tmp_path)
    for n, path in LESSONS.items():
        assert f"{n:2d}  " in listing and path.name in listing
    before = files_under(package)
    work = tmp_path / "work"
    work.mkdir()
    run([venv, "-m", "minivae", "lessons", "run", "6", "--quick"], cwd=work)  # trains on the bundled MNIST
    assert files_under(package) == before, "the lesson wrote into the installed package"
    assert [p.name for p in work.iterdir()] == ["minivae-out"]  # nothing else in the working folder
    figures = sorted(p.name for p in (work / "minivae-out").glob("*.png"))
    assert "06_manifold.png" in figures and len(figures) >= 6, figures


def test_lessons_copy_gives_editable_scripts_that_run_and_never_overwrites(venv, tmp_path):
    out = run([venv, "-m", "minivae", "lessons", "copy", "mine"], cwd=tmp_path)
    assert f"copied {len(LESSONS) + 1} files" in out
    assert sorted(p.name for p in (tmp_path / "mine").glob("*.py")) == [p.name for p in LESSONS.values()]
    script = tmp_path / "mine" / LESSONS[2].name
    script.write_text(script.read_text() + "\nprint('my edit ran')\n")
    env_quick = ["env", "MINIVAE_QUICK=1"]
    assert "my edit ran" in run(env_quick + [venv, script], cwd=tmp_path)
    assert any((tmp_path / "minivae-out").glob("02_*.png"))
    r = subprocess.run([venv, "-m", "minivae", "lessons", "copy", "mine"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "already in" in r.stderr
    assert "my edit ran" in script.read_text()


def test_every_lesson_as_a_notebook_shows_each_figure_inline(venv, tmp_path):
    run([venv, "-m", "minivae", "lessons", "notebooks", "nb", "--quick"], cwd=tmp_path)
    notebooks = sorted((tmp_path / "nb").glob("*.ipynb"))
    assert [p.stem for p in notebooks] == [p.stem for p in LESSONS.values()]
    again = subprocess.run([venv, "-m", "minivae", "lessons", "notebooks", "nb"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert again.returncode == 2 and "already in" in again.stderr  # a student's edited notebook is never overwritten
    report = json.loads(run([venv, "-c", EXECUTE, *notebooks], cwd=tmp_path, timeout=1200))
    total = sum(r["seconds"] for r in report.values())
    print(f"{len(report)} lessons executed as notebooks (quick mode) in {total:.0f} s: "
          + ", ".join(f"{name[:2]} {r['seconds']:.1f} s" for name, r in report.items()))
    package = str(site_package(venv))
    for name, r in report.items():
        setup = r["cells"][0]
        assert "QUICK = True" in setup["source"] and f"from {package}" in setup["text"], (name, setup["text"])
        shown = [c for c in r["cells"] if re.search(r"\bshow\(", c["source"])]
        assert shown, f"{name}: no cell shows a figure"
        for cell in shown:
            assert cell["images"] >= 1, f"{name}: a cell that makes a figure has no image/png output:\n{cell['source']}"
        written = list((tmp_path / "nb" / "minivae-out").glob(f"{name[:2]}_*.png"))
        assert sum(c["images"] for c in r["cells"]) == len(written), (name, [p.name for p in written])


def test_first_notebook_cell_installs_a_missing_minivae_from_an_uploaded_wheel(venv, wheel, tmp_path):
    """As on a fresh Colab runtime: minivae is not installed, its wheel lies next to the notebook."""
    run([venv, "-m", "minivae", "lessons", "notebooks", "nb", "--quick", "--source", ""], cwd=tmp_path)
    lesson = tmp_path / "nb" / (LESSONS[4].stem + ".ipynb")
    shutil.copy(wheel, tmp_path / "nb" / wheel.name)
    run([venv, "-m", "pip", "uninstall", "-q", "-y", "minivae"], cwd=tmp_path)
    try:
        gone = subprocess.run([venv, "-c", "import minivae"], capture_output=True, cwd=tmp_path)
        assert gone.returncode != 0
        report = json.loads(run([venv, "-c", EXECUTE, lesson], cwd=tmp_path))
    finally:  # leave the environment as the other tests found it
        run([venv, "-m", "pip", "install", "-q", "--no-deps", wheel], cwd=tmp_path)
    (r,) = report.values()
    assert "site-packages" in r["cells"][0]["text"] and all(c["images"] for c in r["cells"] if "show(" in c["source"])
