"""The emulator as a three-node Proxmox VE cluster: per-node paths, clones across nodes,
migration, node failure and quorum, HA resources, groups, rules and recovery (API level)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Lab

pytestmark = pytest.mark.lab

NODES = ["pve1", "pve2", "pve3"]


def cluster(make_emulator: Callable[..., Lab], **settings: Any) -> Lab:
    base = {"nodes": NODES, "fence_seconds": 0.6, "ha_tick_seconds": 0.1}
    return make_emulator(**{**base, **settings})


def message(answer: Any) -> str:
    return str(answer.json().get("message", "")).strip()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def resources(lab: Lab, kind: str) -> list[dict[str, Any]]:
    return list(lab.api().cluster.resources.get(type=kind))


def vm_node(lab: Lab, vmid: int) -> str:
    return next(str(r["node"]) for r in resources(lab, "vm") if r["vmid"] == vmid)


def clone(lab: Lab, newid: int, node: str = "pve1", **params: Any) -> dict[str, Any]:
    upid = lab.api().nodes(node).qemu(9000).clone.post(newid=newid, **params)
    return lab.wait(upid)


@pytest.fixture
def lab(make_emulator: Callable[..., Lab]) -> Lab:
    return cluster(make_emulator)


def test_cluster_status_lists_the_cluster_and_each_node(lab: Lab) -> None:
    status = lab.api().cluster.status.get()
    head = status[0]
    assert (head["type"], head["name"], head["nodes"], head["quorate"]) == ("cluster", "ailab", 3, 1)
    nodes = [entry for entry in status if entry["type"] == "node"]
    assert [(n["name"], n["nodeid"], n["online"], n["local"]) for n in nodes] == [
        ("pve1", 1, 1, 1),
        ("pve2", 2, 1, 0),
        ("pve3", 3, 1, 0),
    ]
    assert [str(n["ip"]) for n in nodes] == ["10.77.0.2", "10.77.0.3", "10.77.0.4"]
    assert [(n["node"], n["status"]) for n in lab.api().nodes.get()] == [(n, "online") for n in NODES]


def test_cluster_resources_list_nodes_and_storage_per_node(lab: Lab) -> None:
    assert clone(lab, 101, storage="local-lvm", full=1)["exitstatus"] == "OK"
    storages = resources(lab, "storage")
    shared = [s for s in storages if s["storage"] == "shared"]
    assert sorted(s["node"] for s in shared) == NODES and {s["shared"] for s in shared} == {1}
    assert {s["id"] for s in shared} == {f"storage/{n}/shared" for n in NODES}
    local = {s["node"]: s for s in storages if s["storage"] == "local-lvm"}
    assert sorted(local) == NODES and {s["shared"] for s in local.values()} == {0}
    # VM 101's new disk is local to pve1: only pve1's local-lvm holds it
    assert local["pve1"]["disk"] > local["pve2"]["disk"] == local["pve3"]["disk"] == 0
    assert vm_node(lab, 101) == "pve1" and vm_node(lab, 9000) == "pve1"
    assert sorted(r["node"] for r in resources(lab, "node")) == NODES


def _missing(node: str, vmid: int) -> str:
    return f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"


UNKNOWN_PVE9 = (
    "hostname lookup 'pve9' failed - failed to get address info for: pve9: Name or service not known"
)


@pytest.mark.parametrize(
    ("method", "path", "status", "text"),
    [
        ("GET", "/nodes/pve2/qemu/9000/config", 500, _missing("pve2", 9000)),
        ("GET", "/nodes/pve3/qemu/9000/status/current", 500, _missing("pve3", 9000)),
        (
            "POST",
            "/nodes/pve2/qemu/9000/clone",
            500,
            "unable to find configuration file for VM 9000 on node 'pve2'",
        ),
        ("GET", "/nodes/pve9/qemu", 500, UNKNOWN_PVE9),
    ],
)
def test_a_vm_asked_on_the_wrong_node_or_an_unknown_node_fails_as_pve(
    lab: Lab, method: str, path: str, status: int, text: str
) -> None:
    answer = lab.http(method, path, data={"newid": 120} if method == "POST" else None)
    assert (answer.status_code, message(answer)) == (status, text)


def test_each_node_lists_only_its_own_vms_and_tasks(lab: Lab) -> None:
    result = clone(lab, 102, target="pve2")
    assert result["exitstatus"] == "OK" and result["node"] == "pve1"  # the source node runs it
    api = lab.api()
    assert [vm["vmid"] for vm in api.nodes("pve2").qemu.get()] == [102]
    assert [vm["vmid"] for vm in api.nodes("pve1").qemu.get()] == [9000]
    template = api.nodes("pve1").qemu(9000).config.get()["name"]
    assert api.nodes("pve2").qemu(102).config.get()["name"] == f"Copy-of-VM-{template}"
    upid = api.nodes("pve2").qemu(102).status.start.post()
    assert upid.startswith("UPID:pve2:") and lab.wait(upid)["exitstatus"] == "OK"
    assert [t["type"] for t in api.nodes("pve2").tasks.get()] == ["qmstart"]
    assert [t["type"] for t in api.nodes("pve1").tasks.get()] == ["qmclone"]
    lost = lab.http("GET", f"/nodes/pve1/tasks/{upid}/status")
    assert (lost.status_code, lost.json()["errors"]) == (400, {"upid": "no such task"})


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"target": "pve2", "storage": "local-lvm"}, "can't clone to non-shared storage 'local-lvm'"),
        ({"target": "pve7"}, "no such cluster node 'pve7'"),
    ],
)
def test_clone_target_refusals(lab: Lab, params: dict[str, str], text: str) -> None:
    answer = lab.http("POST", "/nodes/pve1/qemu/9000/clone", data={"newid": 110, "full": 1, **params})
    assert (answer.status_code, message(answer)) == (500, text)


def test_a_vm_on_local_storage_cannot_be_cloned_to_another_node(lab: Lab) -> None:
    assert clone(lab, 101, storage="local-lvm", full=1)["exitstatus"] == "OK"
    answer = lab.http("POST", "/nodes/pve1/qemu/101/clone", data={"newid": 111, "target": "pve3"})
    assert (answer.status_code, message(answer)) == (
        500,
        "can't clone VM to node 'pve3' (VM uses local storage)",
    )


def test_offline_migration_moves_a_local_disk_and_the_config(lab: Lab) -> None:
    assert clone(lab, 101, storage="local-lvm", full=1)["exitstatus"] == "OK"
    api = lab.api()
    disk = api.nodes("pve1").qemu(101).config.get()["scsi0"]
    upid = api.nodes("pve1").qemu(101).migrate.post(target="pve3")
    status = lab.wait(upid)
    assert (status["exitstatus"], status["type"], upid.split(":")[1]) == ("OK", "qmigrate", "pve1")
    lines = [line["t"] for line in api.nodes("pve1").tasks(upid).log.get()]
    assert any(line.endswith("starting migration of VM 101 to node 'pve3' (10.77.0.4)") for line in lines)
    assert any(line.endswith("found local disk 'local-lvm:vm-101-disk-0' (attached)") for line in lines)
    assert any("migration finished successfully" in line for line in lines)
    assert vm_node(lab, 101) == "pve3"
    assert api.nodes("pve3").qemu(101).config.get()["scsi0"] == disk
    assert "lock" not in api.nodes("pve3").qemu(101).config.get()
    assert (lab.lab_dir / "state/nodes/pve3/qemu-server/101.conf").is_file()
    assert not (lab.lab_dir / "state/nodes/pve1/qemu-server/101.conf").exists()
    local = {s["node"]: s["disk"] for s in resources(lab, "storage") if s["storage"] == "local-lvm"}
    assert local["pve3"] > 0 and local["pve1"] == 0


def test_online_migration_of_a_running_vm_on_shared_storage_keeps_it_running(lab: Lab) -> None:
    assert clone(lab, 102)["exitstatus"] == "OK"
    api = lab.api()
    lab.wait(api.nodes("pve1").qemu(102).status.start.post())
    upid = api.nodes("pve1").qemu(102).migrate.post(target="pve2", online=1)
    assert lab.wait(upid)["exitstatus"] == "OK"
    assert api.nodes("pve2").qemu(102).status.current.get()["status"] == "running"


def test_migration_refusals(lab: Lab) -> None:
    assert clone(lab, 101, storage="local-lvm", full=1)["exitstatus"] == "OK"
    api = lab.api()
    lab.wait(api.nodes("pve1").qemu(101).status.start.post())
    cases = [
        ({"target": "pve1"}, 400, {"target": "target is local node."}),
        ({"target": "pve8"}, 500, "no such cluster node 'pve8'"),
        ({"target": "pve2"}, 500, "can't migrate running VM without --online"),
    ]
    for params, status, expected in cases:
        answer = lab.http("POST", "/nodes/pve1/qemu/101/migrate", data=params)
        got = answer.json()["errors"] if status == 400 else message(answer)
        assert (answer.status_code, got) == (status, expected), params
    # a running VM with a local disk needs with-local-disks to go live
    upid = api.nodes("pve1").qemu(101).migrate.post(target="pve2", online=1)
    status_ = lab.wait(upid)
    assert status_["exitstatus"] == "migration aborted"
    lines = [line["t"] for line in api.nodes("pve1").tasks(upid).log.get(limit=100)]
    assert any(
        line.endswith(
            "can't migrate local disk 'local-lvm:vm-101-disk-0': can't live migrate attached local disks "
            "without with-local-disks option"
        )
        for line in lines
    )
    assert vm_node(lab, 101) == "pve1" and "lock" not in api.nodes("pve1").qemu(101).config.get()
    upid = api.nodes("pve1").qemu(101).migrate.post(target="pve2", online=1, **{"with-local-disks": 1})
    assert lab.wait(upid)["exitstatus"] == "OK" and vm_node(lab, 101) == "pve2"


def test_a_locked_vm_and_an_offline_target_are_refused(lab: Lab) -> None:
    assert clone(lab, 102)["exitstatus"] == "OK"
    api = lab.api()
    root = lab.api("ticket")  # only root@pam itself sets a lock
    root.nodes("pve1").qemu(102).config.put(lock="backup")
    answer = lab.http("POST", "/nodes/pve1/qemu/102/migrate", data={"target": "pve2"})
    assert (answer.status_code, message(answer)) == (500, "VM is locked (backup)")
    root.nodes("pve1").qemu(102).config.put(delete="lock", skiplock=1)
    lab.admin("POST", "/nodes/pve3/fail")
    upid = api.nodes("pve1").qemu(102).migrate.post(target="pve3")
    assert lab.wait(upid)["exitstatus"] == "migration aborted"
    lines = [line["t"] for line in api.nodes("pve1").tasks(upid).log.get()]
    assert any(line.endswith("Can't connect to destination address using public key") for line in lines)


def test_migrate_preconditions(lab: Lab) -> None:
    assert clone(lab, 101, storage="local-lvm", full=1)["exitstatus"] == "OK"
    api = lab.api()
    api.nodes("pve1").qemu(101).config.put(usb0="host=1234:5678")
    pre = api.nodes("pve1").qemu(101).migrate.get()
    assert pre["running"] == 0 and pre["allowed_nodes"] == ["pve2", "pve3"]
    assert pre["local_resources"] == ["usb0"]
    assert [(d["volid"], d["size"], d["is_unused"]) for d in pre["local_disks"]] == [
        ("local-lvm:vm-101-disk-0", 3 * 1024**3, 0)
    ]


def test_migrate_needs_vm_migrate(lab: Lab) -> None:
    api = lab.api()
    api.access.users.post(userid="mover@pve")
    api.access.acl.put(path="/vms/9000", roles="PVEVMUser", users="mover@pve")
    token = api.access.users("mover@pve").token("mover").post(privsep=0)
    header = {"Authorization": f"PVEAPIToken=mover@pve!mover={token['value']}"}
    answer = lab.http("POST", "/nodes/pve1/qemu/9000/migrate", data={"target": "pve2"}, headers=header)
    assert (answer.status_code, answer.reason) == (403, "Permission check failed (/vms/9000, VM.Migrate)")


def test_a_failed_node_stops_answering_and_quorum_needs_a_majority(lab: Lab) -> None:
    assert clone(lab, 102, target="pve2")["exitstatus"] == "OK"
    api = lab.api()
    lab.wait(api.nodes("pve2").qemu(102).status.start.post())
    assert lab.admin("POST", "/nodes/pve2/fail") == {"stopped": [102]}
    answer = lab.http("GET", "/nodes/pve2/qemu/102/status/current")
    assert (answer.status_code, answer.reason) == (595, "No route to host")
    online = {e["name"]: e["online"] for e in api.cluster.status.get() if e["type"] == "node"}
    assert online == {"pve1": 1, "pve2": 0, "pve3": 1}
    assert next(r["status"] for r in resources(lab, "vm") if r["vmid"] == 102) == "unknown"
    assert next(n for n in api.nodes.get() if n["node"] == "pve2")["status"] == "offline"
    storages = {s["storage"]: s["status"] for s in resources(lab, "storage") if s["node"] == "pve2"}
    assert set(storages.values()) == {"unknown"} and "shared" in storages
    assert api.cluster.status.get()[0]["quorate"] == 1
    lab.admin("POST", "/nodes/pve3/fail")
    assert api.cluster.status.get()[0]["quorate"] == 0
    write = lab.http("POST", "/nodes/pve1/qemu/9000/clone", data={"newid": 130})
    assert (write.status_code, message(write)) == (500, "cluster not ready - no quorum?")
    assert lab.http("GET", "/nodes/pve1/qemu").status_code == 200  # reads still work
    lab.admin("POST", "/nodes/pve2/recover")
    lab.admin("POST", "/nodes/pve3/recover")
    # a non-HA VM stays down after its node comes back
    assert api.nodes("pve2").qemu(102).status.current.get()["status"] == "stopped"


# --- HA ------------------------------------------------------------------------------------------


def test_ha_resource_crud_and_status(lab: Lab) -> None:
    assert clone(lab, 102)["exitstatus"] == "OK"
    ha = lab.api().cluster.ha
    ha.resources.post(sid="102", max_restart=2, comment="db")
    got = ha.resources("vm:102").get()
    assert (got["sid"], got["state"], got["max_restart"], got["comment"], got["type"]) == (
        "vm:102",
        "started",
        2,
        "db",
        "vm",
    )
    answer = lab.http("POST", "/cluster/ha/resources", data={"sid": "vm:102"})
    assert message(answer) == "create resource failed: resource ID 'vm:102' already defined"
    answer = lab.http("POST", "/cluster/ha/resources", data={"sid": "105"})
    assert message(answer) == "unable to detect SID from VMID - VM/CT 105 does not exist"
    ha.resources("vm:102").put(max_relocate=3, delete="comment")
    got = ha.resources("vm:102").get()
    assert got["max_relocate"] == 3 and "comment" not in got
    # state started: the manager starts the VM
    wait_for(lambda: lab.api().nodes("pve1").qemu(102).status.current.get()["status"] == "running")
    status = lab.api().nodes("pve1").qemu(102).status.current.get()
    assert status["ha"] == {"managed": 1, "state": "started"}
    current = {e["id"]: e for e in ha.status.current.get()}
    assert current["quorum"]["quorate"] == 1
    assert current["service:vm:102"]["status"] == "vm:102 (pve1, started)"
    assert [r["sid"] for r in ha.resources.get()] == ["vm:102"]
    ha.resources("vm:102").delete()
    assert ha.resources.get() == []
    answer = lab.http("DELETE", "/cluster/ha/resources/vm:102")
    assert message(answer) == "cannot delete service 'vm:102', not HA managed!"


def test_an_ha_vm_refuses_destroy_without_purge(lab: Lab) -> None:
    assert clone(lab, 102)["exitstatus"] == "OK"
    api = lab.api()
    api.cluster.ha.resources.post(sid="vm:102", state="stopped")
    answer = lab.http("DELETE", "/nodes/pve1/qemu/102")
    assert message(answer) == "unable to remove VM 102 - used in HA resources and purge parameter not set."
    upid = api.nodes("pve1").qemu(102).delete(purge=1)
    assert lab.wait(upid)["exitstatus"] == "OK"
    lines = [line["t"] for line in api.nodes("pve1").tasks(upid).log.get()]
    assert "NOTE: removed VM 102 from HA resource configuration." in lines
    assert api.cluster.ha.resources.get() == []


def test_a_migration_of_an_ha_vm_is_handed_to_the_ha_manager(lab: Lab) -> None:
    assert clone(lab, 102)["exitstatus"] == "OK"
    api = lab.api()
    api.cluster.ha.resources.post(sid="vm:102")
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")
    upid = api.nodes("pve1").qemu(102).migrate.post(target="pve3", online=1)
    assert lab.wait(upid)["type"] == "hamigrate"
    lines = [line["t"] for line in api.nodes("pve1").tasks(upid).log.get()]
    assert lines[0] == "Requesting HA migration for VM 102 to node pve3"
    wait_for(lambda: vm_node(lab, 102) == "pve3")
    wait_for(lambda: api.nodes("pve3").qemu(102).status.current.get()["status"] == "running")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({}, "pve2"),  # no rule: the least loaded online node (pve2 holds nothing)
        ({"nodes": "pve3:2,pve2:1"}, "pve3"),  # the highest priority online node
        ({"nodes": "pve1:2,pve3:1"}, "pve3"),  # pve1 is down: the next priority
    ],
)
def test_ha_recovers_a_started_vm_after_the_fence_delay(
    lab: Lab, rule: dict[str, str], expected: str
) -> None:
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    assert clone(lab, 103)["exitstatus"] == "OK"
    assert clone(lab, 104, target="pve3")["exitstatus"] == "OK"
    api.cluster.ha.resources.post(sid="vm:102")
    api.cluster.ha.resources.post(sid="vm:104")  # keeps pve3 busier than pve2
    if rule:
        api.cluster.ha.rules.post(rule="db", type="node-affinity", resources="vm:102", **rule)
    lab.wait(api.nodes("pve1").qemu(103).status.start.post())
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")
    failed_at = time.monotonic()
    lab.admin("POST", "/nodes/pve1/fail")
    fenced = {e["sid"]: e["state"] for e in api.cluster.ha.status.current.get() if e["type"] == "service"}
    assert fenced["vm:102"] == "fence"
    wait_for(lambda: vm_node(lab, 102) == expected)
    assert time.monotonic() - failed_at >= 0.6  # not before the fence delay
    wait_for(lambda: api.nodes(expected).qemu(102).status.current.get()["status"] == "running")
    assert vm_node(lab, 103) == "pve1"  # a VM without HA stays with its failed node


def test_failback_moves_an_ha_vm_home_when_its_node_returns(lab: Lab) -> None:
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    api.cluster.ha.resources.post(sid="vm:102")
    api.cluster.ha.rules.post(rule="home", type="node-affinity", resources="vm:102", nodes="pve1:2,pve2:1")
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")
    lab.admin("POST", "/nodes/pve1/fail")
    wait_for(lambda: vm_node(lab, 102) == "pve2")
    wait_for(lambda: api.nodes("pve2").qemu(102).status.current.get()["status"] == "running")
    lab.admin("POST", "/nodes/pve1/recover")
    wait_for(lambda: vm_node(lab, 102) == "pve1")
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")


def test_without_failback_an_ha_vm_stays_where_it_was_recovered(lab: Lab) -> None:
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    api.cluster.ha.resources.post(sid="vm:102", failback=0)
    api.cluster.ha.rules.post(rule="home", type="node-affinity", resources="vm:102", nodes="pve1:2,pve2:1")
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")
    lab.admin("POST", "/nodes/pve1/fail")
    wait_for(lambda: vm_node(lab, 102) == "pve2")
    lab.admin("POST", "/nodes/pve1/recover")
    time.sleep(1.0)  # several manager rounds
    assert vm_node(lab, 102) == "pve2"


def test_rules_on_9x(lab: Lab) -> None:
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    assert clone(lab, 103)["exitstatus"] == "OK"
    api.cluster.ha.resources.post(sid="vm:102", state="stopped")
    api.cluster.ha.resources.post(sid="vm:103", state="stopped")
    api.cluster.ha.rules.post(
        rule="apart", type="resource-affinity", resources="vm:102,vm:103", affinity="negative"
    )
    rule = api.cluster.ha.rules("apart").get()
    assert (rule["type"], rule["resources"], rule["affinity"]) == (
        "resource-affinity",
        "vm:102,vm:103",
        "negative",
    )
    answer = lab.http(
        "POST",
        "/cluster/ha/rules",
        data={"rule": "bad", "type": "node-affinity", "resources": "vm:102", "affinity": "positive"},
    )
    assert answer.status_code == 400 and "affinity" in answer.json()["errors"]
    pre = api.nodes("pve1").qemu(102).migrate.get()
    assert pre["not_allowed_nodes"] == {} and pre["allowed_nodes"] == ["pve2", "pve3"]  # both on pve1
    groups = lab.http("GET", "/cluster/ha/groups")  # 9.x: groups became rules
    assert (groups.status_code, message(groups)) == (
        500,
        "cannot index groups: ha groups have been migrated to rules",
    )
    answer = lab.http("POST", "/cluster/ha/resources", data={"sid": "9000", "group": "grp"})
    assert message(answer) == "invalid parameter 'group': ha groups have been migrated to rules"
    api.cluster.ha.resources("vm:103").delete()  # purge: the rule keeps vm:102 alone
    assert api.cluster.ha.rules("apart").get()["resources"] == "vm:102"


def test_groups_on_84(make_emulator: Callable[..., Lab]) -> None:
    lab = cluster(make_emulator, version="8.4.1")
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    api.cluster.ha.groups.post(group="db", nodes="pve3:2,pve2:1", restricted=1)
    group = api.cluster.ha.groups("db").get()
    assert (group["nodes"], group["restricted"], group["type"]) == ("pve3:2,pve2:1", 1, "group")
    api.cluster.ha.resources.post(sid="vm:102", group="db")
    answer = lab.http("DELETE", "/cluster/ha/groups/db")
    assert message(answer) == "ha group is used by service 'vm:102'"
    assert lab.http("GET", "/cluster/ha/rules").status_code == 501
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")
    lab.admin("POST", "/nodes/pve1/fail")
    wait_for(lambda: vm_node(lab, 102) == "pve3")


def test_one_node_keeps_a_standalone_node(emulator: Lab) -> None:
    status = emulator.api().cluster.status.get()
    assert [(e["type"], e["name"], e["nodeid"]) for e in status] == [("node", "pve", 0)]
    assert (emulator.lab_dir / "state/qemu-server/9000.conf").is_file()


@pytest.mark.parametrize("action", ["stop", "shutdown"])
def test_power_calls_on_an_ha_vm_become_ha_requests(lab: Lab, action: str) -> None:
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    api.cluster.ha.resources.post(sid="vm:102")
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")
    upid = getattr(api.nodes("pve1").qemu(102).status, action).post()
    assert lab.wait(upid)["type"] == "hastop"
    assert (
        next(line["t"] for line in api.nodes("pve1").tasks(upid).log.get()) == "Requesting HA stop for VM 102"
    )
    assert api.cluster.ha.resources("vm:102").get()["state"] == "stopped"
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "stopped")
    upid = api.nodes("pve1").qemu(102).status.start.post()
    assert lab.wait(upid)["type"] == "hastart"
    assert api.cluster.ha.resources("vm:102").get()["state"] == "started"
    wait_for(lambda: api.nodes("pve1").qemu(102).status.current.get()["status"] == "running")


def test_create_with_ha_managed_adds_the_resource(lab: Lab) -> None:
    api = lab.api()
    upid = api.nodes("pve2").qemu.post(vmid=150, memory=512, start=1, **{"ha-managed": 1})
    assert lab.wait(upid)["exitstatus"] == "OK"
    assert api.cluster.ha.resources("vm:150").get()["state"] == "started"
    wait_for(lambda: api.nodes("pve2").qemu(150).status.current.get()["status"] == "running")


def test_recovery_keeps_apart_what_a_negative_resource_affinity_rule_separates(lab: Lab) -> None:
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    assert clone(lab, 103, target="pve2")["exitstatus"] == "OK"
    assert clone(lab, 104, target="pve3")["exitstatus"] == "OK"
    for sid in ("vm:102", "vm:103", "vm:104"):  # pve2 and pve3 carry one HA service each
        api.cluster.ha.resources.post(sid=sid)
    api.cluster.ha.rules.post(
        rule="apart", type="resource-affinity", resources="vm:102,vm:103", affinity="negative"
    )
    wait_for(lambda: api.nodes("pve2").qemu(103).status.current.get()["status"] == "running")
    pre = api.nodes("pve1").qemu(102).migrate.get()
    assert pre["allowed_nodes"] == ["pve3"]
    assert pre["not_allowed_nodes"] == {
        "pve2": {"blocking-ha-resources": [{"sid": "vm:103", "cause": "resource-affinity"}]}
    }
    lab.admin("POST", "/nodes/pve1/fail")
    wait_for(lambda: vm_node(lab, 102) == "pve3")  # as loaded as pve2, which holds vm:103


def test_targetstorage_maps_a_local_disk_to_another_storage(lab: Lab) -> None:
    assert clone(lab, 101, storage="local-lvm", full=1)["exitstatus"] == "OK"
    api = lab.api()
    upid = api.nodes("pve1").qemu(101).migrate.post(target="pve2", targetstorage="local-lvm:HDDStorage")
    assert lab.wait(upid)["exitstatus"] == "OK"
    assert api.nodes("pve2").qemu(101).config.get()["scsi0"].startswith("HDDStorage:vm-101-disk-0,")
    answer = lab.http(
        "POST", "/nodes/pve2/qemu/101/migrate", data={"target": "pve3", "targetstorage": "local"}
    )
    assert (answer.status_code, message(answer)) == (500, "storage 'local' does not support vm images")


def test_startall_leaves_ha_vms_to_the_ha_manager(lab: Lab) -> None:
    api = lab.api()
    assert clone(lab, 102)["exitstatus"] == "OK"
    assert clone(lab, 103)["exitstatus"] == "OK"
    api.cluster.ha.resources.post(sid="vm:102", state="stopped")
    assert lab.wait(api.nodes("pve1").startall.post(force=1))["exitstatus"] == "OK"
    assert api.nodes("pve1").qemu(103).status.current.get()["status"] == "running"
    assert api.nodes("pve1").qemu(102).status.current.get()["status"] == "stopped"
