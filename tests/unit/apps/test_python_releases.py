"""The apps and their framework run on Debian 13's Python 3.13 as on Debian 12's 3.11: no module
that 3.12 or 3.13 removed is imported, and every source file parses with the oldest grammar
they claim (requires-python >= 3.11). The lab's Debian 13 VMs run them for real (Molecule,
the end-to-end test)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parents[3] / "apps"
SOURCES = sorted(APPS.rglob("*.py"))
# Removed in 3.12 (distutils, imp, asynchat, asyncore, smtpd) and 3.13 (PEP 594's dead batteries).
REMOVED = {
    "distutils", "imp", "asynchat", "asyncore", "smtpd",
    "aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "mailcap", "msilib", "nis",
    "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib",
    "lib2to3", "tkinter.tix",
}  # fmt: skip


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_there_are_app_sources() -> None:
    assert len(SOURCES) >= 5


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(APPS)) for p in SOURCES])
def test_no_removed_module_is_imported(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 11))
    used = {name for name in _imports(tree) if name in REMOVED or name.split(".")[0] in REMOVED}
    assert used == set()


def test_the_apps_claim_both_releases_pythons() -> None:
    for project in sorted(APPS.glob("*/pyproject.toml")):
        requires = tomllib.loads(project.read_text())["project"]["requires-python"]
        assert requires == ">=3.11", project  # Debian 12's python3; 3.13 (Debian 13) satisfies it
