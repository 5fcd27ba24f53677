"""Sizes as people write them in vms.yaml.

Proxmox counts memory in MiB and disks in GiB, both binary, so plain suffixes
(``K``, ``M``, ``G``, ``T``) and ``KiB``…``TiB`` are binary. Vendors label drives
in decimal units, so ``KB``…``TB`` are decimal; they are accepted for storage
capacity, where a "2.18 TB" drive is what the label says.

Proxmox itself writes sizes as a number with an optional binary ``K``/``M``/``G``/``T``
(``size=32G``); :func:`pve_size_bytes` reads those, for the product and the lab's emulator.
"""

from __future__ import annotations

import re

KIB = 1024
MIB = KIB**2
GIB = KIB**3
TIB = KIB**4

_BINARY = {"K": KIB, "M": MIB, "G": GIB, "T": TIB}
_DECIMAL = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT](?:i?B)?)?\s*$", re.IGNORECASE)
_PVE_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>[KMGT]?)")


class UnitError(ValueError):
    """A size that does not parse; the message says what is accepted."""


def parse_size(value: object, *, default_unit: str, what: str) -> int:
    """Return ``value`` in bytes. A bare number is in ``default_unit`` (``"M"`` or ``"G"``)."""
    if isinstance(value, bool):
        raise UnitError(f"{what} must be a size like '8G' or '8192M', not a boolean")
    if isinstance(value, int):
        if value <= 0:
            raise UnitError(f"{what} must be positive, got {value}")
        return value * _BINARY[default_unit]
    if not isinstance(value, str):
        raise UnitError(f"{what} must be a size like '8G' or '8192M', got {type(value).__name__}")
    match = _SIZE.match(value)
    if match is None:
        raise UnitError(
            f"{what} {value!r} is not a size: use a number with K, M, G or T "
            f"(binary, e.g. '8G', '8192M') or KB/MB/GB/TB (decimal)"
        )
    size = round(float(match["number"]) * _factor((match["unit"] or default_unit).upper()))
    if size <= 0:
        raise UnitError(f"{what} must be positive, got {value!r}")
    return size


def pve_size_bytes(text: str, default_unit: str = "") -> int:
    """A size as PVE writes it (``32G``, ``512M``, ``1073741824``) in bytes; binary units only,
    a bare number is in ``default_unit`` (bytes unless given)."""
    match = _PVE_SIZE.fullmatch(text)
    if match is None:
        raise UnitError(f"invalid size '{text}'")
    return int(float(match["number"]) * _factor(match["unit"] or default_unit))


def _factor(unit: str) -> int:
    """Bytes per unit: ``K``/``KiB`` binary, ``KB`` decimal, ``""`` a byte."""
    if not unit:
        return 1
    if unit.endswith("IB"):
        return _BINARY[unit[0]]
    if unit.endswith("B"):
        return _DECIMAL[unit[0]]
    return _BINARY[unit]


def memory_mib(value: object, *, what: str = "memory") -> int:
    """Memory in whole MiB (bare numbers are MiB, as in Proxmox)."""
    size = parse_size(value, default_unit="M", what=what)
    if size % MIB:
        raise UnitError(f"{what} {value!r} is not a whole number of MiB")
    return size // MIB


def disk_gib(value: object, *, what: str = "disk") -> int:
    """Disk size in whole GiB (bare numbers are GiB, as in Proxmox)."""
    size = parse_size(value, default_unit="G", what=what)
    if size % GIB:
        raise UnitError(f"{what} {value!r} is not a whole number of GiB")
    return size // GIB


def format_bytes(size: float) -> str:
    """Human-readable binary size, e.g. ``4.58 GiB``."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(size) >= factor:
            return f"{size / factor:.2f} {unit}"
    return f"{size:.0f} B"
