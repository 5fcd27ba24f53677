"""What a Proxmox node says about itself, read into the facts of a plan's ``host`` block.

Pure: the adapter fetches the API answers (``/nodes``, ``/nodes/{node}/status``,
``/nodes/{node}/storage``, ``/nodes/{node}/network``) and the text of ``dmidecode -t memory``
and of the NUMA listing over SSH; this module parses them. Every fact keeps where it came from,
so the plan written from it can say so in a comment next to each value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ailab_deploy.core.units import GIB, MIB


class DiscoveryError(ValueError):
    """An answer from the node that does not have the expected shape."""


@dataclass(frozen=True)
class Fact:
    """One value and where it came from (shown as the comment next to it)."""

    value: Any
    source: str


@dataclass(frozen=True)
class NodeStorage:
    name: str
    type: str
    content: tuple[str, ...]
    total_bytes: int
    shared: bool

    @property
    def holds_disks(self) -> bool:
        return "images" in self.content


@dataclass(frozen=True)
class NodeApiFacts:
    node: str
    cpu_model: Fact
    sockets: Fact
    cores_per_socket: Fact
    threads_per_core: Fact
    memory_bytes: Fact
    storages: tuple[NodeStorage, ...]
    bridges: tuple[str, ...]


def _number(answer: Mapping[str, Any], key: str, where: str) -> int:
    value = answer.get(key)
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DiscoveryError(f"{where}: '{key}' is not a number: {value!r}") from None
    if number <= 0:
        raise DiscoveryError(f"{where}: '{key}' must be positive, got {number}")
    return number


def node_name(nodes: Sequence[Mapping[str, Any]], wanted: str | None = None) -> str:
    """The node to describe: ``wanted`` if given (and present), else the only node there is."""
    names = [str(entry.get("node")) for entry in nodes if entry.get("node")]
    if wanted is not None:
        if wanted not in names:
            raise DiscoveryError(f"GET /nodes: no node '{wanted}' (there are: {', '.join(names) or 'none'})")
        return wanted
    if len(names) != 1:
        raise DiscoveryError(
            f"GET /nodes: {len(names)} nodes ({', '.join(names) or 'none'}); name one with --node-name"
        )
    return names[0]


def api_facts(
    node: str,
    status: Mapping[str, Any],
    storages: Sequence[Mapping[str, Any]],
    networks: Sequence[Mapping[str, Any]],
) -> NodeApiFacts:
    """The node's CPU, memory, storages and bridges from its API answers.

    PVE's ``cpuinfo`` counts ``cores`` over all sockets and ``cpus`` as logical CPUs
    (PVE::ProcFSTools::read_cpuinfo), so per socket and per core follow by division.
    """
    where = f"GET /nodes/{node}/status"
    cpuinfo = status.get("cpuinfo")
    memory = status.get("memory")
    if not isinstance(cpuinfo, Mapping) or not isinstance(memory, Mapping):
        raise DiscoveryError(f"{where}: no 'cpuinfo' or 'memory' in the answer")
    sockets = _number(cpuinfo, "sockets", f"{where} cpuinfo")
    cores = _number(cpuinfo, "cores", f"{where} cpuinfo")
    cpus = _number(cpuinfo, "cpus", f"{where} cpuinfo")
    if cores % sockets or cpus % cores:
        raise DiscoveryError(
            f"{where} cpuinfo: {cpus} CPUs, {cores} cores and {sockets} sockets do not divide evenly"
        )
    model = str(cpuinfo.get("model") or "unknown")
    total = _number(memory, "total", f"{where} memory")
    found: list[NodeStorage] = []
    for row in storages:
        name = str(row.get("storage") or "")
        if not name:
            raise DiscoveryError(f"GET /nodes/{node}/storage: a row without 'storage'")
        if not row.get("active", 1) or not row.get("enabled", 1):
            continue
        content = tuple(part for part in str(row.get("content", "")).split(",") if part)
        found.append(
            NodeStorage(
                name=name,
                type=str(row.get("type", "")),
                content=content,
                total_bytes=_number(row, "total", f"GET /nodes/{node}/storage {name}"),
                shared=bool(int(row.get("shared", 0) or 0)),
            )
        )
    bridges = tuple(
        sorted(str(row["iface"]) for row in networks if row.get("type") == "bridge" and row.get("iface"))
    )
    return NodeApiFacts(
        node=node,
        cpu_model=Fact(model, f"{where}: cpuinfo.model"),
        sockets=Fact(sockets, f"{where}: cpuinfo.sockets"),
        cores_per_socket=Fact(cores // sockets, f"{where}: cpuinfo.cores {cores} / {sockets} sockets"),
        threads_per_core=Fact(cpus // cores, f"{where}: cpuinfo.cpus {cpus} / {cores} cores"),
        memory_bytes=Fact(total, f"{where}: memory.total (what the kernel sees)"),
        storages=tuple(found),
        bridges=bridges,
    )


# ------------------------------------------------------------------------ dmidecode -t memory


@dataclass(frozen=True)
class Dimm:
    locator: str
    bank_locator: str
    size_bytes: int  # 0: an empty slot
    type: str
    speed_mts: int | None  # the module's rated speed
    configured_mts: int | None  # what the memory controller runs it at

    @property
    def populated(self) -> bool:
        return self.size_bytes > 0


_SIZE_UNITS = {"KB": 1024, "MB": MIB, "GB": GIB, "TB": GIB * 1024}
_SPEED = re.compile(r"^(\d+)\s*(MT/s|MHz)$")
_SIZE = re.compile(r"^(\d+)\s*(KB|MB|GB|TB)$")


def _speed(text: str | None) -> int | None:
    match = _SPEED.match((text or "").strip())
    return int(match[1]) if match else None


def _dimm_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    return int(match[1]) * _SIZE_UNITS[match[2]] if match else 0  # "No Module Installed"


def parse_dmidecode_memory(text: str) -> list[Dimm]:
    """The Memory Device (type 17) records of ``dmidecode -t memory``, populated or not."""
    dimms: list[Dimm] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        if not any(line.strip() == "Memory Device" for line in lines):
            continue
        fields: dict[str, str] = {}
        for line in lines:
            key, sep, value = line.strip().partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        dimms.append(
            Dimm(
                locator=fields.get("Locator", ""),
                bank_locator=fields.get("Bank Locator", ""),
                size_bytes=_dimm_size(fields.get("Size", "")),
                type=fields.get("Type", "Unknown"),
                speed_mts=_speed(fields.get("Speed")),
                # "Configured Clock Speed" before dmidecode 3.1
                configured_mts=_speed(
                    fields.get("Configured Memory Speed", fields.get("Configured Clock Speed"))
                ),
            )
        )
    if not dimms:
        raise DiscoveryError("dmidecode -t memory: no 'Memory Device' record")
    return dimms


# How boards name slots: the socket and the channel a DIMM sits on, when the names say it.
_SOCKET_PATTERNS = (
    re.compile(r"\b(?:CPU|PROC(?:ESSOR)?|SOCKET)\s*_?(\d+)", re.IGNORECASE),  # CPU1_DIMM_A1, PROC 1 DIMM 3
    re.compile(r"\bP(\d+)[-_]", re.IGNORECASE),  # P1-DIMMA1, P0_Node0_Channel0_Dimm0
    re.compile(r"\bNODE\s*_?(\d+)", re.IGNORECASE),  # NODE 1
)
_CHANNEL_PATTERNS = (
    re.compile(r"CHANNEL\s*_?([A-Z0-9]+)", re.IGNORECASE),  # P0_Node0_Channel0_Dimm0, CHANNEL A
    re.compile(r"DIMM\s*_?([A-Z])\d", re.IGNORECASE),  # P1-DIMMA1, DIMM_A1, CPU1_DIMM_B2
)


def _first(patterns: Sequence[re.Pattern[str]], *texts: str) -> str | None:
    for pattern in patterns:
        for text in texts:
            match = pattern.search(text)
            if match:
                return match[1].upper()
    return None


@dataclass(frozen=True)
class MemoryLayout:
    channels_per_socket: Fact
    memory_mts: Fact | None
    installed_bytes: int
    populated: int
    slots: int
    type: str


def memory_layout(dimms: Sequence[Dimm], sockets: int) -> MemoryLayout:
    """DDR channels per socket and the speed they run at, from the populated DIMMs.

    The channel a DIMM sits on comes from its slot names (``P1-DIMMA1``, ``Channel0``...);
    where the names do not say, each populated DIMM counts as one channel, which holds for
    the usual one-DIMM-per-channel population and is said so in the fact's source.
    """
    populated = [dimm for dimm in dimms if dimm.populated]
    if not populated:
        raise DiscoveryError("dmidecode -t memory: no populated DIMM")
    channels: dict[str, set[str]] = {}
    named = True
    for index, dimm in enumerate(populated):
        socket = _first(_SOCKET_PATTERNS, dimm.locator, dimm.bank_locator)
        channel = _first(_CHANNEL_PATTERNS, dimm.locator, dimm.bank_locator)
        if socket is None and sockets == 1:
            socket = "0"
        if socket is None or channel is None:
            named = False
            channel = f"dimm{index}"
        channels.setdefault(socket or "?", set()).add(channel)
    where = "dmidecode -t memory"
    if named and "?" not in channels:
        per_socket = min(len(found) for found in channels.values())
        source = f"{where}: populated channels per socket, from the slot names ({len(populated)} DIMMs)"
    else:
        per_socket = max(1, len(populated) // sockets)
        source = (
            f"{where}: {len(populated)} populated DIMMs / {sockets} sockets; the slot names do not "
            "name channels, so one DIMM per channel is assumed: check the board's manual"
        )
    configured = [dimm.configured_mts for dimm in populated if dimm.configured_mts]
    rated = [dimm.speed_mts for dimm in populated if dimm.speed_mts]
    speed: Fact | None = None
    if configured:
        speed = Fact(min(configured), f"{where}: Configured Memory Speed (the slowest DIMM)")
    elif rated:
        speed = Fact(min(rated), f"{where}: Speed (rated; no configured speed reported)")
    types = sorted({dimm.type for dimm in populated})
    return MemoryLayout(
        channels_per_socket=Fact(per_socket, source),
        memory_mts=speed,
        installed_bytes=sum(dimm.size_bytes for dimm in populated),
        populated=len(populated),
        slots=len(dimms),
        type="/".join(types),
    )


# ------------------------------------------------------------------------ NUMA


@dataclass(frozen=True)
class NumaNode:
    index: int
    cpus: tuple[int, ...]
    memory_bytes: int | None


def expand_cpu_list(text: str) -> tuple[int, ...]:
    """``0-3,8,10-11`` (sysfs) or ``0 1 2 3`` (numactl) -> the CPU numbers."""
    cpus: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise DiscoveryError(f"NUMA: '{part}' is not a CPU number or range")
        cpus.extend(range(int(first), int(last or first) + 1))
    return tuple(cpus)


_NUMACTL_CPUS = re.compile(r"^node (\d+) cpus:(.*)$")
_NUMACTL_SIZE = re.compile(r"^node (\d+) size: (\d+) MB$")
_SYSFS_LINE = re.compile(r"^node(\d+) cpus (\S*) kb (\d+)$")


def parse_numa(text: str) -> list[NumaNode]:
    """NUMA nodes from ``numactl --hardware`` or from the sysfs listing the discovery runs
    where numactl is missing (``node0 cpus 0-17,36-53 kb 65843012`` per node)."""
    cpus: dict[int, tuple[int, ...]] = {}
    memory: dict[int, int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if match := _NUMACTL_CPUS.match(line):
            cpus[int(match[1])] = expand_cpu_list(match[2])
        elif match := _NUMACTL_SIZE.match(line):
            memory[int(match[1])] = int(match[2]) * MIB
        elif match := _SYSFS_LINE.match(line):
            cpus[int(match[1])] = expand_cpu_list(match[2])
            memory[int(match[1])] = int(match[3]) * 1024
    if not cpus:
        raise DiscoveryError("NUMA: no node in the answer (neither numactl --hardware nor sysfs)")
    return [NumaNode(index, cpus[index], memory.get(index)) for index in sorted(cpus)]


def numa_summary(nodes: Sequence[NumaNode]) -> str:
    """``2 nodes: node0 36 CPUs 63.0 GiB, node1 ...`` for the plan's comment."""
    parts = []
    for node in nodes:
        size = f" {node.memory_bytes / GIB:.1f} GiB" if node.memory_bytes is not None else ""
        parts.append(f"node{node.index} {len(node.cpus)} CPUs{size}")
    return f"{len(nodes)} NUMA node{'s' if len(nodes) != 1 else ''}: " + ", ".join(parts)


@dataclass
class HostDiscovery:
    """Everything discovered about a node, for rendering a plan."""

    api: NodeApiFacts
    memory: MemoryLayout | None = None
    numa: list[NumaNode] = field(default_factory=list)
    bandwidth_gbs: Fact | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read, and why
