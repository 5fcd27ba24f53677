from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.cli.test_broken_plans import run_cli

REPO = Path(__file__).resolve().parents[3]


def test_validate_accepts_the_shipped_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["validate", "--plan", str(REPO / "vms.yaml")], capsys)
    assert code == 0
    assert "valid (3 VMs: postgres, ollama, devapps)" in out
    assert "warning:" in err  # the NUMA and idle-RAM advice


def test_sizing_prints_derivation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["sizing", "--plan", str(REPO / "vms.yaml")], capsys)
    assert code == 0
    assert "expected = 30.72 GB/s / 5.46 GB = 5.6 tokens/s" in out
    assert "KV cache per token" in out


def test_sizing_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["sizing", "--json", "--plan", str(REPO / "vms.yaml")], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["llm"]["threads"] == 18
    assert data["postgres"]["settings"]["random_page_cost"] == "4"


def test_committed_schema_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["schema"], capsys)
    assert code == 0
    assert json.loads(out) == json.loads((REPO / "schema" / "vms.schema.json").read_text())
    assert "# yaml-language-server: $schema=./schema/vms.schema.json" in (REPO / "vms.yaml").read_text()


def test_unknown_option_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["validate", "--bogus"], capsys)
    assert code == 2
    assert err.strip() == "error: ailab-deploy validate: No such option: --bogus"


def test_every_key_in_the_shipped_plan_has_a_comment() -> None:
    lines = (REPO / "vms.yaml").read_text().splitlines()
    keyed = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    uncommented = [line for line in keyed if ":" in line and "#" not in line]
    assert uncommented == []


def test_restore_asks_for_confirmation_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["restore", "--plan", str(REPO / "vms.yaml"), "--vm", "postgres"], capsys)
    assert code == 1 and out == ""
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: restore would put back postgres from its newest archive, replacing the VM if it exists; "
        "pass --yes to confirm (no terminal to ask)"
    ]


def test_restore_needs_a_vm(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["restore", "--plan", str(REPO / "vms.yaml"), "--yes"], capsys)
    assert code == 2 and "--vm" in err and "Traceback" not in err


def test_plan_retention_becomes_prune_backups() -> None:
    from ailab_deploy.core.loader import load_plan

    retention = load_plan(REPO / "vms.yaml").plan.proxmox.vzdump.retention
    assert retention.prune_backups() == "keep-last=2,keep-weekly=4,keep-monthly=3"
