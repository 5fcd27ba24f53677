"""Which Debian release a lab serves: chosen when it is made, then kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ailab_deploy.errors import InputError
from ailab_deploy.lab import control


def test_a_new_lab_serves_debian_13_unless_asked(tmp_path: Path) -> None:
    assert control.check_debian_release(tmp_path / "new", None) == 13
    assert control.check_debian_release(tmp_path / "new", 12) == 12


def test_a_lab_made_before_releases_were_a_setting_keeps_debian_12(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"port": 8006}))
    assert control.status(tmp_path)["debian_release"] == 12
    assert control.check_debian_release(tmp_path, None) == 12
    with pytest.raises(InputError, match=r"serves Debian 12; a lab keeps its release"):
        control.check_debian_release(tmp_path, 13)
    control.ensure_settings(tmp_path)
    assert json.loads((tmp_path / "settings.json").read_text())["debian_release"] == 12


def test_the_settings_remember_the_release_a_lab_was_made_with(tmp_path: Path) -> None:
    control.ensure_settings(tmp_path, debian_release=None)
    assert json.loads((tmp_path / "settings.json").read_text())["debian_release"] == 13
    assert control.check_debian_release(tmp_path, 13) == 13
    with pytest.raises(InputError, match=r"^--debian-release: 11 is not one of 13, 12$"):
        control.check_debian_release(tmp_path, 11)
