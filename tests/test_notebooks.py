"""The notebook writer's pieces that need no Jupyter: where the setup cell installs from,
and the one-line error when the [notebooks] extra is missing. (Writing and executing
the notebooks themselves is tested in a fresh environment in test_install.py.)"""
import json
import sys

import pytest

from minivae import notebooks
from minivae.__main__ import main


class FakeDistribution:
    def __init__(self, direct_url):
        self.text = None if direct_url is None else json.dumps(direct_url)

    def read_text(self, name):
        assert name == "direct_url.json"
        return self.text


@pytest.mark.parametrize("direct_url, expected", [
    ({"url": "https://github.com/someone/minivae.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}},
     "git+https://github.com/someone/minivae.git@abc123"),
    ({"url": "https://example.org/minivae-0.1.0-py3-none-any.whl", "archive_info": {}},
     "https://example.org/minivae-0.1.0-py3-none-any.whl"),
    ({"url": "file:///home/me/minivae", "dir_info": {"editable": True}}, ""),  # a local folder: no use on Colab
    ({"url": "file:///home/me/minivae-0.1.0-py3-none-any.whl", "archive_info": {}}, ""),
    (None, ""),  # installed without PEP 610 metadata
])
def test_default_source_is_where_this_minivae_came_from_when_a_runtime_elsewhere_can_use_it(
        monkeypatch, direct_url, expected):
    monkeypatch.setattr(notebooks.metadata, "distribution", lambda name: FakeDistribution(direct_url))
    assert notebooks.default_source() == expected


def test_missing_extra_is_one_line_naming_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "jupytext", None)  # import jupytext now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'minivae\[notebooks\]'"):
        notebooks.write_notebooks(tmp_path / "nb")
    assert main(["lessons", "notebooks", str(tmp_path / "nb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "minivae[notebooks]" in err
    assert not (tmp_path / "nb").exists()
