"""Every lesson runs (quick mode), is a percent-format notebook, and asserts its numbers."""
import os
import re
import subprocess
import sys

import pytest

from minivae.lessons import find_lessons, lesson_title

LESSONS = find_lessons()


def test_lessons_are_numbered_from_one_without_gaps():
    assert list(LESSONS) == list(range(1, len(LESSONS) + 1))


@pytest.mark.parametrize("number", list(LESSONS))
def test_lesson_is_a_percent_notebook_that_asserts(number):
    text = LESSONS[number].read_text(encoding="utf-8")
    assert text.startswith("# %% [markdown]"), "the first cell is the markdown introduction"
    assert re.search(r"^# # \d\d?\. ", text, re.M), "a '# # NN. Title' heading"
    assert len(re.findall(r"^# %%", text, re.M)) >= 4
    assert re.search(r"^\s*(assert |np\.testing\.assert)", text, re.M), "a lesson asserts its numbers"
    assert "from minivae" in text or "import minivae" in text
    assert "plt.show" not in text and "default_rng()" not in text  # no display, no unseeded randomness
    assert lesson_title(LESSONS[number])


@pytest.mark.parametrize("number", list(LESSONS))
def test_lesson_runs_in_quick_mode(number, tmp_path):
    env = dict(os.environ, MINIVAE_QUICK="1", MINIVAE_LESSONS_OUT=str(tmp_path), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-m", "minivae", "lessons", "run", str(number), "--quick"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert any(p.suffix == ".png" for p in tmp_path.iterdir()), "a lesson saves at least one figure"
