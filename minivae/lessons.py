"""The course's lesson scripts: find, list, run and copy them; save and show their figures.

Lessons are ``NN_topic.py`` files in percent format (``# %%`` cells): each runs
as a plain script, opens as a notebook in VS Code or Jupyter (with jupytext),
and converts to ``.ipynb`` (:mod:`minivae.notebooks`). They ship with the
package (:func:`minivae.resources.bundled`), so an installed wheel has them
too. A lesson calls :func:`quick` to pick small sizes when ``MINIVAE_QUICK=1``
(as in CI), and :func:`show` for every figure: it is saved under
:func:`out_dir` and, in a notebook, displayed under the cell.

    python -m minivae lessons                 # the list
    python -m minivae lessons run 3 [--quick] [--out DIR]
    python -m minivae lessons copy DIR        # editable copies of the scripts
"""
from __future__ import annotations

import os
import re
import runpy
import shutil
import sys
import time
from pathlib import Path

from .resources import bundled

__all__ = ["LESSONS_DIR", "QUICK_ENV", "OUT_ENV", "DEFAULT_OUT", "quick", "out_dir", "in_notebook", "show",
           "find_lessons", "lesson_title", "run_lesson", "copy_lessons"]

LESSONS_DIR = bundled("lessons")
QUICK_ENV = "MINIVAE_QUICK"
OUT_ENV = "MINIVAE_LESSONS_OUT"
DEFAULT_OUT = "minivae-out"


def quick() -> bool:
    """True when lessons should run in their quick mode (small data, few steps)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def out_dir() -> Path:
    """Where lessons write figures and runs, created if needed: ``$MINIVAE_LESSONS_OUT``,
    else ``./minivae-out/`` in the working folder (never inside the package)."""
    path = Path(os.environ.get(OUT_ENV) or DEFAULT_OUT).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, VS Code, Colab): figures can be shown inline."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it; a script has not
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def show(fig, name: str, dpi: int | None = None) -> None:
    """Save the matplotlib ``Figure`` as ``out_dir() / name`` (a PNG, at ``dpi`` or
    :data:`minivae.plots.DPI`) and, in a notebook, display it under the cell. Prints
    where it went. Never opens a window, so a script never blocks."""
    from .plots import DPI, save

    path = out_dir() / name
    save(fig, path, dpi or DPI)
    if in_notebook():
        from IPython.display import Image, display
        display(Image(filename=str(path)))
    print(f"figure saved to {path}")


def find_lessons(folder: Path = LESSONS_DIR) -> dict[int, Path]:
    """Lesson number -> path, for every ``NN_topic.py`` in ``folder``."""
    return {int(path.name[:2]): path for path in sorted(Path(folder).glob("[0-9][0-9]_*.py"))}


def lesson_title(path: Path) -> str:
    """The first markdown heading of a lesson (its title)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#\s+#+\s+(.*)", line)
        if m:
            return m.group(1).strip()
    return path.stem


def run_lesson(number: int, quick_mode: bool = False, out: str | Path | None = None) -> float:
    """Run lesson ``number`` as ``__main__`` in this process; returns the seconds it took.
    ``out`` sets the output folder (see :func:`out_dir`). Raises KeyError for an
    unknown number (the message lists the lessons)."""
    lessons = find_lessons()
    if number not in lessons:
        raise KeyError(f"no lesson {number}; lessons: {', '.join(map(str, lessons)) or 'none'}")
    if quick_mode:
        os.environ[QUICK_ENV] = "1"
    if out is not None:
        os.environ[OUT_ENV] = str(Path(out).resolve())
    start = time.perf_counter()
    runpy.run_path(str(lessons[number]), run_name="__main__")
    return time.perf_counter() - start


def refuse_overwrite(targets: list[Path], what: str) -> None:
    """Raise FileExistsError if any of ``targets`` exists, before anything is written: a
    student's edits are never lost."""
    clash = [str(t) for t in targets if t.exists()]
    if clash:
        raise FileExistsError(f"{len(clash)} {what} already in {Path(clash[0]).parent}, e.g. {clash[0]}; "
                              f"nothing written: choose another folder or move them away")


def copy_lessons(dest: str | Path) -> list[Path]:
    """Copy every lesson script (and the lessons' README) into ``dest``, to edit and run
    there. Refuses to overwrite a file that exists, so a student's edits are never lost.
    Returns the paths written."""
    dest = Path(dest)
    sources = list(find_lessons().values()) + [LESSONS_DIR / "README.md"]
    refuse_overwrite([dest / p.name for p in sources], "lesson file(s)")
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in sources]
