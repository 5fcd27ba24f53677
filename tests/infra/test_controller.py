"""The controller's side: secrets only in their 0600 store, never in the generated inventory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def state_dir() -> Path:
    value = os.environ.get("AILAB_STATE_DIR")
    if not value:
        pytest.skip("AILAB_STATE_DIR is not set (ailab-deploy verify sets it)")
    return Path(value)


def test_secret_files_are_owner_only(state_dir: Path) -> None:
    secrets = [path for path in (state_dir / "secrets").rglob("*") if path.is_file()]
    assert secrets, f"no secrets under {state_dir / 'secrets'}"
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((state_dir / "secrets").stat().st_mode) & 0o077 == 0


def test_generated_inventory_holds_no_secret_value(state_dir: Path, inventory_path: str) -> None:
    values = [
        path.read_text().strip()
        for path in (state_dir / "secrets").glob("*")
        if path.suffix not in (".yml", ".yaml") and path.read_text().strip()
    ]
    assert values, f"no secrets under {state_dir / 'secrets'}"
    inventory = Path(inventory_path).parent
    for path in inventory.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(value in text for value in values), f"a secret is written in {path}"
