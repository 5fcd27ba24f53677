"""A three-node cluster lab, as a user runs it, on one lab (module scope), in order:

lab up --nodes 3 -> up (verified; the database and the LLM on different nodes, the database
under HA) -> lab node fail on the database's node -> HA restarts it on another node and
``verify`` passes again -> plan proposes nothing -> lab node recover -> a migration (one VM's
``node:`` changed: plan says migrate, apply migrates, the VM answers SSH with the same host key
and data on its new node) -> destroy leaves no VM and no HA resource.

The failover timeline (fail -> recovered -> verified) is printed; run with ``-s`` to see it.
Needs root; run under the lab lock.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ProxmoxAPI

from ailab_deploy.adapters.known_hosts import KnownHosts
from ailab_deploy.adapters.smoke import Targets
from ailab_deploy.core.loader import load_plan
from ailab_deploy.lab import control
from ailab_deploy.lab.containers import leftovers, network

from .conftest import ailab_cli as cli
from .conftest import free_port

pytestmark = pytest.mark.e2e

TEMPLATE_VMID = 9000
RECOVERY_TIMEOUT = 180.0


@dataclass
class ClusterRehearsal:
    lab_dir: Path
    plan: str
    failed_node: str = ""
    timeline: dict[str, float] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return Path(self.plan).parent / ".ailab"

    def api(self) -> ProxmoxAPI:
        """The lab's housekeeping token, to look at the cluster as an admin would."""
        info = control.status(self.lab_dir)
        user, token = str(info["token_id"]).split("!")
        return ProxmoxAPI(
            "127.0.0.1",
            port=int(info["port"]),
            user=user,
            token_name=token,
            token_value=Path(info["token_secret_path"]).read_text().strip(),
            verify_ssl=str(info["ca_path"]),
        )

    def vms(self) -> dict[int, dict[str, Any]]:
        """VMID -> its /cluster/resources entry (node, status), the template left out."""
        found = self.api().cluster.resources.get(type="vm")
        return {int(r["vmid"]): r for r in found if int(r["vmid"]) != TEMPLATE_VMID}

    def vmid(self, role: str) -> int:
        return load_plan(Path(self.plan)).plan.vms_with_role(role)[0].vmid

    def ha_resources(self) -> list[str]:
        return sorted(str(r["sid"]) for r in self.api().cluster.ha.resources.get())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRehearsal]:
    lab_dir = tmp_path_factory.mktemp("e2e-cluster") / "lab"
    port = str(free_port())
    try:
        up = cli("lab", "up", "--nodes", "3", "--lab-dir", str(lab_dir), "--port", port, "--json")
        status = json.loads(up.stdout)
        assert {"VM.Migrate", "Sys.Console"} <= set(status["deploy_privileges"])
        yield ClusterRehearsal(lab_dir, status["lab_plan"])
    finally:
        cli("lab", "down", "--purge", "--lab-dir", str(lab_dir), check=False)


def planned(plan: str) -> dict[str, dict[str, Any]]:
    """VM name -> its node and the kinds of its actions, as `plan --json` says."""
    shown = json.loads(cli("plan", "--plan", plan, "--json").stdout)
    return {
        vm["name"]: {
            "node": vm["node"],
            "actions": [a["action"] for a in vm["actions"]],
            "raw": vm["actions"],
        }
        for vm in shown["vms"]
    }


def verify(plan: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(cli("verify", "--plan", plan, "--json", timeout=1800).stdout)
    return report


def test_up_places_the_database_and_the_llm_apart(cluster: ClusterRehearsal) -> None:
    summary = json.loads(cli("up", "--plan", cluster.plan, "--json", timeout=3600).stdout)
    assert summary["report"]["passed"], summary["report"]["problems"]
    assert all(gate["passed"] for gate in summary["report"]["gates"]), summary["report"]["gates"]
    vms = cluster.vms()
    database, llm = cluster.vmid("postgresql"), cluster.vmid("llm")
    assert {vms[v]["status"] for v in vms} == {"running"}
    assert vms[database]["node"] != vms[llm]["node"]
    assert cluster.ha_resources() == [f"vm:{database}"]
    shown = planned(cluster.plan)
    assert {name: vm["actions"] for name, vm in shown.items()} == {name: ["no-op"] for name in shown}
    assert {name: vm["node"] for name, vm in shown.items()} == {
        vm.name: vms[vm.vmid]["node"] for vm in load_plan(Path(cluster.plan)).plan.vms
    }


def test_a_failed_node_s_database_is_restarted_elsewhere_and_verified(cluster: ClusterRehearsal) -> None:
    database = cluster.vmid("postgresql")
    before = cluster.vms()
    node = str(before[database]["node"])
    assert [v for v in before if before[v]["node"] == node] == [database]  # nothing else goes down
    cluster.failed_node = node
    started = time.monotonic()
    cli("lab", "node", "fail", node, "--lab-dir", str(cluster.lab_dir))
    deadline = started + RECOVERY_TIMEOUT
    while True:
        now = cluster.vms()[database]
        if now["node"] != node and now["status"] == "running":
            break
        assert time.monotonic() < deadline, f"the database VM was not recovered: {now}"
        time.sleep(0.5)
    cluster.timeline["recovered"] = time.monotonic() - started
    vm = load_plan(Path(cluster.plan)).plan.vms_with_role("postgresql")[0]
    network.wait_ssh(str(vm.ip), RECOVERY_TIMEOUT)  # the guest has booted on its new node
    with Targets(load_plan(Path(cluster.plan)), cluster.state_dir).ssh(vm) as session:
        while session.run(["pg_isready", "-q"]).rc != 0:  # and PostgreSQL takes connections
            assert time.monotonic() < deadline, "PostgreSQL did not come up on the new node"
            time.sleep(0.5)
    cluster.timeline["answering"] = time.monotonic() - started
    report = verify(cluster.plan)
    cluster.timeline["verified"] = time.monotonic() - started
    assert report["passed"], report["problems"]
    assert report["pgbench"]["tps"] > 0 and report["pgbench"]["failed"] == 0
    apps = {app["name"]: app["health_status"] for app in report["apps"]}
    assert apps == {"lab-status": 200, "lab-api": 200}  # the apps reach PostgreSQL at its address
    print(
        f"\nfailover timeline: node {node} failed at 0.0 s; database running on "
        f"{cluster.vms()[database]['node']} at {cluster.timeline['recovered']:.1f} s; "
        f"PostgreSQL answering at {cluster.timeline['answering']:.1f} s; "
        f"verify passed at {cluster.timeline['verified']:.1f} s"
    )


def test_plan_after_the_failover_proposes_nothing(cluster: ClusterRehearsal) -> None:
    shown = planned(cluster.plan)
    assert {name: vm["actions"] for name, vm in shown.items()} == {name: ["no-op"] for name in shown}
    database = load_plan(Path(cluster.plan)).plan.vms_with_role("postgresql")[0].name
    assert shown[database]["node"] not in ("", cluster.failed_node)  # where HA runs it now


def test_the_node_recovers(cluster: ClusterRehearsal) -> None:
    cli("lab", "node", "recover", cluster.failed_node, "--lab-dir", str(cluster.lab_dir))
    assert control.cluster_state(cluster.lab_dir)[cluster.failed_node] == "online"
    shown = planned(cluster.plan)
    assert {name: vm["actions"] for name, vm in shown.items()} == {name: ["no-op"] for name in shown}


def test_a_changed_node_is_a_migration_keeping_host_key_and_data(cluster: ClusterRehearsal) -> None:
    loaded = load_plan(Path(cluster.plan))
    apps_vm = loaded.plan.vms_with_role("python_app")[0]
    source = str(cluster.vms()[apps_vm.vmid]["node"])
    target = cluster.failed_node if cluster.failed_node != source else "pve1"
    targets = Targets(loaded, cluster.state_dir)
    marker = f"written before the migration {time.time()}"
    with targets.ssh(targets.vm_with_role("python_app")) as session:
        assert session.run(["sh", "-c", f"echo '{marker}' > ~/migration-marker"]).rc == 0
    host_keys = KnownHosts(cluster.state_dir).keys_for(str(apps_vm.ip))
    assert host_keys

    text = Path(cluster.plan).read_text()
    pinned, count = re.subn(
        rf"(\n    name: {apps_vm.name}  #[^\n]*\n)", rf"\1    node: {target}  # moved by the test\n", text
    )
    assert count == 1
    Path(cluster.plan).write_text(pinned)
    shown = planned(cluster.plan)
    (migrate,) = shown[apps_vm.name]["raw"]
    assert (migrate["action"], migrate["source"], migrate["target"]) == ("migrate", source, target)

    applied = json.loads(cli("apply", "--plan", cluster.plan, "--json", timeout=1800).stdout)
    assert all(not vm["error"] for vm in applied["vms"]), applied["vms"]
    moved = cluster.vms()[apps_vm.vmid]
    assert (moved["node"], moved["status"]) == (target, "running")
    # Targets.ssh trusts only the pinned host keys: the same VM, same disk, on its new node.
    with Targets(load_plan(Path(cluster.plan)), cluster.state_dir).ssh(apps_vm) as session:
        read = session.run(["cat", "migration-marker"])
    assert (read.rc, read.stdout.strip()) == (0, marker)
    assert KnownHosts(cluster.state_dir).keys_for(str(apps_vm.ip)) == host_keys
    shown = planned(cluster.plan)
    assert {name: vm["actions"] for name, vm in shown.items()} == {name: ["no-op"] for name in shown}


def test_destroy_leaves_no_vm_and_no_ha_resource(cluster: ClusterRehearsal) -> None:
    cli("destroy", "--plan", cluster.plan, "--yes", timeout=900)
    assert cluster.vms() == {}
    assert cluster.ha_resources() == []
    cli("lab", "down", "--purge", "--lab-dir", str(cluster.lab_dir))
    assert leftovers(cluster.lab_dir) == []
