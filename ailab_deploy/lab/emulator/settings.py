"""The lab's settings: ``<lab-dir>/settings.json``, every key optional.

Sizes may be byte counts or strings as in vms.yaml (``"237GB"``, ``"126G"``);
secrets are referenced by file (``password_file``, ``secret_file``, relative to
the lab directory) so that settings.json itself can be shown and diffed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ailab_deploy.core.units import UnitError, parse_size
from ailab_deploy.errors import ConfigError

from . import storagecfg

SETTINGS_FILE = "settings.json"

DEFAULT_HARDWARE: dict[str, Any] = {
    "cpu_model": "Intel(R) Xeon(R) CPU E5-2699 v3 @ 2.30GHz",
    "mhz": "2300.000",
    "sockets": 2,
    "cores_per_socket": 18,
    "threads_per_core": 2,
    "memory": "126G",
    # read by the lab node's dmidecode and numactl stand-ins (containers/node_hardware.py)
    "memory_channels_per_socket": 4,
    "memory_mts": 2133,
    "memory_type": "DDR4",
}

DEFAULT_STORAGES: list[dict[str, Any]] = [
    {
        "storage": "local",
        "type": "dir",
        "content": "iso,vztmpl,backup,snippets,import",
        "total": "94GB",
    },
    {"storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir", "total": "237GB"},
    {
        "storage": "HDDStorage",
        "type": "dir",
        "content": "images,rootdir,backup",
        "total": "2.18TB",
    },
]

# The Debian releases the lab's template image can be (what `lab up --debian-release` takes).
DEBIAN_RELEASES = (13, 12)
DEFAULT_DEBIAN_RELEASE = 13

DEFAULT_TEMPLATE: dict[str, Any] = {
    "vmid": 9000,
    "name": f"debian-{DEFAULT_DEBIAN_RELEASE}-cloud",
    "storage": "local-lvm",
    "disk_size": "3G",
    "memory": 2048,
    "cores": 2,
}


@dataclass
class StorageSettings:
    storage: str
    type: str
    content: str
    total: int
    path: Path | None = None  # where file content (iso, import, snippets) lives
    shared: bool = False
    options: dict[str, str] = field(default_factory=dict)  # the rest of its storage.cfg section


# A cluster's storage every node reaches (PVE: a storage marked ``shared``), added to the default
# storages of a lab with more than one node
DEFAULT_SHARED_STORAGE: dict[str, Any] = {
    "storage": "shared",
    "type": "dir",
    "content": "images,rootdir,snippets,import,iso,backup",
    "total": "500GB",
    "shared": 1,
}
FIRST_NODE_HOST = 2  # node i of a cluster answers at 10.77.0.(2 + i), as the lab network numbers them

# The PVE releases the emulator behaves as, and the full version it reports for each
PVE_VERSIONS = {"9.1": "9.1.3", "8.4": "8.4.1"}
DEFAULT_PVE_RELEASE = "9.1"


@dataclass
class Settings:
    lab_dir: Path
    node: str = "pve"
    listen: str = "127.0.0.1"
    port: int = 8006
    backend: str = "null"
    version: str = PVE_VERSIONS[DEFAULT_PVE_RELEASE]
    debian_release: int = DEFAULT_DEBIAN_RELEASE  # of the template image every VM is cloned from
    hardware: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_HARDWARE))
    storages: list[StorageSettings] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)  # userid -> password
    tokens: dict[str, str] = field(default_factory=dict)  # user@realm!id -> secret
    token_privsep: dict[str, bool] = field(default_factory=dict)  # user@realm!id -> privsep (default 0)
    task_seconds: float = 0.2
    task_seconds_by_type: dict[str, float] = field(default_factory=dict)
    auth_failure_delay: float = 3.0
    ticket_lifetime: int = 7200
    download_map: dict[str, str] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    template: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TEMPLATE))
    storage_digest: str = ""
    pools: dict[str, str] = field(default_factory=dict)  # poolid -> comment (PVE's user.cfg pools)
    # the cluster: node names (one node: no cluster, today's standalone node), their addresses
    nodes: list[str] = field(default_factory=list)
    node_addresses: dict[str, str] = field(default_factory=dict)
    cluster_name: str = "ailab"
    fence_seconds: float = 10.0  # PVE fences a lost node after ~2 minutes; the lab takes seconds
    ha_tick_seconds: float = 0.5  # how often the lab's HA manager looks at the cluster

    @property
    def clustered(self) -> bool:
        return len(self.nodes) > 1

    def node_address(self, node: str) -> str:
        return self.node_addresses.get(node, self.listen)

    def storage_dir(self, storage: StorageSettings, node: str | None = None) -> Path | None:
        """Where a storage keeps its files as ``node`` sees them: in a cluster a local storage
        is each node's own disk (<lab>/nodes/<node>/storage/<name>), a shared one is the same
        directory everywhere; a single node keeps the configured path."""
        if storage.path is None or not self.clustered or storage.shared:
            return storage.path
        return self.lab_dir / "nodes" / (node or self.node) / "storage" / storage.storage

    run_backup_jobs: bool = False  # run /cluster/backup jobs on their schedules (the lab: on)
    clock_speed: float = 1.0  # lab seconds per real second for schedules and backup times

    @property
    def state_dir(self) -> Path:
        return self.lab_dir / "state"

    @property
    def tls_dir(self) -> Path:
        return self.lab_dir / "tls"

    def storage(self, name: str) -> StorageSettings | None:
        return next((s for s in self.storages if s.storage == name), None)

    def task_duration(self, task_type: str) -> float:
        return float(self.task_seconds_by_type.get(task_type, self.task_seconds))

    @property
    def host_cpus(self) -> int:
        hw = self.hardware
        return int(hw["sockets"]) * int(hw["cores_per_socket"]) * int(hw["threads_per_core"])

    @property
    def host_memory(self) -> int:
        return _size(self.hardware["memory"], "hardware.memory")


def _size(value: Any, what: str) -> int:
    try:
        return parse_size(value, default_unit="G", what=what) if isinstance(value, str) else int(value)
    except (UnitError, ValueError, TypeError) as err:
        raise ConfigError(f"settings.json: {err}") from err


def _read_secret(lab_dir: Path, entry: dict[str, Any], inline: str, ref: str, what: str) -> str:
    if inline in entry:
        return str(entry[inline])
    if ref in entry:
        path = lab_dir / str(entry[ref])
        try:
            return path.read_text().strip()
        except OSError as err:
            raise ConfigError(f"settings.json: {what}: cannot read {path}: {err}") from err
    raise ConfigError(f"settings.json: {what} needs '{inline}' or '{ref}'")


def _from_cfg(entry: storagecfg.StorageEntry, lab_dir: Path, sizes: dict[str, int]) -> StorageSettings:
    props = dict(entry.properties)
    path = props.pop("path", None)
    return StorageSettings(
        storage=entry.storage,
        type=entry.type,
        content=props.pop("content", "images,rootdir"),
        total=sizes.get(entry.storage, _size("100G", entry.storage)),
        path=Path(path) if path else lab_dir / "storage" / entry.storage,
        shared=props.pop("shared", "0") == "1",
        options=props,
    )


def storage_cfg_text(settings: Settings, storages: list[StorageSettings] | None = None) -> str:
    """The storages as PVE writes storage.cfg (dir storages with their path)."""
    entries = []
    for storage in settings.storages if storages is None else storages:
        props: dict[str, str] = {}
        if storage.type in ("dir", "nfs", "cifs", "btrfs") and storage.path is not None:
            props["path"] = str(storage.path)
        props["content"] = storage.content
        if storage.shared:
            props["shared"] = "1"
        props.update(storage.options)
        entries.append(storagecfg.StorageEntry(storage.type, storage.storage, props))
    return storagecfg.render(entries)


def load_settings(lab_dir: Path) -> Settings:
    """Read ``<lab_dir>/settings.json`` (missing file: all defaults)."""
    lab_dir = lab_dir.resolve()
    path = lab_dir / SETTINGS_FILE
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: {err}") from err
    settings = Settings(lab_dir=lab_dir)
    for key in (
        "node",
        "listen",
        "port",
        "backend",
        "version",
        "task_seconds",
        "task_seconds_by_type",
        "auth_failure_delay",
        "ticket_lifetime",
        "download_map",
        "faults",
        "template",
        "cluster_name",
        "fence_seconds",
        "ha_tick_seconds",
        "debian_release",
        "run_backup_jobs",
        "clock_speed",
    ):
        if key in raw:
            setattr(settings, key, raw[key])
    if settings.debian_release not in DEBIAN_RELEASES:
        raise ConfigError(
            f"settings.json: debian_release {settings.debian_release!r} is not a release the lab builds "
            f"({', '.join(map(str, DEBIAN_RELEASES))})"
        )
    if "template" not in raw and settings.template is not None:
        settings.template["name"] = f"debian-{settings.debian_release}-cloud"
    if ".".join(str(settings.version).split(".")[:2]) not in PVE_VERSIONS:
        raise ConfigError(
            f"settings.json: version '{settings.version}' is not a PVE release the lab emulates "
            f"({', '.join(PVE_VERSIONS)})"
        )
    _load_nodes(settings, raw)
    if settings.clustered and "template" not in raw and settings.template is not None:
        # a cluster's template sits on shared storage, so that clones with target= reach every node
        settings.template = {**settings.template, "storage": DEFAULT_SHARED_STORAGE["storage"]}
    settings.hardware = {**DEFAULT_HARDWARE, **raw.get("hardware", {})}
    for entry in raw.get("pools", []):
        settings.pools[str(entry["poolid"])] = str(entry.get("comment", ""))
    storages: list[StorageSettings] = []
    default_storages = DEFAULT_STORAGES + ([DEFAULT_SHARED_STORAGE] if settings.clustered else [])
    for entry in raw.get("storages", default_storages):
        name = str(entry["storage"])
        path_value = entry.get("path")
        storages.append(
            StorageSettings(
                storage=name,
                type=str(entry.get("type", "dir")),
                content=str(entry.get("content", "images,rootdir")),
                total=_size(entry.get("total", "100G"), f"storages.{name}.total"),
                path=Path(path_value) if path_value else lab_dir / "storage" / name,
                shared=bool(int(entry.get("shared", 0))),
            )
        )
    cfg_path = lab_dir / storagecfg.STORAGE_CFG
    if cfg_path.exists():  # the lab's storage.cfg, in PVE's format, says what storage there is
        text = cfg_path.read_text()
        sizes = {s.storage: s.total for s in storages}
        storages = [_from_cfg(entry, lab_dir, sizes) for entry in storagecfg.parse(text, str(cfg_path))]
        settings.storage_digest = hashlib.sha1(text.encode()).hexdigest()
    if settings.clustered and not any(s.shared for s in storages):
        # a lab grown into a cluster gets the storage all its nodes share
        entry = DEFAULT_SHARED_STORAGE
        storages.append(
            StorageSettings(
                storage=entry["storage"],
                type=entry["type"],
                content=entry["content"],
                total=_size(entry["total"], "shared storage"),
                path=lab_dir / "storage" / entry["storage"],
                shared=True,
            )
        )
    settings.storages = storages
    for entry in raw.get("users", []):
        userid = str(entry["userid"])
        settings.users[userid] = _read_secret(lab_dir, entry, "password", "password_file", f"user {userid}")
    for entry in raw.get("tokens", []):
        tokenid = str(entry["tokenid"])
        settings.tokens[tokenid] = _read_secret(lab_dir, entry, "secret", "secret_file", f"token {tokenid}")
        settings.token_privsep[tokenid] = bool(entry.get("privsep", False))
    return settings


def _load_nodes(settings: Settings, raw: dict[str, Any]) -> None:
    """``nodes``: names, or ``{"name", "address"}``; without it the one node ``node`` (no cluster).
    In a cluster ``node`` is the node the API is asked on (default: the first)."""
    entries = raw.get("nodes") or []
    names: list[str] = []
    for index, entry in enumerate(entries):
        name = str(entry["name"] if isinstance(entry, dict) else entry)
        if name in names:
            raise ConfigError(f"settings.json: nodes: '{name}' is listed twice")
        names.append(name)
        address = entry.get("address") if isinstance(entry, dict) else None
        settings.node_addresses[name] = str(address or f"10.77.0.{FIRST_NODE_HOST + index}")
    if not names:
        settings.nodes = [settings.node]
        return
    settings.nodes = names
    if "node" not in raw:
        settings.node = names[0]
    elif settings.node not in names:
        raise ConfigError(f"settings.json: node '{settings.node}' is not one of nodes {names}")
