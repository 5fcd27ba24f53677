"""The permission checks PVE makes in code, beyond an endpoint's declared ``permissions``
(qemu-server's API2/Qemu.pm, pve-storage's check_volume_access, pve-guest-common's
check_vnet_access). ``authid`` is the caller as PVE's ``get_user`` gives it: an API token is
``user@realm!name``, never ``root@pam`` itself, so root-only options stay out of a token's reach.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from . import propstr
from .access import ROOT, AccessControl
from .apierror import fail

_CPU = {"cores", "cpu", "runningcpu", "cpulimit", "cpuunits", "numa", "smp", "sockets", "vcpus"}
_MEMORY = {"memory", "balloon", "shares", "allow-ksm"}
_HWTYPE = {
    "acpi", "hotplug", "kvm", "machine", "runningmachine", "scsihw", "smbios1", "tablet", "vga",
    "watchdog", "audio0", "rng0",
}  # fmt: skip
_OPTIONS = {
    "agent", "autostart", "bios", "description", "keyboard", "localtime", "migrate_downtime",
    "migrate_speed", "name", "onboot", "ostype", "protection", "reboot", "startdate", "startup",
    "tdf", "template",
}  # fmt: skip
_DISK = {"boot", "bootdisk", "vmstatestorage"}
_CLOUDINIT = {
    "cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain", "sshkeys",
}  # fmt: skip
_NEW_DISK = re.compile(r"^(([^/:\s]+):)?(\d+(\.\d+)?)$")  # storage:size (a disk to allocate)


def config_keys(access: AccessControl, authid: str, vmid: int, keys: Iterable[str]) -> None:
    """check_vm_modify_config_perm: the privilege each config key needs (drives are checked
    with their values, see ``drives``)."""
    if authid == ROOT:
        return
    for key in keys:
        if propstr.is_drive_key(key) or key == "cdrom" or key == "tags":
            continue
        if re.fullmatch(r"(unused|serial|usb|hostpci|virtiofs)\d+", key):
            continue
        if key in _CPU or re.fullmatch(r"numa\d+", key):
            access.check_vm(authid, vmid, ["VM.Config.CPU"])
        elif key in _MEMORY:
            access.check_vm(authid, vmid, ["VM.Config.Memory"])
        elif key in _HWTYPE:
            access.check_vm(authid, vmid, ["VM.Config.HWType"])
        elif key in _OPTIONS:
            access.check_vm(authid, vmid, ["VM.Config.Options"])
            if key == "startup":  # it changes host behaviour
                access.check(authid, "/", ["Sys.Modify"])
        elif key == "freeze":
            access.check_vm(authid, vmid, ["VM.PowerMgmt"])
        elif key in _DISK:
            access.check_vm(authid, vmid, ["VM.Config.Disk"])
        elif re.fullmatch(r"net\d+", key):
            access.check_vm(authid, vmid, ["VM.Config.Network"])
        elif key in _CLOUDINIT or re.fullmatch(r"ipconfig\d+", key):
            access.check_vm(authid, vmid, ["VM.Config.Cloudinit", "VM.Config.Network"], any_of=True)
        elif key == "vmstate":
            access.check_vm(authid, vmid, ["VM.Config.Disk", "VM.PowerMgmt"])
        else:  # args, affinity, hookscript, lock, ...: new options land here too
            raise fail(f"only root can set '{key}' config")


def serial_ports(access: AccessControl, authid: str, vmid: int, conf: Mapping[str, str]) -> None:
    """check_vm_create_serial_perm: a serial socket needs VM.Config.HWType; a host device, root."""
    if authid == ROOT:
        return
    for key, value in sorted(conf.items()):
        if re.fullmatch(r"serial\d+", key):
            if value != "socket":
                raise fail(f"only root can set '{key}' config for real devices")
            access.check_vm(authid, vmid, ["VM.Config.HWType"])


def tags(access: AccessControl, authid: str, vmid: int) -> None:
    """assert_tag_permissions, for the lab's unprivileged tags: VM.Config.Options."""
    if authid != ROOT:
        access.check_vm(authid, vmid, ["VM.Config.Options"])


def drive_keys(access: AccessControl, authid: str, vmid: int, drives: Mapping[str, str]) -> None:
    """update_vm's check_drive_perms: CD-ROMs need VM.Config.CDROM, cloud-init drives CDROM or
    Cloudinit, every other drive VM.Config.Disk."""
    for value in drives.values():
        drive = _parse(value)
        if propstr.is_cloudinit(drive):
            access.check_vm(authid, vmid, ["VM.Config.CDROM", "VM.Config.Cloudinit"], any_of=True)
        elif propstr.is_cdrom(drive):
            access.check_vm(authid, vmid, ["VM.Config.CDROM"])
        else:
            access.check_vm(authid, vmid, ["VM.Config.Disk"])


def drive_storage(
    access: AccessControl, authid: str, vmid: int, drives: Mapping[str, str], default_storage: str | None
) -> None:
    """check_storage_access: space on the storage of a new disk, access to an existing volume,
    and to the source of ``import-from``."""
    if authid == ROOT:
        return
    for value in drives.values():
        drive = _parse(value)
        volid = drive.get("file", "")
        cdrom = propstr.is_cdrom(drive)
        if not volid or volid in ("none", "cloudinit") or volid.endswith(":cloudinit"):
            pass
        elif cdrom and volid == "cdrom":
            access.check(authid, "/", ["Sys.Console"])
        elif not cdrom and (new := _NEW_DISK.match(volid)):
            storage = new.group(2) or default_storage
            if not storage:
                raise fail("no storage ID specified (and no default storage)")
            access.check(authid, f"/storage/{storage}", ["Datastore.AllocateSpace"])
        else:
            volume_access(access, authid, vmid, volid)
        source = drive.get("import-from")
        if source:
            owner = _owner(source)
            if owner is not None:
                access.check(authid, f"/vms/{owner}", ["VM.Clone"])
            else:
                volume_access(access, authid, vmid, source)


def volume_access(access: AccessControl, authid: str, vmid: int | None, volid: str) -> None:
    """pve-storage's check_volume_access."""
    if authid == ROOT or ":" not in volid:
        return
    storage, name = volid.split(":", 1)
    kind = name.split("/", 1)[0] if "/" in name else "images"
    owner = _owner(volid)
    if kind in ("iso", "vztmpl", "import"):
        access.check(
            authid, f"/storage/{storage}", ["Datastore.AllocateSpace", "Datastore.Audit"], any_of=True
        )
    elif owner is not None and vmid is not None and owner == vmid:
        return
    elif kind == "backup" and owner is not None:
        access.check(authid, f"/storage/{storage}", ["Datastore.AllocateSpace"])
        access.check(authid, f"/vms/{owner}", ["VM.Backup"])
    else:
        access.check(authid, f"/storage/{storage}", ["Datastore.Allocate"])


def clone_storage(access: AccessControl, authid: str, conf: Mapping[str, str], target: str | None) -> None:
    """check_storage_access_clone: space on each disk's storage (or the clone's target)."""
    if authid == ROOT:
        return
    for key, value in sorted(conf.items()):
        if not propstr.is_drive_key(key):
            continue
        drive = _parse(value)
        volid = drive.get("file", "")
        if not volid or volid == "none" or propstr.is_cdrom(drive):
            if propstr.is_cdrom(drive) and volid == "cdrom":
                access.check(authid, "/", ["Sys.Console"])
            continue
        storage = target or volid.split(":", 1)[0]
        access.check(authid, f"/storage/{storage}", ["Datastore.AllocateSpace"])
    if conf.get("vmstatestorage"):
        access.check(authid, f"/storage/{conf['vmstatestorage']}", ["Datastore.AllocateSpace"])


def bridges(access: AccessControl, authid: str, conf: Mapping[str, str]) -> None:
    """check_bridge_access: SDN.Use on each NIC's bridge (or on its VLAN tag there), in the
    ``localnetwork`` zone a plain Linux bridge belongs to."""
    if authid == ROOT:
        return
    for key in sorted(conf):
        if not re.fullmatch(r"net\d+", key):
            continue
        net = _net(conf[key])
        bridge = net.get("bridge")
        if not bridge:
            continue
        path = f"/sdn/zones/localnetwork/{bridge}" + (f"/{net['tag']}" if net.get("tag") else "")
        access.check(authid, path, ["SDN.Use"])


def _net(value: str) -> dict[str, str]:
    result = {}
    for part in value.split(","):
        key, sep, val = part.partition("=")
        if sep:
            result[key.strip()] = val.strip()
    return result


def _parse(value: str) -> dict[str, str]:
    try:
        return dict(propstr.parse(value, propstr.DRIVE_FORMAT, "drive"))
    except propstr.FormatError:
        return {}


def _owner(volid: str) -> int | None:
    """The VM a volume belongs to by PVE's naming (``vm-102-disk-0``, ``base-9000-disk-0``)."""
    match = re.search(r"(?:^|[:/])(?:vm|base)-(\d+)-", volid)
    return int(match.group(1)) if match else None
