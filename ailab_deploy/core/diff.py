"""Desired vs. actual VM state -> actions per VM, as values (read, diff, act; explicit no-op).

Nothing here talks to Proxmox: the adapter reads the node into :class:`ActualVM`
values, this module decides, and the engine carries out what it decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ailab_deploy.core.desired import DesiredVM, carries_marker
from ailab_deploy.core.plan import MANAGEMENT_TAG
from ailab_deploy.core.pveformat import (
    DISK_KEY,
    actual_value,
    as_text,
    boot_disk,
    canonical,
    drive_size_bytes,
    drive_storage,
    is_cloudinit_drive,
    parse_property_string,
)
from ailab_deploy.core.units import GIB

# Keys PVE applies to a running VM at once; any other change waits for a restart.
# Cloud-init keys are written at once but the guest only reads them when it boots.
LIVE_KEYS = frozenset({"name", "description", "onboot", "tags", "protection", "net0"})
NET_MODELS = frozenset(
    {"e1000", "e1000e", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "i82551", "i82557b",
     "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"}
)  # fmt: skip
CLOUDINIT_SLOTS = ("ide2", "ide0", "ide3", "ide1")


def _json_shaped(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_shaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_shaped(item) for item in value]
    return value


# /cluster/resources lists a guest with this status while its node does not answer
UNREACHABLE = "unknown"


@dataclass(frozen=True)
class ActualVM:
    """One guest as ``/cluster/resources`` lists it, with its config when it was read."""

    vmid: int
    name: str
    node: str
    type: str  # "qemu" or "lxc"
    status: str  # "running" or "stopped"
    template: bool = False
    tags: str = ""  # canonical, ``a;b``
    lock: str | None = None
    config: Mapping[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Change:
    key: str
    old: str | None  # canonical actual value; None when unset
    new: str | None  # exactly what to write; None deletes the key


@dataclass(frozen=True)
class Action:
    kind: ClassVar[str] = "action"
    blocks: ClassVar[bool] = False  # an action that stops the whole apply
    writes: ClassVar[bool] = True  # carrying it out changes the node

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped: tuples become lists."""
        return {"action": self.kind, **_json_shaped(asdict(self))}


@dataclass(frozen=True)
class Create(Action):
    kind: ClassVar[str] = "create"
    storage: str
    disk_gib: int


@dataclass(frozen=True)
class Update(Action):
    kind: ClassVar[str] = "update"
    changes: tuple[Change, ...]
    needs_restart: bool

    def params(self) -> dict[str, str]:
        """The PUT body: set keys, and ``delete`` for keys that must go."""
        body = {change.key: change.new for change in self.changes if change.new is not None}
        deleted = [change.key for change in self.changes if change.new is None]
        if deleted:
            body["delete"] = ",".join(deleted)
        return body


@dataclass(frozen=True)
class Grow(Action):
    kind: ClassVar[str] = "grow"
    disk: str
    from_gib: float
    to_gib: int


@dataclass(frozen=True)
class Migrate(Action):
    """The plan places the VM on another node: Proxmox migrates it (never destroy and re-create)."""

    kind: ClassVar[str] = "migrate"
    source: str
    target: str
    running: bool


@dataclass(frozen=True)
class Start(Action):
    kind: ClassVar[str] = "start"


@dataclass(frozen=True)
class WaitUnlock(Action):
    """Our VM is locked (e.g. a clone still running after an interrupted apply)."""

    kind: ClassVar[str] = "wait"
    writes: ClassVar[bool] = False
    lock: str


@dataclass(frozen=True)
class NoOp(Action):
    kind: ClassVar[str] = "no-op"
    writes: ClassVar[bool] = False


@dataclass(frozen=True)
class Orphan(Action):
    """A VM this tool manages that the plan no longer lists. Apply leaves it; destroy removes it."""

    kind: ClassVar[str] = "orphan"
    writes: ClassVar[bool] = False


@dataclass(frozen=True)
class Conflict(Action):
    kind: ClassVar[str] = "conflict"
    blocks: ClassVar[bool] = True
    writes: ClassVar[bool] = False
    reason: str


@dataclass(frozen=True)
class Error(Action):
    kind: ClassVar[str] = "error"
    blocks: ClassVar[bool] = True
    writes: ClassVar[bool] = False
    reason: str


@dataclass(frozen=True)
class VMPlan:
    name: str
    vmid: int
    actions: tuple[Action, ...]
    node: str = ""  # where it will run (a migration's target), or runs

    @property
    def blocked(self) -> bool:
        return any(action.blocks for action in self.actions)

    @property
    def changes_anything(self) -> bool:
        return any(action.writes for action in self.actions)

    def first(self, kind: type[Action]) -> Action | None:
        return next((action for action in self.actions if isinstance(action, kind)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vmid": self.vmid,
            "node": self.node,
            "actions": [a.to_dict() for a in self.actions],
        }


@dataclass(frozen=True)
class ProvisionPlan:
    vms: tuple[VMPlan, ...]

    @property
    def problems(self) -> list[str]:
        return [
            f"{vm.name} (VM {vm.vmid}): {action.reason}"
            for vm in self.vms
            for action in vm.actions
            if isinstance(action, Conflict | Error)
        ]

    @property
    def changes_anything(self) -> bool:
        return any(vm.changes_anything for vm in self.vms)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for vm in self.vms:
            for action in vm.actions:
                counts[action.kind] = counts.get(action.kind, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "vms": [vm.to_dict() for vm in self.vms],
            "counts": self.counts(),
            "problems": self.problems,
        }


def is_managed(actual: ActualVM, ledger_vmids: AbstractSet[int]) -> bool:
    """Ours only if the ledger recorded it AND the VM says so (the tag, or the marker that a
    clone carries from its first moment, before the tag is set)."""
    if actual.vmid not in ledger_vmids or actual.type != "qemu" or actual.template:
        return False
    if MANAGEMENT_TAG in actual.tags.split(";"):
        return True
    description = as_text((actual.config or {}).get("description", ""))
    return carries_marker(description)


def _net_parts(value: str) -> tuple[str, str, dict[str, str]]:
    """``virtio=BC:..,bridge=vmbr0`` -> (model, mac, other keys)."""
    parts = parse_property_string(value, "model")
    model, mac = parts.pop("model", ""), ""
    for key in list(parts):
        if key in NET_MODELS:
            model, mac = key, parts.pop(key)
    return model, mac, parts


def _net0_change(wanted: str, actual: str | None) -> Change | None:
    """Compare model, bridge and VLAN tag; keep the VM's MAC and any other keys it has."""
    model, _, want = _net_parts(wanted)
    if actual is None:
        return Change("net0", None, wanted)
    have_model, mac, have = _net_parts(actual)
    if (
        have_model == model
        and have.get("bridge") == want.get("bridge")
        and have.get("tag") == want.get("tag")
    ):
        return None
    merged = {k: v for k, v in have.items() if k != "tag"} | want
    head = f"{model}={mac}" if mac and have_model == model else model
    return Change("net0", actual, ",".join([head, *(f"{k}={merged[k]}" for k in sorted(merged))]))


def _cloudinit_change(config: Mapping[str, Any], storage: str) -> Change | None:
    """A clone must keep a cloud-init drive, or none of the ci* keys reach the guest."""
    drives = [key for key in config if DISK_KEY.match(key)]
    if any(is_cloudinit_drive(as_text(config[key])) for key in drives):
        return None
    slot = next((slot for slot in CLOUDINIT_SLOTS if slot not in config), None)
    if slot is None:
        return None  # no free IDE slot; the config check below reports the missing drive
    return Change(slot, None, f"{storage}:cloudinit")


def config_changes(desired: DesiredVM, config: Mapping[str, Any]) -> tuple[Change, ...]:
    changes: list[Change] = []
    for key, wanted in desired.config.items():
        have = actual_value(config, key)
        if key == "net0" and wanted is not None:
            net = _net0_change(wanted, None if "net0" not in config else as_text(config["net0"]))
            if net is not None:
                changes.append(net)
        elif wanted is None:
            if key in config:
                changes.append(Change(key, have, None))
        elif canonical(key, wanted) != have:
            changes.append(Change(key, have, wanted))
    cloudinit = _cloudinit_change(config, desired.storage)
    if cloudinit is not None:
        changes.append(cloudinit)
    return tuple(changes)


def _disk_actions(desired: DesiredVM, config: Mapping[str, Any]) -> list[Action]:
    disk = boot_disk(config)
    if disk is None:
        return [Error("no boot disk in the config (cloned from a template without a disk?)")]
    value = as_text(config[disk])
    storage = drive_storage(value)
    if storage and storage != desired.storage:
        return [
            Error(
                f"disk {disk} is on storage {storage!r} but the plan says {desired.storage!r}; "
                "moving disks is not supported: set the plan back or move the disk in Proxmox"
            )
        ]
    size = drive_size_bytes(value)
    if size is None:
        return [Error(f"disk {disk} has no size in its config ({value})")]
    wanted = desired.disk_gib * GIB
    if size < wanted:
        return [Grow(disk, round(size / GIB, 2), desired.disk_gib)]
    if size > wanted:
        have = size / GIB
        return [
            Error(
                f"disk {disk} is {have:g} GiB but the plan says {desired.disk_gib} GiB; shrinking disks "
                f"is not supported (set disk: {int(-(-size // GIB))}G or more)"
            )
        ]
    return []


def diff_vm(
    desired: DesiredVM, actual: ActualVM | None, ledger_vmids: AbstractSet[int], nodes: AbstractSet[str]
) -> VMPlan:
    """The actions for one VM; ``nodes`` are the plan's nodes (VMs elsewhere are not ours)."""

    def plan(*actions: Action) -> VMPlan:
        node = desired.node or (actual.node if actual is not None else "")
        return VMPlan(desired.name, desired.vmid, actions, node)

    if actual is None:
        return plan(Create(desired.storage, desired.disk_gib))
    what = f"{'container' if actual.type == 'lxc' else 'VM'} {actual.name!r}"
    if actual.node not in nodes:
        return plan(Conflict(f"VMID {actual.vmid} is taken by {what} on node {actual.node!r}"))
    if not is_managed(actual, ledger_vmids):
        return plan(
            Conflict(
                f"VMID {actual.vmid} is already used by {what}, which ailab-deploy does not manage "
                f"(it needs the {MANAGEMENT_TAG!r} tag and an entry in this lab's ledger); "
                "choose another vmid in the plan"
            )
        )
    if actual.lock:
        return plan(WaitUnlock(actual.lock))
    if actual.status == UNREACHABLE:
        return plan(
            Error(
                f"its node {actual.node} does not answer (down or cut off); Proxmox's HA manager "
                "restarts an HA VM elsewhere once it has fenced the node: run plan again then"
            )
        )
    if actual.config is None:
        return plan(Error("config was not read"))
    disk_actions = _disk_actions(desired, actual.config)
    if any(action.blocks for action in disk_actions):
        return plan(*disk_actions)
    actions: list[Action] = []
    running = actual.status == "running"
    if desired.node and desired.node != actual.node:
        actions.append(Migrate(actual.node, desired.node, running))
    changes = config_changes(desired, actual.config)
    if changes:
        restart = running and any(change.key not in LIVE_KEYS for change in changes)
        actions.append(Update(changes, restart))
    actions += disk_actions
    if not running and not desired.kept_off_by_ha:
        actions.append(Start())
    return plan(*actions) if actions else plan(NoOp())


def diff(
    desired: Sequence[DesiredVM],
    actual: Mapping[int, ActualVM],
    ledger_vmids: AbstractSet[int],
    nodes: AbstractSet[str],
) -> ProvisionPlan:
    """Actions for every planned VM, then an Orphan entry for each managed VM the plan dropped."""
    planned = [diff_vm(vm, actual.get(vm.vmid), ledger_vmids, nodes) for vm in desired]
    wanted = {vm.vmid for vm in desired}
    orphans = [
        VMPlan(vm.name, vm.vmid, (Orphan(),), vm.node)
        for vmid, vm in sorted(actual.items())
        if vmid not in wanted and vm.node in nodes and is_managed(vm, ledger_vmids)
    ]
    return ProvisionPlan(tuple(planned + orphans))
