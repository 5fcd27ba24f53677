"""PVE's named formats (pve-common JSONSchema.pm, pve-storage, qemu-server), with PVE's wording.

Each validator raises :class:`FormatError`; the API answers ``invalid format - <text>``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from .propstr import FORMATS, FormatError, Sub, register_format

_ID = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE)
_CONFIGID = re.compile(r"[a-z][a-z0-9_-]+", re.IGNORECASE)
_DNS = re.compile(r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)")
_EMAIL_USER = r"[\w+\-~]+(\.[\w+\-~]+)*"
_USERID = r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+"
_EMAIL = _EMAIL_USER + r"@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*"
_DRIVE = r"(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|efidisk0|tpmstate0)"
_LIST_RANGE = r"\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*"


Validator = Callable[[str], object]


def _regex(pattern: str | re.Pattern[str], message: str) -> Validator:
    def check(value: str) -> None:
        if not re.fullmatch(pattern, value):
            raise FormatError(message.format(value=value) + "\n")

    return check


_HA_NODE = r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?(:\d+)?"


def _storage_id(value: str) -> None:
    if len(value) < 2:
        raise FormatError(f"storage ID '{value}' cannot be shorter than 2 characters\n")
    if not _ID.fullmatch(value):
        raise FormatError(f"storage ID '{value}' contains illegal characters\n")


def volume_id(value: str) -> tuple[str, str]:
    """pve-storage's parse_volume_id: (storage, volume name)."""
    match = re.fullmatch(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", value, re.IGNORECASE | re.DOTALL)
    if not match:
        raise FormatError(f"unable to parse volume ID '{value}'\n")
    return match.group(1), match.group(2)


def _volume_or_path(value: str) -> None:
    if not value.startswith("/"):
        volume_id(value)


def _volume_or_qm_path(value: str) -> None:
    if value not in ("none", "cdrom"):
        _volume_or_path(value)


def _ip(version: int | None) -> Validator:
    def check(value: str) -> None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None or (version is not None and address.version != version):
            label = {4: "IPv4", 6: "IPv6", None: "IP"}[version]
            raise FormatError(f"value does not look like a valid {label} address\n")

    return check


def _address(value: str) -> None:
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not _DNS.fullmatch(value):
        raise FormatError(f"value does not look like a valid address: {value}\n")


def _cidr(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise FormatError("value does not look like a valid CIDR network\n") from None
    if "/" not in value:
        raise FormatError("value does not look like a valid CIDR network\n")


def _cpuset(value: str) -> None:
    for part in value.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise FormatError("unable to parse cpuset option\n")


def _storage_pair(value: str) -> None:
    parts = value.split(":")
    if len(parts) > 2:
        raise FormatError(f"invalid storage pair '{value}'\n")
    for part in parts:
        if part != "1":
            _storage_id(part)


def _hotplug(value: str) -> None:
    if value in ("0", "1"):
        return
    for item in value.split(","):
        if item not in ("network", "disk", "cpu", "memory", "usb", "cloudinit"):
            raise FormatError("unable to parse hotplug option\n")


def _startup(value: str) -> None:
    for part in value.split(","):
        if not re.fullmatch(r"(order=\d+|up=\d+|down=\d+|\d+)", part):
            raise FormatError("unable to parse startup options\n")


def _bootdev(value: str) -> None:
    drive = bool(re.fullmatch(_DRIVE, value)) and not value.startswith(("efidisk", "tpmstate"))
    device = re.fullmatch(r"net([0-9]|[12][0-9]|3[01])|usb([0-9]|1[0-3])|hostpci([0-9]|1[0-5])", value)
    if not drive and device is None:
        raise FormatError(f"invalid boot device '{value}'\n")


def _calendar_event(value: str) -> None:
    if not value.strip() or len(value) > 128:
        raise FormatError(f"unable to parse calendar event '{value}'\n")


def _ipconfig_check(value: str) -> None:
    from .propstr import check_ipconfig

    check_ipconfig("", value)


_BACKUP_PERFORMANCE = {
    "max-workers": Sub("integer", minimum=1, maximum=256),
    "pbs-entries-max": Sub("integer", minimum=1),
}
_FLEECING = {
    "enabled": Sub("boolean", default_key=True),
    "storage": Sub(format="pve-storage-id"),
}
_PRUNE = {
    "keep-all": Sub("boolean"),
    **{
        f"keep-{k}": Sub("integer", minimum=1)
        for k in ("last", "hourly", "daily", "weekly", "monthly", "yearly")
    },
}
_CICUSTOM = {k: Sub(format="pve-volume-id") for k in ("meta", "network", "user", "vendor")}
_WATCHDOG = {
    "model": Sub(enum=("i6300esb", "ib700"), default_key=True),
    "action": Sub(enum=("reset", "shutdown", "poweroff", "pause", "debug", "none")),
}
_RNG = {
    "source": Sub(enum=("/dev/urandom", "/dev/random", "/dev/hwrng"), default_key=True, optional=False),
    "max_bytes": Sub("integer"),
    "period": Sub("integer"),
}
_SMBIOS1 = {
    "uuid": Sub(pattern=r"[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}"),
    "version": Sub(pattern=r"[A-Za-z0-9+/]+={0,2}|\S+"),
    "serial": Sub(),
    "manufacturer": Sub(),
    "product": Sub(),
    "sku": Sub(),
    "family": Sub(),
    "base64": Sub("boolean"),
}
_CPU = {
    "cputype": Sub(default_key=True, pattern=r"[a-zA-Z0-9\-_.+]+|custom-[a-zA-Z0-9\-_.+]+"),
    "flags": Sub(pattern=r"[+-][a-zA-Z0-9\-_.]+(;[+-][a-zA-Z0-9\-_.]+)*"),
    "hidden": Sub("boolean"),
    "hv-vendor-id": Sub(pattern=r"[a-zA-Z0-9]{1,12}"),
    "phys-bits": Sub(pattern=r"(?:[0-9]+|host)"),
    "reported-model": Sub(),
}
_HOSTPCI = {
    "host": Sub(default_key=True, pattern=r"[0-9a-fA-F:.;]+"),
    "mapping": Sub(format="pve-configid"),
    "device-id": Sub(),
    "legacy-igd": Sub("boolean"),
    "mdev": Sub(),
    "pcie": Sub("boolean"),
    "rombar": Sub("boolean"),
    "romfile": Sub(),
    "sub-device-id": Sub(),
    "sub-vendor-id": Sub(),
    "vendor-id": Sub(),
    "x-vga": Sub("boolean"),
}
_SEV = {
    "type": Sub(enum=("std", "es", "snp"), default_key=True, optional=False),
    "no-debug": Sub("boolean"),
    "no-key-sharing": Sub("boolean"),
    "allow-smt": Sub("boolean"),
    "kernel-hashes": Sub("boolean"),
}
_TDX = {"type": Sub(enum=("tdx",), default_key=True, optional=False), "attestation": Sub("boolean")}
_BOOT = {
    "legacy": Sub(default_key=True, pattern=r"[acdn]{1,4}"),
    "order": Sub(format="pve-qm-bootdev-list"),
}

_VALIDATORS: dict[str, Validator] = {
    "pve-vmid": _regex(r"[1-9][0-9]{2,8}", "value does not look like a valid VM ID"),
    "pve-node": _regex(
        r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", "value does not look like a valid node name"
    ),
    "pve-configid": _regex(_CONFIGID, "invalid configuration ID '{value}'"),
    "pve-storage-id": _storage_id,
    "pve-bridge-id": _regex(r"[-_.\w\d]+", "invalid bridge ID '{value}'"),
    "pve-poolid": _regex(
        r"[A-Za-z0-9_][A-Za-z0-9_\-]*(/[A-Za-z0-9_][A-Za-z0-9_\-]*){0,2}", "invalid pool ID '{value}'"
    ),
    "pve-volume-id": volume_id,
    "pve-volume-id-or-absolute-path": _volume_or_path,
    "pve-volume-id-or-qm-path": _volume_or_qm_path,
    "pve-qm-ide": _volume_or_qm_path,
    "pve-tag": _regex(re.compile(r"[a-z0-9_][a-z0-9_\-+.]*", re.IGNORECASE), "invalid characters in tag"),
    "dns-name": _regex(_DNS, "value does not look like a valid DNS name"),
    "address": _address,
    "mac-addr": _regex(
        re.compile(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", re.IGNORECASE),
        "value does not look like a valid unicast MAC address",
    ),
    "disk-size": _regex(r"\d+(\.\d+)?([KMGT](iB)?)?", "value does not look like a valid disk size: {value}"),
    "urlencoded": _regex(r"[-%a-zA-Z0-9_.!~*'()]*", "invalid urlencoded string: {value}"),
    "email-or-username": _regex(
        f"{_EMAIL}|{_EMAIL_USER}", "value does not look like a valid email address or user name"
    ),
    "email": _regex(_EMAIL, "value does not look like a valid email address"),
    # pve-access-control's verify_username, verify_groupname, verify_rolename, token ids
    "pve-userid": _regex(_USERID, "value '{value}' does not look like a valid user name"),
    "pve-groupid": _regex(r"[A-Za-z0-9.\-_]+", "group name '{value}' contains invalid characters"),
    "pve-roleid": _regex(r"[A-Za-z0-9.\-_]+", "role name '{value}' contains invalid characters"),
    "pve-tokenid": _regex(
        _USERID + r"![A-Za-z][A-Za-z0-9.\-_]+", "value '{value}' does not look like a valid token ID"
    ),
    "pve-priv": _regex(r"[A-Za-z][A-Za-z.]*", "invalid privilege name '{value}'"),
    "pve-day-of-week": _regex(r"mon|tue|wed|thu|fri|sat|sun", "invalid day '{value}'"),
    "pve-storage-content": _regex(
        r"images|rootdir|vztmpl|iso|backup|snippets|import", "invalid content type '{value}'"
    ),
    "pve-task-status-type": _regex(r"ok|error|warning|unknown", "invalid status '{value}'"),
    "pve-cpuset": _cpuset,
    "CIDR": _cidr,
    "ip": _ip(None),
    "ipv4": _ip(4),
    "ipv6": _ip(6),
    "storage-pair": _storage_pair,
    "pve-hotplug-features": _hotplug,
    "pve-startup-order": _startup,
    "pve-qm-bootdev": _bootdev,
    "pve-qm-bootdisk": _regex(_DRIVE, "invalid drive name '{value}'"),
    "pve-calendar-event": _calendar_event,
    "pve-qm-ipconfig": _ipconfig_check,
    "pve-iface": _regex(r"[a-zA-Z][a-zA-Z0-9_]{1,20}([:.]\d+)?", "invalid network interface name '{value}'"),
    "pve-vlan-id-or-range": _regex(r"\d+(-\d+)?", "invalid VLAN configuration '{value}'"),
    # pve-ha-manager's HA/Tools.pm
    "pve-ha-resource-id": _regex(r"[a-z]+:\S+", "value does not look like a valid ha resource id"),
    "pve-ha-resource-or-vm-id": _regex(r"[a-z]+:\S+|\d+", "value does not look like a valid ha resource id"),
    "pve-ha-node": _regex(_HA_NODE, "value does not look like a valid ha node"),
    "pve-ha-group-node": _regex(_HA_NODE, "value does not look like a valid ha group node"),
}
for _name, _validator in _VALIDATORS.items():
    register_format(_name, _validator)

for _name, _layout in {
    "backup-performance": _BACKUP_PERFORMANCE,
    "backup-fleecing": _FLEECING,
    "prune-backups": _PRUNE,
    "pve-qm-cicustom": _CICUSTOM,
    "pve-qm-watchdog": _WATCHDOG,
    "pve-qm-rng": _RNG,
    "pve-qm-smbios1": _SMBIOS1,
    "pve-vm-cpu-conf": _CPU,
    "pve-qm-hostpci": _HOSTPCI,
    "pve-qemu-sev-fmt": _SEV,
    "pve-qemu-tdx-fmt": _TDX,
    "pve-qm-boot": _BOOT,
}.items():
    register_format(_name, _layout)

__all__ = ["FORMATS", "volume_id"]
