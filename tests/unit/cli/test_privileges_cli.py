"""`ailab-deploy privileges`: the pveum commands for the plan's features, per PVE release."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.unit.cli.test_broken_plans import run_cli

PLAN = Path(__file__).resolve().parents[2] / "plans" / "valid-minimal.yaml"


def _role_privileges(out: str) -> list[str]:
    [role] = [line for line in out.splitlines() if line.startswith("pveum role add AilabDeploy")]
    words = shlex.split(role)
    return words[words.index("--privs") + 1].split()


def test_privileges_per_release(capsys: pytest.CaptureFixture[str]) -> None:
    code, nine, _ = run_cli(["privileges", "--plan", str(PLAN)], capsys)
    assert code == 0
    code, eight, _ = run_cli(["privileges", "--plan", str(PLAN), "--pve-version", "8.4"], capsys)
    assert code == 0
    assert "VM.GuestAgent.Audit" in _role_privileges(nine) and "VM.Monitor" not in _role_privileges(nine)
    assert "VM.Monitor" in _role_privileges(eight) and "VM.GuestAgent.Audit" not in _role_privileges(eight)
    assert {"Sys.Modify", "Datastore.Allocate", "VM.Snapshot"} <= set(_role_privileges(nine))
    assert "pveum user token add ailab@pve deploy --privsep 1" in nine
    assert "pveum acl modify / --tokens 'ailab@pve!deploy' --roles AilabDeploy" in nine


def test_an_unknown_release_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["privileges", "--plan", str(PLAN), "--pve-version", "7.4"], capsys)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == ["error: --pve-version 7.4: not one of 9.1, 8.4"]
