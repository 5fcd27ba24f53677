"""The controller on a three-node API-only lab (null backend): placement on apply, a changed
``node:`` as a migration, an HA VM that Proxmox moved is not drift, destroy of an HA VM, and the
HA objects of PVE 8.4 (groups) and 9.1 (rules) as the plan asks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.core.diff import Migrate, NoOp
from ailab_deploy.pipeline.provision import ProvisionPlan
from tests.lab.conftest import Lab
from tests.lab.provision_fixtures import LAB_OPTIONS, Engine, lab_vm, write_lab_plan
from tests.lab.test_cluster import wait_for

pytestmark = pytest.mark.lab

NODES = ["pve1", "pve2", "pve3"]
TEMPLATE_VMID = 9000


def cluster_lab(make_emulator: Callable[..., Lab], **settings: Any) -> Lab:
    return make_emulator(nodes=NODES, fence_seconds=0.6, ha_tick_seconds=0.1, **settings)


def database(**overrides: Any) -> dict[str, Any]:
    return lab_vm(0, **{"storage": "shared", "ha": {"state": "started"}, **overrides})


def llm(**overrides: Any) -> dict[str, Any]:
    return lab_vm(1, storage="HDDStorage", **overrides)


def apps(**overrides: Any) -> dict[str, Any]:
    return lab_vm(2, **{"storage": "local-lvm", **overrides})


class ClusterEngine(Engine):
    vzdump = False

    def write(self, vms: list[dict[str, Any]]) -> None:
        write_lab_plan(self.lab, self.plan_path.parent, vms, nodes=NODES, vzdump=self.vzdump)

    def where(self) -> dict[int, tuple[str, str]]:
        """VMID -> (node, status) as /cluster/resources lists them, the template left out."""
        found = self.lab.api().cluster.resources.get(type="vm")
        return {int(r["vmid"]): (r["node"], r["status"]) for r in found if int(r["vmid"]) != TEMPLATE_VMID}

    def compute(self) -> ProvisionPlan:
        return self.provisioner().compute()

    def apply(self) -> Any:
        return self.provisioner().apply(LAB_OPTIONS)


def engine_for(lab: Lab, tmp_path: Path, vms: list[dict[str, Any]], *, vzdump: bool = False) -> ClusterEngine:
    engine = ClusterEngine(lab, tmp_path / "plan" / "vms.yaml")
    engine.vzdump = vzdump
    engine.write(vms)
    return engine


def only_noops(plan: ProvisionPlan) -> dict[str, list[str]]:
    return {vm.name: [a.kind for a in vm.actions if not isinstance(a, NoOp)] for vm in plan.vms}


def test_apply_places_new_vms_and_a_changed_node_migrates_offline(
    make_emulator: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = cluster_lab(make_emulator)
    # the database and the LLM apart; the apps VM pinned onto pve3's local storage, which a
    # clone cannot reach from the shared template: cloned beside it, then migrated
    vms = [database(spread="apart"), llm(spread="apart"), apps(node="pve3")]
    engine = engine_for(lab, tmp_path, vms)
    shown = {vm.name: vm.node for vm in engine.compute().vms}
    engine.apply()
    where = engine.where()
    assert {vmid: status for vmid, (_, status) in where.items()} == {
        100: "running",
        101: "running",
        102: "running",
    }
    assert where[102][0] == "pve3"
    assert where[100][0] != where[101][0]
    assert {name: where[100 + i][0] for i, name in enumerate(["postgres", "llm", "apps"])} == shown
    disk = lab.api().nodes("pve3").qemu(102).config.get()["scsi0"]
    assert disk.startswith("local-lvm:")
    assert only_noops(engine.compute()) == {"postgres": [], "llm": [], "apps": []}

    engine.write([database(spread="apart"), llm(spread="apart"), apps(node="pve2")])
    (migrate,) = [a for vm in engine.compute().vms if vm.name == "apps" for a in vm.actions]
    assert isinstance(migrate, Migrate)
    assert (migrate.source, migrate.target, migrate.running) == ("pve3", "pve2", True)
    result = engine.apply()
    assert [vm.error for vm in result.results] == [None, None, None]
    assert engine.where()[102] == ("pve2", "running")
    assert lab.api().nodes("pve2").qemu(102).config.get()["scsi0"] == disk  # the same disk, moved
    migrations = [t for t in lab.api().nodes("pve3").tasks.get() if t["type"] == "qmigrate"]
    assert [(t["id"], t["status"]) for t in migrations] == [("102", "OK")]
    # offline: shut down on pve3 before the migration, started on pve2 after it
    types = [t["type"] for t in lab.api().nodes("pve3").tasks.get(vmid=102)]
    assert "qmshutdown" in types
    assert only_noops(engine.compute()) == {"postgres": [], "llm": [], "apps": []}


def test_an_ha_vm_proxmox_moved_is_not_drift(make_emulator: Callable[..., Lab], tmp_path: Path) -> None:
    lab = cluster_lab(make_emulator)
    engine = engine_for(lab, tmp_path, [database(node="pve1"), llm(node="pve2"), apps(node="pve3")])
    engine.apply()
    assert engine.where()[100] == ("pve1", "running")
    lab.admin("POST", "/nodes/pve1/fail")
    moved = wait_for(lambda: (w := engine.where()[100]) != ("pve1", "running") and w[1] == "running" and w)
    assert moved[0] in ("pve2", "pve3")
    plan = engine.compute()
    assert only_noops(plan) == {"postgres": [], "llm": [], "apps": []}
    assert {vm.name: vm.node for vm in plan.vms}["postgres"] == moved[0]  # shown where it runs
    result = engine.apply()
    assert result.api_calls["writes"] == 0, result.api_calls
    assert engine.where()[100] == moved  # apply did not move it back either

    lab.admin("POST", "/nodes/pve1/recover")
    # failback (the default): the HA manager brings it home to its preferred node, not apply
    wait_for(lambda: engine.where()[100] == ("pve1", "running"))
    assert only_noops(engine.compute()) == {"postgres": [], "llm": [], "apps": []}


def test_destroy_of_an_ha_vm_removes_its_ha_resource_and_rules(
    make_emulator: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = cluster_lab(make_emulator)
    engine = engine_for(lab, tmp_path, [database(node="pve1"), apps(node="pve2")])
    engine.apply()
    assert [r["sid"] for r in lab.api().cluster.ha.resources.get()] == ["vm:100"]
    assert [r["rule"] for r in lab.api().cluster.ha.rules.get()] == ["ailab-postgres"]
    provisioner = engine.provisioner()
    provisioner.destroy(provisioner.destroy_targets(None), LAB_OPTIONS)
    assert engine.where() == {}
    assert lab.api().cluster.ha.resources.get() == []
    assert lab.api().cluster.ha.rules.get() == []


def _by(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {str(item[key]): item for item in items}


def _node_set(text: str) -> set[str]:
    return {part.strip() for part in str(text).split(",") if part.strip()}


@pytest.mark.parametrize("release", ["8.4", "9.1"])
def test_ha_objects_match_the_plan(make_emulator: Callable[..., Lab], tmp_path: Path, release: str) -> None:
    lab = cluster_lab(make_emulator, version=release)
    ha = {
        "state": "started",
        "max_restart": 2,
        "max_relocate": 3,
        "failback": False,
        "nodes": ["pve1", "pve2"],
    }
    vms = [
        database(node="pve1", ha=ha, spread="db"),
        apps(storage="shared", ha={"state": "stopped"}, spread="db"),
    ]
    engine = engine_for(lab, tmp_path, vms)
    engine.apply()
    api = lab.api().cluster.ha
    resources = _by(api.resources.get(), "sid")
    assert set(resources) == {"vm:100", "vm:102"}
    assert (resources["vm:100"]["state"], int(resources["vm:100"]["max_restart"])) == ("started", 2)
    assert int(resources["vm:100"]["max_relocate"]) == 3
    assert resources["vm:102"]["state"] == "stopped"
    if release == "8.4":
        groups = _by(api.groups.get(), "group")
        group = groups[resources["vm:100"]["group"]]
        # the pinned node preferred (a higher priority), restricted to the listed nodes, no failback
        assert _node_set(group["nodes"]) == {"pve1:2", "pve2:1"}
        assert (int(group["restricted"]), int(group["nofailback"])) == (1, 1)
        assert "group" not in resources["vm:102"]  # may run anywhere: no group
        assert len(groups) == 1
    else:
        rules = list(api.rules.get())
        affinity = [r for r in rules if r["type"] == "node-affinity"]
        apart = [r for r in rules if r["type"] == "resource-affinity"]
        assert [
            (_node_set(r["resources"]), _node_set(r["nodes"]), int(r.get("strict", 0))) for r in affinity
        ] == [({"vm:100"}, {"pve1:2", "pve2:1"}, 1)]
        assert [(_node_set(r["resources"]), r["affinity"]) for r in apart] == [
            ({"vm:100", "vm:102"}, "negative")
        ]
        assert int(resources["vm:100"]["failback"]) == 0
    # an unchanged plan changes nothing in the HA config
    assert engine.apply().api_calls["writes"] == 0


def test_the_backup_job_covers_the_vms_of_every_node(
    make_emulator: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = cluster_lab(make_emulator)
    root = lab.api()
    # a job made when the lab had one node: it names the node, so PVE backs up only pve1's VMs
    root.cluster.backup.post(
        id="ailab-pve1", vmid="100", node="pve1", storage="HDDStorage", schedule="sat 02:00"
    )
    engine = engine_for(
        lab, tmp_path, [database(node="pve1"), llm(node="pve2"), apps(node="pve3")], vzdump=True
    )
    engine.provisioner().apply(LAB_OPTIONS)
    missed = {int(g["vmid"]) for g in root.cluster("backup-info")("not-backed-up").get()}
    assert missed == set()
    (job,) = root.cluster.backup.get()
    assert job["id"] == "ailab-pve1" and "node" not in job
    assert {int(v) for v in str(job["vmid"]).split(",")} == {100, 101, 102}
    assert engine.provisioner().apply(LAB_OPTIONS).api_calls["writes"] == 0

    # what a job naming a node would have left out, as PVE's VZDump selects guests
    root.cluster.backup("ailab-pve1").put(node="pve1")
    missed = {int(g["vmid"]) for g in root.cluster("backup-info")("not-backed-up").get()}
    assert missed == {101, 102}


def test_each_node_backs_up_its_own_vms_and_a_lost_vm_comes_back_where_its_archive_is(
    make_emulator: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = cluster_lab(make_emulator, clock_speed=600.0)
    engine = engine_for(
        lab, tmp_path, [database(node="pve1"), llm(node="pve2"), apps(node="pve3")], vzdump=True
    )
    engine.apply()
    upids = engine.provisioner().back_up_now(LAB_OPTIONS)
    assert sorted(upid.split(":")[1] for upid in upids) == NODES  # each node runs its part
    root = lab.api()
    for upid in upids:
        assert lab.wait(upid)["exitstatus"] == "OK"
    pve1_log = [line["t"] for line in root.nodes("pve1").tasks(upids[0]).log.get(limit=500)]
    assert "INFO: skip external VMs: 101, 102" in pve1_log
    archives = engine.provisioner().backup_archives()
    # the job's storage is each node's own: an archive is read on the node that wrote it
    assert {int(a["vmid"]): a["node"] for a in archives} == {100: "pve1", 101: "pve2", 102: "pve3"}
    storage = str(archives[0]["storage"])
    on_pve1 = root.nodes("pve1").storage(storage).content.get(content="backup")
    assert {int(item["vmid"]) for item in on_pve1} == {100}

    wait_for(lambda: root.nodes("pve2").qemu(101).status.stop.post())
    wait_for(lambda: engine.where()[101][1] == "stopped")
    assert lab.wait(root.nodes("pve2").qemu(101).delete())["exitstatus"] == "OK"
    assert 101 not in engine.where()
    result = engine.provisioner().restore("llm", None, LAB_OPTIONS)
    assert result.archive == next(a["volid"] for a in archives if int(a["vmid"]) == 101)
    assert engine.where()[101] == ("pve2", "running")
    assert only_noops(engine.compute()) == {"postgres": [], "llm": [], "apps": []}
