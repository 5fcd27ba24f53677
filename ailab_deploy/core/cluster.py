"""The plan seen as a cluster: each node's room, each VM's needs, and where each VM goes.

A one-node plan is a one-node cluster, so everything that asks "which node?" asks here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ailab_deploy.core.placement import NodeRoom, Placement, StorageRoom, VmNeed, place
from ailab_deploy.core.plan import VM, ClusterNode, Host, Plan
from ailab_deploy.core.problems import Problem

PlanPath = tuple[str | int, ...]


def hardware_path(plan: Plan, index: int) -> PlanPath:
    """Where node ``index``'s hardware is written in the plan."""
    return ("proxmox", "nodes", index, "hardware") if plan.proxmox.nodes else ("host",)


def room_of(node: ClusterNode) -> NodeRoom:
    host = node.hardware
    return NodeRoom(
        name=node.name,
        threads=host.sockets * host.cores_per_socket * host.threads_per_core,
        socket_threads=host.cores_per_socket * host.threads_per_core,
        memory_mib=host.memory - host.reserved_memory,
        cpu_ratio_max=host.cpu_oversubscription_max,
        storages={pool.name: StorageRoom(pool.capacity, pool.shared) for pool in host.storage},
    )


def need_of(vm: VM) -> VmNeed:
    return VmNeed(
        name=vm.name,
        vcpus=vm.vcpus,
        memory_mib=vm.memory,
        disk_gib=vm.disk,
        storage=vm.storage,
        node=vm.node,
        spread=vm.spread,
        one_socket="llm" in vm.roles,
        ha=vm.ha is not None and vm.ha.state != "ignored",
        allowed=frozenset(vm.ha.nodes) if vm.ha else frozenset(),
    )


def placements(
    plan: Plan, running_on: Mapping[str, str] | None = None
) -> tuple[list[Placement], list[Problem]]:
    """Each VM's node (see ``placement.place``); ``running_on`` maps VM names to where they run."""
    return place([room_of(node) for node in plan.nodes], [need_of(vm) for vm in plan.vms], running_on or {})


def hardware_of(plan: Plan, vm: VM) -> Host:
    """The hardware of the node the VM is placed on (the first node's when it fits nowhere)."""
    node = node_of(plan, vm)
    return (node or plan.nodes[0]).hardware


def node_of(plan: Plan, vm: VM, running_on: Mapping[str, str] | None = None) -> ClusterNode | None:
    """The node the VM runs on, or would be placed on."""
    chosen, _ = placements(plan, running_on)
    name = next((placement.node for placement in chosen if placement.vm == vm.name), None)
    return plan.node(name) if name else None


def llm_and_other_hardware(plan: Plan) -> tuple[Host, list[Host]]:
    """The hardware of the LLM's node (the first node without an LLM VM), and of the other nodes."""
    llm_vms = plan.vms_with_role("llm")
    home = (node_of(plan, llm_vms[0]) if llm_vms else None) or plan.nodes[0]
    return home.hardware, [node.hardware for node in plan.nodes if node.name != home.name]


@dataclass(frozen=True)
class NodeUse:
    """What the placed VMs take of one node."""

    node: str
    vms: tuple[str, ...]
    vcpus: int
    threads: int
    memory_mib: int
    available_mib: int  # installed minus the host reserve


def node_use(plan: Plan, chosen: list[Placement]) -> list[NodeUse]:
    where = {placement.vm: placement.node for placement in chosen}
    result = []
    for node in plan.nodes:
        room = room_of(node)
        hosted = [vm for vm in plan.vms if where.get(vm.name) == node.name]
        result.append(
            NodeUse(
                node=node.name,
                vms=tuple(vm.name for vm in hosted),
                vcpus=sum(vm.vcpus for vm in hosted),
                threads=room.threads,
                memory_mib=sum(vm.memory for vm in hosted),
                available_mib=room.memory_mib,
            )
        )
    return result
