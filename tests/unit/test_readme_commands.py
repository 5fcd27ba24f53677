"""The README's two commands are there as written, and CI runs the test one exactly."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAIN = "bash scripts/setup.sh && .venv/bin/ailab-deploy demo"
TESTS = "bash scripts/setup.sh && .venv/bin/pytest --lab"


def code_lines(markdown: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_readme_gives_the_main_job_and_the_tests_as_commands() -> None:
    lines = code_lines((REPO / "README.md").read_text())
    assert MAIN in lines and TESTS in lines


def test_ci_runs_the_readme_test_command_exactly() -> None:
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert TESTS in ci


def test_the_e2e_test_runs_the_readme_main_command() -> None:
    e2e = (REPO / "tests" / "lab" / "test_e2e.py").read_text()
    assert f'README_MAIN_COMMAND = "{MAIN}"' in e2e
