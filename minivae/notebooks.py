"""The lessons as Jupyter notebooks (``.ipynb``), for Jupyter, VS Code and Colab.

Each percent-format lesson is read with jupytext (its markdown cells keep their
LaTeX, its code cells their code) and written with nbformat, with a Python 3
kernelspec and two cells put in after the title:

* a visible **quick-mode switch**, ``QUICK = True/False`` (small sizes, seconds;
  or the full lesson, minutes);
* a **setup cell** that finds minivae in the kernel or, where it is missing (a
  fresh Colab runtime), installs it with pip from ``SOURCE`` or from a
  ``minivae-*.whl`` uploaded next to the notebook. The data ship inside the
  package, so nothing else is needed.

jupytext and nbformat are an optional extra: ``pip install 'minivae[notebooks]'``.

    python -m minivae lessons notebooks OUT [--quick] [--source SPEC]
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from .lessons import QUICK_ENV, find_lessons, refuse_overwrite

__all__ = ["write_notebooks", "lesson_notebook", "default_source", "KERNELSPEC"]

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

SWITCH = """\
## Setup

`QUICK = True` runs the lesson with small sizes, as the test suite does (seconds);
`False` runs it in full (minutes; the runtime is in the introduction above). The
next cell finds minivae in this kernel or, on a fresh Colab runtime, installs it:
with pip from `SOURCE`, or from a `minivae-*.whl` file uploaded next to this
notebook (Colab: the Files pane). Figures show below their cells and are also
saved in `./minivae-out/`."""

SETUP = '''\
QUICK = {quick}
SOURCE = {source!r}  # a pip requirement for minivae: git+URL, a wheel's URL or file; "" = look for a wheel here

import glob, importlib, importlib.util, os, subprocess, sys

os.environ["{quick_env}"] = "1" if QUICK else "0"
if importlib.util.find_spec("minivae") is None:
    wheels = sorted(glob.glob("minivae-*.whl"))
    source = SOURCE or (wheels[-1] if wheels else "")
    if not source:
        raise RuntimeError("minivae is not installed in this kernel: upload minivae-<version>-py3-none-any.whl "
                           "next to this notebook, or set SOURCE above, then run this cell again")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
    importlib.invalidate_caches()
import minivae

print(f"minivae {{minivae.__version__}} from {{os.path.dirname(minivae.__file__)}}; quick mode: {{QUICK}}")'''


def _formats():
    """jupytext and nbformat, or an ImportError that says how to get them."""
    try:
        import jupytext
        import nbformat
    except ImportError as e:
        raise ImportError(f"writing notebooks needs jupytext and nbformat ({e.name} is missing): "
                          f"python -m pip install 'minivae[notebooks]'") from None
    return jupytext, nbformat


def default_source() -> str:
    """The pip requirement this minivae was installed from, when a Colab runtime could
    use it too: a git URL at its commit, or a wheel or archive URL (PEP 610's
    ``direct_url.json``). "" for a local folder or file, or when unknown."""
    try:
        text = metadata.distribution("minivae").read_text("direct_url.json")
        info = json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError):
        return ""
    url = info.get("url", "")
    vcs = info.get("vcs_info")
    if vcs and not url.startswith("file:"):
        commit = vcs.get("commit_id")
        return f"{vcs.get('vcs', 'git')}+{url}" + (f"@{commit}" if commit else "")
    if "archive_info" in info and url.startswith(("https://", "http://")):
        return url
    return ""


def lesson_notebook(path: Path, quick: bool = False, source: str = ""):
    """One lesson script -> an nbformat v4 notebook with the switch and setup cells."""
    jupytext, nbformat = _formats()
    nb = jupytext.reads(Path(path).read_text(encoding="utf-8"), fmt="py:percent")
    setup = [nbformat.v4.new_markdown_cell(SWITCH),
             nbformat.v4.new_code_cell(SETUP.format(quick=bool(quick), source=source, quick_env=QUICK_ENV))]
    at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0  # after the title and goal
    nb.cells[at:at] = setup
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    nbformat.validate(nb)
    return nb


def write_notebooks(out: str | Path, quick: bool = False, source: str | None = None) -> list[Path]:
    """Write every lesson as ``out/NN_topic.ipynb``; returns the paths. ``source`` is
    what the setup cell installs where minivae is missing (default
    :func:`default_source`). Refuses to overwrite an existing notebook, so edits in
    ``out`` are never lost."""
    _, nbformat = _formats()
    out = Path(out)
    lessons = find_lessons()
    targets = {n: out / (path.stem + ".ipynb") for n, path in lessons.items()}
    refuse_overwrite(list(targets.values()), "notebook(s)")
    source = default_source() if source is None else source
    notebooks = {n: lesson_notebook(path, quick, source) for n, path in lessons.items()}
    out.mkdir(parents=True, exist_ok=True)
    for n, nb in notebooks.items():
        nbformat.write(nb, str(targets[n]))
    return list(targets.values())
