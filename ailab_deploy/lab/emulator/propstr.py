"""PVE property strings (``key=value,...``) and the value formats of the qemu config.

Each ``check_*`` returns the value PVE would store, or raises :class:`FormatError`
whose text becomes ``invalid format - <text>`` in a 400 answer, as in PVE's
JSONSchema (sub-key problems: ``format error\\n<key>.<sub>: <msg>\\n``).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
from dataclasses import dataclass
from urllib.parse import unquote

from ailab_deploy.core.units import pve_size_bytes

BOOL_TRUE = {"1", "true", "yes", "on"}
BOOL_FALSE = {"0", "false", "no", "off"}


class FormatError(ValueError):
    """A value that does not match its format; the text is PVE's (with trailing newline)."""


@dataclass(frozen=True)
class Sub:
    """One key of a property string."""

    type: str = "string"  # boolean | integer | number | string
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    default_key: bool = False


def check_scalar(sub: Sub, value: str) -> str | None:
    """PVE's per-type checks; returns an error text or None."""
    if sub.type == "boolean":
        if value.lower() not in BOOL_TRUE | BOOL_FALSE:
            return f"type check ('boolean') failed - got '{value}'"
        return None
    if sub.type == "integer":
        if not re.fullmatch(r"[+-]?\d+", value):
            return f"type check ('integer') failed - got '{value}'"
        number: float = int(value)
    elif sub.type == "number":
        try:
            number = float(value)
        except ValueError:
            return f"type check ('number') failed - got '{value}'"
    else:
        if sub.enum is not None and value not in sub.enum:
            return f"value '{value}' does not have a value in the enumeration '{', '.join(sub.enum)}'"
        if sub.pattern is not None and not re.fullmatch(sub.pattern, value):
            return "value does not match the regex pattern"
        return None
    if sub.minimum is not None and number < sub.minimum:
        return f"value must have a minimum value of {_num(sub.minimum)}"
    if sub.maximum is not None and number > sub.maximum:
        return f"value must have a maximum value of {_num(sub.maximum)}"
    return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse(value: str, fmt: dict[str, Sub], path: str) -> dict[str, str]:
    """Split and check a property string; booleans inside are normalised to 0/1."""
    result: dict[str, str] = {}
    default_key = next((k for k, s in fmt.items() if s.default_key), None)
    for part in value.split(","):
        if part == "":
            continue
        match = re.fullmatch(r"([^=]+)=(.+)", part)
        if match:
            key, val = match.group(1), match.group(2)
            if key in result:
                raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
            if key not in fmt:
                raise FormatError(f"invalid key in comma-separated list property: {key}\n")
            if fmt[key].type == "boolean" and val.lower() in BOOL_TRUE | BOOL_FALSE:
                val = "1" if val.lower() in BOOL_TRUE else "0"
            result[key] = val
        elif "=" not in part:
            if default_key is None:
                raise FormatError("value without key, but schema does not define a default key\n")
            if default_key in result:
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            result[default_key] = part
        else:
            raise FormatError("missing key in comma-separated list property\n")
    errors = {}
    for key, val in result.items():
        problem = check_scalar(fmt[key], val)
        if problem:
            errors[f"{path}.{key}"] = problem
    if errors:
        raise FormatError(sub_errors(errors))
    return result


def sub_errors(errors: dict[str, str]) -> str:
    return "format error\n" + "".join(f"{k}: {errors[k]}\n" for k in sorted(errors))


def render(values: dict[str, str], first: str | None = None) -> str:
    """PVE's print_property_string: the default key bare, then the rest sorted."""
    parts = []
    if first and first in values:
        parts.append(values[first])
    parts += [f"{k}={values[k]}" for k in sorted(values) if k != first]
    return ",".join(parts)


# --- sizes -------------------------------------------------------------------------------

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE_PATTERN = r"\d+(\.\d+)?[KMGT]?"


def parse_size(text: str, default_unit: str = "") -> int:
    return pve_size_bytes(text, default_unit)  # raises UnitError, a ValueError


def format_size(size: int) -> str:
    """PVE's format_size: the largest unit that divides the size exactly."""
    for unit in ("T", "G", "M", "K"):
        factor = _UNITS[unit]
        if size % factor == 0 and size >= factor:
            return f"{size // factor}{unit}"
    return str(size)


# --- drives ------------------------------------------------------------------------------

_ON_OFF = ("on", "ignore")
DRIVE_FORMAT: dict[str, Sub] = {
    "file": Sub(default_key=True),
    "aio": Sub(enum=("native", "threads", "io_uring")),
    "backup": Sub("boolean"),
    "cache": Sub(enum=("none", "writethrough", "writeback", "unsafe", "directsync")),
    "cyls": Sub("integer"),
    "detect_zeroes": Sub("boolean"),
    "discard": Sub(enum=_ON_OFF),
    "format": Sub(enum=("raw", "cow", "qcow", "qed", "qcow2", "vmdk", "cloop")),
    "heads": Sub("integer"),
    "import-from": Sub(),
    "iops": Sub("integer"),
    "iops_rd": Sub("integer"),
    "iops_wr": Sub("integer"),
    "iothread": Sub("boolean"),
    "mbps": Sub("number"),
    "mbps_rd": Sub("number"),
    "mbps_wr": Sub("number"),
    "media": Sub(enum=("cdrom", "disk")),
    "model": Sub(),
    "product": Sub(),
    "queues": Sub("integer", minimum=2),
    "replicate": Sub("boolean"),
    "rerror": Sub(enum=("ignore", "report", "stop")),
    "ro": Sub("boolean"),
    "scsiblock": Sub("boolean"),
    "secs": Sub("integer"),
    "serial": Sub(),
    "shared": Sub("boolean"),
    "size": Sub(pattern=SIZE_PATTERN),
    "snapshot": Sub("boolean"),
    "ssd": Sub("boolean"),
    "trans": Sub(enum=("none", "lba", "auto")),
    "vendor": Sub(),
    "werror": Sub(enum=("enospc", "ignore", "report", "stop")),
    "wwn": Sub(pattern=r"(?:0x)[0-9a-fA-F]{16}"),
}
EFI_FORMAT: dict[str, Sub] = {
    "file": Sub(default_key=True),
    "efitype": Sub(enum=("2m", "4m")),
    "format": DRIVE_FORMAT["format"],
    "import-from": Sub(),
    "pre-enrolled-keys": Sub("boolean"),
    "size": DRIVE_FORMAT["size"],
}
TPM_FORMAT: dict[str, Sub] = {
    "file": Sub(default_key=True),
    "import-from": Sub(),
    "size": DRIVE_FORMAT["size"],
    "version": Sub(enum=("v1.2", "v2.0")),
}

DRIVE_KEY = re.compile(r"^(ide[0-3]|sata[0-5]|scsi(?:[0-9]|[12][0-9]|30)|virtio(?:[0-9]|1[0-5]))$")
SPECIAL_DRIVES = {"efidisk0": EFI_FORMAT, "tpmstate0": TPM_FORMAT}


def is_drive_key(key: str) -> bool:
    return bool(DRIVE_KEY.match(key)) or key in SPECIAL_DRIVES


def drive_format(key: str) -> dict[str, Sub]:
    return SPECIAL_DRIVES.get(key, DRIVE_FORMAT)


def parse_drive(key: str, value: str) -> dict[str, str]:
    drive = parse(value, drive_format(key), key)
    if "file" not in drive:
        raise FormatError(sub_errors({f"{key}.file": "property is missing and it is not optional"}))
    return drive


def render_drive(drive: dict[str, str]) -> str:
    return render(drive, first="file")


def is_cdrom(drive: dict[str, str]) -> bool:
    return drive.get("media") == "cdrom"


def is_cloudinit(drive: dict[str, str]) -> bool:
    return bool(re.search(r"(^|:)(vm|base)-\d+-cloudinit(\.\w+)?$", drive.get("file", "")))


# --- network -----------------------------------------------------------------------------

NET_MODELS = (
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
)
NET_FORMAT: dict[str, Sub] = {
    "model": Sub(enum=NET_MODELS, default_key=True),
    "macaddr": Sub(),
    "bridge": Sub(pattern=r"[-_.\w\d]+"),
    "firewall": Sub("boolean"),
    "link_down": Sub("boolean"),
    "mtu": Sub("integer", minimum=1, maximum=65520),
    "queues": Sub("integer", minimum=0, maximum=64),
    "rate": Sub("number", minimum=0),
    "tag": Sub("integer", minimum=1, maximum=4094),
    "trunks": Sub(pattern=r"\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*"),
}
_MAC = re.compile(r"^[0-9a-fA-F][02468aceACE](?::[0-9a-fA-F]{2}){5}$")
MAC_PREFIX = "BC:24:11"


def random_mac() -> str:
    return MAC_PREFIX + "".join(f":{b:02X}" for b in secrets.token_bytes(3))


def check_net(key: str, value: str) -> str:
    """Normalise ``virtio=MAC,bridge=...``; a MAC is generated when missing."""
    parts = []
    for part in value.split(","):
        name, _, rest = part.partition("=")
        if name in NET_MODELS:
            parts.append(f"model={name}")
            if rest:
                parts.append(f"macaddr={rest}")
        else:
            parts.append(part)
    net = parse(",".join(parts), NET_FORMAT, key)
    if "model" not in net:
        raise FormatError(sub_errors({f"{key}.model": "property is missing and it is not optional"}))
    mac = net.pop("macaddr", None)
    if mac is not None and not _MAC.match(mac):
        raise FormatError(
            sub_errors(
                {f"{key}.macaddr": "invalid format - value does not look like a valid unicast MAC address\n"}
            )
        )
    model = net.pop("model")
    first = f"{model}={mac.upper()}" if mac else model
    return render({"model": first, **net}, first="model")


def ensure_mac(value: str, old: str | None = None) -> str:
    """Give a NIC without MAC the old NIC's MAC (update) or a new one (PVE's autogen)."""
    first, _, rest = value.partition(",")
    if "=" in first:
        return value
    mac = (net_mac(old) if old else None) or random_mac()
    return f"{first}={mac}" + (f",{rest}" if rest else "")


def net_mac(value: str) -> str | None:
    first = value.split(",", 1)[0]
    return first.split("=", 1)[1] if "=" in first else None


def with_new_mac(value: str) -> str:
    first, _, rest = value.partition(",")
    model = first.split("=", 1)[0]
    return f"{model}={random_mac()}" + (f",{rest}" if rest else "")


# --- cloud-init ----------------------------------------------------------------------------

IPCONFIG_FORMAT: dict[str, Sub] = {"ip": Sub(), "gw": Sub(), "ip6": Sub(), "gw6": Sub()}


def _is_cidr(text: str, version: int) -> bool:
    if "/" not in text:
        return False
    try:
        return ipaddress.ip_interface(text).version == version
    except ValueError:
        return False


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def check_ipconfig(key: str, value: str) -> str:
    conf = parse(value, IPCONFIG_FORMAT, key)
    errors = {}
    ip, gw, ip6, gw6 = (conf.get(k) for k in ("ip", "gw", "ip6", "gw6"))
    if ip is not None and ip != "dhcp" and not _is_cidr(ip, 4):
        errors[f"{key}.ip"] = "invalid format - value does not look like a valid ipv4 network configuration\n"
    if gw is not None and not _is_ip(gw, 4):
        errors[f"{key}.gw"] = "invalid format - value does not look like a valid IPv4 address\n"
    if ip6 is not None and ip6 not in ("dhcp", "auto") and not _is_cidr(ip6, 6):
        errors[f"{key}.ip6"] = (
            "invalid format - value does not look like a valid ipv6 network configuration\n"
        )
    if gw6 is not None and not _is_ip(gw6, 6):
        errors[f"{key}.gw6"] = "invalid format - value does not look like a valid IPv6 address\n"
    if errors:
        raise FormatError(sub_errors(errors))
    if gw and not ip:
        raise FormatError("gateway specified without specifying an IP address\n")
    if gw6 and not ip6:
        raise FormatError("IPv6 gateway specified without specifying an IPv6 address\n")
    if gw and ip == "dhcp":
        raise FormatError("gateway specified together with DHCP\n")
    if gw6 and ip6 in ("dhcp", "auto"):
        raise FormatError(f"IPv6 gateway specified together with {ip6.upper()}\n")
    return value  # stored as given, like every non-drive, non-NIC key


_URLENCODED = re.compile(r"^[-%a-zA-Z0-9_.!~*'()]*$")
_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


class SshKeyError(ValueError):
    """PVE answers 500 ``SSH public key validation error`` (ssh-keygen -l failed)."""


def check_sshkeys(value: str) -> str:
    """``value`` is after the form decode: still percent-encoded, as PVE stores it."""
    if not _URLENCODED.match(value):
        raise FormatError(f"invalid urlencoded string: {value}\n")
    return value


def validate_ssh_keys(encoded: str) -> None:
    """What ``ssh-keygen -l`` checks: every non-comment line is a public key."""
    for line in unquote(encoded).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        # authorized_keys lines may start with options; find the key type
        idx = next((i for i, f in enumerate(fields) if f in _KEY_TYPES), None)
        if idx is None or idx + 1 >= len(fields):
            raise SshKeyError("SSH public key validation error")
        try:
            blob = base64.b64decode(fields[idx + 1], validate=True)
        except ValueError as err:
            raise SshKeyError("SSH public key validation error") from err
        name = fields[idx].encode()
        if blob[:4] != len(name).to_bytes(4, "big") or blob[4 : 4 + len(name)] != name:
            raise SshKeyError("SSH public key validation error")


# --- misc formats ------------------------------------------------------------------------

_DNS = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)$")
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)


def check_dns_name(value: str) -> str:
    if not _DNS.match(value):
        raise FormatError("value does not look like a valid DNS name\n")
    return value


def check_tags(value: str) -> str:
    """PVE's tag list: split on , ; or space, lower-cased, sorted, unique, joined by ';'."""
    tags = [t for t in re.split(r"[,; ]+", value) if t]
    for tag in tags:
        if not _TAG.match(tag):
            raise FormatError(f"invalid tag '{tag}'\n")
    return ";".join(sorted({t.lower() for t in tags}))


MEMORY_FORMAT = {"current": Sub("integer", minimum=16, default_key=True)}
AGENT_FORMAT = {
    "enabled": Sub("boolean", default_key=True),
    "freeze-fs-on-backup": Sub("boolean"),
    "fstrim_cloned_disks": Sub("boolean"),
    "type": Sub(enum=("virtio", "isa")),
}
BOOT_FORMAT = {"order": Sub(), "legacy": Sub(pattern=r"[acdn]{1,4}", default_key=True)}
CPU_FORMAT = {
    "cputype": Sub(default_key=True),
    "flags": Sub(pattern=r"[+-][a-zA-Z0-9\-_.]+(;[+-][a-zA-Z0-9\-_.]+)*"),
    "hidden": Sub("boolean"),
    "hv-vendor-id": Sub(),
    "phys-bits": Sub(),
    "reported-model": Sub(),
}
SMBIOS_FORMAT = {k: Sub() for k in ("uuid", "base64", "family", "manufacturer", "product", "serial", "sku")}
SMBIOS_FORMAT["base64"] = Sub("boolean")
SMBIOS_FORMAT["version"] = Sub()


def check_with(fmt: dict[str, Sub], first: str | None = None):  # type: ignore[no-untyped-def]
    """A checker for a plain property string (stored as given)."""

    def checker(key: str, value: str) -> str:
        parse(value, fmt, key)
        return value

    return checker


def agent_enabled(value: str | None) -> bool:
    if not value:
        return False
    try:
        return parse(value, AGENT_FORMAT, "agent").get("enabled", "0") == "1"
    except FormatError:
        return False


def memory_mib(value: str | None) -> int:
    if not value:
        return 512
    return int(parse(value, MEMORY_FORMAT, "memory").get("current", "512"))
