"""The one list of Proxmox VE privileges ailab-deploy needs, per PVE release and per feature.

Each entry names the privilege, the ACL path where PVE checks it, and the calls that need it.
SETUP.md's ``pveum`` commands, ``ailab-deploy privileges``, the lab's least-privilege token
and the hint printed on a 403 all come from here. A privilege is listed only if a call fails
without it (the lab tests remove each one in turn and show which command then fails).

Checks that PVE satisfies with one of several privileges are met by one listed here:
cloud-init keys (``ipconfig0``, ``ciuser``, ``sshkeys``...) take ``VM.Config.Cloudinit`` *or*
``VM.Config.Network``, and the product needs ``VM.Config.Network`` anyway for NICs; a rollback
takes ``VM.Snapshot`` *or* ``VM.Snapshot.Rollback``; ``download-url`` takes
``Sys.AccessNetwork`` on the node *or* both ``Sys.Audit`` and ``Sys.Modify`` on ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ailab_deploy.core.plan import Plan

RELEASES = ("9.1", "8.4")
DEFAULT_RELEASE = "9.1"
ROLE = "AilabDeploy"
USER = "ailab@pve"
TOKEN_NAME = "deploy"


@dataclass(frozen=True)
class Need:
    privilege: str
    path: str  # ACL path PVE checks, with placeholders
    used_for: str
    calls: tuple[str, ...] = ()  # "METHOD /path/{pattern}" of the calls that need it


def _needs(*entries: Need) -> tuple[Need, ...]:
    return entries


_AGENT_CALL = ("GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",)
_CORE_COMMON = _needs(
    Need("VM.Audit", "/vms/{vmid}", "see the managed VMs and read their config and status",
         ("GET /cluster/resources", "GET /nodes/{node}/qemu/{vmid}/config",
          "GET /nodes/{node}/qemu/{vmid}/status/current", "GET /nodes/{node}/qemu/{vmid}/snapshot")),
    Need("VM.Allocate", "/vms/{vmid}", "create VMs (clone into a new VMID) and destroy them",
         ("POST /nodes/{node}/qemu/{vmid}/clone", "DELETE /nodes/{node}/qemu/{vmid}",
          "POST /nodes/{node}/qemu", "POST /nodes/{node}/qemu/{vmid}/template")),
    Need("VM.Clone", "/vms/{template}", "clone the template", ("POST /nodes/{node}/qemu/{vmid}/clone",)),
    Need("VM.Config.CPU", "/vms/{vmid}", "cores, sockets, CPU type and NUMA layout",
         ("PUT /nodes/{node}/qemu/{vmid}/config",)),
    Need("VM.Config.Memory", "/vms/{vmid}", "memory", ("PUT /nodes/{node}/qemu/{vmid}/config",)),
    Need("VM.Config.Disk", "/vms/{vmid}", "grow the boot disk", ("PUT /nodes/{node}/qemu/{vmid}/resize",)),
    Need("VM.Config.Network", "/vms/{vmid}", "the NIC and the cloud-init network and user settings",
         ("PUT /nodes/{node}/qemu/{vmid}/config",)),
    Need("VM.Config.Options", "/vms/{vmid}", "name, description, tags, start at boot",
         ("PUT /nodes/{node}/qemu/{vmid}/config",)),
    Need("VM.PowerMgmt", "/vms/{vmid}", "start and stop VMs",
         ("POST /nodes/{node}/qemu/{vmid}/status/start", "POST /nodes/{node}/qemu/{vmid}/status/stop")),
    Need("Datastore.AllocateSpace", "/storage/{storage}", "disks of new clones, grown disks",
         ("POST /nodes/{node}/qemu/{vmid}/clone", "PUT /nodes/{node}/qemu/{vmid}/resize",
          "GET /nodes/{node}/storage")),
    Need("SDN.Use", "/sdn/zones/localnetwork/{bridge}", "attach the VMs' NIC to the bridge",
         ("POST /nodes/{node}/qemu/{vmid}/clone", "POST /nodes/{node}/qemu")),
)  # fmt: skip
_AGENT = {
    "9.1": Need("VM.GuestAgent.Audit", "/vms/{vmid}", "the guest agent's addresses", _AGENT_CALL),
    "8.4": Need("VM.Monitor", "/vms/{vmid}", "the guest agent's addresses", _AGENT_CALL),
}
_TEMPLATE = _needs(
    Need("Datastore.AllocateTemplate", "/storage/{storage}", "download the cloud image (download-url)",
         ("POST /nodes/{node}/storage/{storage}/download-url",)),
    Need("Sys.AccessNetwork", "/nodes/{node}", "let the node fetch the image from its URL",
         ("POST /nodes/{node}/storage/{storage}/download-url",)),
    Need("VM.Config.HWType", "/vms/{vmid}", "the template's SCSI controller, display and serial port",
         ("POST /nodes/{node}/qemu",)),
)  # fmt: skip
_VZDUMP = _needs(
    Need("Sys.Audit", "/", "read the node's backup jobs", ("GET /cluster/backup",)),
    Need("Sys.Modify", "/", "create, change and remove the backup job",
         ("POST /cluster/backup", "PUT /cluster/backup/{id}", "DELETE /cluster/backup/{id}")),
    Need("Datastore.Allocate", "/storage/{storage}", "point the backup job at its storage",
         ("POST /cluster/backup", "PUT /cluster/backup/{id}")),
    Need("VM.Backup", "/vms/{vmid}", "run the backup job now, restore a VM from its archive",
         ("POST /nodes/{node}/vzdump", "POST /nodes/{node}/qemu")),
)  # fmt: skip
_SNAPSHOTS = _needs(
    Need("VM.Snapshot", "/vms/{vmid}", "apply --snapshot, and rollback",
         ("POST /nodes/{node}/qemu/{vmid}/snapshot",
          "POST /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback")),
)  # fmt: skip

_CLUSTER = _needs(
    Need("VM.Migrate", "/vms/{vmid}", "move a VM to the node the plan places it on",
         ("POST /nodes/{node}/qemu/{vmid}/migrate",)),
)  # fmt: skip
_HA = _needs(
    Need("Sys.Audit", "/", "read the HA resources, groups and rules",
         ("GET /cluster/ha/resources", "GET /cluster/ha/groups", "GET /cluster/ha/rules")),
    # PVE asks Sys.Console on / for every change to the HA config: HA can start and stop any guest
    Need("Sys.Console", "/", "add, change and remove the plan's HA resources, groups and rules",
         ("POST /cluster/ha/resources", "PUT /cluster/ha/resources/{sid}",
          "DELETE /cluster/ha/resources/{sid}", "POST /cluster/ha/rules", "POST /cluster/ha/groups")),
)  # fmt: skip

FEATURES = {
    "core": "plan, apply, destroy: clone, configure, start and stop the VMs",
    "template": "build the template from template.image_url when it is missing",
    "vzdump": "the backup job of the managed VMs (proxmox.vzdump.enabled)",
    "snapshots": "apply --snapshot and rollback",
    "cluster": "a plan with several nodes: migrations to where the plan places a VM",
    "ha": "VMs with ha: Proxmox's HA resources, and where they may run",
}
# The plan has no resource pools: nothing to grant for them.
ONE_NODE_FEATURES = ("core", "template", "vzdump", "snapshots")  # what SETUP.md's role grants


def needs(release: str, features: Iterable[str] | None = None) -> list[Need]:
    """What ``features`` (default: all) need on PVE ``release``, in the order listed."""
    if release not in RELEASES:
        raise ValueError(f"PVE release {release!r} is not one of {', '.join(RELEASES)}")
    wanted = set(FEATURES if features is None else features)
    unknown = wanted - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown feature(s) {', '.join(sorted(unknown))} (known: {', '.join(FEATURES)})")
    by_feature = {
        "core": [*_CORE_COMMON, _AGENT[release]],
        # download-url takes Sys.AccessNetwork on the node or Sys.Audit and Sys.Modify on /,
        # which the backup job needs anyway
        "template": [n for n in _TEMPLATE if not ("vzdump" in wanted and n.privilege == "Sys.AccessNetwork")],
        "vzdump": list(_VZDUMP),
        "snapshots": list(_SNAPSHOTS),
        "cluster": list(_CLUSTER),
        "ha": list(_HA),
    }
    result: list[Need] = []
    for feature in FEATURES:
        if feature in wanted:
            result += [n for n in by_feature[feature] if n.privilege not in {r.privilege for r in result}]
    return result


def privileges(release: str, features: Iterable[str] | None = None) -> list[str]:
    return [need.privilege for need in needs(release, features)]


def plan_features(plan: Plan) -> list[str]:
    """The features a plan uses: always the core; the template build when the plan can build
    it; the backup job when enabled; snapshots (``apply --snapshot``, ``rollback``) always;
    migrations on a cluster; HA when a VM asks for it."""
    features = ["core"]
    if plan.template.image_url:
        features.append("template")
    if plan.proxmox.vzdump.enabled:
        features.append("vzdump")
    features.append("snapshots")
    if len(plan.nodes) > 1:
        features.append("cluster")
    if any(vm.ha for vm in plan.vms):
        features.append("ha")
    return features


def pveum_commands(
    release: str, features: Iterable[str] | None = None, *, user: str = USER, token: str = TOKEN_NAME
) -> list[str]:
    """The ``pveum`` commands that create the role, the user and its privilege-separated token."""
    tokenid = f"{user}!{token}"
    return [
        f'pveum role add {ROLE} --privs "{" ".join(privileges(release, features))}"',
        f"pveum user add {user}",
        f"pveum acl modify / --users {user} --roles {ROLE}",
        f"pveum user token add {user} {token} --privsep 1   # prints the secret once",
        f"pveum acl modify / --tokens '{tokenid}' --roles {ROLE}",
    ]


# Calls whose refusal names no privilege ('or' checks, checks in code), and what grants them
_UNNAMED = {
    "POST /nodes/{node}/qemu/{vmid}/clone": ("VM.Allocate", "/vms/{newid}"),
    "POST /nodes/{node}/qemu": ("VM.Allocate", "/vms/{vmid}"),
    "POST /nodes/{node}/storage/{storage}/download-url": (
        "Sys.AccessNetwork",
        "/nodes/{node} (or Sys.Audit and Sys.Modify on /)",
    ),
}
SETUP_BEGIN = "<!-- privileges: generated by `ailab-deploy privileges --markdown`; a test fails on drift -->"
SETUP_END = "<!-- privileges: end -->"


def setup_markdown() -> str:
    """SETUP.md's token section, between its markers: the commands per release and why each."""
    lines = [SETUP_BEGIN, ""]
    for release in RELEASES:
        lines += [f"  PVE {release}:", "", "  ```bash"]
        lines += [f"  {command}" for command in pveum_commands(release, ONE_NODE_FEATURES)]
        lines += ["  ```", ""]
    base = set(privileges(DEFAULT_RELEASE, ONE_NODE_FEATURES))
    for feature in FEATURES:
        if feature not in ONE_NODE_FEATURES:  # the same on every release
            added = " ".join(p for p in privileges(DEFAULT_RELEASE, [feature]) if p not in base)
            lines.append(
                f'  - only for {FEATURES[feature]}: `pveum role modify {ROLE} --append 1 --privs "{added}"`'
            )
    lines.append("")
    lines.append(
        "  What each privilege is for (the plan's features; `ailab-deploy privileges` prints yours):"
    )
    lines.append("")
    for feature, text in FEATURES.items():
        entries = {n.privilege: n for release in RELEASES for n in needs(release, [feature])}
        releases = {p: [r for r in RELEASES if p in privileges(r, [feature])] for p in entries}
        lines.append(f"  - {feature}: {text}")
        for privilege, need in entries.items():
            only = f" (PVE {releases[privilege][0]} only)" if len(releases[privilege]) == 1 else ""
            lines.append(f"    - `{privilege}`{only} on `{need.path}`: {need.used_for}")
    lines += [
        "",
        "  `Sys.AccessNetwork` is needed only without the backup job (download-url takes it, or "
        "`Sys.Audit` and `Sys.Modify` on `/`).",
        "",
        SETUP_END,
    ]
    return "\n".join(lines)


_DENIED = re.compile(r"Permission check failed \((?P<path>[^,)]+), (?P<privs>[^)]+)\)")


def _shape(path: str) -> str:
    """``/nodes/pve/qemu/100/config`` -> ``/nodes/{node}/qemu/{vmid}/config``."""
    path = "/" + path.strip("/")
    path = re.sub(r"^/nodes/[^/]+", "/nodes/{node}", path)
    path = re.sub(r"/storage/[^/]+", "/storage/{storage}", path)
    path = re.sub(r"/snapshot/[^/]+", "/snapshot/{snapname}", path)
    path = re.sub(r"/backup/[^/]+", "/backup/{id}", path)
    return re.sub(r"/qemu/\d+", "/qemu/{vmid}", path)


def grant_command(privilege: str) -> str:
    """The pveum command that adds ``privilege`` to the deploy role (granted on ``/``)."""
    return f"`pveum role modify {ROLE} --append 1 --privs {privilege}`"


def denied_hint(
    method: str,
    path: str,
    reason: str,
    params: Mapping[str, object] | None = None,
    release: str = DEFAULT_RELEASE,
) -> str:
    """One line for a 403: the privilege, the path, and the pveum command that grants it."""
    match = _DENIED.search(reason)
    if match:
        missing = match.group("privs").split("|")
        where = match.group("path")
    else:  # an 'or' check or a code-level refusal: PVE names nothing; the list knows the call
        privilege, where = _UNNAMED.get(f"{method} {_shape(path)}", ("?", "?"))
        missing = [privilege]
        node = re.match(r"/?nodes/([^/]+)", path)
        values = {
            **{k: str(v) for k, v in (params or {}).items()},
            **({"node": node.group(1)} if node else {}),
        }
        where = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), where)
    known = set(privileges(release))
    grant = next((p for p in missing if p in known), missing[0])
    either = f" (one of {', '.join(missing)})" if len(missing) > 1 else ""
    return (
        f"{method} /{path.strip('/')}: permission denied: {grant}{either} on {where} is missing; "
        f"grant it with {grant_command(grant)} "
        f"(PVE: {reason.strip()})"
    )
