"""Placement on a cluster: fit, spread, the LLM's socket, stability, migrations and HA capacity."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ailab_deploy.core.placement import (
    NodeRoom,
    StorageRoom,
    VmNeed,
    ha_capacity_findings,
    moves,
    place,
)

GIB = 1024**3


def node(
    name: str, memory_gib: int = 64, threads: int = 16, socket_threads: int = 8, **extra: object
) -> NodeRoom:
    storages = {"local-lvm": StorageRoom(500 * GIB), "shared": StorageRoom(2000 * GIB, shared=True)}
    return NodeRoom(
        name=name,
        threads=threads,
        socket_threads=socket_threads,
        memory_mib=memory_gib * 1024,
        cpu_ratio_max=2.0,
        storages=storages,
        **extra,  # type: ignore[arg-type]
    )


def vm(name: str, memory_gib: int = 4, vcpus: int = 2, disk: int = 20, **extra: object) -> VmNeed:
    return VmNeed(
        name=name, vcpus=vcpus, memory_mib=memory_gib * 1024, disk_gib=disk, storage="local-lvm", **extra
    )  # type: ignore[arg-type]


THREE = [node("pve1"), node("pve2"), node("pve3")]


@pytest.mark.parametrize(
    ("nodes", "vms", "running_on", "expected"),
    [
        pytest.param(
            THREE,
            [vm("db", 8), vm("llm", 16), vm("apps", 4)],
            {},
            {"llm": "pve1", "db": "pve2", "apps": "pve3"},
            id="largest first, most RAM left",
        ),
        pytest.param(
            THREE, [vm("db", node="pve3"), vm("apps")], {}, {"db": "pve3", "apps": "pve1"}, id="pinned"
        ),
        pytest.param(
            THREE,
            [vm("db"), vm("apps")],
            {"db": "pve3"},
            {"db": "pve3", "apps": "pve1"},
            id="an existing VM stays where it runs",
        ),
        pytest.param(
            [node("small", 8), node("big", 128)], [vm("db", 16)], {}, {"db": "big"}, id="fits by RAM"
        ),
        pytest.param(
            THREE,
            [vm("web1", spread="web"), vm("web2", spread="web"), vm("web3", spread="web")],
            {},
            {"web1": "pve1", "web2": "pve2", "web3": "pve3"},
            id="spread over nodes",
        ),
        pytest.param(
            [node("pve1", 64, socket_threads=4), node("pve2", 32, socket_threads=12)],
            [vm("llm", 16, vcpus=8, one_socket=True)],
            {},
            {"llm": "pve2"},
            id="the LLM within one socket",
        ),
        pytest.param(
            [node("pve1", 64, online=False), node("pve2", 32)],
            [vm("db")],
            {},
            {"db": "pve2"},
            id="offline nodes take nothing new",
        ),
        pytest.param(
            THREE, [vm("db", allowed=frozenset({"pve2", "pve3"}))], {}, {"db": "pve2"}, id="allowed nodes"
        ),
    ],
)
def test_placement(
    nodes: list[NodeRoom], vms: list[VmNeed], running_on: dict[str, str], expected: dict[str, str]
) -> None:
    placements, problems = place(nodes, vms, running_on)
    assert [p for p in problems if p.severity == "error"] == []
    assert {p.vm: p.node for p in placements} == expected


def test_an_unchanged_plan_never_moves_a_vm() -> None:
    plan = [vm("db", 8), vm("llm", 16), vm("apps", 4), vm("web1", spread="web"), vm("web2", spread="web")]
    first, _ = place(THREE, plan, {})
    running_on = {p.vm: p.node for p in first}
    # A new node with more room joins: nothing moves, and a new VM goes to the new node.
    bigger = [*THREE, node("pve4", 256)]
    second, problems = place(bigger, [*plan, vm("extra")], running_on)
    assert problems == []
    assert {p.vm: p.node for p in second if p.vm in running_on} == running_on
    assert {p.vm: p.node for p in second}["extra"] == "pve4"
    assert moves(plan, second, running_on) == []


def test_placement_does_not_depend_on_the_order_of_the_vms() -> None:
    plan = [vm("a", 8), vm("b", 8), vm("c", 16), vm("d", 2)]
    forward, _ = place(THREE, plan, {})
    backward, _ = place(THREE, list(reversed(plan)), {})
    assert {p.vm: p.node for p in forward} == {p.vm: p.node for p in backward}


@pytest.mark.parametrize(
    ("nodes", "vms", "message"),
    [
        ([node("pve1", 8)], [vm("db", 16)], "db fits on no node (pve1: 8.00 GiB RAM left, 16.00 GiB needed)"),
        (
            [node("pve1", socket_threads=4)],
            [vm("llm", vcpus=8, one_socket=True)],
            "llm fits on no node (pve1: 8 vCPUs exceed one socket's 4 threads)",
        ),
        (
            [node("pve1")],
            [vm("db", disk=600)],
            "db fits on no node (pve1: 500.00 GiB left on local-lvm, 600 GiB needed)",
        ),
        ([node("pve1")], [vm("db", node="pve9")], "node 'pve9' is not one of the plan's nodes (pve1)"),
        (
            [node("pve1", 8)],
            [vm("db", 16, node="pve1")],
            "db does not fit on pve1: 8.00 GiB RAM left, 16.00 GiB needed",
        ),
        (
            [node("pve1", threads=4)],
            [vm("a", vcpus=4), vm("b", vcpus=4), vm("c", vcpus=4)],
            "c fits on no node (pve1: 12 vCPUs on 4 threads would be 3.00 per thread, above 2.0)",
        ),
    ],
)
def test_what_stops_a_placement_is_named(nodes: list[NodeRoom], vms: list[VmNeed], message: str) -> None:
    _, problems = place(nodes, vms, {})
    assert [(p.severity, p.message) for p in problems] == [("error", message)]


def test_shared_storage_is_counted_once_across_nodes() -> None:
    nodes = [replace(n, storages={"shared": StorageRoom(100 * GIB, shared=True)}) for n in THREE]
    vms = [replace(vm(name, disk=40), storage="shared") for name in ("a", "b", "c")]
    _, problems = place(nodes, vms, {})
    assert [p.message for p in problems] == [
        "c fits on no node (pve1: 20.00 GiB left on shared, 40 GiB needed; "
        "pve2: 20.00 GiB left on shared, 40 GiB needed; pve3: 20.00 GiB left on shared, 40 GiB needed)"
    ]


def test_a_spread_group_that_cannot_spread_is_a_warning() -> None:
    placements, problems = place(
        [node("pve1"), node("pve2")], [vm(f"web{i}", spread="web") for i in (1, 2, 3)], {}
    )
    assert len(placements) == 3
    assert [(p.severity, p.path[-1]) for p in problems] == [("warning", "spread")]
    assert "share node" in problems[0].message


def test_a_pinned_vm_elsewhere_is_a_migration() -> None:
    plan = [vm("db", node="pve2"), vm("apps")]
    placements, _ = place(THREE, plan, {"db": "pve1", "apps": "pve1"})
    found = moves(plan, placements, {"db": "pve1", "apps": "pve1"})
    assert [(m.vm, m.source, m.target) for m in found] == [("db", "pve1", "pve2")]


def test_an_ha_vm_moved_by_proxmox_is_not_drift() -> None:
    plan = [vm("db", node="pve1", ha=True, allowed=frozenset({"pve1", "pve2"})), vm("apps")]
    running_on = {"db": "pve2", "apps": "pve3"}
    placements, problems = place(THREE, plan, running_on)
    assert problems == []
    assert {p.vm: p.node for p in placements}["db"] == "pve2"
    assert moves(plan, placements, running_on) == []


def test_an_ha_vm_outside_its_allowed_nodes_is_moved_back() -> None:
    plan = [vm("db", node="pve1", ha=True, allowed=frozenset({"pve1", "pve2"}))]
    placements, _ = place(THREE, plan, {"db": "pve3"})
    assert [(m.source, m.target) for m in moves(plan, placements, {"db": "pve3"})] == [("pve3", "pve1")]


@pytest.mark.parametrize(
    ("memory_gib", "warned"),
    [(64, []), (40, ["if pve1 fails, HA cannot restart db1", "if pve2 fails, HA cannot restart db2"])],
)
def test_ha_capacity_when_any_one_node_is_down(memory_gib: int, warned: list[str]) -> None:
    nodes = [node("pve1", memory_gib), node("pve2", memory_gib)]
    plan = [vm("db1", 24, ha=True), vm("db2", 24, ha=True)]
    placements, _ = place(nodes, plan, {})
    assert sorted({p.vm: p.node for p in placements}.values()) == ["pve1", "pve2"]
    findings = ha_capacity_findings(nodes, plan, placements)
    assert all(f.severity == "warning" for f in findings)
    assert sorted(f.message.split(":")[0] for f in findings) == sorted(warned)
