"""The one-command path on the lab, as a user runs it:

lab up -> up (nothing to a verified lab) -> assert the report -> up again, from Python through
``pipeline.up`` without the CLI (no API writes, changed=0) -> destroy -> lab down, leaving
nothing behind.

Slow: the first ``up`` builds llama.cpp's server from source. Set ``AILAB_E2E_SUMMARY`` to a
file path to keep both runs' phase timings (CI prints them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.lab.containers import leftovers
from ailab_deploy.pipeline import up as pipeline

from .conftest import ailab_cli as cli
from .conftest import free_port

pytestmark = pytest.mark.e2e


def up(plan: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(cli("up", "--plan", plan, "--json", timeout=3600).stdout)
    return summary


def assert_verified(report: dict[str, Any]) -> None:
    llm = report["llm"]
    assert llm["engine"] == "llamacpp" and llm["tokens"] > 0
    assert llm["tokens_per_second"] > 0
    assert llm["predicted_tokens_per_second"] > 0 and llm["bound_tokens_per_second"] > 0
    assert llm["ratio_to_prediction"] == pytest.approx(
        llm["tokens_per_second"] / llm["predicted_tokens_per_second"], rel=1e-2
    )
    assert llm["ratio_to_bound"] == pytest.approx(
        llm["tokens_per_second"] / llm["bound_tokens_per_second"], rel=1e-2
    )
    pgbench = report["pgbench"]
    assert pgbench["tps"] > 0 and pgbench["transactions"] > 0 and pgbench["failed"] == 0
    apps = {app["name"]: app for app in report["apps"]}
    assert set(apps) == {"lab-status", "lab-api"}
    assert all(app["health_status"] == 200 for app in apps.values())
    assert apps["lab-api"]["latency_ms"] > 0  # one request through app -> database -> LLM
    assert {gate["name"] for gate in report["gates"]} >= {"llm tokens/s", "pgbench tps"}
    assert all(gate["passed"] for gate in report["gates"]), report["gates"]
    infra = report["infra"]
    assert infra["passed"] > 20 and infra["failed"] == 0 and infra["errors"] == 0, infra
    assert report["passed"] and report["problems"] == []
    # The Streamlit page in headless Chromium: rendered, statuses ok, a question answered and stored.
    (check,) = report["browser"]
    assert check["app"] == "lab-status" and check["passed"], check
    assert (check["database_status"], check["llm_status"]) == ("ok", "ok")
    assert check["answer"] and check["stored_in_log"] and check["stored_id"] > 0


def test_up_from_nothing_to_verified_then_noop_then_destroy(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    port = str(free_port())
    try:
        status = json.loads(cli("lab", "up", "--lab-dir", str(lab_dir), "--port", port, "--json").stdout)
        plan = status["lab_plan"]

        first = up(plan)
        assert_verified(first["report"])
        assert first["api_calls"]["writes"] > 0
        assert all(count > 0 for count in first["changed"].values()), first["changed"]
        for path in first["report_files"]:
            assert Path(path).is_file()
        json_report, _, html_report = (Path(path) for path in first["report_files"])
        screenshot = json_report.parent / first["report"]["browser"][0]["screenshot"]
        assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert html_report.name == "report.html" and "data:image/png;base64," in html_report.read_text()
        # Every VM booted with the vendor data node preparation uploaded to the node.
        vendor = (lab_dir / "storage" / "local" / "snippets" / "ailab-vendor.yaml").read_text()
        assert "http://10.77.0.1:8888" in vendor  # the node's storage, which PVE resolves cicustom in

        # The same path from Python: pipeline.up returns what it did; nothing is left to change.
        second = pipeline.up(Path(plan))
        assert second.api_calls["writes"] == 0, second.api_calls
        assert second.changed == {name: 0 for name in first["changed"]}
        assert second.verified is not None and second.verified.report.passed and second.passed
        assert [phase.name for phase in second.phases] == ["validate", "apply", "configure", "verify"]
        assert all(isinstance(phase.seconds, float) and phase.seconds >= 0 for phase in second.phases)
        results = {phase.name: phase.result for phase in second.phases}
        assert results["apply"] == "0 API writes" and results["configure"] == "changed=0", results
        summary = {"first": first["phases"], "second": second.to_dict()["phases"]}
        if os.environ.get("AILAB_E2E_SUMMARY"):
            Path(os.environ["AILAB_E2E_SUMMARY"]).write_text(json.dumps(summary, indent=2) + "\n")

        cli("destroy", "--plan", plan, "--yes")
        after = json.loads(cli("plan", "--plan", plan, "--json").stdout)
        assert {action["action"] for vm in after["vms"] for action in vm["actions"]} == {"create"}
    finally:
        cli("lab", "down", "--lab-dir", str(lab_dir), check=False)
    assert leftovers(lab_dir) == []
