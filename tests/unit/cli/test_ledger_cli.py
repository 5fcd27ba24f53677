from __future__ import annotations

import json
from pathlib import Path

import pytest

from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.cli import output
from tests.unit.cli.test_broken_plans import run_cli


@pytest.fixture
def plan_with_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AILAB_STATE_DIR", raising=False)
    monkeypatch.setattr(output.out, "_width", 250)  # no cell wrapping, so rows read whole
    plan = tmp_path / "vms.yaml"  # the plan need not exist to read its history
    with Ledger(tmp_path / ".ailab") as ledger:
        with ledger.start_run("plan", "11" * 32):
            pass
        with ledger.start_run("apply", "22" * 32) as run:
            ok = run.step("postgres", "create")
            ok.start()
            ok.succeed("cloned")
            bad = run.step("llm", "configure")
            bad.start()
            bad.fail("ollama [unit] failed")
            run.event("retrying", level="warning", vm="llm")
            run.attach_report("verify-md", tmp_path / "verify.md")
    return plan


def test_runs_json_lists_newest_first(plan_with_history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["runs", "--plan", str(plan_with_history), "--json"], capsys)
    assert code == 0
    runs = json.loads(out)
    assert [(r["id"], r["command"], r["status"]) for r in runs] == [
        (2, "apply", "failed"),
        (1, "plan", "succeeded"),
    ]
    assert (runs[0]["steps_succeeded"], runs[0]["steps_failed"]) == (1, 1)


def test_runs_table(plan_with_history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["runs", "--plan", str(plan_with_history)], capsys)
    assert code == 0
    assert "222222222222" in out
    assert "1/1 of 2" in out


def test_runs_show_text(plan_with_history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["runs", "show", "2", "--plan", str(plan_with_history)], capsys)
    assert code == 0
    assert "run 2: apply" in out
    assert "ollama [unit] failed" in out  # brackets are text, not markup
    assert "retrying" in out
    assert f"report (verify-md): {plan_with_history.parent / 'verify.md'}" in out


def test_runs_show_json_with_group_plan_option(
    plan_with_history: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["runs", "--plan", str(plan_with_history), "show", "2", "--json"], capsys)
    assert code == 0
    detail = json.loads(out)
    assert [(s["vm"], s["state"], s["error"]) for s in detail["steps"]] == [
        ("postgres", "succeeded", None),
        ("llm", "failed", "ollama [unit] failed"),
    ]
    assert detail["events"][0]["level"] == "warning"
    assert detail["reports"][0]["kind"] == "verify-md"


def test_runs_show_unknown_id(plan_with_history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["runs", "show", "9", "--plan", str(plan_with_history)], capsys)
    assert code == 1
    assert "error: no run 9" in err


def test_runs_without_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["runs", "--plan", str(tmp_path / "vms.yaml")], capsys)
    assert code == 1
    assert "no runs recorded yet" in err
    assert not (tmp_path / ".ailab").exists()  # reading history creates nothing
