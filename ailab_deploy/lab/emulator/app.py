"""The emulator without its transport: settings, state, tasks, faults, auth and routes."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from ailab_deploy.lab.backend import VMBackend

from . import api_access, api_cluster, api_nodes, api_qemu, api_reads
from .access import AccessControl
from .apierror import ApiError, fail
from .auth import Authenticator
from .backends import load_backend
from .configfile import VMConfig
from .faults import Faults
from .router import Router
from .settings import Settings, storage_cfg_text
from .state import Store
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
        self.store = Store(settings.state_dir)
        self.faults = Faults(settings.faults)
        self.tasks = TaskManager(
            settings.node, settings.state_dir / "tasks", self.faults, settings.task_duration
        )
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
        self.fingerprint = ""
        for storage in settings.storages:
            if storage.path is not None:
                storage.path.mkdir(parents=True, exist_ok=True)
        cfg = settings.lab_dir / STORAGE_CFG
        if not cfg.exists():  # a new lab: its storages written down as PVE's storage.cfg
            text = storage_cfg_text(settings)
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
        if self.store.fresh and settings.template:
            self.seed_template()
        self._resume_backend()
        self.vzdump.start_scheduler()

    # --- life cycle ---------------------------------------------------------------------------

    def _resume_backend(self) -> None:
        """After a restart: running state comes from the backend (null: from our records)."""
        with self.store.lock:
            for vmid, vm in sorted(self.store.vms.items()):
                if vm.is_template:
                    self.backend.register_template(vmid, dict(vm.conf))
                if self.backend.name == "null":
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
        self.store.save_vm(vm)
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
                removed.append(vmid)
            if keep not in self.store.vms and self.settings.template:
                self.seed_template()
            self.store.jobs.clear()
            self.store.save_jobs()
        return removed

    def close(self) -> None:
        self.vzdump.stop_scheduler()
        self.tasks.shutdown()

    # --- helpers used by the API modules -----------------------------------------------------------

    def check_node(self, node: str) -> None:
        if node != self.node:
            raise fail(
                f"hostname lookup '{node}' failed - failed to get address info for: "
                f"{node}: Name or service not known"
            )

    @property
    def release(self) -> str:
        """The PVE release the emulator behaves as ("9.1" or "8.4")."""
        return ".".join(self.settings.version.split(".")[:2])

    def conf_missing(self, vmid: int) -> ApiError:
        return fail(f"Configuration file 'nodes/{self.node}/qemu-server/{vmid}.conf' does not exist")

    def not_found(self, vmid: int) -> ApiError:
        return fail(f"unable to find configuration file for VM {vmid} on node '{self.node}'")

    def storage_paths(self) -> dict[str, Path]:
        return {s.storage: s.path for s in self.settings.storages if s.path is not None}

    def info(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "version": self.settings.version,
            "fingerprint": self.fingerprint,
            "backend": self.backend.name,
            "vms": len(self.store.vms),
        }
