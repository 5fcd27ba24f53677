"""The emulator's state: in memory behind one lock, every write persisted atomically.

Layout under ``<lab-dir>/state/``::

    qemu-server/<vmid>.conf   each VM in PVE's config file format (one node)
    nodes/<node>/qemu-server/<vmid>.conf   the same in a cluster: the VM's node holds its file,
                              as in pmxcfs; a migration renames it to the target's directory
    runtime.json              which VMs run and since when
    jobs.json                 /cluster/backup jobs
    pools.json                pool membership: poolid -> vmids
    tasks/<n>.json            finished and running tasks (status and log)
    authkey                   secret that signs tickets (survives restarts, like PVE's)
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import configfile, propstr
from .configfile import VMConfig


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """All mutable state. Hold ``lock`` around read-modify-write sequences."""

    def __init__(self, state_dir: Path, nodes: list[str] | None = None) -> None:
        self.dir = state_dir
        self.nodes = list(nodes or ["pve"])
        self.lock = threading.RLock()
        self.vms: dict[int, VMConfig] = {}
        self.vm_node: dict[int, str] = {}  # vmid -> the node that holds its config
        self.runtime: dict[int, float] = {}  # running vmid -> start time
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pool_members: dict[str, list[int]] = {}
        self.generation = 0  # bumped on every VM change, for cached views
        (self.dir / "qemu-server").mkdir(parents=True, exist_ok=True)
        (self.dir / "tasks").mkdir(parents=True, exist_ok=True)
        self.fresh = not (self.dir / "initialized").exists()
        self._load()
        if self.fresh:
            (self.dir / "initialized").write_text(f"{int(time.time())}\n")

    # --- loading and saving -----------------------------------------------------------------

    def _load(self) -> None:
        found = [(path, self.nodes[0]) for path in sorted((self.dir / "qemu-server").glob("*.conf"))]
        for path in sorted((self.dir / "nodes").glob("*/qemu-server/*.conf")):
            node = path.parent.parent.name
            found.append((path, node if node in self.nodes else self.nodes[0]))
        for path, node in found:
            vmid = int(path.stem)
            self.vms[vmid] = configfile.parse(vmid, path.read_text())
            self.vm_node[vmid] = node
            home = self.conf_path(vmid)
            if home != path:  # the lab grew into a cluster (or shrank): files go where they belong
                home.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, home)
        runtime = self.dir / "runtime.json"
        if runtime.exists():
            data = json.loads(runtime.read_text())
            self.runtime = {int(k): float(v) for k, v in data.get("running", {}).items()}
        jobs = self.dir / "jobs.json"
        if jobs.exists():
            self.jobs = json.loads(jobs.read_text())
        pools = self.dir / "pools.json"
        if pools.exists():
            self.pool_members = {k: [int(v) for v in vs] for k, vs in json.loads(pools.read_text()).items()}

    def authkey(self) -> bytes:
        path = self.dir / "authkey"
        with self.lock:
            if not path.exists():
                write_atomic(path, secrets.token_hex(32), mode=0o600)
            return bytes.fromhex(path.read_text().strip())

    @property
    def clustered(self) -> bool:
        return len(self.nodes) > 1

    def node_of(self, vmid: int) -> str:
        return self.vm_node.get(vmid, self.nodes[0])

    def conf_path(self, vmid: int, node: str | None = None) -> Path:
        if not self.clustered:
            return self.dir / "qemu-server" / f"{vmid}.conf"
        return self.dir / "nodes" / (node or self.node_of(vmid)) / "qemu-server" / f"{vmid}.conf"

    def save_vm(self, vm: VMConfig, node: str | None = None) -> None:
        """Write a VM's config; ``node`` places a new VM (default: where it is, else the first)."""
        with self.lock:
            vm.refresh()
            self.vms[vm.vmid] = vm
            self.vm_node[vm.vmid] = node or self.node_of(vm.vmid)
            self.generation += 1
            write_atomic(self.conf_path(vm.vmid), vm.raw, mode=0o640)

    def move_vm(self, vmid: int, target: str) -> None:
        """What a migration ends with: the config file renamed into the target node's directory."""
        with self.lock:
            source = self.conf_path(vmid)
            self.vm_node[vmid] = target
            self.generation += 1
            destination = self.conf_path(vmid)
            if destination != source:
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, destination)

    def vms_on(self, node: str) -> list[VMConfig]:
        with self.lock:
            return [vm for vmid, vm in self.vms.items() if self.node_of(vmid) == node]

    def delete_vm(self, vmid: int) -> None:
        with self.lock:
            self.vms.pop(vmid, None)
            path = self.conf_path(vmid)
            self.vm_node.pop(vmid, None)
            self.generation += 1
            for members in self.pool_members.values():
                if vmid in members:  # PVE drops a destroyed guest from its pool
                    members.remove(vmid)
                    write_atomic(self.dir / "pools.json", json.dumps(self.pool_members, indent=1))
            path.unlink(missing_ok=True)
            if self.runtime.pop(vmid, None) is not None:
                self.save_runtime()

    def set_running(self, vmid: int, running: bool) -> None:
        with self.lock:
            if running:
                self.runtime[vmid] = time.time()
            else:
                self.runtime.pop(vmid, None)
            self.generation += 1
            self.save_runtime()

    def save_runtime(self) -> None:
        data = {"running": {str(k): v for k, v in self.runtime.items()}}
        write_atomic(self.dir / "runtime.json", json.dumps(data))

    def add_to_pool(self, poolid: str, vmid: int) -> None:
        with self.lock:
            members = self.pool_members.setdefault(poolid, [])
            if vmid not in members:
                members.append(vmid)
            write_atomic(self.dir / "pools.json", json.dumps(self.pool_members, indent=1))

    def pool_of(self, vmid: int) -> str | None:
        return next((p for p, members in self.pool_members.items() if vmid in members), None)

    def save_jobs(self) -> None:
        with self.lock:
            write_atomic(self.dir / "jobs.json", json.dumps(self.jobs, indent=1))

    # --- queries -------------------------------------------------------------------------------

    def is_running(self, vmid: int) -> bool:
        return vmid in self.runtime

    def uptime(self, vmid: int) -> int:
        started = self.runtime.get(vmid)
        return int(time.time() - started) if started else 0

    def volumes(self, node: str | None = None) -> dict[str, int]:
        """Every allocated volume id (``storage:name``) with its size in bytes (of the VMs on
        ``node``, if given)."""
        result: dict[str, int] = {}
        with self.lock:
            for vm in self.vms.values():
                if node is not None and self.node_of(vm.vmid) != node:
                    continue
                for section in (vm.conf, vm.pending, *vm.snapshots.values()):
                    for key, value in section.items():
                        if not (propstr.is_drive_key(key) or key.startswith("unused")):
                            continue
                        volid, size = volume_of(value)
                        if volid and volid not in result:
                            result[volid] = size
        return result

    def storage_used(self, node: str | None = None, shared: frozenset[str] = frozenset()) -> dict[str, int]:
        """Bytes per storage; with ``node``: its local storages hold only its VMs' volumes,
        ``shared`` ones every node's."""
        used: dict[str, int] = {}
        local = self.volumes(node) if node is not None else None
        for volid, size in self.volumes().items():
            storage = volid.split(":", 1)[0]
            if local is not None and storage not in shared and volid not in local:
                continue
            used[storage] = used.get(storage, 0) + size
        return used

    def next_disk_name(self, storage: str, vmid: int, prefix: str = "vm") -> str:
        taken = {v.split(":", 1)[1].rsplit("/", 1)[-1] for v in self.volumes() if v.startswith(storage + ":")}
        n = 0
        while f"{prefix}-{vmid}-disk-{n}" in taken or f"vm-{vmid}-disk-{n}" in taken:
            n += 1
        return f"{prefix}-{vmid}-disk-{n}"


def volume_of(value: str) -> tuple[str | None, int]:
    """The storage volume a drive string refers to (None for cdroms and 'none')."""
    try:
        drive = propstr.parse(value, propstr.DRIVE_FORMAT, "drive")
    except propstr.FormatError:
        return None, 0
    file = drive.get("file", "")
    if ":" not in file or "/" in file.split(":", 1)[0]:
        return None, 0
    if propstr.is_cdrom(drive) and not propstr.is_cloudinit(drive):
        return None, 0
    try:
        size = propstr.parse_size(drive.get("size", "0"))
    except ValueError:
        size = 0
    if propstr.is_cloudinit(drive):
        size = 4 * 1024 * 1024
    return file, size
