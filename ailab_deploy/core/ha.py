"""Proxmox HA for the plan's VMs: the resources, and where they may run, as calls to make.

PVE 8.4 says where an HA resource may run with an HA group; PVE 9 replaced groups with rules
(node affinity, and resource affinity to keep VMs apart). Only objects this tool made (their
comment says so) are ever changed or removed; HA objects the user made are left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ailab_deploy.core.plan import Plan

COMMENT = "managed by ailab-deploy"
PREFERRED, ALLOWED = 2, 1  # node priorities: the pinned node first, then the others


def sid_of(vmid: int) -> str:
    return f"vm:{vmid}"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    what: str = ""


@dataclass(frozen=True)
class HaWanted:
    resources: Mapping[str, dict[str, str]]  # sid -> the fields as PVE lists them
    groups: Mapping[str, dict[str, str]]  # 8.4: group -> fields
    rules: Mapping[str, dict[str, str]]  # 9.x: rule -> fields


def _nodes_text(preferred: str | None, allowed: Sequence[str]) -> str:
    return ",".join(
        f"{node}:{PREFERRED if node == preferred else ALLOWED}" if preferred else node
        for node in sorted(allowed)
    )


def wanted_ha(plan: Plan, release: str, existing: Collection[int] | None = None) -> HaWanted:
    """Every HA object the plan asks for on PVE ``release`` ("8.4" or "9.x"), for the VMs in
    ``existing`` when given (PVE refuses an HA resource for a VM that does not exist)."""
    grouped = release.startswith("8.")
    all_nodes = [node.name for node in plan.nodes]
    resources: dict[str, dict[str, str]] = {}
    groups: dict[str, dict[str, str]] = {}
    rules: dict[str, dict[str, str]] = {}
    spread: dict[str, list[str]] = {}
    for vm in plan.vms:
        if vm.ha is None or (existing is not None and vm.vmid not in existing):
            continue
        sid = sid_of(vm.vmid)
        fields = {
            "state": vm.ha.state,
            "max_restart": str(vm.ha.max_restart),
            "max_relocate": str(vm.ha.max_relocate),
            "comment": COMMENT,
        }
        placed = bool(vm.ha.nodes) or vm.node is not None
        allowed = list(vm.ha.nodes) or all_nodes
        name = f"ailab-{vm.name}"
        if grouped:
            if placed:
                fields["group"] = name
                groups[name] = {
                    "nodes": _nodes_text(vm.node, allowed),
                    "restricted": "1" if vm.ha.nodes else "0",
                    "nofailback": "0" if vm.ha.failback else "1",
                    "comment": COMMENT,
                }
        else:
            fields["failback"] = "1" if vm.ha.failback else "0"
            if placed:
                rules[name] = {
                    "type": "node-affinity",
                    "resources": sid,
                    "nodes": _nodes_text(vm.node, allowed),
                    "strict": "1" if vm.ha.nodes else "0",
                    "comment": COMMENT,
                }
        resources[sid] = fields
        if vm.spread and vm.ha.state != "ignored":
            spread.setdefault(vm.spread, []).append(sid)
    if not grouped:
        for group, sids in spread.items():
            if len(sids) > 1:
                rules[f"ailab-spread-{group}"] = {
                    "type": "resource-affinity",
                    "affinity": "negative",
                    "resources": ",".join(sorted(sids)),
                    "comment": COMMENT,
                }
    return HaWanted(resources, groups, rules)


def _differs(wanted: Mapping[str, str], actual: Mapping[str, Any]) -> dict[str, str]:
    return {key: value for key, value in wanted.items() if _text(actual.get(key)) != value}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _sorted_list(value: str) -> str:
    return ",".join(sorted(part.strip() for part in value.split(",") if part.strip()))


def _normalised(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """PVE lists node and resource lists in its own order: compare them as sets."""
    result = dict(fields)
    for key in ("nodes", "resources"):
        if isinstance(result.get(key), str):
            result[key] = _sorted_list(result[key])
    if kind == "resource" and "state" in result and result["state"] == "enabled":
        result["state"] = "started"  # PVE's alias
    return result


def ha_calls(
    wanted: HaWanted,
    resources: Sequence[Mapping[str, Any]],
    groups_or_rules: Sequence[Mapping[str, Any]],
    managed_sids: set[str],
    release: str,
) -> list[Call]:
    """The calls that make PVE's HA config match ``wanted``, in an order PVE accepts.

    ``resources`` is GET /cluster/ha/resources; ``groups_or_rules`` is GET /cluster/ha/groups
    (8.4) or /cluster/ha/rules (9.x). ``managed_sids`` are the VMs this tool manages: an HA
    resource of one of them that the plan no longer asks for is removed.
    """
    grouped = release.startswith("8.")
    kind, base, key = (
        ("group", "cluster/ha/groups", "group") if grouped else ("rule", "cluster/ha/rules", "rule")
    )
    wanted_objects = wanted.groups if grouped else wanted.rules
    have = {str(item.get(key)): _normalised(kind, item) for item in groups_or_rules}
    have_resources = {str(item.get("sid")): _normalised("resource", item) for item in resources}

    create_objects: list[Call] = []
    change_objects: list[Call] = []
    remove_objects: list[Call] = []
    for name, fields in wanted_objects.items():
        fields = _normalised(kind, fields)
        if name not in have:
            create_objects.append(Call("POST", base, {key: name, **fields}, f"HA {kind} {name}: create"))
        elif have[name].get("comment") != COMMENT:
            continue  # the user's own object of that name: never touched
        elif changes := _differs(fields, have[name]):
            params = dict(changes)
            if not grouped:
                params["type"] = fields["type"]  # PVE requires the rule's type on update
            change_objects.append(
                Call("PUT", f"{base}/{name}", params, f"HA {kind} {name}: {', '.join(changes)}")
            )
    for name, fields in have.items():
        if name not in wanted_objects and fields.get("comment") == COMMENT:
            remove_objects.append(Call("DELETE", f"{base}/{name}", {}, f"HA {kind} {name}: remove"))

    create_resources: list[Call] = []
    change_resources: list[Call] = []
    remove_resources: list[Call] = []
    for sid, fields in wanted.resources.items():
        if sid not in have_resources:
            create_resources.append(
                Call("POST", "cluster/ha/resources", {"sid": sid, **fields}, f"HA resource {sid}: add")
            )
        elif changes := _differs(fields, have_resources[sid]):
            change_resources.append(
                Call(
                    "PUT", f"cluster/ha/resources/{sid}", changes, f"HA resource {sid}: {', '.join(changes)}"
                )
            )
    for sid, fields in have_resources.items():
        if sid not in wanted.resources and sid in managed_sids and fields.get("comment") == COMMENT:
            remove_resources.append(
                Call("DELETE", f"cluster/ha/resources/{sid}", {}, f"HA resource {sid}: remove")
            )

    if grouped:  # a resource names its group: groups exist first and go last
        return [*create_objects, *change_objects, *create_resources, *change_resources, *remove_resources,
                *remove_objects]  # fmt: skip
    # rules name resources: resources exist first, rules go first
    return [*remove_objects, *create_resources, *change_resources, *create_objects, *change_objects,
            *remove_resources]  # fmt: skip
