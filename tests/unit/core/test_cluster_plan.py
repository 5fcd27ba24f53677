"""A cluster plan: proxmox.nodes, per-node capacity, HA rules, and sizing on the LLM's node."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ailab_deploy.core.cluster import node_of, placements
from ailab_deploy.core.loader import LoadedPlan, PlanError, load_plan_text
from ailab_deploy.core.sizing import size_plan
from ailab_deploy.core.validate import check_plan
from tests.unit.core.cluster_plans import cluster, reference


def load(tree: dict[str, Any]) -> LoadedPlan:
    return load_plan_text(yaml.safe_dump(tree, sort_keys=False))


def errors_of(tree: dict[str, Any]) -> list[str]:
    with pytest.raises(PlanError) as raised:
        load(tree)
    return [str(problem) for problem in raised.value.problems]


def test_the_one_node_form_is_a_one_node_cluster() -> None:
    plan = load(reference()).plan
    assert [node.name for node in plan.nodes] == ["pve"]
    assert plan.nodes[0].hardware == plan.host
    chosen, problems = placements(plan)
    assert {p.node for p in chosen} == {"pve"} and len(chosen) == len(plan.vms)
    assert problems == []


def test_a_three_node_plan_places_every_vm() -> None:
    plan = load(cluster(reference())).plan
    chosen, problems = placements(plan)
    assert [p for p in problems if p.severity == "error"] == []
    where = {p.vm: p.node for p in chosen}
    # The LLM (64 GiB) takes the node with the most RAM; the other two each take an empty node.
    assert where["ollama"] == "pve1"
    assert sorted([where["postgres"], where["devapps"]]) == ["pve2", "pve3"]
    use = {node.node: node for node in size_plan(plan).nodes}
    assert use["pve1"].vms == ("ollama",)
    assert use["pve1"].memory_mib == 64 * 1024
    assert use["pve1"].available_mib == (126 - 6) * 1024  # installed minus the reserve
    assert sum(node.vcpus for node in use.values()) == sum(vm.vcpus for vm in plan.vms)


def test_sizing_uses_the_hardware_of_the_llm_node() -> None:
    tree = cluster(reference())
    tree["proxmox"]["nodes"][0]["hardware"]["memory_mts"] = 2400
    tree["proxmox"]["nodes"][1]["hardware"]["memory_mts"] = 1600
    plan = load(tree).plan
    llm_vm = plan.vms_with_role("llm")[0]
    node = node_of(plan, llm_vm)
    assert node is not None and node.name == "pve1"
    sizing = size_plan(plan)
    assert sizing.llm is not None
    one_node = size_plan(load(reference()).plan)
    assert one_node.llm is not None
    # Same CPU and channels, DDR4-2400 instead of -2133: bandwidth scales with the transfer rate.
    assert sizing.llm.expected_tokens_per_second / one_node.llm.expected_tokens_per_second == pytest.approx(
        2400 / 2133
    )
    # An idle month is every node's idle power.
    assert sizing.idle.idle_watts == pytest.approx(3 * one_node.idle.idle_watts)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t["proxmox"].update(node="pve"),
            "proxmox.node: give proxmox.node or proxmox.nodes, not both",
        ),
        (lambda t: t.update(host=t["proxmox"]["nodes"][0]["hardware"]), "remove host"),
        (lambda t: t["proxmox"]["nodes"][1].update(name="pve1"), "node 'pve1' is declared twice"),
        (
            lambda t: t["vms"][0].update(node="pve7"),
            "node 'pve7' is not one of the plan's nodes (pve1, pve2, pve3)",
        ),
        (
            lambda t: t["vms"][0].update(storage="local-lvm", ha={"state": "started"}),
            "HA needs the disk on shared storage, and 'local-lvm' is local",
        ),
        (
            lambda t: t["vms"][0].update(ha={"nodes": ["pve1", "pve9"]}),
            "vms[0].ha.nodes[1]: node 'pve9' is not one of the plan's nodes",
        ),
        (
            lambda t: [n["hardware"].update(memory="40G") for n in t["proxmox"]["nodes"]],
            "ollama fits on no node (pve1: 34.00 GiB RAM left, 64.00 GiB needed;",
        ),
    ],
)
def test_a_broken_cluster_plan_names_the_field(edit: Any, expected: str) -> None:
    tree = cluster(reference())
    edit(tree)
    found = errors_of(tree)
    assert any(expected in line for line in found), found


def test_a_single_node_form_missing_its_node_says_so() -> None:
    tree = reference()
    del tree["proxmox"]["node"]
    assert any("proxmox.node: required key is missing" in line for line in errors_of(tree))


def test_ha_capacity_is_a_warning_when_a_node_loss_strands_a_vm() -> None:
    tree = cluster(reference(), memories=("126G", "24G", "24G"))
    tree["vms"][0]["ha"] = {"state": "started"}  # postgres, 8 GiB, on an NFS disk
    tree["vms"][2]["memory"] = "12G"
    loaded = load(tree)
    warnings = [p for p in check_plan(loaded.plan) if p.severity == "warning"]
    messages = [p.message for p in warnings if p.path[-1] == "ha"]
    assert messages == []  # 8 GiB restarts on any surviving node
    tree["vms"][0]["memory"] = "19G"  # more than pve2 or pve3 can take
    warnings = [p for p in check_plan(load(tree).plan) if p.severity == "warning" and p.path[-1] == "ha"]
    assert len(warnings) == 1
    assert warnings[0].message.startswith("if pve")
    assert "HA cannot restart postgres" in warnings[0].message
