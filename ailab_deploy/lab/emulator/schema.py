"""Top-level API parameter checks, PVE's JSONSchema behaviour, and the qemu config keys.

``check(params, spec)`` collects every problem and raises one 400
``Parameter verification failed.`` whose ``errors`` maps parameter -> text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import formats, propstr
from .apierror import param_error
from .propstr import FormatError, Sub

assert formats.FORMATS  # importing it registers PVE's named formats

Checker = Callable[[str, str], str]  # (key, value) -> stored value; raises FormatError


P = Sub  # one API parameter or config key


def _fmt(fn: Callable[[str], str]) -> Checker:
    return lambda _key, value: fn(value)


def check_value(name: str, spec: P, value: str) -> tuple[Any, str | None]:
    """Return (typed value, error text or None), as PVE's check_prop for a top-level parameter."""
    problem = propstr.check_scalar(spec, value, top=True, path=name)
    if problem:
        return None, problem
    if spec.type == "boolean":
        return int(value), None
    if spec.type == "integer":
        return int(value), None
    if spec.type == "number":
        return float(value), None
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
        if item.requires and item.requires not in params:
            errors[item.requires] = f"missing property required by '{name}'"
    for name, item in spec.items():
        if not item.optional and name not in params:
            errors[name] = "property is missing and it is not optional"
    if errors:
        raise param_error(errors)
    return result


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# --- common parameters -----------------------------------------------------------------------

VMID = P("integer", optional=False, minimum=100, maximum=999999999, format="pve-vmid")
NODE = P(optional=False, format="pve-node")
DIGEST = P(max_length=40)
SNAPNAME = P(optional=False, format="pve-configid", max_length=40)
SNAPNAME_OPT = P(format="pve-configid", max_length=40)
STORAGE = P(format="pve-storage-id")
STORAGE_REQUIRED = P(optional=False, format="pve-storage-id")

# --- qemu config keys (qemu-server's confdesc), per PVE release ---------------------------------

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
KEYBOARDS = [
    "de",
    "de-ch",
    "da",
    "en-gb",
    "en-us",
    "es",
    "fi",
    "fr",
    "fr-be",
    "fr-ca",
    "fr-ch",
    "hu",
    "is",
    "it",
    "ja",
    "lt",
    "mk",
    "nl",
    "no",
    "pl",
    "pt",
    "pt-br",
    "sv",
    "sl",
    "tr",
]
VGA_TYPES = [
    "cirrus",
    "qxl",
    "qxl2",
    "qxl3",
    "qxl4",
    "none",
    "serial0",
    "serial1",
    "serial2",
    "serial3",
    "std",
    "virtio",
    "virtio-gl",
    "vmware",
]
MACHINE_TYPE = (
    r"(pc|pc(-i440fx)?-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?|q35|pc-q35-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?"
    r"|virt(?:-\d+(\.\d+)+)?(\+pve\d+)?)"
)
USB_HOST = (
    r"(?:(?:(?:(0x)?([0-9A-Fa-f]{4}):(0x)?([0-9A-Fa-f]{4})))|(?:(?:(\d+)\-(\d+(\.\d+)*)))"
    r"|[Ss][Pp][Ii][Cc][Ee])"
)
_CPU_LIST = r"\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*"

_drive_check: Checker = lambda key, value: propstr.render_drive(propstr.parse_drive(key, value))  # noqa: E731


def _confdesc(release: str) -> dict[str, P]:
    """Every plain config key; numbered keys come from ``_numbered``."""
    boolean = P("boolean")
    desc: dict[str, P] = {
        **{
            k: boolean
            for k in [
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
            ]
        },
        "balloon": P("integer", minimum=0),
        "cores": P("integer", minimum=1),
        "cpuunits": P("integer", minimum=1, maximum=262144),
        "migrate_speed": P("integer", minimum=0),
        "shares": P("integer", minimum=0, maximum=50000),
        "smp": P("integer", minimum=1),
        "sockets": P("integer", minimum=1),
        "vcpus": P("integer", minimum=1),
        "cpulimit": P("number", minimum=0, maximum=128),
        "migrate_downtime": P("number", minimum=0),
        "name": P(format="dns-name"),
        "description": P(max_length=8192),
        "memory": P(format={"current": Sub("integer", minimum=16, default_key=True, optional=False)}),
        "agent": P(format=propstr.agent_format(release)),
        "boot": P(format="pve-qm-boot"),
        "bootdisk": P(format="pve-qm-bootdisk", pattern=r"(ide|sata|scsi|virtio)\d+"),
        "cpu": P(format="pve-vm-cpu-conf"),
        "smbios1": P(format="pve-qm-smbios1", max_length=512),
        "tags": P(format="pve-tag-list", check=lambda _k, v: propstr.check_tags(v)),
        "sshkeys": P(format="urlencoded"),
        "lock": P(enum=LOCKS),
        "ostype": P(
            enum=tuple(
                [
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
                ]
            )
        ),
        "bios": P(enum=("seabios", "ovmf")),
        "citype": P(enum=("configdrive2", "nocloud", "opennebula")),
        "scsihw": P(enum=("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi")),
        "hugepages": P(enum=("any", "2", "1024")),
        "arch": P(enum=("x86_64", "aarch64")),
        "keyboard": P(enum=tuple(KEYBOARDS)),
        "machine": P(format=machine_format(release)),
        "vga": P(
            format={
                "type": Sub(enum=tuple(VGA_TYPES), default_key=True),
                "memory": Sub("integer", minimum=4, maximum=512),
                "clipboard": Sub(enum=("vnc",)),
            }
        ),
        "cicustom": P(format="pve-qm-cicustom"),
        "cipassword": P(),
        "ciuser": P(),
        "nameserver": P(format="address-list"),
        "searchdomain": P(),
        "hookscript": P(format="pve-volume-id"),
        "hotplug": P(format="pve-hotplug-features"),
        "startup": P(format="pve-startup-order"),
        "startdate": P(pattern=r"(now|\d{4}-\d{1,2}-\d{1,2}(T\d{1,2}:\d{1,2}:\d{1,2})?)"),
        "args": P(),
        "vmgenid": P(pattern=r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])"),
        "watchdog": P(format="pve-qm-watchdog"),
        "rng0": P(format="pve-qm-rng"),
        "audio0": P(
            format={
                "device": Sub(enum=("ich9-intel-hda", "intel-hda", "AC97"), optional=False),
                "driver": Sub(enum=("spice", "none")),
            }
        ),
        "affinity": P(format="pve-cpuset"),
        "spice_enhancements": P(
            format={
                "foldersharing": Sub("boolean"),
                "videostreaming": Sub(enum=("off", "all", "filter")),
            }
        ),
        "ivshmem": P(
            format={
                "size": Sub("integer", minimum=1, optional=False),
                "name": Sub(pattern=r"[a-zA-Z0-9\-]+"),
            }
        ),
        "vmstatestorage": P(format="pve-storage-id"),
        "amd-sev": P(format="pve-qemu-sev-fmt"),
        "tpmstate0": P(format=propstr.drive_format("tpmstate0", release), check=_drive_check),
        "efidisk0": P(format=propstr.drive_format("efidisk0", release), check=_drive_check),
        "cdrom": P(format="pve-qm-ide"),
    }
    if release != "8.4":  # added in PVE 9
        desc["allow-ksm"] = boolean
        desc["intel-tdx"] = P(format="pve-qemu-tdx-fmt")
    return desc


def machine_format(release: str) -> dict[str, Sub]:
    fmt = {
        "type": Sub(default_key=True, pattern=MACHINE_TYPE, max_length=40),
        "enable-s3": Sub("boolean"),
        "enable-s4": Sub("boolean"),
        "viommu": Sub(enum=("intel", "virtio")),
    }
    if release != "8.4":
        fmt["aw-bits"] = Sub("number", minimum=32, maximum=64)
    return fmt


def _numbered(release: str) -> dict[str, tuple[int, P]]:
    """Numbered keys: base name -> (highest index, schema)."""
    drives = {
        bus: (high, P(format=propstr.drive_format(bus + "0", release), check=_drive_check))
        for bus, high in (("ide", 3), ("sata", 5), ("scsi", 30), ("virtio", 15))
    }
    return {
        **drives,
        "net": (31, P(format=propstr.NET_FORMAT, check=propstr.check_net)),
        "ipconfig": (31, P(check=propstr.check_ipconfig)),  # pve-qm-ipconfig, with PVE's wording
        "unused": (
            255,
            P(
                format={
                    "file": Sub(default_key=True, optional=False, format="pve-volume-id"),
                    "volume": Sub(alias="file"),
                }
            ),
        ),
        "serial": (3, P(pattern=r"(/dev/.+|socket)")),
        "parallel": (2, P(pattern=r"/dev/parport\d+|/dev/usb/lp\d+")),
        "usb": (
            13,
            P(
                format={
                    "host": Sub(default_key=True, pattern=USB_HOST),
                    "mapping": Sub(format="pve-configid"),
                    "usb3": Sub("boolean"),
                }
            ),
        ),
        "hostpci": (15, P(format="pve-qm-hostpci")),
        "numa": (
            7,
            P(
                format={
                    "cpus": Sub(pattern=_CPU_LIST, optional=False),
                    "hostnodes": Sub(pattern=_CPU_LIST),
                    "memory": Sub("number"),
                    "policy": Sub(enum=("preferred", "bind", "interleave")),
                }
            ),
        ),
        "virtiofs": (
            9,
            P(
                format={
                    "dirid": Sub(default_key=True, optional=False, format="pve-configid"),
                    "cache": Sub(enum=("auto", "always", "metadata", "never")),
                    "direct-io": Sub("boolean"),
                    "expose-acl": Sub("boolean"),
                    "expose-xattr": Sub("boolean"),
                }
            ),
        ),
    }


_CONFDESC = {release: _confdesc(release) for release in propstr.RELEASES}
_NUMBERED = {release: _numbered(release) for release in propstr.RELEASES}
_NUMBERED_KEY = re.compile(r"([a-z]+)(0|[1-9][0-9]*)")


def config_key(key: str, release: str = "9.1") -> P | None:
    """The schema of a qemu config key in a PVE release, or None if that release does not know it."""
    spec = _CONFDESC[release].get(key)
    if spec is not None:
        return spec
    match = _NUMBERED_KEY.fullmatch(key)
    if match and match.group(1) in _NUMBERED[release]:
        high, spec = _NUMBERED[release][match.group(1)]
        if int(match.group(2)) <= high:
            return spec
    return None


def typed_config_value(key: str, value: str) -> Any:
    """GET config returns integers and booleans as JSON numbers, everything else as strings."""
    spec = _CONFDESC["9.1"].get(key) or _CONFDESC["8.4"].get(key)
    kind = spec.type if spec is not None else "string"
    if kind in ("boolean", "integer"):
        try:
            return int(value)
        except ValueError:
            return value
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value
