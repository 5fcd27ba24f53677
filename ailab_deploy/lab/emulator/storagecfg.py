"""``storage.cfg`` in PVE's section-config format (``/etc/pve/storage.cfg``).

dir: local
    path /var/lib/vz
    content iso,vztmpl,backup

lvmthin: local-lvm
    thinpool data
    vgname pve
    content rootdir,images
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ailab_deploy.errors import ConfigError

STORAGE_CFG = "storage.cfg"
_HEADER = re.compile(r"([a-z][a-z0-9]*):\s+(\S+)\s*")
_PROPERTY = re.compile(r"\s+([a-z][a-z0-9_-]*)(?:\s+(.*?))?\s*")


@dataclass
class StorageEntry:
    type: str
    storage: str
    properties: dict[str, str] = field(default_factory=dict)


def parse(text: str, where: str = STORAGE_CFG) -> list[StorageEntry]:
    """Sections in file order; ConfigError naming the line for anything else."""
    entries: list[StorageEntry] = []
    current: StorageEntry | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            if not line.strip():
                current = None
            continue
        header = _HEADER.fullmatch(line)
        if header:
            if any(e.storage == header.group(2) for e in entries):
                raise ConfigError(f"{where}:{number}: storage '{header.group(2)}' defined twice")
            current = StorageEntry(header.group(1), header.group(2))
            entries.append(current)
            continue
        prop = _PROPERTY.fullmatch(line)
        if prop and current is not None:
            current.properties[prop.group(1)] = prop.group(2) if prop.group(2) is not None else "1"
            continue
        raise ConfigError(f"{where}:{number}: cannot parse '{line.strip()}'")
    return entries


def render(entries: list[StorageEntry]) -> str:
    blocks = []
    for entry in entries:
        lines = [f"{entry.type}: {entry.storage}"]
        lines += [f"\t{key} {value}" for key, value in entry.properties.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
