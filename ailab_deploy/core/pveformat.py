"""How Proxmox VE writes VM config values, so desired and actual compare exactly.

PVE returns integer and boolean keys as JSON numbers and everything else as
strings; property strings (``virtio=MAC,bridge=vmbr0``) list ``key=value`` pairs
with an optional default key first. These helpers turn either form into one
canonical string per key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, unquote

from ailab_deploy.core.units import UnitError, pve_size_bytes

# Values PVE assumes when a key is absent from the config.
ABSENT_DEFAULTS: Mapping[str, str] = {
    "sockets": "1",
    "cores": "1",
    "numa": "0",
    "onboot": "0",
    "protection": "0",
    "memory": "512",
    "cpu": "kvm64",
    "agent": "0",
    "description": "",
    "tags": "",
}

DISK_KEY = re.compile(r"^(scsi|virtio|sata|ide)\d+$")


def as_text(value: object) -> str:
    """A config value as PVE stores it in the file (numbers become their decimal text)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def parse_property_string(value: str, default_key: str) -> dict[str, str]:
    """``virtio=BC:..,bridge=vmbr0`` -> ``{"virtio": "BC:..", "bridge": "vmbr0"}``.

    A part without ``=`` is the value of ``default_key``.
    """
    parsed: dict[str, str] = {}
    for part in value.split(","):
        if not part:
            continue
        key, sep, item = part.partition("=")
        if sep:
            parsed[key.strip()] = item.strip()
        else:
            parsed[default_key] = key.strip()
    return parsed


def encode_ssh_keys(keys: list[str]) -> str:
    """The ``sshkeys`` value: keys joined by newlines, percent-encoded with nothing safe.

    PVE stores this encoded text and checks it against ``^[-%a-zA-Z0-9_.!~*'()]*$``
    after the form decode, so ``/`` and ``+`` must be encoded too (proxmoxer #153).
    """
    return quote("\n".join(keys), safe="")


def decode_ssh_keys(value: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in unquote(value).splitlines() if line.strip())


def normalise_tags(value: str) -> str:
    """PVE's canonical tag list: lower-case, unique, sorted, ``;``-joined."""
    return ";".join(sorted({tag.lower() for tag in re.split(r"[,; ]+", value) if tag}))


def agent_enabled(value: str) -> bool:
    return parse_property_string(value, "enabled").get("enabled", "0") in ("1", "true", "yes", "on")


def size_bytes(text: str) -> int | None:
    """``32G`` / ``512M`` / ``1073741824`` -> bytes; None if it is not a size."""
    try:
        return pve_size_bytes(text.strip())
    except UnitError:
        return None


def canonical(key: str, value: object) -> str:
    """One comparable string for a config value of ``key`` as PVE returns it."""
    text = as_text(value)
    if key == "memory":
        return parse_property_string(text, "current").get("current", "512")
    if key == "cpu":
        return parse_property_string(text, "cputype").get("cputype", "kvm64")
    if key == "tags":
        return normalise_tags(text)
    if key == "agent":
        return "1" if agent_enabled(text) else "0"
    if key == "description":
        return text.rstrip()
    if key == "sshkeys":
        return "\n".join(decode_ssh_keys(text))
    if key == "nameserver":
        return " ".join(part for part in re.split(r"[,; ]+", text) if part)
    if key == "ipconfig0":
        return ",".join(f"{k}={v}" for k, v in sorted(parse_property_string(text, "ip").items()))
    return text


def actual_value(config: Mapping[str, object], key: str) -> str | None:
    """The canonical value of ``key`` in a config read from PVE; defaults fill absent keys."""
    if key in config:
        return canonical(key, config[key])
    return ABSENT_DEFAULTS.get(key)


def is_cloudinit_drive(value: str) -> bool:
    volume = value.split(",", 1)[0]
    return bool(re.search(r"(^|[:/])(vm|base)-\d+-cloudinit(\.\w+)?$", volume)) or volume.endswith(
        ":cloudinit"
    )


def is_cdrom(value: str) -> bool:
    return parse_property_string(value, "file").get("media") == "cdrom"


def boot_disk(config: Mapping[str, object]) -> str | None:
    """The drive the VM boots from: first disk in ``boot: order=``, else the first disk present."""
    disks = [
        key
        for key in sorted(config)
        if DISK_KEY.match(key)
        and not is_cdrom(as_text(config[key]))
        and not is_cloudinit_drive(as_text(config[key]))
    ]
    boot = as_text(config.get("boot", ""))
    order = parse_property_string(boot, "legacy").get("order", "")
    for device in order.split(";"):
        if device in disks:
            return device
    for prefix in ("scsi", "virtio", "sata", "ide"):
        for key in disks:
            if key.startswith(prefix):
                return key
    return None


def drive_storage(value: str) -> str:
    volume = parse_property_string(value, "file").get("file", "")
    return volume.split(":", 1)[0] if ":" in volume else ""


def drive_size_bytes(value: str) -> int | None:
    size = parse_property_string(value, "file").get("size")
    return size_bytes(size) if size else None
