"""Migration between cluster nodes: ``GET``/``POST /nodes/{node}/qemu/{vmid}/migrate``.

As qemu-server's API2/Qemu.pm (migrate_vm, migrate_vm_precondition) checks a request, and as
QemuMigrate.pm runs the ``qmigrate`` task: lock ``migrate``, scan the local volumes, copy them
(offline) or mirror them (online, ``with-local-disks``), move the config file into the target
node's directory and clear the lock. A VM under HA is handed to the HA manager instead
(``hamigrate``). The VM backend moves the guest if it can (``migrate(vmid, source, target,
config, online)``, optional).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import propstr
from .apierror import fail, param_error
from .router import Request
from .schema import P
from .state import volume_of
from .tasks import TaskContext, TaskFailed

if TYPE_CHECKING:
    from .app import Emulator

_LOCAL_RESOURCE = re.compile(r"(usb|hostpci|serial|parallel|virtiofs)\d+")


def register(emu: Emulator) -> MigrationApi:
    api = MigrationApi(emu)
    base = "/nodes/{node}/qemu/{vmid}/migrate"
    emu.router.add("GET", base, api.preconditions)
    emu.router.add("POST", base, api.migrate)
    return api


def local_volumes(conf: Mapping[str, str], shared: frozenset[str]) -> list[str]:
    """Volumes of a config (drives, CD-ROM images, unused) on storage that is not shared:
    what keeps a VM on its node (qemu-server's check_storage_access_clone / foreach_volid)."""
    found = []
    for key, value in sorted(conf.items()):
        if not (propstr.is_drive_key(key) or key.startswith("unused")):
            continue
        file = value.split(",", 1)[0].removeprefix("file=").removeprefix("volume=")
        if ":" not in file or "/" in file.split(":", 1)[0]:
            continue  # none, cdrom, a host path
        if file.split(":", 1)[0] not in shared and file not in found:
            found.append(file)
    return found


def local_resources(conf: Mapping[str, str]) -> list[str]:
    """check_local_resources: host devices pin a VM (a serial socket does not)."""
    result = []
    for key, value in sorted(conf.items()):
        if key.startswith("usb") and re.search(r"(?:^|,)(?:host=)?spice(?:,|$)", value, re.IGNORECASE):
            continue
        if key.startswith("serial") and value == "socket":
            continue
        if _LOCAL_RESOURCE.fullmatch(key):
            result.append(key)
    if conf.get("ivshmem"):
        result.append("ivshmem")
    return result


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _duration(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class MigrationApi:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store = emu.store

    def _spec(self) -> dict[str, P]:
        spec = {
            "target": P(optional=False, format="pve-node"),
            "online": P("boolean"),
            "force": P("boolean"),
            "migration_type": P(enum=("secure", "insecure")),
            "migration_network": P(format="CIDR"),
            "with-local-disks": P("boolean"),
            "targetstorage": P(format="storage-pair-list"),
            "bwlimit": P("integer", minimum=0),
        }
        if self.emu.release != "8.4":
            spec["with-conntrack-state"] = P("boolean")
        return spec

    # --- GET: what the GUI asks before it offers a migration ---------------------------------------

    def preconditions(self, req: Request) -> Any:
        qemu = self.emu.qemu
        params = qemu._params(req, {"target": P(format="pve-node")})
        self.emu.check_quorum()
        vm = qemu._vm(params["vmid"])
        qemu._check_lock(vm)
        node, vmid = params["node"], params["vmid"]
        conf = vm.conf
        shared = self.emu.shared_storages()
        blocking = self.emu.ha.blocking_nodes(vmid)
        allowed, not_allowed = [], {}
        for other in self.emu.settings.nodes:
            if other == node:
                continue
            if other in blocking:
                not_allowed[other] = {"blocking-ha-resources": blocking[other]}
            else:
                allowed.append(other)
        disks = []
        for key, value in sorted({**conf, **vm.pending}.items()):
            if not (propstr.is_drive_key(key) or key.startswith("unused")):
                continue
            volid, size = volume_of(value) if propstr.is_drive_key(key) else (value, 0)
            if volid is None or volid.split(":", 1)[0] in shared or ":" not in volid:
                continue
            disks.append(
                {
                    "volid": volid,
                    "size": size,
                    "cdrom": int(propstr.is_drive_key(key) and "media=cdrom" in value),
                    "is_unused": int(key.startswith("unused")),
                }
            )
        result: dict[str, Any] = {
            "running": int(self.store.is_running(vmid)),
            "allowed_nodes": allowed,
            "not_allowed_nodes": not_allowed,
            "local_disks": disks,
            "local_resources": local_resources(conf),
            "mapped-resources": [],
            "mapped-resource-info": {},
        }
        if self.emu.release != "8.4":
            result["has-dbus-vmstate"] = 1
            if self.emu.ha.is_configured(vmid):
                result["dependent-ha-resources"] = self.emu.ha.dependent_resources(vmid)
        return result

    # --- POST: the migration itself -----------------------------------------------------------

    def migrate(self, req: Request) -> Any:
        qemu = self.emu.qemu
        params = qemu._params(req, self._spec())
        node, vmid, target = params["node"], params["vmid"], params["target"]
        if target == node:
            raise param_error({"target": "target is local node."})
        self.emu.check_quorum()
        self.emu.check_target_node(target)
        authid = req.identity.authuser
        for option in ("force", "migration_type", "migration_network"):
            if params.get(option) and authid != "root@pam":
                raise param_error({option: "Only root may use this option."})
        vm = qemu._vm(vmid)
        qemu._check_lock(vm)
        running = self.store.is_running(vmid)
        if running and not params.get("online"):
            raise fail("can't migrate running VM without --online")
        online = bool(running and params.get("online"))
        storage_map = self._storage_map(req, params, target)
        if self.emu.ha.is_configured(vmid):  # HA owns the VM: its manager moves it

            def request_ha(ctx: TaskContext) -> None:
                ctx.log(f"Requesting HA migration for VM {vmid} to node {target}")
                self.emu.ha.request_migration(vmid, target)

            return self.emu.tasks.start("hamigrate", str(vmid), authid, request_ha, node=node).upid

        def work(ctx: TaskContext) -> None:
            self.run(ctx, vmid, node, target, online, bool(params.get("with-local-disks")), storage_map)

        return self.emu.tasks.start("qmigrate", str(vmid), authid, work, node=node).upid

    def _storage_map(self, req: Request, params: dict[str, Any], target: str) -> dict[str, str]:
        """``targetstorage``: ``source:target`` pairs or one storage for all (1 = keep)."""
        text = params.get("targetstorage")
        if not text:
            return {}
        mapping: dict[str, str] = {}
        for pair in propstr.split_list(text):
            source, _, dest = pair.rpartition(":")
            mapping[source or "*"] = dest
        for dest in set(mapping.values()) - {"1"}:
            storage = self.emu.settings.storage(dest)
            if storage is None:
                raise fail(f"storage '{dest}' does not exist")
            self.emu.access.check(req.identity.authuser, f"/storage/{dest}", ["Datastore.AllocateSpace"])
            if "images" not in storage.content.split(","):
                raise fail(f"storage '{dest}' does not support vm images")
        if "1" not in mapping.values():
            self.emu.access.check_vm(req.identity.authuser, params["vmid"], ["VM.Config.Disk"])
        return mapping

    def run(
        self,
        ctx: TaskContext,
        vmid: int,
        source: str,
        target: str,
        online: bool,
        with_local_disks: bool,
        storage_map: dict[str, str],
    ) -> None:
        """QemuMigrate: prepare, phase 1 (disks), phase 2 (memory, online), phase 3 (cleanup)."""
        started = time.monotonic()

        def log(line: str) -> None:
            ctx.log(f"{_stamp()} {line}")

        def abort(message: str) -> TaskFailed:
            log(f"ERROR: migration aborted (duration {_duration(started)}): {message}")
            return TaskFailed("migration aborted")

        with self.store.lock:
            vm = self.store.vms.get(vmid)
            if vm is None or self.store.node_of(vmid) != source:
                raise abort(f"Configuration file 'nodes/{source}/qemu-server/{vmid}.conf' does not exist")
            if vm.lock:
                raise abort(f"VM is locked ({vm.lock})")
            if self.store.is_running(vmid) and not online:
                raise abort("can't migrate running VM without --online")
            if target in self.emu.offline:  # ssh to the target fails before anything moves
                raise abort("Can't connect to destination address using public key")
            address = self.emu.settings.node_address(target)
            log(f"starting migration of VM {vmid} to node '{target}' ({address})")
            vm.conf["lock"] = "migrate"
            self.store.save_vm(vm)
        try:
            self._phase1(ctx, log, vmid, online, with_local_disks, storage_map)
            ctx.simulate(lock_vmid=vmid)
            if online:
                log(f"starting VM {vmid} on remote node '{target}'")
                log("start remote tunnel")
                log("ssh tunnel ver 1")
                log(f"starting online/live migration on unix:/run/qemu-server/{vmid}.migrate")
                log("migration status: completed")
            with self.store.lock:
                vm = self.store.vms[vmid]
                conf = dict(vm.conf)
            conf.pop("lock", None)
            mover = getattr(self.emu.backend, "migrate", None)
            if mover is not None:
                mover(vmid, source, target, conf, online)
            with self.store.lock:  # the config file moves: the VM now belongs to the target
                self.store.move_vm(vmid, target)
                vm = self.store.vms[vmid]
                vm.conf.pop("lock", None)
                self.store.save_vm(vm)
        except TaskFailed as err:
            self._unlock(vmid)
            log("aborting phase 1 - cleanup resources")
            raise abort(str(err)) from err
        except Exception as err:
            self._unlock(vmid)
            raise abort(str(err).strip()) from err
        log(f"migration finished successfully (duration {_duration(started)})")

    def _phase1(
        self,
        ctx: TaskContext,
        log: Any,
        vmid: int,
        online: bool,
        with_local_disks: bool,
        storage_map: dict[str, str],
    ) -> None:
        """scan_local_volumes and sync_offline_local_volumes."""
        with self.store.lock:
            vm = self.store.vms[vmid]
            conf = dict(vm.conf)
        shared = self.emu.shared_storages()
        volumes = local_volumes(conf, shared)
        attached = set(local_volumes({k: v for k, v in conf.items() if propstr.is_drive_key(k)}, shared))
        errors = []
        for volid in volumes:
            if volid.endswith("-cloudinit"):
                log(f"found generated disk '{volid}' (in current VM config)")
            elif volid in attached:
                if online and not with_local_disks:
                    errors.append(volid)
                log(f"found local disk '{volid}' (attached)")
            else:
                log(f"found local disk '{volid}' (unused)")
        for volid in errors:
            log(
                f"can't migrate local disk '{volid}': can't live migrate attached local disks "
                "without with-local-disks option"
            )
        if errors:
            log("ERROR: Problem found while scanning volumes - can't migrate VM - check log")
            raise TaskFailed("Problem found while scanning volumes - can't migrate VM - check log")
        copied = [v for v in volumes if not v.endswith("-cloudinit")]
        if copied:
            log("copying local disk images" if not online else "starting storage migration")
        for volid in copied:
            storage, name = volid.split(":", 1)
            dest = storage_map.get(storage) or storage_map.get("*") or storage
            dest = storage if dest == "1" else dest
            log(f"volume '{volid}' is '{dest}:{name}' on the target")
            if dest != storage:
                self._rename_volume(vmid, volid, f"{dest}:{name}")

    def _rename_volume(self, vmid: int, old: str, new: str) -> None:
        with self.store.lock:
            vm = self.store.vms[vmid]
            for key, value in list(vm.conf.items()):
                first, sep, rest = value.partition(",")
                if first == old or first in (f"file={old}", f"volume={old}"):
                    vm.conf[key] = first.replace(old, new) + sep + rest
            self.store.save_vm(vm)

    def _unlock(self, vmid: int) -> None:
        with self.store.lock:
            vm = self.store.vms.get(vmid)
            if vm is not None and vm.conf.get("lock") == "migrate":
                vm.conf.pop("lock")
                self.store.save_vm(vm)
