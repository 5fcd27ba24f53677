"""The one-command path on the lab, as a user runs it, and the rehearsal's life cycle on one lab:

lab up -> up (nothing to a verified lab) -> up again, from Python through ``pipeline.up``
without the CLI (no API writes, changed=0) -> the LLM refuses requests without its key, and no
secret is anywhere but its allowed places (every VM's whole filesystem, the controller's lab
and state directories) -> lab down -> lab up (a node reboot: VMs, disks and
configs kept) -> plan (no changes) -> up (changed=0, 0 API writes) -> lab reset -> up (verified
again; host keys of the VMs it re-created replaced, not refused) -> destroy -> lab down --purge,
leaving nothing behind.

The steps share one lab (module scope) and run in order. Slow: the first ``up`` builds
llama.cpp's server from source. Set ``AILAB_E2E_SUMMARY`` to a file path to keep the first and
no-op runs' phase timings (CI prints them).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.adapters.known_hosts import KnownHosts
from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.smoke import HTTP_POST, Targets
from ailab_deploy.core.loader import load_plan
from ailab_deploy.lab.containers import leftovers
from ailab_deploy.lab.containers.backend import machines_dir
from ailab_deploy.lab.secret_scan import held_secrets, scan_lab
from ailab_deploy.pipeline import up as pipeline

from .conftest import ailab_cli as cli
from .conftest import free_port

pytestmark = pytest.mark.e2e


@dataclass
class Rehearsal:
    lab_dir: Path
    plan: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_progress: str = ""  # what the first `up` printed on stderr

    @property
    def state_dir(self) -> Path:
        return Path(self.plan).parent / ".ailab"

    def vm_addresses(self) -> dict[str, str]:
        return {vm.name: str(vm.ip) for vm in load_plan(Path(self.plan)).plan.vms}

    def vmids(self) -> dict[str, int]:
        return {vm.name: vm.vmid for vm in load_plan(Path(self.plan)).plan.vms}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    lab_dir = tmp_path_factory.mktemp("e2e") / "lab"
    port = str(free_port())
    try:
        status = json.loads(cli("lab", "up", "--lab-dir", str(lab_dir), "--port", port, "--json").stdout)
        yield Rehearsal(lab_dir, status["lab_plan"])
    finally:
        cli("lab", "down", "--purge", "--lab-dir", str(lab_dir), check=False)


def up(plan: str) -> tuple[dict[str, Any], str]:
    result = cli("up", "--plan", plan, "--json", timeout=3600)
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary, result.stderr


def planned_actions(plan: str) -> dict[str, set[str]]:
    planned = json.loads(cli("plan", "--plan", plan, "--json").stdout)
    return {vm["name"]: {action["action"] for action in vm["actions"]} for vm in planned["vms"]}


def assert_verified(report: dict[str, Any]) -> None:
    llm = report["llm"]
    assert llm["engine"] == "llamacpp" and llm["tokens"] > 0
    assert llm["tokens_per_second"] > 0
    assert llm["predicted_tokens_per_second"] > 0 and llm["bound_tokens_per_second"] > 0
    assert llm["ratio_to_prediction"] == pytest.approx(
        llm["tokens_per_second"] / llm["predicted_tokens_per_second"], rel=1e-2
    )
    if llm["bandwidth_bound_applies"]:
        assert llm["ratio_to_bound"] == pytest.approx(
            llm["tokens_per_second"] / llm["bound_tokens_per_second"], rel=1e-2
        )
    else:  # compute-bound: llama-bench stays below half the bound, so no ratio is given
        assert llm["ratio_to_bound"] is None
        assert llm["engine_ceiling_tokens_per_second"] < 0.5 * llm["bound_tokens_per_second"]
    # The engine's own ceiling on the same VM: llama-bench for the same model, threads and context.
    assert llm["engine_ceiling_tokens_per_second"] > 0
    assert llm["ratio_to_engine_ceiling"] == pytest.approx(
        llm["tokens_per_second"] / llm["engine_ceiling_tokens_per_second"], rel=1e-2
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


def assert_noop(run: dict[str, Any], names: list[str]) -> None:
    assert run["api_calls"]["writes"] == 0, run["api_calls"]
    assert run["changed"] == {name: 0 for name in names}, run["changed"]
    assert run["report"]["passed"]


def test_up_from_nothing_to_verified(lab: Rehearsal) -> None:
    first, progress = up(lab.plan)
    lab.runs["first"] = first
    lab.first_progress = progress
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
    vendor = (lab.lab_dir / "storage" / "local" / "snippets" / "ailab-vendor.yaml").read_text()
    assert "http://10.77.0.1:8888" in vendor  # the node's storage, which PVE resolves cicustom in


def test_second_up_from_python_changes_nothing(lab: Rehearsal) -> None:
    # The same path from Python: pipeline.up returns what it did; nothing is left to change.
    second = pipeline.up(Path(lab.plan))
    assert second.api_calls["writes"] == 0, second.api_calls
    assert second.changed == {name: 0 for name in lab.runs["first"]["changed"]}
    assert second.verified is not None and second.verified.report.passed and second.passed
    assert [phase.name for phase in second.phases] == ["validate", "apply", "configure", "verify"]
    assert all(isinstance(phase.seconds, float) and phase.seconds >= 0 for phase in second.phases)
    results = {phase.name: phase.result for phase in second.phases}
    assert results["apply"] == "0 API writes" and results["configure"] == "changed=0", results
    # Every check still runs on a no-op: the same testinfra outcome as the first run.
    second_infra = second.verified.report.infra
    first_infra = lab.runs["first"]["report"]["infra"]
    assert {key: second_infra.get(key) for key in first_infra} == first_infra
    if os.environ.get("AILAB_E2E_SUMMARY"):
        noop = second.to_dict()
        summary = {
            "first": lab.runs["first"]["phases"],
            "second": noop["phases"],
            "noop": {
                "seconds": round(second.seconds, 1),
                "phases": {phase.name: round(phase.seconds, 1) for phase in second.phases},
                "changed": second.changed,
                "api_writes": second.api_calls["writes"],
                "ansible_strategy": second.configured.playbook.strategy if second.configured else None,
                "testinfra": {"first": first_infra, "noop": second_infra},
            },
        }
        Path(os.environ["AILAB_E2E_SUMMARY"]).write_text(json.dumps(summary, indent=2) + "\n")


def test_llm_needs_its_key(lab: Rehearsal) -> None:
    """From the apps VM (the LLM's only client): 401 without the key or with a wrong one, 200 with it."""
    targets = Targets(load_plan(Path(lab.plan)), lab.state_dir)
    llm_vm, apps_vm = targets.vm_with_role("llm"), targets.vm_with_role("python_app")
    url = f"http://{llm_vm.ip}:{targets.loaded.plan.llm.port}/completion"
    body = json.dumps({"prompt": "Hello", "n_predict": 1})
    post = ["python3", "-c", HTTP_POST, url, "120"]  # the key goes on stdin, never into argv
    with targets.ssh(apps_vm) as session:
        missing = session.run(post, stdin="\n" + body, timeout=180)
        wrong = session.run(post, stdin="not-the-key\n" + body, timeout=180)
        right = session.run(post, stdin=f"{targets.llm_api_key()}\n{body}", timeout=180)
    assert (missing.rc, missing.stderr.strip()) == (1, "HTTP 401")
    assert (wrong.rc, wrong.stderr.strip()) == (1, "HTTP 401")
    assert right.rc == 0 and "content" in json.loads(right.stdout), right.stderr


def test_no_secret_outside_its_allowed_places(lab: Rehearsal) -> None:
    """Every secret the controller holds, searched in every VM's whole filesystem and on the
    controller side after two converges and verifications; hits are reported by label only."""
    secrets = held_secrets(lab.lab_dir, Path(lab.plan))
    assert {secret.kind for secret in secrets} == {"api-token", "database-password", "llm-api-key"}
    result = scan_lab(lab.lab_dir, secrets, Path(lab.plan))
    coverage = {where: {"files": seen.files, "bytes": seen.bytes} for where, seen in result.coverage.items()}
    print(f"secret scan coverage: {coverage}")
    for hit in result.hits:
        print(f"secret scan: {hit}")
    vms = {where for where in coverage if where.startswith("vm ")}
    assert len(vms) >= 4, coverage  # three VMs and the node
    assert all(coverage[where]["files"] > 1000 for where in vms), coverage
    assert [str(hit) for hit in result.violations] == []
    outputs = [json.dumps(lab.runs["first"]), lab.first_progress]
    assert [s.label for s in secrets if any(s.value in output for output in outputs)] == []
    if os.environ.get("AILAB_E2E_SUMMARY"):
        summary_file = Path(os.environ["AILAB_E2E_SUMMARY"])
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        summary_file.write_text(json.dumps(summary | {"secret_scan": coverage}, indent=2) + "\n")


def test_lab_down_and_up_is_a_node_reboot(lab: Rehearsal) -> None:
    cli("lab", "down", "--lab-dir", str(lab.lab_dir))
    assert leftovers() == []  # no process, mount, netns, veth, bridge or firewall of the lab
    disks = {path.name for path in machines_dir(lab.lab_dir).iterdir()}
    assert {str(vmid) for vmid in lab.vmids().values()} <= disks

    status = json.loads(cli("lab", "up", "--lab-dir", str(lab.lab_dir), "--json").stdout)
    assert status["running"] and status["startall"] == "OK"
    assert planned_actions(lab.plan) == {name: {"no-op"} for name in lab.vmids()}
    after_reboot, _ = up(lab.plan)
    assert_noop(after_reboot, list(lab.vmids()))


def test_lab_reset_leaves_a_consistent_world(lab: Rehearsal) -> None:
    known_hosts = KnownHosts(lab.state_dir)
    before = known_hosts.path.read_text()
    addresses = lab.vm_addresses()
    old_keys = {address: known_hosts.keys_for(address) for address in addresses.values()}
    assert all(old_keys.values())

    reset = cli("lab", "reset", "--lab-dir", str(lab.lab_dir))
    assert int(reset.stdout.split()[1]) == len(addresses)  # "removed N VM(s); ..."
    assert all(known_hosts.keys_for(address) == set() for address in addresses.values())
    with Ledger(lab.state_dir) as ledger:
        assert ledger.managed_vmids() == set()
    node = ipaddress.ip_address("10.77.0.2")
    assert known_hosts.keys_for(str(node)), "the node's pinned key survives a reset"

    # A controller whose records lag behind (the VMs rebuilt behind its back, by hand or by an
    # older version): apply re-creates the VMs itself, so their new keys replace the old ones.
    known_hosts.path.write_text(before)
    rebuilt, progress = up(lab.plan)
    assert_verified(rebuilt["report"])
    for name, address in addresses.items():
        assert f"{name}: ssh: replaced" in progress, progress[-3000:]
        new_keys = known_hosts.keys_for(address)
        assert new_keys and not new_keys & old_keys[address], f"{name}: old keys still trusted"
        lookup = ["ssh-keygen", "-F", address, "-f", str(known_hosts.path)]
        found = subprocess.run(lookup, capture_output=True, check=False)
        assert found.returncode == 0  # OpenSSH's own lookup finds the new entry


def test_destroy_then_purge_leaves_nothing(lab: Rehearsal) -> None:
    cli("destroy", "--plan", lab.plan, "--yes")
    assert planned_actions(lab.plan) == {name: {"create"} for name in lab.vmids()}
    cli("lab", "down", "--purge", "--lab-dir", str(lab.lab_dir))
    assert leftovers(lab.lab_dir) == []
