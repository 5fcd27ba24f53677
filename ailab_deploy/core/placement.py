"""Which cluster node each VM runs on: the plan's pins, where VMs already run, then a fit.

Proxmox runs the VMs, migrates them and restarts them under HA; this only decides where a new
VM goes and which plan edits mean a migration. Placement is stable: a VM that exists stays on
its node unless the plan pins it elsewhere, and an HA VM that Proxmox moved is not drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ailab_deploy.core.problems import Problem
from ailab_deploy.core.units import GIB, MIB, format_bytes


@dataclass(frozen=True)
class StorageRoom:
    capacity: int  # bytes
    shared: bool = False


@dataclass(frozen=True)
class NodeRoom:
    """What one node offers VMs: its threads, its RAM after the host reserve, its storages."""

    name: str
    threads: int
    socket_threads: int
    memory_mib: int
    cpu_ratio_max: float
    storages: Mapping[str, StorageRoom]
    online: bool = True


@dataclass(frozen=True)
class VmNeed:
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    storage: str
    node: str | None = None  # pinned by the plan
    spread: str | None = None  # VMs of one group go to different nodes
    one_socket: bool = False  # the LLM: its threads stay within one socket
    ha: bool = False
    allowed: frozenset[str] = frozenset()  # nodes it may run on; empty: any


@dataclass(frozen=True)
class Placement:
    vm: str
    node: str
    reason: str


@dataclass(frozen=True)
class Move:
    """A migration the plan asks for: offline unless the user asks for online."""

    vm: str
    source: str
    target: str
    reason: str


@dataclass
class _Usage:
    vcpus: dict[str, int] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    disk: dict[tuple[str | None, str], int] = field(default_factory=dict)  # (node or None if shared, storage)
    groups: dict[tuple[str, str], int] = field(default_factory=dict)  # (node, spread group)

    def add(self, node: NodeRoom, vm: VmNeed) -> None:
        self.vcpus[node.name] = self.vcpus.get(node.name, 0) + vm.vcpus
        self.memory[node.name] = self.memory.get(node.name, 0) + vm.memory_mib
        key = _disk_key(node, vm.storage)
        self.disk[key] = self.disk.get(key, 0) + vm.disk_gib * GIB
        if vm.spread:
            self.groups[(node.name, vm.spread)] = self.groups.get((node.name, vm.spread), 0) + 1

    def free_memory(self, node: NodeRoom) -> int:
        return node.memory_mib - self.memory.get(node.name, 0)


def _disk_key(node: NodeRoom, storage: str) -> tuple[str | None, str]:
    room = node.storages.get(storage)
    return (None if room is not None and room.shared else node.name, storage)


def why_not(node: NodeRoom, vm: VmNeed, usage: _Usage) -> str:
    """Why the VM does not fit on the node now; empty when it does."""
    if not node.online:
        return "offline"
    if vm.allowed and node.name not in vm.allowed:
        return "not among the VM's allowed nodes"
    if vm.one_socket and vm.vcpus > node.socket_threads:
        return f"{vm.vcpus} vCPUs exceed one socket's {node.socket_threads} threads"
    if vm.vcpus > node.threads:
        return f"{vm.vcpus} vCPUs exceed its {node.threads} threads"
    free = usage.free_memory(node)
    if vm.memory_mib > free:
        return f"{format_bytes(free * MIB)} RAM left, {format_bytes(vm.memory_mib * MIB)} needed"
    vcpus = usage.vcpus.get(node.name, 0) + vm.vcpus
    if vcpus > node.threads * node.cpu_ratio_max:
        return (
            f"{vcpus} vCPUs on {node.threads} threads would be "
            f"{vcpus / node.threads:.2f} per thread, above {node.cpu_ratio_max}"
        )
    room = node.storages.get(vm.storage)
    if room is None:
        return f"no storage {vm.storage!r}"
    used = usage.disk.get(_disk_key(node, vm.storage), 0)
    if used + vm.disk_gib * GIB > room.capacity:
        return f"{format_bytes(room.capacity - used)} left on {vm.storage}, {vm.disk_gib} GiB needed"
    return ""


def place(
    nodes: Sequence[NodeRoom], vms: Sequence[VmNeed], running_on: Mapping[str, str]
) -> tuple[list[Placement], list[Problem]]:
    """Each VM's node, in plan order, and what stops a VM from having one.

    ``running_on`` is where Proxmox says each existing VM runs (``/cluster/resources``).
    Pinned VMs are counted first, then VMs that exist, then new VMs, largest memory first,
    so the outcome does not depend on the order VMs are listed in.
    """
    by_name = {node.name: node for node in nodes}
    index = {vm.name: position for position, vm in enumerate(vms)}
    usage = _Usage()
    chosen: dict[str, Placement] = {}
    problems: list[Problem] = []

    def settle(vm: VmNeed, node: NodeRoom, reason: str) -> None:
        misfit = why_not(replace(node, online=True), replace(vm, allowed=frozenset()), usage)
        if misfit:
            problems.append(
                Problem(("vms", index[vm.name], "node"), f"{vm.name} does not fit on {node.name}: {misfit}")
            )
        usage.add(node, vm)
        chosen[vm.name] = Placement(vm.name, node.name, reason)

    pinned = [vm for vm in vms if vm.node is not None]
    for vm in pinned:
        assert vm.node is not None
        if vm.node not in by_name:
            known = ", ".join(sorted(by_name))
            problems.append(
                Problem(
                    ("vms", index[vm.name], "node"),
                    f"node {vm.node!r} is not one of the plan's nodes ({known})",
                )
            )
            continue
        current = running_on.get(vm.name)
        if vm.ha and current in by_name and current != vm.node and _allowed(vm, current):
            settle(vm, by_name[current], f"HA runs it on {current}; {vm.node} is its preferred node")
        else:
            settle(vm, by_name[vm.node], "pinned by node:")

    existing = [vm for vm in vms if vm.node is None and vm.name in running_on]
    for vm in existing:
        current = running_on[vm.name]
        if current in by_name:
            settle(vm, by_name[current], "runs there now")
        else:
            problems.append(
                Problem(
                    ("vms", index[vm.name], "node"),
                    f"{vm.name} runs on {current}, which is not one of the plan's nodes: "
                    "add the node or pin the VM",
                )
            )

    fresh = [vm for vm in vms if vm.node is None and vm.name not in running_on]
    for vm in sorted(fresh, key=lambda vm: (-vm.memory_mib, -vm.vcpus, vm.name)):
        placement, misfits = _fit(nodes, vm, usage)
        if placement is None:
            problems.append(Problem(("vms", index[vm.name]), f"{vm.name} fits on no node ({misfits})"))
            continue
        usage.add(by_name[placement.node], vm)
        chosen[vm.name] = placement

    problems.extend(_spread_findings(vms, chosen, index))
    return [chosen[vm.name] for vm in vms if vm.name in chosen], problems


def _allowed(vm: VmNeed, node: str) -> bool:
    return not vm.allowed or node in vm.allowed


def _fit(nodes: Iterable[NodeRoom], vm: VmNeed, usage: _Usage) -> tuple[Placement | None, str]:
    """The best node for a new VM, or why no node takes it ("pve1: ...; pve2: ...")."""
    misfits: list[str] = []
    fitting: list[NodeRoom] = []
    for node in nodes:
        misfit = why_not(node, vm, usage)
        if misfit:
            misfits.append(f"{node.name}: {misfit}")
        else:
            fitting.append(node)
    if not fitting:
        return None, "; ".join(misfits)

    def rank(node: NodeRoom) -> tuple[int, int, int, str]:
        group = usage.groups.get((node.name, vm.spread), 0) if vm.spread else 0
        return (group, -usage.free_memory(node), usage.vcpus.get(node.name, 0), node.name)

    best = min(fitting, key=rank)
    free = usage.free_memory(best) - vm.memory_mib
    reason = f"most RAM left afterwards ({format_bytes(free * MIB)}) of {len(fitting)} node(s) it fits on"
    if vm.spread and len(fitting) > 1:
        reason += f", spread group {vm.spread!r}"
    return Placement(vm.name, best.name, reason), ""


def _spread_findings(
    vms: Sequence[VmNeed], chosen: Mapping[str, Placement], index: Mapping[str, int]
) -> Iterable[Problem]:
    shared: dict[tuple[str, str], list[str]] = {}
    for vm in vms:
        if vm.spread and vm.name in chosen:
            shared.setdefault((vm.spread, chosen[vm.name].node), []).append(vm.name)
    for (group, node), names in shared.items():
        if len(names) > 1:
            yield Problem(
                ("vms", index[names[-1]], "spread"),
                f"spread group {group!r}: {', '.join(names)} share node {node} (no other node fits)",
                "warning",
            )


def moves(
    vms: Sequence[VmNeed], placements: Sequence[Placement], running_on: Mapping[str, str]
) -> list[Move]:
    """Migrations that bring existing VMs where the plan places them.

    An HA VM running on any node it is allowed on stays: Proxmox put it there.
    """
    need = {vm.name: vm for vm in vms}
    found: list[Move] = []
    for placement in placements:
        current = running_on.get(placement.vm)
        if current is None or current == placement.node:
            continue
        vm = need[placement.vm]
        if vm.ha and _allowed(vm, current):
            continue
        found.append(Move(vm.name, current, placement.node, f"the plan places it on {placement.node}"))
    return found


def ha_capacity_findings(
    nodes: Sequence[NodeRoom], vms: Sequence[VmNeed], placements: Sequence[Placement]
) -> list[Problem]:
    """Warnings for each node whose loss would leave an HA VM with nowhere to restart."""
    where = {placement.vm: placement.node for placement in placements}
    index = {vm.name: position for position, vm in enumerate(vms)}
    findings: list[Problem] = []
    for lost in nodes:
        survivors = [replace(node, online=node.online and node.name != lost.name) for node in nodes]
        by_name = {node.name: node for node in survivors}
        usage = _Usage()
        for vm in vms:
            node = where.get(vm.name)
            if node is not None and node != lost.name:
                usage.add(by_name[node], vm)
        stranded = [vm for vm in vms if vm.ha and where.get(vm.name) == lost.name]
        for vm in sorted(stranded, key=lambda vm: (-vm.memory_mib, vm.name)):
            placement, misfits = _fit(survivors, vm, usage)
            if placement is None:
                message = f"if {lost.name} fails, HA cannot restart {vm.name}: {misfits}"
                findings.append(Problem(("vms", index[vm.name], "ha"), message, "warning"))
            else:
                usage.add(by_name[placement.node], vm)
    return findings
