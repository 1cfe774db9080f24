"""Where the files that ship with minivae live: the lessons and the MNIST files.

The repository keeps them in its top-level ``lessons/`` and ``data/mnist/``
folders, the single source. A wheel (``pip install .``, ``pip install
git+URL``) carries copies inside the package, under ``minivae/_bundled/``
(setup.cfg maps the two folders there). :func:`bundled` finds whichever
this installation has: the copies inside the package when they exist, else
the checkout's own folders (an editable install, or the source tree on
``sys.path``). Nothing here is ever written to: figures and runs go to an
output folder of the user's (see :func:`minivae.lessons.out_dir`).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["bundled", "SOURCES"]

PACKAGE = Path(__file__).resolve().parent

#: bundled name -> its folder in the repository (setup.cfg's package_dir maps it
#: to ``minivae/_bundled/<name>`` in a wheel)
SOURCES = {"lessons": ("lessons",), "mnist": ("data", "mnist")}


def bundled(name: str) -> Path:
    """The folder of the bundled files called ``name`` ("lessons" or "mnist")."""
    shipped = PACKAGE / "_bundled" / name
    if shipped.is_dir():
        return shipped
    return PACKAGE.parent.joinpath(*SOURCES[name])
