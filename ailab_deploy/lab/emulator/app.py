"""The emulator without its transport: settings, state, tasks, faults, auth and routes."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ailab_deploy.lab.backend import VMBackend

from . import api_access, api_cluster, api_ha, api_nodes, api_qemu, api_reads, migration, storagecfg
from .access import AccessControl
from .apierror import ApiError, fail
from .auth import Authenticator
from .backends import load_backend
from .configfile import VMConfig
from .faults import Faults
from .ha import HaManager
from .router import Router
from .settings import Settings, storage_cfg_text
from .state import Store, write_atomic
from .storagecfg import STORAGE_CFG
from .tasks import TaskManager
from .vzdump import Vzdump

log = logging.getLogger(__name__)

CREATION_QEMU = "8.1.5"


class Emulator:
    def __init__(self, settings: Settings, backend: VMBackend | None = None) -> None:
        self.settings = settings
        self.node = settings.node
        self.started = time.time()
        self.store = Store(settings.state_dir, settings.nodes)
        self._request = threading.local()  # the node a request names, for PVE's error texts
        self.offline: dict[str, float] = self._load_offline()  # failed node -> since when
        self.faults = Faults(settings.faults)
        self.tasks = TaskManager(
            settings.node, settings.state_dir / "tasks", self.faults, settings.task_duration
        )
        self.tasks.node_for_request = self.current_node
        self.tasks.on_worker_start = self._enter_task
        self.access = AccessControl(
            self.release,
            settings.state_dir / "access.json",
            seed_users=settings.users,
            seed_tokens=settings.tokens,
            seed_privsep=settings.token_privsep,
            pool_of_vm=self.store.pool_of,
        )
        self.auth = Authenticator(
            self.store.authkey(),
            {**self.access.passwords, **settings.users},
            {**self.access.secrets, **settings.tokens},
            settings.ticket_lifetime,
            known=self.access.state.tokens.__contains__,
        )
        self.backend = backend if backend is not None else load_backend(settings)
        attach = getattr(self.backend, "attach_cluster", None)
        if attach is not None and settings.clustered:  # a backend that places guests on nodes
            attach(self.store.node_of)
        self.fingerprint = ""
        for storage in settings.storages:
            for node in settings.nodes:
                folder = settings.storage_dir(storage, node)
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
        cfg = settings.lab_dir / STORAGE_CFG
        if not cfg.exists():  # a new lab: its storages written down as PVE's storage.cfg
            text = storage_cfg_text(settings)
            cfg.write_text(text)
            settings.storage_digest = hashlib.sha1(text.encode()).hexdigest()
        elif settings.clustered and not any(
            entry.properties.get("shared") == "1" for entry in storagecfg.parse(cfg.read_text(), str(cfg))
        ):
            # grown into a cluster: the shared storage settings added is written down too
            shared = [s for s in settings.storages if s.shared]
            text = cfg.read_text().rstrip("\n") + "\n\n" + storage_cfg_text(settings, shared)
            cfg.write_text(text)
            settings.storage_digest = hashlib.sha1(text.encode()).hexdigest()
        self.router = Router()
        self.nodes_api = api_nodes.register(self)
        self.qemu = api_qemu.register(self)
        self.cluster_api = api_cluster.register(self)
        self.reads_api = api_reads.register(self)
        self.vzdump = Vzdump(self, api_cluster.job_spec)
        self.vzdump.register()
        self.access_api = api_access.register(self)
        self.migration_api = migration.register(self)
        self.ha = HaManager(self)
        self.ha_api = api_ha.register(self)
        if self.store.fresh and settings.template:
            self.seed_template()
        self._resume_backend()
        self.ha.start()
        self.vzdump.start_scheduler()

    # --- life cycle ---------------------------------------------------------------------------

    def _resume_backend(self) -> None:
        """After a restart: running state comes from the backend (null: from our records)."""
        with self.store.lock:
            for vmid, vm in sorted(self.store.vms.items()):
                if vm.is_template:
                    self.backend.register_template(vmid, dict(vm.conf))
                if self.store.node_of(vmid) in self.offline:
                    self.store.runtime.pop(vmid, None)  # a failed node runs nothing
                elif self.backend.name == "null":
                    if self.store.is_running(vmid):
                        self.backend.start(vmid, dict(vm.conf))
                elif self.store.is_running(vmid) != self.backend.is_running(vmid):
                    self.store.set_running(vmid, self.backend.is_running(vmid))

    def seed_template(self) -> None:
        """The lab's cloud-image template (vmid 9000), as `qm importdisk` + `qm template` leave it."""
        spec = self.settings.template or {}
        vmid = int(spec.get("vmid", 9000))
        storage = str(spec.get("storage", "local-lvm"))
        size = str(spec.get("disk_size", "3G"))
        conf = {
            "name": str(spec.get("name", f"debian-{self.settings.debian_release}-cloud")),
            "memory": str(spec.get("memory", 2048)),
            "cores": str(spec.get("cores", 2)),
            "sockets": "1",
            "cpu": "host",
            "ostype": "l26",
            "agent": "1",
            "scsihw": "virtio-scsi-single",
            "scsi0": f"{storage}:base-{vmid}-disk-0,discard=on,iothread=1,size={size}",
            "ide2": f"{storage}:vm-{vmid}-cloudinit,media=cdrom",
            "boot": "order=scsi0",
            "net0": "virtio=BC:24:11:00:90:00,bridge=vmbr0",
            "serial0": "socket",
            "vga": "serial0",
            "template": "1",
            "meta": f"creation-qemu={CREATION_QEMU},ctime={int(time.time())}",
            "smbios1": f"uuid={uuid.uuid4()}",
            "vmgenid": str(uuid.uuid4()),
        }
        vm = VMConfig(vmid=vmid, conf=conf)
        self.store.save_vm(vm, node=self.settings.nodes[0])
        self.backend.register_template(vmid, dict(conf))

    def reset(self) -> list[int]:
        """Destroy every VM but the template (lab reset). Returns the removed vmids."""
        keep = int((self.settings.template or {}).get("vmid", 9000))
        for task in self.tasks.all():
            task.done.wait(30)  # a clone finishing after the wipe would bring its VM back
        removed = []
        with self.store.lock:
            for vmid in sorted(self.store.vms):
                if vmid == keep:
                    continue
                try:
                    self.backend.destroy(vmid)
                except Exception:  # reset must go on; the backend logs its own trouble
                    log.exception("backend destroy of %s failed during reset", vmid)
                self.store.delete_vm(vmid)
                if self.ha.is_configured(vmid):  # as a destroy with purge: no HA entry outlives its VM
                    self.ha.remove_resource(vmid)
                removed.append(vmid)
            if keep not in self.store.vms and self.settings.template:
                self.seed_template()
            self.store.jobs.clear()
            self.store.save_jobs()
        return removed

    def close(self) -> None:
        self.ha.stop()
        self.vzdump.stop_scheduler()
        self.tasks.shutdown()

    # --- helpers used by the API modules -----------------------------------------------------------

    def begin_request(self) -> None:
        self._request.node = None

    def check_node(self, node: str) -> None:
        """The node a path names: a cluster member (PVE's proxy fails on others), and reachable."""
        if node not in self.settings.nodes:
            raise fail(
                f"hostname lookup '{node}' failed - failed to get address info for: "
                f"{node}: Name or service not known"
            )
        self.check_reachable(node)
        self._request.node = node

    def check_reachable(self, node: str) -> None:
        """pveproxy forwards a request for another node to it; a failed node does not answer,
        and AnyEvent::HTTP reports that as status 595 with the socket error."""
        if node in self.offline and node in self.settings.nodes:
            raise ApiError(595, "No route to host\n")

    def check_target_node(self, node: str) -> None:
        """PVE::Cluster::check_node_exists."""
        if node not in self.settings.nodes:
            raise fail(f"no such cluster node '{node}'")

    @property
    def local_node(self) -> str:
        """The node answering the API: the configured one, or while it is down the first
        online one (clients of a real cluster switch to another node's address)."""
        if self.settings.node not in self.offline:
            return self.settings.node
        return next((n for n in self.settings.nodes if n not in self.offline), self.settings.node)

    def quorate(self) -> bool:
        """Votequorum's majority: more than half of the nodes online (one node: always)."""
        online = len(self.settings.nodes) - len(self.offline)
        return online * 2 > len(self.settings.nodes)

    def check_quorum(self) -> None:
        """PVE::Cluster::check_cfs_quorum: /etc/pve is read-only without quorum."""
        if not self.quorate():
            raise fail("cluster not ready - no quorum?")

    def _enter_task(self, node: str) -> None:
        """A worker acts on its own node, as a forked PVE worker does."""
        self._request.node = node

    def current_node(self) -> str:
        """The node the current request names or the current task runs on (else the API's)."""
        return getattr(self._request, "node", None) or self.node

    # --- node failure (lab control) ---------------------------------------------------------------

    def _load_offline(self) -> dict[str, float]:
        path = self.settings.state_dir / "cluster.json"
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        return {str(k): float(v) for k, v in data.get("offline", {}).items() if k in self.settings.nodes}

    def _save_offline(self) -> None:
        write_atomic(self.settings.state_dir / "cluster.json", json.dumps({"offline": self.offline}))

    def fail_node(self, node: str) -> list[int]:
        """Power the node off: it stops answering and its guests are gone. Returns the VMs that
        were running there."""
        if node not in self.settings.nodes:
            raise fail(f"no such cluster node '{node}'", 400)
        stopped = []
        with self.store.lock:
            if node in self.offline:
                return []
            self.offline[node] = time.time()
            self._save_offline()
            vms = [vm.vmid for vm in self.store.vms_on(node) if self.store.is_running(vm.vmid)]
        for vmid in vms:
            try:
                self.backend.stop(vmid)
            except Exception:  # the node is gone either way
                log.exception("stopping VM %s of failed node %s", vmid, node)
            self.store.set_running(vmid, False)
            stopped.append(vmid)
        self.ha.node_failed(node, stopped)
        return stopped

    def recover_node(self, node: str) -> None:
        """The node boots again and rejoins; its HA manager decides about failback."""
        if node not in self.settings.nodes:
            raise fail(f"no such cluster node '{node}'", 400)
        with self.store.lock:
            if self.offline.pop(node, None) is None:
                return
            self._save_offline()
            self.store.generation += 1
        self.ha.node_recovered(node)

    @property
    def release(self) -> str:
        """The PVE release the emulator behaves as ("9.1" or "8.4")."""
        return ".".join(self.settings.version.split(".")[:2])

    def conf_missing(self, vmid: int, node: str | None = None) -> ApiError:
        node = node or self.current_node()
        return fail(f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")

    def not_found(self, vmid: int, node: str | None = None) -> ApiError:
        node = node or self.current_node()
        return fail(f"unable to find configuration file for VM {vmid} on node '{node}'")

    def on_request_node(self, vmid: int) -> bool:
        """Whether ``vmid`` is on the node the current request names (always, outside one)."""
        node = getattr(self._request, "node", None)
        return node is None or self.store.node_of(vmid) == node

    def shared_storages(self) -> frozenset[str]:
        return frozenset(s.storage for s in self.settings.storages if s.shared)

    def storage_paths(self, node: str | None = None) -> dict[str, Path]:
        """Each storage's file directory on ``node`` (default: the node of the request or task)."""
        node = node or self.current_node()
        paths = {s.storage: self.settings.storage_dir(s, node) for s in self.settings.storages}
        return {name: path for name, path in paths.items() if path is not None}

    def info(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "nodes": {n: ("offline" if n in self.offline else "online") for n in self.settings.nodes},
            "quorate": self.quorate(),
            "version": self.settings.version,
            "fingerprint": self.fingerprint,
            "backend": self.backend.name,
            "vms": len(self.store.vms),
        }
