"""What each served endpoint requires, in PVE's own notation (the ``permissions`` of its API
schema): ``{"user": "all"}`` or ``{"check": [...]}``. The conformance test holds these to PVE's
published schema per release; checks PVE makes in code beyond them live with the handlers."""

from __future__ import annotations

from typing import Any

ALL: dict[str, Any] = {"user": "all"}
VM_CONFIG_ANY = [
    "VM.Config.Disk",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Config.Cloudinit",
]


def perm(path: str, privileges: list[str], **options: Any) -> dict[str, Any]:
    check: list[Any] = ["perm", path, privileges]
    for key, value in options.items():
        check += [key, value]
    return {"check": check}


def vm(*privileges: str, any_of: bool = False) -> dict[str, Any]:
    return perm("/vms/{vmid}", list(privileges), **({"any": 1} if any_of else {}))


SYS_AUDIT_ROOT = perm("/", ["Sys.Audit"])
SYS_MODIFY_ROOT = perm("/", ["Sys.Modify"])
SYS_CONSOLE_ROOT = perm("/", ["Sys.Console"])
STORAGE_READ = perm("/storage/{storage}", ["Datastore.Audit", "Datastore.AllocateSpace"], any=1)
# the guest agent's reads: VM.Monitor until 8.x, the VM.GuestAgent.* privileges from 9.0
AGENT_READ = {
    "9.1": vm("VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted", any_of=True),
    "8.4": vm("VM.Monitor"),
}
USER_ADMIN = ["userid-group", ["User.Modify"]]
SELF_OR_USER_ADMIN = {"check": ["or", ["userid-param", "self"], USER_ADMIN]}

DECLARED: dict[tuple[str, str], Any] = {
    ("GET", "/version"): ALL,
    ("GET", "/nodes"): ALL,
    ("GET", "/nodes/{node}"): ALL,
    ("GET", "/nodes/{node}/status"): perm("/nodes/{node}", ["Sys.Audit"]),
    ("GET", "/nodes/{node}/storage"): ALL,
    ("GET", "/nodes/{node}/storage/{storage}/status"): STORAGE_READ,
    ("GET", "/nodes/{node}/storage/{storage}/content"): STORAGE_READ,
    ("POST", "/nodes/{node}/storage/{storage}/download-url"): {
        "check": [
            "and",
            ["perm", "/storage/{storage}", ["Datastore.AllocateTemplate"]],
            [
                "or",
                ["perm", "/", ["Sys.Audit", "Sys.Modify"]],
                ["perm", "/nodes/{node}", ["Sys.AccessNetwork"]],
            ],
        ]
    },
    ("GET", "/nodes/{node}/tasks"): ALL,
    ("GET", "/nodes/{node}/tasks/{upid}/status"): ALL,
    ("GET", "/nodes/{node}/tasks/{upid}/log"): ALL,
    ("GET", "/nodes/{node}/qemu"): ALL,
    ("POST", "/nodes/{node}/qemu"): ALL,
    ("GET", "/nodes/{node}/qemu/{vmid}"): ALL,
    ("DELETE", "/nodes/{node}/qemu/{vmid}"): vm("VM.Allocate"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"): {
        "check": [
            "and",
            ["perm", "/vms/{vmid}", ["VM.Clone"]],
            [
                "or",
                ["perm", "/vms/{newid}", ["VM.Allocate"]],
                ["perm", "/pool/{pool}", ["VM.Allocate"], "require_param", "pool"],
            ],
        ]
    },
    ("GET", "/nodes/{node}/qemu/{vmid}/config"): vm("VM.Audit"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"): vm(*VM_CONFIG_ANY, any_of=True),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"): vm(*VM_CONFIG_ANY, any_of=True),
    ("GET", "/nodes/{node}/qemu/{vmid}/pending"): vm("VM.Audit"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"): vm("VM.Config.Disk"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status"): ALL,
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"): vm("VM.Audit"),
    **{
        ("POST", f"/nodes/{{node}}/qemu/{{vmid}}/status/{action}"): vm("VM.PowerMgmt")
        for action in ("start", "stop", "shutdown", "reboot")
    },
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"): AGENT_READ,
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"): AGENT_READ,
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo"): AGENT_READ,
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-host-name"): AGENT_READ,
    ("POST", "/nodes/{node}/qemu/{vmid}/template"): vm("VM.Allocate"),
    ("GET", "/nodes/{node}/qemu/{vmid}/snapshot"): vm("VM.Audit"),
    ("POST", "/nodes/{node}/qemu/{vmid}/snapshot"): vm("VM.Snapshot"),
    ("GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}"): ALL,
    ("GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config"): vm(
        "VM.Snapshot", "VM.Snapshot.Rollback", "VM.Audit", any_of=True
    ),
    ("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback"): vm(
        "VM.Snapshot", "VM.Snapshot.Rollback", any_of=True
    ),
    ("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}"): vm("VM.Snapshot"),
    ("GET", "/nodes/{node}/qemu/{vmid}/migrate"): vm("VM.Migrate"),
    ("POST", "/nodes/{node}/qemu/{vmid}/migrate"): vm("VM.Migrate"),
    # HA (pve-ha-manager): reading needs Sys.Audit on /, changing Sys.Console
    ("GET", "/cluster/ha"): SYS_AUDIT_ROOT,
    **{("GET", f"/cluster/ha/{what}"): SYS_AUDIT_ROOT for what in ("resources", "groups", "rules")},
    **{("POST", f"/cluster/ha/{what}"): SYS_CONSOLE_ROOT for what in ("resources", "groups", "rules")},
    **{
        (method, f"/cluster/ha/{what}/{{{key}}}"): SYS_AUDIT_ROOT if method == "GET" else SYS_CONSOLE_ROOT
        for what, key in (("resources", "sid"), ("groups", "group"), ("rules", "rule"))
        for method in ("GET", "PUT", "DELETE")
    },
    ("POST", "/cluster/ha/resources/{sid}/migrate"): SYS_CONSOLE_ROOT,
    ("POST", "/cluster/ha/resources/{sid}/relocate"): SYS_CONSOLE_ROOT,
    ("GET", "/cluster/ha/status"): ALL,
    ("GET", "/cluster/ha/status/current"): SYS_AUDIT_ROOT,
    ("POST", "/nodes/{node}/startall"): ALL,
    ("POST", "/nodes/{node}/vzdump"): ALL,
    ("POST", "/nodes/{node}/stopall"): ALL,
    ("GET", "/cluster/nextid"): ALL,
    ("GET", "/cluster/resources"): ALL,
    ("GET", "/cluster/backup"): SYS_AUDIT_ROOT,
    ("POST", "/cluster/backup"): SYS_MODIFY_ROOT,
    ("GET", "/cluster/backup/{id}"): SYS_AUDIT_ROOT,
    ("PUT", "/cluster/backup/{id}"): SYS_MODIFY_ROOT,
    ("DELETE", "/cluster/backup/{id}"): SYS_MODIFY_ROOT,
    ("GET", "/cluster/backup-info/not-backed-up"): SYS_AUDIT_ROOT,
    ("GET", "/cluster/status"): SYS_AUDIT_ROOT,
    ("GET", "/nodes/{node}/version"): ALL,
    ("GET", "/pools"): ALL,
    ("GET", "/pools/{poolid}"): perm("/pool/{poolid}", ["Pool.Audit"]),
    ("GET", "/storage"): ALL,
    ("GET", "/storage/{storage}"): perm("/storage/{storage}", ["Datastore.Allocate"]),
    ("GET", "/nodes/{node}/lxc"): ALL,
    ("GET", "/nodes/{node}/network"): ALL,
    ("GET", "/nodes/{node}/replication"): ALL,
    ("GET", "/nodes/{node}/subscription"): ALL,
    # access control
    ("GET", "/access/permissions"): ALL,
    ("GET", "/access/users"): ALL,
    ("POST", "/access/users"): {
        "check": [
            "and",
            ["userid-param", "Realm.AllocateUser"],
            ["userid-group", ["User.Modify"], "groups_param", "create"],
        ]
    },
    ("GET", "/access/users/{userid}"): {"check": ["userid-group", ["User.Modify", "Sys.Audit"]]},
    ("DELETE", "/access/users/{userid}"): {
        "check": ["and", ["userid-param", "Realm.AllocateUser"], USER_ADMIN]
    },
    ("GET", "/access/users/{userid}/token"): SELF_OR_USER_ADMIN,
    ("GET", "/access/users/{userid}/token/{tokenid}"): SELF_OR_USER_ADMIN,
    ("POST", "/access/users/{userid}/token/{tokenid}"): SELF_OR_USER_ADMIN,
    ("DELETE", "/access/users/{userid}/token/{tokenid}"): SELF_OR_USER_ADMIN,
    ("GET", "/access/groups"): ALL,
    ("POST", "/access/groups"): perm("/access/groups", ["Group.Allocate"]),
    ("GET", "/access/roles"): ALL,
    ("POST", "/access/roles"): perm("/access", ["Sys.Modify"]),
    ("GET", "/access/roles/{roleid}"): ALL,
    ("PUT", "/access/roles/{roleid}"): perm("/access", ["Sys.Modify"]),
    ("DELETE", "/access/roles/{roleid}"): perm("/access", ["Sys.Modify"]),
    ("GET", "/access/acl"): ALL,
    ("PUT", "/access/acl"): {"check": ["perm-modify", "{path}"]},
}


def declared(method: str, pattern: str, release: str) -> dict[str, Any] | None:
    """The endpoint's ``permissions`` for ``release`` (None: root@pam only, as PVE treats it)."""
    entry = DECLARED.get((method, pattern))
    if entry is not None and "user" not in entry and "check" not in entry:
        entry = entry.get(release)
    return entry
