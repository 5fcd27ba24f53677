"""A VM's config in PVE's own file format (``/etc/pve/qemu-server/<vmid>.conf``).

The digest PVE reports is the SHA-1 of exactly this text, so it is computed the same way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

_ENCODE = re.compile(r"[^-_.~/\w\s]")


def _encode_text(text: str) -> str:
    return _ENCODE.sub(lambda m: "".join(f"%{b:02x}" for b in m.group(0).encode()), text)


def _decode_text(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


@dataclass
class VMConfig:
    """One VM: its current config, pending changes and snapshots, all as stored strings."""

    vmid: int
    conf: dict[str, str]
    pending: dict[str, str] = field(default_factory=dict)  # 'delete' holds pending removals
    snapshots: dict[str, dict[str, str]] = field(default_factory=dict)
    raw: str = ""
    digest: str = ""

    def refresh(self) -> None:
        """Re-render the file text and its digest after a change."""
        self.raw = render(self)
        self.digest = hashlib.sha1(self.raw.encode()).hexdigest()

    @property
    def lock(self) -> str | None:
        return self.conf.get("lock")

    @property
    def is_template(self) -> bool:
        return self.conf.get("template") == "1"

    def merged(self) -> dict[str, str]:
        """The config with pending changes applied (what GET config shows by default)."""
        result = dict(self.conf)
        for key in self.pending.get("delete", "").split(","):
            result.pop(key.lstrip("!"), None)
        result.update({k: v for k, v in self.pending.items() if k != "delete"})
        return result


def _section(conf: dict[str, str], pending: bool = False) -> str:
    lines = []
    description = conf.get("description")
    if description is not None:
        if description:
            lines += ["#" + _encode_text(line) for line in description.split("\n")]
        elif pending:
            lines.append("#")
    lines += [f"{k}: {conf[k]}" for k in sorted(conf) if k != "description"]
    return "".join(line + "\n" for line in lines)


def render(vm: VMConfig) -> str:
    text = _section(vm.conf)
    if vm.pending:
        text += "\n[PENDING]\n" + _section(vm.pending, pending=True)
    for name in sorted(vm.snapshots):
        text += f"\n[{name}]\n" + _section(vm.snapshots[name])
    return text


def parse(vmid: int, text: str) -> VMConfig:
    vm = VMConfig(vmid=vmid, conf={})
    section = vm.conf
    descriptions: dict[int, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        header = re.fullmatch(r"\[([^\]]+)\]", line.strip())
        if header:
            name = header.group(1)
            section = vm.pending if name == "PENDING" else vm.snapshots.setdefault(name, {})
            continue
        if line.startswith("#"):
            descriptions.setdefault(id(section), []).append(_decode_text(line[1:]))
            if "description" not in section:
                section["description"] = ""
            section["description"] = "\n".join(descriptions[id(section)])
            continue
        key, sep, value = line.partition(":")
        if sep:
            section[key.strip()] = value.strip()
    vm.refresh()
    return vm
