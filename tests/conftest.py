"""Shared by every test: the package under test is the one beside these tests, and a
failing test of an assignment task names the section of ASSIGNMENT.md to re-read."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    import minivae

    where = Path(minivae.__file__).resolve().parent
    if not where.is_relative_to(ROOT):
        raise pytest.UsageError(f"these tests would test the minivae in {where}, not the one in {ROOT}: "
                                f"run them with `python -m pytest` from {ROOT}")


def _sections(config) -> dict[str, str]:
    """task marker -> the title of its section in ASSIGNMENT.md (from the markers in setup.cfg)."""
    sections = {}
    for line in config.getini("markers"):
        name, _, title = line.partition(":")
        if name.strip().startswith("task_"):
            sections[name.strip()] = f"{name.strip()}: {title.strip().removeprefix('assignment task:').strip()}"
    return sections


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed and hasattr(report.longrepr, "addsection"):
        sections = _sections(item.config)
        for marker in item.iter_markers():
            if marker.name in sections:
                report.longrepr.addsection("assignment", f"Re-read ASSIGNMENT.md, section '{sections[marker.name]}'.")
                break
