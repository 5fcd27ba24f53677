"""Test selection: plain `pytest` runs unit tests; `pytest --lab` adds lab, vm and e2e tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_MARKERS = ("lab", "vm", "e2e")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lab",
        action="store_true",
        default=False,
        help="also run tests that need the lab (API emulator, container VMs, end-to-end)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--lab"):
        return
    skip = pytest.mark.skip(reason="needs the lab: run with --lab")
    for item in items:
        if any(item.get_closest_marker(marker) for marker in LAB_MARKERS):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
