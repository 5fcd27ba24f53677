"""A plan's text with the values a node reported written in, each with where it came from.

The plan is edited line by line (ruamel only says where each key is), so everything else in
it (comments, order, quoting, blank lines) stays as the user wrote it and a diff against the
old text shows exactly the values that differ. A new plan starts from the seed layout
(the repository's vms.yaml) with its ``proxmox`` and ``host`` blocks filled from the node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ailab_deploy.core.discovery import Fact, HostDiscovery, NodeStorage, numa_summary
from ailab_deploy.core.units import GIB, MIB

_PLAIN = re.compile(r"^[A-Za-z0-9_./~][A-Za-z0-9_./~@!:+-]*$")
_AMBIGUOUS = {"null", "true", "false", "yes", "no", "on", "off", "~"}
SEED_STORAGE_KIND = "hdd"


def yaml_scalar(value: Any) -> str:
    """``value`` as one YAML scalar on a line: null, true, 8006, 2.5, plain or quoted text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _AMBIGUOUS and not re.match(r"^[\d.+-]+$", text):
        return text
    return json.dumps(text)


def capacity_text(size: int) -> str:
    """Bytes as vms.yaml writes a capacity: exact decimal (as on a label) or binary units when
    they fit, else whole decimal MB rounded down (the comment beside it keeps the exact bytes)."""
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("TiB", 1024 * GIB), ("GiB", GIB), ("MiB", MIB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size // 10**6}MB"


def memory_text(size: int) -> str:
    """Bytes as vms.yaml writes memory: whole GiB when exact, else whole MiB (rounded down)."""
    return f"{size // GIB}G" if size % GIB == 0 else f"{size // MIB}M"


class PlanText:
    """Plan text edited value by value; the YAML is re-read after each edit for line numbers."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def _tree(self) -> Any:
        return YAML(typ="rt").load(self.text)

    def _node(self, path: Sequence[str | int]) -> Any:
        node = self._tree()
        for part in path:
            node = node[part]
        return node

    def has(self, path: Sequence[str | int]) -> bool:
        try:
            self._node(path)
        except (KeyError, IndexError, TypeError):
            return False
        return True

    def get(self, path: Sequence[str | int]) -> Any:
        return self._node(path)

    def set(self, path: Sequence[str | int], value: Any, comment: str) -> None:
        """Write ``key: value  # comment`` on the key's line, or add the key to its mapping."""
        parent = self._node(path[:-1])
        key = path[-1]
        if not isinstance(parent, CommentedMap):
            raise ValueError(f"{'.'.join(map(str, path[:-1]))} is not a mapping")
        line_text = f"{yaml_scalar(value)}  # {comment}"
        if key in parent:
            line, column = parent.lc.key(key)
            self.lines[line] = f"{self.lines[line][:column]}{key}: {line_text}"
            return
        line, column = parent.lc.key(next(iter(parent)))
        end = line + 1  # after the mapping's last line: the first line indented less than its keys
        while end < len(self.lines):
            text = self.lines[end]
            if text.strip() and len(text) - len(text.lstrip()) < column:
                break
            end += 1
        while not self.lines[end - 1].strip():
            end -= 1
        self.lines.insert(end, f"{' ' * column}{key}: {line_text}")

    def remove_item(self, path: Sequence[str | int], index: int) -> None:
        """Drop one item of a block sequence (its ``- `` line and the lines indented below it)."""
        seq = self._node(path)
        if not isinstance(seq, CommentedSeq):
            raise ValueError(f"{'.'.join(map(str, path))} is not a list")
        start, _ = seq.lc.item(index)
        dash = self.lines[start].index("-")
        end = start + 1
        while end < len(self.lines):
            text = self.lines[end]
            if text.strip() and (len(text) - len(text.lstrip())) <= dash:
                break
            end += 1
        while end > start + 1 and not self.lines[end - 1].strip():
            end -= 1  # blank lines after the list belong to what follows
        del self.lines[start:end]

    def append_item(self, path: Sequence[str | int], entries: Sequence[tuple[str, Any, str]]) -> None:
        """A new mapping item at the start of a block sequence, in the list's indentation."""
        seq = self._node(path)
        if isinstance(seq, CommentedSeq) and len(seq):
            start, _ = seq.lc.item(0)
            dash = self.lines[start].index("-")
        else:
            parent = self._node(path[:-1])
            start, key_column = parent.lc.key(path[-1])
            start, dash = start + 1, key_column + 2
        item = []
        for number, (key, value, comment) in enumerate(entries):
            lead = f"{' ' * dash}- " if number == 0 else " " * (dash + 2)
            item.append(f"{lead}{key}: {yaml_scalar(value)}  # {comment}")
        self.lines[start:start] = item


@dataclass(frozen=True)
class Connection:
    """How discover reached the node: written into a new plan's ``proxmox`` block."""

    host: str
    port: int
    token_id: str
    token_secret_env: str
    token_secret_file: str | None
    fingerprint: str | None
    ca_file: str | None
    ssh_host: str | None
    ssh_user: str
    ssh_private_key_file: str | None


def _disk_storages(discovery: HostDiscovery) -> list[NodeStorage]:
    return [storage for storage in discovery.api.storages if storage.holds_disks]


def _storage_comment(storage: NodeStorage, node: str) -> str:
    shared = "shared" if storage.shared else "local"
    return (
        f"GET /nodes/{node}/storage: {storage.type}, {shared}, content {','.join(storage.content)}, "
        f"total {storage.total_bytes} bytes"
    )


def write_host(plan: PlanText, discovery: HostDiscovery) -> list[str]:
    """Set the ``host`` facts the node reported; returns notes about what stays for the user."""
    api = discovery.api
    notes = list(discovery.notes)
    host = ["host"]
    facts: list[tuple[str, Fact | None, Any]] = [
        ("cpu_model", api.cpu_model, api.cpu_model.value),
        ("sockets", api.sockets, api.sockets.value),
        ("cores_per_socket", api.cores_per_socket, api.cores_per_socket.value),
        ("threads_per_core", api.threads_per_core, api.threads_per_core.value),
        ("memory", api.memory_bytes, memory_text(int(api.memory_bytes.value))),
    ]
    layout = discovery.memory
    if layout is not None:
        facts.append(
            ("memory_channels_per_socket", layout.channels_per_socket, layout.channels_per_socket.value)
        )
        if layout.memory_mts is not None:
            facts.append(("memory_mts", layout.memory_mts, layout.memory_mts.value))
    if discovery.bandwidth_gbs is not None:
        facts.append(("measured_bandwidth_gbs", discovery.bandwidth_gbs, discovery.bandwidth_gbs.value))
    for key, fact, value in facts:
        assert fact is not None
        comment = fact.source
        if key == "memory" and layout is not None:
            installed = f"{layout.installed_bytes // GIB} GiB {layout.type}"
            comment += f"; {layout.populated} of {layout.slots} slots hold {installed}"
        if key == "sockets" and discovery.numa:
            comment += f"; {numa_summary(discovery.numa)}"
        plan.set([*host, key], value, comment)
    if layout is None:
        notes.append("host.memory_channels_per_socket and host.memory_mts: not read (no SSH); check them")
    storages = _disk_storages(discovery)
    listed = plan.get([*host, "storage"]) if plan.has([*host, "storage"]) else []
    listed_names = [str(item["name"]) for item in listed]
    for storage in storages:  # capacities first: appending shifts the list's indices
        if storage.name in listed_names:
            index = listed_names.index(storage.name)
            comment = _storage_comment(storage, api.node)
            plan.set([*host, "storage", index, "capacity"], capacity_text(storage.total_bytes), comment)
    for storage in reversed(storages):
        if storage.name not in listed_names:
            plan.append_item(
                [*host, "storage"],
                [
                    ("name", storage.name, "storage id (from the node)"),
                    ("kind", SEED_STORAGE_KIND, "medium: the API does not say; set ssd or nvme if so"),
                    ("capacity", capacity_text(storage.total_bytes), _storage_comment(storage, api.node)),
                ],
            )
            notes.append(f"host.storage {storage.name}: set its kind (hdd, ssd or nvme)")
    on_node = {storage.name for storage in storages}
    for name in listed_names:
        if name not in on_node:
            notes.append(f"host.storage {name}: not a disk storage on node {api.node}")
    return notes


def _drop_storages_not_on_node(plan: PlanText, discovery: HostDiscovery) -> None:
    on_node = {storage.name for storage in _disk_storages(discovery)}
    names = [str(item["name"]) for item in plan.get(["host", "storage"])]
    for index in reversed(range(len(names))):
        if names[index] not in on_node:
            plan.remove_item(["host", "storage"], index)


def new_plan(seed: str, discovery: HostDiscovery, connection: Connection) -> tuple[str, list[str]]:
    """The seed layout with the node's ``proxmox`` and ``host`` blocks; notes for the user."""
    plan = PlanText(seed)
    api = discovery.api
    given = "as given to discover"
    proxmox = ["proxmox"]
    plan.set([*proxmox, "host"], connection.host, f"the API address discover read the node at ({given})")
    plan.set([*proxmox, "port"], connection.port, f"the API port ({given})")
    plan.set([*proxmox, "node"], api.node, "GET /nodes: the node's name")
    plan.set([*proxmox, "token_id"], connection.token_id, f"the token discover read with ({given})")
    plan.set([*proxmox, "token_secret_env"], connection.token_secret_env, "variable holding its secret")
    if connection.token_secret_file:
        plan.set([*proxmox, "token_secret_file"], connection.token_secret_file, "0600 file with the secret")
    plan.set([*proxmox, "fingerprint"], connection.fingerprint, f"certificate pin ({given})")
    if connection.ca_file:
        plan.set([*proxmox, "ca_file"], connection.ca_file, f"CA of the node's certificate ({given})")
    plan.set([*proxmox, "ssh_host"], connection.ssh_host, f"SSH address of the node ({given})")
    plan.set([*proxmox, "ssh_user"], connection.ssh_user, f"SSH user ({given})")
    plan.set([*proxmox, "ssh_private_key_file"], connection.ssh_private_key_file, f"SSH key ({given})")
    snippets = next((s for s in api.storages if "snippets" in s.content), None)
    if snippets is not None:
        plan.set(
            [*proxmox, "snippets_storage"],
            snippets.name,
            f"GET /nodes/{api.node}/storage: the first storage with 'snippets' content",
        )
    notes = write_host(plan, discovery)
    if discovery.memory is None:  # the starter's values stay, marked as such
        for key in ("memory_channels_per_socket", "memory_mts"):
            value = plan.get(["host", key])
            plan.set(["host", key], value, "NOT READ (no SSH): the starter's value; see dmidecode -t memory")
    if discovery.bandwidth_gbs is None:
        plan.set(["host", "measured_bandwidth_gbs"], None, "not measured (discover --measure-bandwidth)")
    _drop_storages_not_on_node(plan, discovery)
    disks = sorted(_disk_storages(discovery), key=lambda s: s.total_bytes, reverse=True)
    if disks:
        template = next((s for s in api.storages if s.holds_disks), disks[0])
        plan.set(["template", "storage"], template.name, "the node's first storage with 'images' content")
        for index in range(len(plan.get(["vms"]))):
            plan.set(["vms", index, "storage"], disks[0].name, "the node's largest 'images' storage")
    else:
        notes.append(f"node {api.node} has no storage with 'images' content: VMs need one")
    if api.bridges:
        bridge = "vmbr0" if "vmbr0" in api.bridges else api.bridges[0]
        plan.set(
            ["network", "bridge"],
            bridge,
            f"GET /nodes/{api.node}/network: bridges {', '.join(api.bridges)}",
        )
    else:
        notes.append(f"node {api.node} reports no bridge: set network.bridge")
    return plan.text, notes


def updated_plan(existing: str, discovery: HostDiscovery) -> tuple[str, list[str]]:
    """An existing plan with the node's facts written in (its other values untouched)."""
    plan = PlanText(existing)
    api = discovery.api
    plan.set(["proxmox", "node"], api.node, "GET /nodes: the node's name")
    notes = write_host(plan, discovery)
    bridge = plan.get(["network", "bridge"]) if plan.has(["network", "bridge"]) else None
    if api.bridges and bridge not in api.bridges:
        notes.append(f"network.bridge {bridge}: not a bridge on node {api.node} ({', '.join(api.bridges)})")
    return plan.text, notes
