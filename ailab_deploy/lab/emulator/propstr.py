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
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from ailab_deploy.core.units import pve_size_bytes

BOOL_TRUE = {"1", "true", "yes", "on"}
BOOL_FALSE = {"0", "false", "no", "off"}


class FormatError(ValueError):
    """A value that does not match its format; the text is PVE's (with trailing newline)."""


@dataclass(frozen=True)
class Sub:
    """One parameter, config key or property-string key, as PVE's JSONSchema declares it.

    ``format`` is a named format (see ``FORMATS``; ``-list`` and ``-opt`` suffixes as in PVE)
    or a dict of sub-keys (a property string). ``alias``/``key_alias`` map a key to another.
    """

    type: str = "string"  # boolean | integer | number | string
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    default_key: bool = False
    optional: bool = True
    format: str | dict[str, Sub] | None = None
    max_length: int | None = None
    min_length: int | None = None
    requires: str | None = None
    alias: str | None = None
    key_alias: str | None = None
    # the emulator's own normaliser after the schema checks: (key, value) -> stored value
    check: Callable[[str, str], str] | None = None


def is_number(value: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?", value) is not None


def check_scalar(sub: Sub, value: str, top: bool = False, path: str = "") -> str | None:
    """PVE's check_prop for one scalar: the error text, or None.

    ``top``: an API parameter (booleans only as 1/0); inside property strings PVE has already
    turned on/yes/true and off/no/false into 1/0.
    """
    if sub.type == "boolean":
        if not top and value.lower() in BOOL_TRUE | BOOL_FALSE:
            value = "1" if value.lower() in BOOL_TRUE else "0"
        if value not in ("0", "1"):
            return f"type check ('boolean') failed - got '{value}'"
    elif sub.type == "integer" and not re.fullmatch(r"[+-]?\d+", value):
        return f"type check ('integer') failed - got '{value}'"
    elif sub.type == "number" and not is_number(value):
        return f"type check ('number') failed - got '{value}'"
    if sub.format is not None:
        try:
            check_format(sub.format, value, path)
        except FormatError as err:
            return f"invalid format - {err}"
    if sub.pattern is not None and not re.fullmatch(sub.pattern, value, re.DOTALL):
        return "value does not match the regex pattern"
    if sub.max_length is not None and len(value) > sub.max_length:
        return f"value may only be {sub.max_length} characters long"
    if sub.min_length is not None and len(value) < sub.min_length:
        return f"value must be at least {sub.min_length} characters long"
    if is_number(value):
        if sub.maximum is not None and float(value) > sub.maximum:
            return f"value must have a maximum value of {_num(sub.maximum)}"
        if sub.minimum is not None and float(value) < sub.minimum:
            return f"value must have a minimum value of {_num(sub.minimum)}"
    if sub.enum is not None and value not in sub.enum:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(sub.enum)}'"
    return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def check_format(fmt: str | dict[str, Sub], value: str, path: str) -> None:
    """PVE's check_format: a property string, or a named format (``-list``/``-opt`` too)."""
    if isinstance(fmt, dict):
        parse(value, fmt, path)
        return
    match = re.fullmatch(r"(.*?)(?:-(list|opt))?", fmt)
    assert match is not None
    if match.group(1) in LAYOUTS and match.group(2) is None:
        parse(value, LAYOUTS[match.group(1)], path)
        return
    validator = FORMATS[match.group(1)]
    if match.group(2) == "list":
        for item in split_list(value):
            validator(item)
    elif match.group(2) == "opt":
        if value:
            validator(value)
    else:
        validator(value)


FORMATS: dict[str, Callable[[str], object]] = {}
LAYOUTS: dict[str, dict[str, Sub]] = {}  # named property-string formats


def register_format(name: str, fmt: Callable[[str], object] | dict[str, Sub]) -> None:
    """A named format: a validator that raises FormatError, or a property-string layout."""
    if isinstance(fmt, dict):
        layout = fmt
        LAYOUTS[name] = layout
        FORMATS[name] = lambda value: parse(value, layout, "")
    else:
        FORMATS[name] = fmt


def split_list(text: str) -> list[str]:
    """PVE's split_list: items separated by commas, semicolons or white space."""
    if "\0" in text:
        return text.split("\0")
    return re.sub(r"[,;]", " ", text).split()


def parse(value: str, fmt: dict[str, Sub], path: str) -> dict[str, str]:
    """PVE's parse_property_string: split, resolve aliases, check; booleans become 0/1."""
    result: dict[str, str] = {}
    default_key = next((k for k, s in fmt.items() if s.default_key), None)
    default_seen = False
    for part in value.split(","):
        if re.fullmatch(r"\s*", part):
            continue
        match = re.fullmatch(r"([^=]+)=(.+)", part, re.DOTALL)
        if match:
            key, val = match.group(1), match.group(2)
            if key in result:
                raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
            sub = fmt.get(key)
            if sub is not None and sub.alias:
                if sub.key_alias:
                    if sub.key_alias in result:
                        raise FormatError(f"key alias '{sub.key_alias}' is already defined\n")
                    result[sub.key_alias] = key
                key = sub.alias
                sub = fmt.get(key)
                if key in result:
                    raise FormatError(f"key '{key}' is already defined (via alias)\n")
            if sub is None:
                raise FormatError(f"invalid key in comma-separated list property: {key}\n")
            if sub.type == "boolean" and val.lower() in BOOL_TRUE | BOOL_FALSE:
                val = "1" if val.lower() in BOOL_TRUE else "0"
            result[key] = val
        elif "=" not in part:
            if default_seen or default_key is None:
                if default_key is None:
                    raise FormatError("value without key, but schema does not define a default key\n")
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            default_seen = True
            if default_key in result:
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            if fmt[default_key].type == "boolean" and part.lower() in BOOL_TRUE | BOOL_FALSE:
                part = "1" if part.lower() in BOOL_TRUE else "0"
            result[default_key] = part
        else:
            raise FormatError("missing key in comma-separated list property\n")
    errors: dict[str, str] = {}
    for key, sub in fmt.items():
        if sub.alias:
            continue
        where = f"{path}.{key}" if path else key
        if key not in result:
            if not sub.optional:
                errors[where] = "property is missing and it is not optional"
            continue
        problem = check_scalar(sub, result[key], path=where)
        if problem:
            errors[where] = problem
        elif sub.requires and sub.requires not in result:
            errors[f"{path}.{sub.requires}" if path else sub.requires] = (
                f"missing property required by '{where}'"
            )
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


# --- drives (qemu-server Drive.pm) -----------------------------------------------------------


def _drive_common(release: str) -> dict[str, Sub]:
    """The keys every ide/sata/scsi/virtio drive has."""
    fmt: dict[str, Sub] = {
        "file": Sub(default_key=True, optional=False, format="pve-volume-id-or-qm-path"),
        "volume": Sub(alias="file"),
        "media": Sub(enum=("cdrom", "disk")),
        "snapshot": Sub("boolean"),
        "cache": Sub(enum=("none", "writethrough", "writeback", "unsafe", "directsync")),
        "format": Sub(enum=("raw", "qcow", "qed", "qcow2", "vmdk", "cloop")),
        "size": Sub(format="disk-size"),
        "aio": Sub(enum=("native", "threads", "io_uring")),
        "discard": Sub(enum=("ignore", "on")),
        "detect_zeroes": Sub("boolean"),
        "werror": Sub(enum=("enospc", "ignore", "report", "stop")),
        "rerror": Sub(enum=("ignore", "report", "stop")),
        "backup": Sub("boolean"),
        "replicate": Sub("boolean"),
        "shared": Sub("boolean"),
        "serial": Sub(format="urlencoded", max_length=60),
        "import-from": Sub(format="pve-volume-id-or-absolute-path"),
    }
    for rate in ("mbps", "mbps_rd", "mbps_wr"):  # throttling: PVE's 'mbps', 'iops', 'bps' families
        fmt[rate] = Sub("number")
        fmt[rate + "_max"] = Sub("number")
    for limit in ("iops", "bps"):
        for direction in ("", "_rd", "_wr"):
            fmt[limit + direction] = Sub("integer")
            fmt[f"{limit}{direction}_max_length"] = Sub("integer", minimum=1)
            if direction:
                fmt[f"{limit}{direction}_length"] = Sub(alias=f"{limit}{direction}_max_length")
    for iops in ("iops_max", "iops_rd_max", "iops_wr_max"):
        fmt[iops] = Sub("integer")
    if release == "8.4":  # legacy geometry keys, dropped in PVE 9
        fmt.update(
            cyls=Sub("integer"),
            heads=Sub("integer"),
            secs=Sub("integer"),
            trans=Sub(enum=("none", "lba", "auto")),
        )
    return fmt


_WWN = Sub(pattern=r"^(0x)[0-9a-fA-F]{16}")


def _bus_format(bus: str, release: str) -> dict[str, Sub]:
    fmt = _drive_common(release)
    if bus in ("ide", "sata", "scsi"):
        fmt["ssd"] = Sub("boolean")
        fmt["wwn"] = _WWN
    if bus in ("scsi", "virtio"):
        fmt["iothread"] = Sub("boolean")
        fmt["ro"] = Sub("boolean")
    if bus == "ide":
        fmt["model"] = Sub(format="urlencoded", max_length=120)
    if bus == "scsi":
        fmt.update(
            queues=Sub("integer", minimum=2),
            scsiblock=Sub("boolean"),
            product=Sub(pattern=r"[A-Za-z0-9\-_\s]{,16}"),
            vendor=Sub(pattern=r"[A-Za-z0-9\-_\s]{,8}"),
        )
    return fmt


def _efi_format(release: str) -> dict[str, Sub]:
    fmt = {
        "file": Sub(default_key=True, optional=False, format="pve-volume-id-or-qm-path"),
        "volume": Sub(alias="file"),
        "efitype": Sub(enum=("2m", "4m")),
        "format": Sub(enum=("raw", "qcow", "qed", "qcow2", "vmdk", "cloop")),
        "import-from": Sub(format="pve-volume-id-or-absolute-path"),
        "pre-enrolled-keys": Sub("boolean"),
        "size": Sub(format="disk-size"),
    }
    if release != "8.4":
        fmt["ms-cert"] = Sub(enum=("2011", "2023", "2023w", "2023k"))
    return fmt


def _tpm_format(release: str) -> dict[str, Sub]:
    fmt = {
        "file": Sub(default_key=True, optional=False, format="pve-volume-id-or-qm-path"),
        "volume": Sub(alias="file"),
        "import-from": Sub(format="pve-volume-id-or-absolute-path"),
        "size": Sub(format="disk-size"),
        "version": Sub(enum=("v1.2", "v2.0")),
    }
    if release != "8.4":
        fmt["format"] = Sub(enum=("raw", "qcow", "qed", "qcow2", "vmdk", "cloop"))
    return fmt


RELEASES = ("9.1", "8.4")
BUSES = ("ide", "sata", "scsi", "virtio")
DRIVE_FORMATS: dict[tuple[str, str], dict[str, Sub]] = {
    (bus, release): _bus_format(bus, release) for bus in BUSES for release in RELEASES
}
for _release in RELEASES:
    DRIVE_FORMATS[("efidisk", _release)] = _efi_format(_release)
    DRIVE_FORMATS[("tpmstate", _release)] = _tpm_format(_release)
# Reading stored configs: every key any bus or version allows
DRIVE_FORMAT: dict[str, Sub] = {}
for _fmt in DRIVE_FORMATS.values():
    DRIVE_FORMAT.update(_fmt)

DRIVE_KEY = re.compile(r"^(ide[0-3]|sata[0-5]|scsi(?:[0-9]|[12][0-9]|30)|virtio(?:[0-9]|1[0-5]))$")
SPECIAL_DRIVES = ("efidisk0", "tpmstate0")


def is_drive_key(key: str) -> bool:
    return bool(DRIVE_KEY.match(key)) or key in SPECIAL_DRIVES


def drive_format(key: str, release: str | None = None) -> dict[str, Sub]:
    """The sub-keys of drive ``key`` in a PVE release (None: any release, for stored configs)."""
    if release is None:
        return DRIVE_FORMAT
    return DRIVE_FORMATS[(re.sub(r"\d+$", "", key), release)]


def parse_drive(key: str, value: str, release: str | None = None) -> dict[str, str]:
    return parse(value, drive_format(key, release), key)


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
    "model": Sub(enum=NET_MODELS, default_key=True, optional=False),
    "macaddr": Sub(format="mac-addr"),
    "bridge": Sub(format="pve-bridge-id"),
    "firewall": Sub("boolean"),
    "link_down": Sub("boolean"),
    "mtu": Sub("integer", minimum=1, maximum=65520),
    "queues": Sub("integer", minimum=0, maximum=64),
    "rate": Sub("number", minimum=0),
    "tag": Sub("integer", minimum=1, maximum=4094),
    "trunks": Sub(pattern=r"\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*"),
    **{model: Sub(alias="macaddr", key_alias="model") for model in NET_MODELS},
}
MAC_PREFIX = "BC:24:11"


def random_mac() -> str:
    return MAC_PREFIX + "".join(f":{b:02X}" for b in secrets.token_bytes(3))


def check_net(key: str, value: str) -> str:
    """Normalise to ``model=MAC,bridge=...`` as PVE stores it; a missing MAC stays missing here."""
    net = parse(value, NET_FORMAT, key)
    mac = net.pop("macaddr", None)
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


def agent_format(release: str) -> dict[str, Sub]:
    """PVE 9 renamed freeze-fs-on-backup to freeze-fs (the old name stays an alias)."""
    fmt = {
        "enabled": Sub("boolean", default_key=True, optional=False),
        "fstrim_cloned_disks": Sub("boolean"),
        "type": Sub(enum=("virtio", "isa")),
    }
    if release == "8.4":
        fmt["freeze-fs-on-backup"] = Sub("boolean")
    else:
        fmt.update(
            {
                "freeze-fs": Sub("boolean"),
                "freeze-fs-on-backup": Sub(alias="freeze-fs"),
                "guest-fsfreeze": Sub(alias="freeze-fs"),
            }
        )
    return fmt


AGENT_FORMAT = agent_format("8.4") | agent_format("9.1")


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
