"""Plan + sizing -> the config each VM should have, in the exact strings PVE stores.

Every value here is what ``GET .../config`` returns after it was written (after
:func:`ailab_deploy.core.pveformat.canonical`), so a VM that matches the plan
diffs to nothing and a re-apply writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ailab_deploy.core.cluster import placements
from ailab_deploy.core.plan import MANAGEMENT_TAG, VM, Plan
from ailab_deploy.core.pveformat import encode_ssh_keys
from ailab_deploy.core.sizing import NumaAdvice, size_plan

# The description line that marks a VM as made by this tool and records its spec.
DESCRIPTION_MARKER = "ailab-deploy: plan="
CPU_TYPE = "host"  # kvm64/qemu64 lack AVX, which CPU inference needs
VENDOR_SNIPPET_FILENAME = "ailab-vendor.yaml"


def vendor_volume(plan: Plan) -> str:
    """The snippet volume every VM boots with as cloud-init vendor data (node preparation uploads it)."""
    return f"{plan.proxmox.snippets_storage}:snippets/{VENDOR_SNIPPET_FILENAME}"


@dataclass(frozen=True)
class DesiredVM:
    """What one VM should look like. ``config`` value None means "must not be set"."""

    vmid: int
    name: str
    storage: str
    disk_gib: int
    protection: bool
    ip: str
    config: Mapping[str, str | None] = field(repr=False)
    spec_hash: str
    node: str = ""  # where the plan places it; empty: wherever it is
    # The plan's HA state is "stopped": Proxmox's HA manager keeps it off, and apply never starts it
    # (starting it would only be undone, every run).
    kept_off_by_ha: bool = False


def spec_hash(config: Mapping[str, str | None], storage: str, disk_gib: int, template_vmid: int) -> str:
    """Hash of one VM's own spec, so a change to another VM never touches this one."""
    canonical = json.dumps(
        {"config": dict(config), "storage": storage, "disk_gib": disk_gib, "template": template_vmid},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def describe(free_text: str, hash_: str) -> str:
    """The VM notes: the user's text, then the marker line with the spec hash."""
    marker = f"{DESCRIPTION_MARKER}{hash_}"
    return f"{free_text.rstrip()}\n\n{marker}" if free_text.strip() else marker


def carries_marker(description: str) -> bool:
    return any(line.startswith(DESCRIPTION_MARKER) for line in description.splitlines())


def _cpu_layout(vm: VM, numa: NumaAdvice | None) -> dict[str, str | None]:
    if numa is None:
        return {
            "cpu": CPU_TYPE,
            "sockets": str(vm.sockets),
            "cores": str(vm.cores),
            "numa": "0",
            "numa0": None,
        }
    return {
        "cpu": numa.cpu_type,
        "sockets": str(numa.sockets),
        "cores": str(numa.cores),
        "numa": "1" if numa.numa else "0",
        "numa0": numa.numa0,
        # No ``affinity``: PVE lets only root@pam itself set it, never an API token; sizing
        # gives the pinning as advice (`qm set <vmid> --affinity ...` as root on the node).
    }


def desired_vm(
    plan: Plan, vm: VM, ssh_keys: Sequence[str], numa: NumaAdvice | None = None, node: str = ""
) -> DesiredVM:
    network = plan.network
    net0 = f"virtio,bridge={network.bridge}" + (f",tag={network.vlan}" if network.vlan else "")
    tags = sorted({MANAGEMENT_TAG, *vm.roles, *vm.tags})
    config: dict[str, str | None] = {
        "name": vm.name,
        **_cpu_layout(vm, numa),
        "memory": str(vm.memory),
        "agent": "1",
        "net0": net0,
        "ipconfig0": f"ip={vm.ip}/{network.subnet.prefixlen},gw={network.gateway}",
        "nameserver": " ".join(str(server) for server in network.dns),
        "searchdomain": network.search_domain,
        "ciuser": plan.template.admin_user,
        "tags": ";".join(tag.lower() for tag in tags),
        "onboot": "1" if vm.onboot else "0",
        "protection": "1" if vm.protection else "0",
    }
    if plan.proxmox.prepare_node:  # without node preparation there is no snippet to point at
        config["cicustom"] = f"vendor={vendor_volume(plan)}"
    if ssh_keys:  # with no keys in the plan, keys set by hand are left alone
        config["sshkeys"] = encode_ssh_keys(list(ssh_keys))
    hash_ = spec_hash({**config, "description": vm.description}, vm.storage, vm.disk, plan.template.vmid)
    config["description"] = describe(vm.description, hash_)
    return DesiredVM(
        vmid=vm.vmid,
        name=vm.name,
        storage=vm.storage,
        disk_gib=vm.disk,
        protection=vm.protection,
        ip=str(vm.ip),
        config=config,
        spec_hash=hash_,
        node=node,
        kept_off_by_ha=vm.ha is not None and vm.ha.state == "stopped",
    )


def desired_vms(
    plan: Plan, ssh_keys: Sequence[str], running_on: Mapping[str, str] | None = None
) -> list[DesiredVM]:
    """Every VM of the plan on its node; the LLM VM gets the sizing-derived CPU layout and NUMA binding.

    ``running_on`` (VM name -> node, from /cluster/resources) keeps existing VMs where they are.
    """
    llm = size_plan(plan).llm
    chosen, _ = placements(plan, running_on)
    where = {placement.vm: placement.node for placement in chosen}
    return [
        desired_vm(
            plan,
            vm,
            ssh_keys,
            llm.numa if llm is not None and llm.vm_name == vm.name else None,
            where.get(vm.name, ""),
        )
        for vm in plan.vms
    ]
