"""The course's lesson scripts: find, list and run them.

Lessons live in ``lessons/NN_topic.py`` beside the package, in percent format
(``# %%`` cells): each opens as a notebook in VS Code, or in Jupyter with
jupytext, and runs as a plain script. A lesson calls :func:`quick` to pick small sizes when
``MINIVAE_QUICK=1`` (as in CI) and :func:`out_dir` for where its figures go.

    python -m minivae lessons            # the list
    python -m minivae lessons run 3      # run lesson 3
    python -m minivae lessons run 3 --quick
"""
from __future__ import annotations

import os
import re
import runpy
import sys
import time
from pathlib import Path

__all__ = ["LESSONS_DIR", "quick", "out_dir", "find_lessons", "lesson_title", "run_lesson"]

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"
QUICK_ENV = "MINIVAE_QUICK"


def quick() -> bool:
    """True when lessons should run in their quick mode (small data, few steps)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def out_dir() -> Path:
    """``lessons/out/`` (git-ignored), created if needed: where lessons save figures."""
    path = Path(os.environ.get("MINIVAE_LESSONS_OUT", LESSONS_DIR / "out"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_lessons(folder: Path = LESSONS_DIR) -> dict[int, Path]:
    """Lesson number -> path, for every ``NN_topic.py`` in ``folder``."""
    lessons = {}
    for path in sorted(folder.glob("[0-9][0-9]_*.py")):
        lessons[int(path.name[:2])] = path
    return lessons


def lesson_title(path: Path) -> str:
    """The first markdown heading of a lesson (its title)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#\s+#+\s+(.*)", line)
        if m:
            return m.group(1).strip()
    return path.stem


def run_lesson(number: int, quick_mode: bool = False) -> float:
    """Run lesson ``number`` as ``__main__`` in this process; returns the seconds it took.
    Raises KeyError for an unknown number (the message lists the lessons)."""
    lessons = find_lessons()
    if number not in lessons:
        raise KeyError(f"no lesson {number}; lessons: {', '.join(map(str, lessons)) or 'none'}")
    if quick_mode:
        os.environ[QUICK_ENV] = "1"
    path = lessons[number]
    start = time.perf_counter()
    old_path = list(sys.path)
    try:
        sys.path.insert(0, str(path.parent))
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.path[:] = old_path
    return time.perf_counter() - start
