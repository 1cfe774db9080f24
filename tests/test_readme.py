"""The README's "check it yourself" snippet runs and prints what it says."""
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_check_it_yourself_snippet():
    text = README.read_text()
    section = text[text.index("## Check it yourself"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {})
    loss, recon, kl, err = map(float, buf.getvalue().split())
    assert loss == recon + kl
    assert (round(loss, 2), round(recon, 2), round(kl, 2)) == (4.47, 4.04, 0.43)
    assert err < 1e-7


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    cmd = "python -m pip install -e '.[test]' && python -m pytest"
    assert cmd in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert cmd in ci


def test_every_figure_the_readme_shows_is_committed():
    text = README.read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) >= 4
    for f in figures:
        assert (README.parent / f).is_file(), f


def test_check_your_own_derivation_examples_print_what_the_readme_says():
    text = README.read_text()
    section = text[text.index("## Check your own derivation"):text.index("## The command line")]
    code, printed = re.search(r"```python\n(.*?)```\s*prints\s*```text\n(.*?)```", section, re.S).groups()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {})
    assert buf.getvalue() == printed
    assert [line.split(":")[0] for line in printed.splitlines()] == ["ok", "WRONG"]


def test_the_readme_counts_the_catalogue_and_lists_the_command():
    from minivae.derivations import CATALOGUE
    text = README.read_text()
    assert f"derive ({len(CATALOGUE)} of them:" in text
    assert "python -m minivae derivations [--quick]" in text
    assert "| `verify.py`, `derivations.py` |" in text
