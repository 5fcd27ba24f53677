"""The one-command path on the lab, as a user runs it:

lab up -> up (nothing to a verified lab) -> assert the report -> up again (no API writes,
changed=0) -> the LLM refuses requests without its key -> no secret anywhere but its allowed
places (every VM's whole filesystem, the controller's lab and state directories) -> destroy ->
lab down, leaving nothing behind.

Slow: the first ``up`` builds llama.cpp's server from source. Set ``AILAB_E2E_SUMMARY`` to a
file path to keep both runs' phase timings (CI prints them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.adapters.ledger import state_dir_for
from ailab_deploy.adapters.smoke import HTTP_POST, Targets
from ailab_deploy.core.loader import load_plan
from ailab_deploy.lab.containers import leftovers
from ailab_deploy.lab.secret_scan import held_secrets, scan_lab

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


def assert_llm_needs_its_key(plan: Path) -> None:
    """From the apps VM (the LLM's only client): 401 without the key or with a wrong one, 200 with it."""
    targets = Targets(load_plan(plan), state_dir_for(plan))
    llm_vm, apps_vm = targets.vm_with_role("llm"), targets.vm_with_role("python_app")
    url = f"http://{llm_vm.ip}:{targets.loaded.plan.llm.port}/completion"
    body = json.dumps({"prompt": "Hello", "n_predict": 1})
    post = ["python3", "-c", HTTP_POST, url, "120"]
    with targets.ssh(apps_vm) as session:
        missing = session.run(post, stdin="\n" + body, timeout=180)
        wrong = session.run(post, stdin="not-the-key\n" + body, timeout=180)
        right = session.run(post, stdin=f"{targets.llm_api_key()}\n{body}", timeout=180)
    assert (missing.rc, missing.stderr.strip()) == (1, "HTTP 401")
    assert (wrong.rc, wrong.stderr.strip()) == (1, "HTTP 401")
    assert right.rc == 0 and "content" in json.loads(right.stdout), right.stderr


def assert_no_secret_leaked(lab_dir: Path, plan: Path, outputs: list[str]) -> dict[str, dict[str, int]]:
    """Every secret the controller holds, searched in every VM and on the controller side;
    returns the files and bytes searched per place."""
    secrets = held_secrets(lab_dir, plan)
    kinds = {secret.kind for secret in secrets}
    assert kinds == {"api-token", "database-password", "llm-api-key"}, kinds
    result = scan_lab(lab_dir, secrets, plan)
    coverage = {where: (seen.files, seen.bytes) for where, seen in result.coverage.items()}
    print(f"secret scan coverage (files, bytes): {coverage}")
    for hit in result.hits:
        print(f"secret scan: {hit}")
    assert len(result.coverage) >= 4, coverage  # three VMs plus the controller
    assert all(seen.files > 1000 for where, seen in result.coverage.items() if where != "controller")
    assert [str(hit) for hit in result.violations] == []
    # Nor in what the CLI printed (labels only, so a failure never prints a secret).
    assert [s.label for s in secrets if any(s.value in output for output in outputs)] == []
    return {where: {"files": seen.files, "bytes": seen.bytes} for where, seen in result.coverage.items()}


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
        # Every VM booted with the vendor data node preparation uploaded to the node.
        vendor = (lab_dir / "storage" / "local" / "snippets" / "ailab-vendor.yaml").read_text()
        assert "http://10.77.0.1:8888" in vendor  # the node's storage, which PVE resolves cicustom in

        second = up(plan)
        assert second["api_calls"]["writes"] == 0, second["api_calls"]
        assert second["changed"] == {name: 0 for name in first["changed"]}
        assert second["report"]["passed"]

        assert_llm_needs_its_key(Path(plan))
        scanned = assert_no_secret_leaked(lab_dir, Path(plan), [json.dumps(first), json.dumps(second)])
        summary = {"first": first["phases"], "second": second["phases"], "secret_scan": scanned}
        if os.environ.get("AILAB_E2E_SUMMARY"):
            Path(os.environ["AILAB_E2E_SUMMARY"]).write_text(json.dumps(summary, indent=2) + "\n")

        cli("destroy", "--plan", plan, "--yes")
        after = json.loads(cli("plan", "--plan", plan, "--json").stdout)
        assert {action["action"] for vm in after["vms"] for action in vm["actions"]} == {"create"}
    finally:
        cli("lab", "down", "--lab-dir", str(lab_dir), check=False)
    assert leftovers(lab_dir) == []
