"""PVE's published API schema as a test oracle: what it accepts, and values to try against it.

The schema files live outside the project (``shared/reference/pve-api/`` next to a parent of the
checkout); nothing here copies them. ``accepts`` re-reads PVE's JSONSchema rules (type, format,
pattern, maxLength, minimum/maximum, enum, property strings, ``requires``); named formats whose
definition is not in the schema are judged by ``NAMED_FORMATS`` below, written from PVE's
validators (pve-common JSONSchema.pm, pve-storage, qemu-server).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import re._parser as sre_parse  # type: ignore[import-not-found]
    from re import _constants as sre_constants  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

VERSIONS = {"9.1": "pve-9.1.3-apidata.json", "8.4": "pve-8.4.0-apidata.json"}

# numbered config keys: the highest index PVE allows (qemu-server: MAX_NETS, MAX_USB_DEVICES,
# MAX_UNUSED_DISKS, MAX_HOSTPCI_DEVICES, MAX_NUMA, MAX_VIRTIOFS, Drive.pm's MAX_*_DISKS)
NUMBERED_MAX = {
    "ide": 3,
    "sata": 5,
    "scsi": 30,
    "virtio": 15,
    "net": 31,
    "ipconfig": 31,
    "usb": 13,
    "unused": 255,
    "hostpci": 15,
    "numa": 7,
    "serial": 3,
    "parallel": 2,
    "virtiofs": 9,
}


def schema_dir() -> Path | None:
    """``shared/reference/pve-api`` beside the nearest parent of this checkout that has one."""
    override = os.environ.get("AILAB_PVE_SCHEMA_DIR")
    if override:
        return Path(override) if Path(override).is_dir() else None
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "reference" / "pve-api"
        if candidate.is_dir():
            return candidate
    return None


def load(version: str) -> dict[tuple[str, str], dict[str, Any]]:
    """{(method, path): info} for one PVE version."""
    directory = schema_dir()
    assert directory is not None
    tree = json.loads((directory / VERSIONS[version]).read_text())
    flat: dict[tuple[str, str], dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        for method, info in (node.get("info") or {}).items():
            flat[(method, node["path"])] = info
        for child in node.get("children") or []:
            walk(child)

    for node in tree:
        walk(node)
    return flat


# --- named formats (PVE's validators) -----------------------------------------------------------

_ID = r"[a-z][a-z0-9\-_.]*[a-z0-9]"
_CONFIGID = r"[a-z][a-z0-9_-]+"
_DNS_PART = r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_EMAIL_USER = r"[\w+\-~]+(\.[\w+\-~]+)*"
_EMAIL = _EMAIL_USER + r"@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*"
_DRIVE = r"(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|efidisk0|tpmstate0)"


def _split_list(text: str) -> list[str]:
    return [item for item in re.split(r"[\s,;]+", text.strip()) if item] if text else []


def _full(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    return lambda value: re.fullmatch(pattern, value, flags) is not None


def _volume_id(value: str) -> bool:
    return re.fullmatch(_ID + r":.+", value, re.IGNORECASE | re.DOTALL) is not None


def _ip(version: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            return ipaddress.ip_address(value).version == version
        except ValueError:
            return False

    return check


def _cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value


def _cpuset(value: str) -> bool:
    for part in value.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            return False
    return True


def _list(item: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda value: all(item(part) for part in _split_list(value))


def _storage_pair(value: str) -> bool:
    for pair in _split_list(value):
        parts = pair.split(":")
        if len(parts) > 2 or not all(re.fullmatch(_ID, p, re.IGNORECASE) for p in parts if p != "1"):
            return False
    return True


# name -> predicate; formats not listed here are not judged (counted as "not modelled")
NAMED_FORMATS: dict[str, Callable[[str], bool]] = {
    "pve-vmid": _full(r"[1-9][0-9]{2,8}"),
    "pve-vmid-list": _list(_full(r"[1-9][0-9]{2,8}")),
    "pve-node": _full(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?"),
    "pve-configid": _full(_CONFIGID, re.IGNORECASE),
    "pve-configid-list": _list(_full(_CONFIGID, re.IGNORECASE)),
    "pve-storage-id": _full(_ID, re.IGNORECASE),
    "pve-poolid": _full(r"[A-Za-z0-9_][A-Za-z0-9_\-]*(/[A-Za-z0-9_][A-Za-z0-9_\-]*){0,2}"),
    "pve-bridge-id": _full(r"[-_.\w\d]+"),
    "pve-volume-id": _volume_id,
    "pve-volume-id-or-absolute-path": lambda v: v.startswith("/") or _volume_id(v),
    "pve-volume-id-or-qm-path": lambda v: v in ("none", "cdrom") or v.startswith("/") or _volume_id(v),
    "pve-tag-list": _list(_full(r"[a-z0-9_][a-z0-9_\-+.]*", re.IGNORECASE)),
    "dns-name": _full(rf"({_DNS_PART}\.)*{_DNS_PART}"),
    "mac-addr": _full(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", re.IGNORECASE),
    "disk-size": _full(r"\d+(\.\d+)?([KMGT](iB)?)?"),
    "urlencoded": _full(r"[-%a-zA-Z0-9_.!~*'()]*"),
    "email-or-username-list": _list(lambda v: bool(re.fullmatch(_EMAIL, v) or re.fullmatch(_EMAIL_USER, v))),
    "pve-day-of-week-list": _list(_full(r"mon|tue|wed|thu|fri|sat|sun")),
    "pve-storage-content": _full(r"images|rootdir|vztmpl|iso|backup|snippets|import"),
    "pve-storage-content-list": _list(_full(r"images|rootdir|vztmpl|iso|backup|snippets|import")),
    "pve-task-status-type-list": _list(_full(r"ok|error|warning|unknown")),
    "pve-cpuset": _cpuset,
    "address-list": _list(lambda v: _ip(4)(v) or _ip(6)(v) or NAMED_FORMATS["dns-name"](v)),
    "CIDR": _cidr,
    "storage-pair-list": _storage_pair,
    "pve-qm-bootdisk": _full(_DRIVE),
    "pve-qm-ide": lambda v: v in ("none", "cdrom") or v.startswith("/") or _volume_id(v.split(",")[0]),
}

# Candidate values per named format (the oracle above decides which are valid)
FORMAT_SAMPLES: dict[str, list[str]] = {
    "pve-vmid": ["100", "4242", "999999999", "0101", "99", "abc"],
    "pve-vmid-list": ["100,101", "100;101 102", "0101", "abc"],
    "pve-node": ["pve", "node-1", "-bad", "bad_node"],
    "pve-configid": ["scsi0", "net1", "0abc", "a", "bad!"],
    "pve-configid-list": ["scsi0,net1", "scsi0;net1", "0bad", "bad!"],
    "pve-storage-id": ["local", "local-lvm", "x", "1local", "bad!id"],
    "pve-poolid": ["lab", "lab/sub", "bad pool", "-x"],
    "pve-bridge-id": ["vmbr0", "br-lab.1", "bad bridge", "a,b"],
    "pve-volume-id": ["local-lvm:vm-100-disk-0", "local:iso/x.iso", "nocolon", "1x:vol"],
    "pve-volume-id-or-absolute-path": ["local-lvm:vm-100-disk-0", "/dev/sdb", "nocolon"],
    "pve-volume-id-or-qm-path": [
        "local-lvm:1",
        "local-lvm:vm-100-disk-0",
        "none",
        "cdrom",
        "/dev/sdb",
        "nocolon",
    ],
    "pve-tag-list": ["lab", "lab;web", "a,b c", "bad!tag", "-x"],
    "dns-name": ["vm1", "vm-1.lab", "bad_name", "-x", "a..b"],
    "mac-addr": ["BC:24:11:00:00:01", "01:00:00:00:00:01", "bc:24:11:00:00", "zz:24:11:00:00:01"],
    "disk-size": ["8G", "1024", "1.5T", "8GiB", "8X", "G"],
    "urlencoded": ["ssh-ed25519%20AAAA", "plain", "has space", "a+b"],
    "email-or-username-list": ["root@example.com", "root", "a@b.c,d", "bad mail@x", "@x"],
    "pve-day-of-week-list": ["mon", "mon,fri", "funday"],
    "pve-storage-content": ["images", "iso", "bogus"],
    "pve-storage-content-list": ["images,iso", "iso", "bogus"],
    "pve-task-status-type-list": ["ok", "ok,error", "bogus"],
    "pve-cpuset": ["0", "0-3,5", "3-1", "x"],
    "address-list": ["10.0.0.1", "10.0.0.1 fd00::1", "dns.example", "bad_addr!"],
    "CIDR": ["10.0.0.0/24", "fd00::/64", "10.0.0.1", "x/24"],
    "storage-pair-list": ["local:local-lvm", "local", "bad!:x"],
    "pve-qm-bootdisk": ["scsi0", "virtio15", "scsi31", "net0"],
    "pve-qm-ide": ["local:iso/x.iso", "none", "cdrom", "nocolon"],
}


# --- the oracle ---------------------------------------------------------------------------------


def perl_regex(pattern: str) -> str:
    """Perl's stringified ``(?^:...)``/``(?^i:...)`` groups in Python syntax."""
    return pattern.replace("(?^i:", "(?i:").replace("(?^:", "(?:")


def _is_number(value: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?", value) is not None


def accepts(prop: dict[str, Any], value: str, top: bool = True) -> bool | None:
    """Whether PVE's check_prop takes ``value`` for ``prop``; None if a format is not modelled."""
    kind = prop.get("type", "string")
    if kind == "boolean":
        if top:
            return value in ("0", "1")
        return value.lower() in ("0", "1", "on", "off", "yes", "no", "true", "false")
    if kind == "integer" and not re.fullmatch(r"[+-]?\d+", value):
        return False
    if kind == "number" and not _is_number(value):
        return False
    verdict: bool | None = True
    fmt = prop.get("format")
    if isinstance(fmt, dict):
        verdict = property_string_accepts(fmt, value)
        if verdict is False:
            return False
    elif isinstance(fmt, str) and fmt != "regex":
        judge = NAMED_FORMATS.get(fmt)
        if judge is None:
            verdict = None
        elif not judge(value):
            return False
    pattern = prop.get("pattern")
    if pattern and re.fullmatch(perl_regex(pattern), value, re.DOTALL) is None:
        return False
    if prop.get("maxLength") is not None and len(value) > int(prop["maxLength"]):
        return False
    if prop.get("minLength") is not None and len(value) < int(prop["minLength"]):
        return False
    if _is_number(value):
        if prop.get("maximum") is not None and float(value) > float(prop["maximum"]):
            return False
        if prop.get("minimum") is not None and float(value) < float(prop["minimum"]):
            return False
    if prop.get("enum") and value not in prop["enum"]:
        return False
    return verdict


def parse_property_string(fmt: dict[str, Any], value: str) -> dict[str, str] | None:
    """PVE's parse_property_string split (aliases resolved); None where PVE dies."""
    result: dict[str, str] = {}
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    default_used = False
    for part in value.split(","):
        if re.fullmatch(r"\s*", part):
            continue
        match = re.fullmatch(r"([^=]+)=(.+)", part, re.DOTALL)
        if match:
            key, val = match.group(1), match.group(2)
            if key in result:
                return None
            schema = fmt.get(key)
            if schema is not None and schema.get("alias"):
                if schema.get("keyAlias"):
                    if schema["keyAlias"] in result:
                        return None
                    result[schema["keyAlias"]] = key
                key = schema["alias"]
                if key in result:
                    return None
                schema = fmt.get(key)
            if schema is None:
                return None
            result[key] = val
        elif "=" not in part:
            if default_key is None or default_used or default_key in result:
                return None
            default_used = True
            result[default_key] = part
        else:
            return None
    return result


def property_string_accepts(fmt: dict[str, Any], value: str) -> bool | None:
    parsed = parse_property_string(fmt, value)
    if parsed is None:
        return False
    verdict: bool | None = True
    for key, schema in fmt.items():
        if schema.get("alias"):
            continue
        if key not in parsed:
            if not schema.get("optional"):
                return False
            continue
        sub = accepts(schema, parsed[key], top=False)
        if sub is False:
            return False
        if sub is None:
            verdict = None
        requires = schema.get("requires")
        if isinstance(requires, str) and requires not in parsed:
            return False
    return verdict


# --- values to try ------------------------------------------------------------------------------


def regex_example(pattern: str) -> str | None:
    """A short string the regex matches (first branch, minimal repeats), or None."""
    try:
        tree = sre_parse.parse(perl_regex(pattern))
    except re.error:
        return None
    out: list[str] = []

    def emit(items: Any) -> None:
        for op, arg in items:
            if op is sre_constants.LITERAL:
                out.append(chr(arg))
            elif op is sre_constants.NOT_LITERAL:
                out.append("a" if chr(arg) != "a" else "b")
            elif op is sre_constants.ANY:
                out.append("a")
            elif op is sre_constants.IN:
                out.append(_in_example(arg))
            elif op is sre_constants.BRANCH:
                emit(arg[1][0])
            elif op is sre_constants.SUBPATTERN:
                emit(arg[-1])
            elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
                low, _high, item = arg
                for _ in range(low):
                    emit(item)
            elif op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                continue
            elif op is sre_constants.CATEGORY:
                out.append(_category_example(arg))
            else:
                raise ValueError(op)

    try:
        emit(tree)
    except ValueError:
        return None
    text = "".join(out)
    return text if re.fullmatch(perl_regex(pattern), text, re.DOTALL) else None


def _category_example(category: Any) -> str:
    name = str(category)
    if "DIGIT" in name and "NOT" not in name:
        return "0"
    if "SPACE" in name and "NOT" not in name:
        return " "
    return "a"


def _in_example(items: Any) -> str:
    for op, arg in items:
        if op is sre_constants.LITERAL:
            return chr(arg)
        if op is sre_constants.RANGE:
            return chr(arg[0])
        if op is sre_constants.CATEGORY:
            return _category_example(arg)
    return "a"


def scalar_candidates(prop: dict[str, Any], top: bool = True) -> list[str]:
    """Values worth trying for one scalar (valid and invalid; ``accepts`` sorts them)."""
    kind = prop.get("type", "string")
    if kind == "boolean":
        return ["1", "0", "2", ""] + (["yes"] if top else ["yes", "maybe"])
    if kind in ("integer", "number"):
        values = ["abc", "1.5" if kind == "integer" else "1e3"]
        low, high = _bound(prop.get("minimum")), _bound(prop.get("maximum"))
        if low is not None:
            values += [_num(low), _num(low - 1)]
        if high is not None:
            values += [_num(high), _num(high + 1)]
        if low is None and high is None:
            values += ["1", "-1"]
        return values
    values: list[str] = []
    if prop.get("enum"):
        values += [str(v) for v in prop["enum"]] + ["not-in-enum"]
    fmt = prop.get("format")
    if isinstance(fmt, str):
        values += FORMAT_SAMPLES.get(fmt, [])
    if isinstance(fmt, dict):
        values += [v for v, _ in property_string_cases(fmt)]
    if prop.get("pattern"):
        example = regex_example(prop["pattern"])
        if example is not None:
            values += [example, example + "!"]
        values += ["!"]
    if prop.get("maxLength") is not None:
        base = next((v for v in values if accepts(prop, v, top)), "a")
        values += [base.ljust(int(prop["maxLength"]), base[-1:] or "a")]
        values += [base.ljust(int(prop["maxLength"]) + 1, base[-1:] or "a")]
    if not values:
        values = ["lab-value"]
    return list(dict.fromkeys(values))


def _bound(value: Any) -> float | None:
    return None if value is None else float(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def sample(prop: dict[str, Any], top: bool = True) -> str | None:
    """One value the schema accepts, or None."""
    for candidate in scalar_candidates(prop, top):
        if accepts(prop, candidate, top) is True:
            return candidate
    return None


def base_property_string(fmt: dict[str, Any]) -> dict[str, str] | None:
    """The required sub-keys with valid values."""
    base: dict[str, str] = {}
    for key, schema in fmt.items():
        if schema.get("alias") or schema.get("optional"):
            continue
        value = sample(schema, top=False) if not isinstance(schema.get("format"), dict) else None
        if value is None:
            return None
        base[key] = value
    return base


def render(fmt: dict[str, Any], values: dict[str, str]) -> str:
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    parts = [values[default_key]] if default_key in values else []
    parts += [f"{k}={v}" for k, v in values.items() if k != default_key]
    return ",".join(parts)


def property_string_cases(fmt: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(value, sub-key under test) for every sub-key, plus an unknown one."""
    base = base_property_string(fmt)
    if base is None:
        return
    yield render(fmt, base), ""
    for key, schema in fmt.items():
        if schema.get("alias") or isinstance(schema.get("format"), dict):
            continue
        for candidate in scalar_candidates(schema, top=False):
            if candidate == "" or "," in candidate:
                continue
            values = dict(base)
            values[key] = candidate
            if key == "import-from" and "file" in values:
                # PVE refuses import-from unless the file is STORAGE:0, before anything else
                values["file"] = re.sub(r":\d+$", ":0", values["file"])
            requires = schema.get("requires")
            if isinstance(requires, str) and requires not in values:
                requires_value = sample(fmt.get(requires, {}), top=False)
                if requires_value is not None:
                    values[requires] = requires_value
            yield render(fmt, values), key
    yield render(fmt, {**base, "bogus-key": "1"}), "bogus-key"
