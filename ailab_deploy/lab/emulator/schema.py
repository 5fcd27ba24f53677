"""Top-level API parameter checks, PVE's JSONSchema behaviour, and the qemu config keys.

``check(params, spec)`` collects every problem and raises one 400
``Parameter verification failed.`` whose ``errors`` maps parameter -> text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import propstr
from .apierror import param_error
from .propstr import FormatError

Checker = Callable[[str, str], str]  # (key, value) -> stored value; raises FormatError


@dataclass(frozen=True)
class P:
    """One API parameter or config key."""

    type: str = "string"  # boolean | integer | number | string
    optional: bool = True
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    check: Checker | None = None


def _fmt(fn: Callable[[str], str]) -> Checker:
    return lambda _key, value: fn(value)


def check_value(name: str, spec: P, value: str) -> tuple[Any, str | None]:
    """Return (typed value, error text or None)."""
    if spec.type == "boolean":
        # top-level booleans: only 1 and 0 (and empty) pass, like PVE (not True/yes/on)
        if value == "1":
            return 1, None
        if value in ("0", ""):
            return 0, None
        return None, f"type check ('boolean') failed - got '{value}'"
    if spec.type in ("integer", "number"):
        sub = propstr.Sub(spec.type, minimum=spec.minimum, maximum=spec.maximum)
        problem = propstr.check_scalar(sub, value)
        if problem:
            return None, problem
        return (int(value) if spec.type == "integer" else float(value)), None
    if spec.max_length is not None and len(value) > spec.max_length:
        return None, f"value may only be {spec.max_length} characters long"
    sub = propstr.Sub(enum=spec.enum, pattern=spec.pattern)
    problem = propstr.check_scalar(sub, value)
    if problem:
        return None, problem
    if spec.check is not None:
        try:
            return spec.check(name, value), None
        except FormatError as err:
            return None, f"invalid format - {err}"
    return value, None


def check(
    params: dict[str, str],
    spec: dict[str, P],
    extra: Callable[[str], P | None] | None = None,
) -> dict[str, Any]:
    """Validate ``params``; ``extra`` resolves keys not in ``spec`` (e.g. config keys)."""
    errors: dict[str, str] = {}
    result: dict[str, Any] = {}
    for name, value in params.items():
        item = spec.get(name) or (extra(name) if extra else None)
        if item is None:
            errors[name] = (
                "property is not defined in schema and the schema does not allow additional properties"
            )
            continue
        typed, problem = check_value(name, item, value)
        if problem:
            errors[name] = problem
        else:
            result[name] = typed
    for name, item in spec.items():
        if not item.optional and name not in params:
            errors[name] = "property is missing and it is not optional"
    if errors:
        raise param_error(errors)
    return result


# --- common parameters -----------------------------------------------------------------------

VMID = P("integer", optional=False, minimum=100, maximum=999999999)
NODE = P(optional=False, pattern=r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?")
DIGEST = P(pattern=r"[a-f0-9]{40}", max_length=40)

# --- qemu config keys (qemu-server confdesc) ---------------------------------------------------

BOOL_KEYS = (
    "acpi",
    "autostart",
    "ciupgrade",
    "freeze",
    "keephugepages",
    "kvm",
    "localtime",
    "numa",
    "onboot",
    "protection",
    "reboot",
    "tablet",
    "template",
    "tdf",
)
INT_KEYS: dict[str, tuple[int | None, int | None]] = {
    "balloon": (0, None),
    "cores": (1, None),
    "cpuunits": (1, 262144),
    "migrate_speed": (0, None),
    "shares": (0, 50000),
    "sockets": (1, None),
    "vcpus": (1, None),
}
NUMBER_KEYS: dict[str, tuple[float | None, float | None]] = {
    "cpulimit": (0, 128),
    "migrate_downtime": (0, None),
}
LOCKS = (
    "backup",
    "clone",
    "create",
    "migrate",
    "rollback",
    "snapshot",
    "snapshot-delete",
    "suspending",
    "suspended",
)

_drive_check: Checker = lambda key, value: propstr.render_drive(propstr.parse_drive(key, value))  # noqa: E731

STRING_KEYS: dict[str, P] = {
    "name": P(check=_fmt(propstr.check_dns_name)),
    "description": P(max_length=8192),
    "memory": P(check=propstr.check_with(propstr.MEMORY_FORMAT)),
    "agent": P(check=propstr.check_with(propstr.AGENT_FORMAT)),
    "boot": P(check=propstr.check_with(propstr.BOOT_FORMAT)),
    "bootdisk": P(pattern=r"(ide|sata|scsi|virtio)\d+"),
    "cpu": P(check=propstr.check_with(propstr.CPU_FORMAT)),
    "smbios1": P(check=propstr.check_with(propstr.SMBIOS_FORMAT)),
    "tags": P(check=_fmt(propstr.check_tags)),
    "sshkeys": P(check=_fmt(propstr.check_sshkeys)),
    "lock": P(enum=LOCKS),
    "ostype": P(
        enum=(
            "other",
            "wxp",
            "w2k",
            "w2k3",
            "w2k8",
            "wvista",
            "win7",
            "win8",
            "win10",
            "win11",
            "l24",
            "l26",
            "solaris",
        )
    ),
    "bios": P(enum=("seabios", "ovmf")),
    "citype": P(enum=("configdrive2", "nocloud", "opennebula")),
    "scsihw": P(
        enum=(
            "lsi",
            "lsi53c810",
            "virtio-scsi-pci",
            "virtio-scsi-single",
            "megasas",
            "pvscsi",
        )
    ),
    "hugepages": P(enum=("any", "2", "1024")),
    "arch": P(enum=("x86_64", "aarch64")),
    "keyboard": P(),
    "machine": P(),
    "vga": P(),
    "cicustom": P(),
    "cipassword": P(),
    "ciuser": P(),
    "nameserver": P(),
    "searchdomain": P(),
    "hookscript": P(),
    "hotplug": P(),
    "startup": P(),
    "startdate": P(),
    "args": P(),
    "vmgenid": P(),
    "meta": P(),
    "watchdog": P(),
    "rng0": P(),
    "audio0": P(),
    "affinity": P(),
    "spice_enhancements": P(),
    "ivshmem": P(),
    "vmstatestorage": P(),
    "tpmstate0": P(check=_drive_check),
    "efidisk0": P(check=_drive_check),
    "cdrom": P(),
}
_INDEXED: list[tuple[re.Pattern[str], P]] = [
    (re.compile(r"net([0-9]|[12][0-9]|3[01])"), P(check=propstr.check_net)),
    (re.compile(r"ipconfig([0-9]|[12][0-9]|3[01])"), P(check=propstr.check_ipconfig)),
    (propstr.DRIVE_KEY, P(check=_drive_check)),
    (re.compile(r"unused\d+"), P()),
    (re.compile(r"serial[0-3]"), P(pattern=r"(/dev/.+|socket)")),
    (re.compile(r"(usb\d+|hostpci\d+|parallel[0-2]|numa[0-7]|virtiofs\d+)"), P()),
]


def config_key(key: str) -> P | None:
    """The schema of a qemu config key, or None if PVE does not know it."""
    if key in BOOL_KEYS:
        return P("boolean")
    if key in INT_KEYS:
        low, high = INT_KEYS[key]
        return P("integer", minimum=low, maximum=high)
    if key in NUMBER_KEYS:
        low_n, high_n = NUMBER_KEYS[key]
        return P("number", minimum=low_n, maximum=high_n)
    if key in STRING_KEYS:
        return STRING_KEYS[key]
    for pattern, spec in _INDEXED:
        if pattern.fullmatch(key):
            return spec
    return None


def typed_config_value(key: str, value: str) -> Any:
    """GET config returns integers and booleans as JSON numbers, everything else as strings."""
    if key in BOOL_KEYS or key in INT_KEYS:
        try:
            return int(value)
        except ValueError:
            return value
    if key in NUMBER_KEYS:
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value
