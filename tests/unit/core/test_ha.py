"""HA objects from the plan, and the calls that reconcile PVE's HA config, per release."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ailab_deploy.core.ha import COMMENT, ha_calls, wanted_ha
from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.core.plan import Plan
from tests.unit.core.cluster_plans import cluster, reference


def plan_with(**per_vm: dict[str, Any]) -> Plan:
    tree = cluster(reference())
    for vm in tree["vms"]:
        vm.update(per_vm.get(vm["name"], {}))
    return load_plan_text(yaml.safe_dump(tree, sort_keys=False)).plan


def calls(
    plan: Plan, release: str, resources: list[dict[str, Any]], objects: list[dict[str, Any]]
) -> list[tuple[str, str, dict[str, Any]]]:
    found = ha_calls(wanted_ha(plan, release), resources, objects, {"vm:100", "vm:101", "vm:102"}, release)
    return [(call.method, call.path, dict(call.params)) for call in found]


def test_9x_a_pinned_ha_vm_gets_a_resource_then_a_node_affinity_rule() -> None:
    plan = plan_with(postgres={"node": "pve2", "ha": {"max_restart": 2}})
    resource = {"sid": "vm:100", "state": "started", "max_restart": "2", "max_relocate": "1", "failback": "1"}
    rule = {"rule": "ailab-postgres", "type": "node-affinity", "resources": "vm:100"}
    assert calls(plan, "9.1", [], []) == [
        ("POST", "cluster/ha/resources", {**resource, "comment": COMMENT}),
        (
            "POST",
            "cluster/ha/rules",
            {**rule, "nodes": "pve1:1,pve2:2,pve3:1", "strict": "0", "comment": COMMENT},
        ),
    ]


def test_84_uses_a_group_that_exists_before_its_resource() -> None:
    plan = plan_with(postgres={"node": "pve2", "ha": {"nodes": ["pve2", "pve3"], "failback": False}})
    group = {"group": "ailab-postgres", "nodes": "pve2:2,pve3:1", "restricted": "1", "nofailback": "1"}
    resource = {"sid": "vm:100", "state": "started", "max_restart": "1", "max_relocate": "1"}
    assert calls(plan, "8.4", [], []) == [
        ("POST", "cluster/ha/groups", {**group, "comment": COMMENT}),
        ("POST", "cluster/ha/resources", {**resource, "group": "ailab-postgres", "comment": COMMENT}),
    ]


def test_a_config_that_matches_needs_no_call_whatever_order_pve_lists() -> None:
    plan = plan_with(postgres={"node": "pve2", "ha": {}})
    resources = [
        {"sid": "vm:100", "state": "started", "max_restart": 1, "max_relocate": 1, "failback": 1,
         "comment": COMMENT, "type": "vm", "digest": "x"}
    ]  # fmt: skip
    rules = [
        {"rule": "ailab-postgres", "type": "node-affinity", "resources": "vm:100",
         "nodes": "pve3:1,pve1:1,pve2:2", "strict": 0, "comment": COMMENT}
    ]  # fmt: skip
    assert calls(plan, "9.1", resources, rules) == []


def test_changes_update_in_place_and_the_rule_keeps_its_type() -> None:
    plan = plan_with(postgres={"node": "pve3", "ha": {"state": "stopped"}})
    resources = [{"sid": "vm:100", "state": "started", "max_restart": 1, "max_relocate": 1, "failback": 1,
                  "comment": COMMENT}]  # fmt: skip
    rules = [{"rule": "ailab-postgres", "type": "node-affinity", "resources": "vm:100",
              "nodes": "pve1:1,pve2:2,pve3:1", "strict": 0, "comment": COMMENT}]  # fmt: skip
    assert calls(plan, "9.1", resources, rules) == [
        ("PUT", "cluster/ha/resources/vm:100", {"state": "stopped"}),
        (
            "PUT",
            "cluster/ha/rules/ailab-postgres",
            {"nodes": "pve1:1,pve2:1,pve3:2", "type": "node-affinity"},
        ),
    ]


def test_ha_removed_from_the_plan_removes_only_what_this_tool_made() -> None:
    plan = plan_with()
    resources = [
        {"sid": "vm:100", "state": "started", "comment": COMMENT},
        {"sid": "vm:101", "state": "started", "comment": "the user's own"},
        {"sid": "vm:555", "state": "started", "comment": COMMENT},  # not a VM this tool manages
    ]
    rules = [
        {"rule": "ailab-postgres", "type": "node-affinity", "comment": COMMENT},
        {"rule": "mine", "type": "node-affinity", "comment": "hand made"},
    ]
    assert calls(plan, "9.1", resources, rules) == [
        ("DELETE", "cluster/ha/rules/ailab-postgres", {}),
        ("DELETE", "cluster/ha/resources/vm:100", {}),
    ]


def test_9x_keeps_a_spread_group_of_ha_vms_apart() -> None:
    plan = plan_with(postgres={"ha": {}, "spread": "core"}, devapps={"ha": {}, "spread": "core"})
    wanted = wanted_ha(plan, "9.1")
    assert wanted.rules["ailab-spread-core"] == {
        "type": "resource-affinity",
        "affinity": "negative",
        "resources": "vm:100,vm:102",
        "comment": COMMENT,
    }
    assert wanted_ha(plan, "8.4").rules == {}  # 8.4 has no resource affinity


@pytest.mark.parametrize("release", ["8.4", "9.1"])
def test_an_unpinned_vm_without_node_list_needs_no_group_or_rule(release: str) -> None:
    wanted = wanted_ha(plan_with(postgres={"ha": {}}), release)
    assert list(wanted.resources) == ["vm:100"]
    assert wanted.groups == {} and wanted.rules == {}


@pytest.mark.parametrize("release", ["8.4", "9.1"])
def test_only_existing_vms_get_ha_objects(release: str) -> None:
    """After a destroy the plan still asks for HA, but PVE refuses a resource for a missing VM."""
    plan = plan_with(postgres={"node": "pve2", "ha": {}}, devapps={"ha": {}})
    assert sorted(wanted_ha(plan, release).resources) == ["vm:100", "vm:102"]
    kept = wanted_ha(plan, release, existing={102})
    assert list(kept.resources) == ["vm:102"]
    assert (kept.groups, kept.rules) == ({}, {})  # postgres's group or rule goes with it
    assert wanted_ha(plan, release, existing=set()).resources == {}
