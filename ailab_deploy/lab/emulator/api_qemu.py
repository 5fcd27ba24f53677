"""/nodes/{node}/qemu: VMs, their config, power, snapshots, templates, clones and the agent."""

from __future__ import annotations

import re
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ailab_deploy.lab import archive as lab_archive
from ailab_deploy.lab.backend import AgentNotRunning

from . import codeperms, hotplug, propstr, schema
from .access import permission_error
from .apierror import ApiError, fail, param_error
from .configfile import VMConfig
from .migration import local_volumes
from .router import Request
from .schema import P
from .tasks import TaskContext, TaskFailed

if TYPE_CHECKING:
    from .app import Emulator

MIB = 1024**2
GIB = 1024**3

BOOT_DRIVES = [f"ide{i}" for i in range(4)] + [f"sata{i}" for i in range(6)]
BOOT_DRIVES += [f"scsi{i}" for i in range(31)] + [f"virtio{i}" for i in range(16)]
NEW_DISK = re.compile(r"^(?:([^/:\s]+):)?(\d+(?:\.\d+)?)$")
SKIPLOCK = P("boolean")
TEMPLATE_DISKS = (*BOOT_DRIVES, "efidisk0", "tpmstate0")


def register(emu: Emulator) -> QemuApi:
    api = QemuApi(emu)
    add = emu.router.add
    base = "/nodes/{node}/qemu"
    add("GET", base, api.list_vms)
    add("POST", base, api.create)
    add("GET", base + "/{vmid}", api.vm_index)
    add("DELETE", base + "/{vmid}", api.destroy)
    add("POST", base + "/{vmid}/clone", api.clone)
    add("GET", base + "/{vmid}/config", api.get_config)
    add("POST", base + "/{vmid}/config", api.post_config)
    add("PUT", base + "/{vmid}/config", api.put_config)
    add("GET", base + "/{vmid}/pending", api.pending)
    add("PUT", base + "/{vmid}/resize", api.resize)
    add("GET", base + "/{vmid}/status", api.status_index)
    add("GET", base + "/{vmid}/status/current", api.status_current)
    for action in ("start", "stop", "shutdown", "reboot"):
        add("POST", base + "/{vmid}/status/" + action, getattr(api, action))
    add("GET", base + "/{vmid}/agent/network-get-interfaces", api.agent_interfaces)
    add("POST", base + "/{vmid}/template", api.template)
    add("GET", base + "/{vmid}/snapshot", api.snapshot_list)
    add("POST", base + "/{vmid}/snapshot", api.snapshot_create)
    add("GET", base + "/{vmid}/snapshot/{snapname}", api.snapshot_index)
    add("GET", base + "/{vmid}/snapshot/{snapname}/config", api.snapshot_config)
    add("POST", base + "/{vmid}/snapshot/{snapname}/rollback", api.snapshot_rollback)
    add("DELETE", base + "/{vmid}/snapshot/{snapname}", api.snapshot_delete)
    add("POST", "/nodes/{node}/startall", api.start_all)
    add("POST", "/nodes/{node}/stopall", api.stop_all)
    return api


def _hash_password(password: str) -> str:
    if password.startswith("$"):
        return password  # already crypt-formatted, stored as given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt

            return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA256))
        except (ImportError, AttributeError):  # pragma: no cover - Python without crypt
            import hashlib
            import secrets

            salt = secrets.token_hex(8)
            return f"$5${salt}${hashlib.sha256((salt + password).encode()).hexdigest()}"


class QemuApi:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store = emu.store
        self._static: dict[int, tuple[str, dict[str, Any]]] = {}

    # --- common -------------------------------------------------------------------------------

    def _params(self, req: Request, spec: dict[str, P], config_keys: bool = False) -> dict[str, Any]:
        full = {"node": schema.NODE, "vmid": schema.VMID, **spec}
        release = self.emu.release
        params = schema.check(
            req.params, full, (lambda key: schema.config_key(key, release)) if config_keys else None
        )
        self.emu.check_node(params["node"])
        return params

    def _vm(self, vmid: int, missing: ApiError | None = None) -> VMConfig:
        vm = self.store.vms.get(vmid)
        if vm is None or not self.emu.on_request_node(vmid):  # asked on another node: not there
            raise missing or self.emu.conf_missing(vmid)
        return vm

    def _check_lock(self, vm: VMConfig, skiplock: bool = False) -> None:
        if vm.lock and not skiplock:
            raise fail(f"VM is locked ({vm.lock})")

    def _skiplock(self, req: Request, params: dict[str, Any]) -> bool:
        if params.get("skiplock"):
            if req.identity.authuser != "root@pam":
                raise param_error({"skiplock": "Only root may use this option."})
            return True
        return False

    def _since_9(self, spec: dict[str, P]) -> dict[str, P]:
        return {} if self.emu.release == "8.4" else spec

    def _start_spec_since_9(self) -> dict[str, P]:
        return self._since_9(
            {
                "nets-host-mtu": P(pattern=r"net\d+=\d+(,net\d+=\d+)*"),
                "with-conntrack-state": P("boolean"),
            }
        )

    def _check_pool(self, pool: str | None) -> None:
        if pool and pool not in self.emu.settings.pools:
            raise ApiError(403, f"pool '{pool}' does not exist\n")

    def _task(self, req: Request, task_type: str, vmid: int, work: Any) -> str:
        return self.emu.tasks.start(task_type, str(vmid), req.identity.authuser, work).upid

    # --- status -------------------------------------------------------------------------------

    def _static_info(self, vm: VMConfig) -> dict[str, Any]:
        """Values derived from the config only, cached per digest (cluster/resources is hot)."""
        cached = self._static.get(vm.vmid)
        if cached and cached[0] == vm.digest:
            return cached[1]
        conf = vm.conf
        host_cpus = self.emu.settings.host_cpus
        if "vcpus" in conf:
            cpus = int(conf["vcpus"])
        else:
            cpus = min(host_cpus, int(conf.get("sockets", 1)) * int(conf.get("cores", 1)))
        info = {
            "name": conf.get("name", f"VM {vm.vmid}"),
            "cpus": cpus,
            "maxmem": propstr.memory_mib(conf.get("memory")) * MIB,
            "maxdisk": self._boot_disk_size(conf),
        }
        self._static[vm.vmid] = (vm.digest, info)
        return info

    def _boot_disk_size(self, conf: dict[str, str]) -> int:
        order = []
        boot = conf.get("boot", "")
        if boot.startswith("order="):
            order = boot[len("order=") :].split(";")
        if conf.get("bootdisk"):
            order.append(conf["bootdisk"])
        for key in order + BOOT_DRIVES:
            value = conf.get(key)
            if not value or not propstr.is_drive_key(key):
                continue
            try:
                drive = propstr.parse_drive(key, value)
            except propstr.FormatError:
                continue
            if propstr.is_cdrom(drive):
                continue
            try:
                return propstr.parse_size(drive.get("size", "0"))
            except ValueError:
                return 0
        return 0

    def vmstatus(self, vm: VMConfig, full: bool = False) -> dict[str, Any]:
        info = self._static_info(vm)
        running = self.store.is_running(vm.vmid)
        result: dict[str, Any] = {
            "vmid": vm.vmid,
            "status": "running" if running else "stopped",
            "name": info["name"],
            "cpus": info["cpus"],
            "maxmem": info["maxmem"],
            "maxdisk": info["maxdisk"],
            "disk": 0,
            "cpu": 0.0123 if running else 0,
            "mem": min(info["maxmem"], 412 * MIB) if running else 0,
            "uptime": self.store.uptime(vm.vmid),
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
        }
        conf = vm.conf
        if running:
            result["pid"] = 100000 + vm.vmid % 800000
        if "lock" in conf:
            result["lock"] = conf["lock"]
        if conf.get("tags"):
            result["tags"] = conf["tags"]
        if conf.get("template") == "1":
            result["template"] = 1
        if "serial0" in conf:
            result["serial"] = 1
        if full:
            result["qmpstatus"] = result["status"]
            if running:
                result["running-machine"] = "pc-i440fx-8.1+pve0"
                result["running-qemu"] = "8.1.5"
                result["balloon"] = info["maxmem"]
                result["freemem"] = info["maxmem"] - result["mem"]
                result["nics"] = {}
                result["blockstat"] = {}
                result["proxmox-support"] = {}
        return result

    def list_vms(self, req: Request) -> Any:
        params = schema.check(req.params, {"node": schema.NODE, "full": P("boolean")})
        self.emu.check_node(params["node"])
        vms = self.store.vms_on(params["node"])
        authid = req.identity.authuser
        return [
            self.vmstatus(vm, bool(params.get("full")))
            for vm in vms
            if self.emu.access.allowed(authid, f"/vms/{vm.vmid}", ["VM.Audit"])
        ]

    def vm_index(self, req: Request) -> Any:
        params = self._params(req, {})
        self._vm(params["vmid"])
        names = ["config", "pending", "status", "snapshot", "clone", "resize", "template", "agent"]
        return [{"subdir": name} for name in names]

    def status_index(self, req: Request) -> Any:
        params = self._params(req, {})
        self._vm(params["vmid"])
        return [{"subdir": name} for name in ("current", "start", "stop", "shutdown", "reboot")]

    def status_current(self, req: Request) -> Any:
        params = self._params(req, {})
        vm = self._vm(params["vmid"])
        result = self.vmstatus(vm, full=True)
        result["ha"] = self.emu.ha.vm_status(vm.vmid)
        if propstr.agent_enabled(vm.conf.get("agent")):
            result["agent"] = 1
        return result

    # --- config ---------------------------------------------------------------------------------

    def get_config(self, req: Request) -> Any:
        params = self._params(req, {"current": P("boolean"), "snapshot": schema.SNAPNAME_OPT})
        vm = self._vm(params["vmid"])
        with self.store.lock:
            if params.get("snapshot"):
                name = params["snapshot"]
                if name not in vm.snapshots:
                    raise fail(f"snapshot '{name}' does not exist")
                conf = dict(vm.snapshots[name])
            else:
                conf = dict(vm.conf) if params.get("current") else vm.merged()
            digest = vm.digest
        result = {k: schema.typed_config_value(k, v) for k, v in conf.items()}
        if "cipassword" in result:
            result["cipassword"] = "**********"
        result["digest"] = digest
        return result

    def pending(self, req: Request) -> Any:
        params = self._params(req, {})
        vm = self._vm(params["vmid"])
        with self.store.lock:
            deleted = {k.lstrip("!") for k in vm.pending.get("delete", "").split(",") if k}
            keys = sorted(set(vm.conf) | set(vm.pending) - {"delete"})
            result = []
            for key in keys:
                item: dict[str, Any] = {"key": key}
                if key in vm.conf:
                    item["value"] = schema.typed_config_value(key, vm.conf[key])
                if key in vm.pending:
                    item["pending"] = schema.typed_config_value(key, vm.pending[key])
                if key in deleted:
                    item["delete"] = 1
                result.append(item)
        return result

    _update_spec: ClassVar[dict[str, P]] = {
        "delete": P(format="pve-configid-list"),
        "revert": P(format="pve-configid-list"),
        "digest": schema.DIGEST,
        "skiplock": SKIPLOCK,
        "force": P("boolean", requires="delete"),
    }

    def _prepare_update(
        self, req: Request, params: dict[str, Any]
    ) -> tuple[VMConfig, dict[str, str], list[str], list[str]]:
        """Synchronous checks of a config update, as PVE does them under the flock."""
        vmid = params["vmid"]
        vm = self._vm(vmid)
        skiplock = self._skiplock(req, params)
        meta = {"node", "vmid", "delete", "revert", "digest", "skiplock", "force", "background_delay"}
        meta.add("import-working-storage")
        updates = {k: _as_str(v) for k, v in params.items() if k not in meta}
        if "sshkeys" in updates:
            try:
                propstr.validate_ssh_keys(updates["sshkeys"])
            except propstr.SshKeyError as err:
                raise fail(str(err)) from err
        if not updates and not params.get("delete") and not params.get("revert"):
            raise fail("no options specified")
        if updates.get("cdrom"):  # PVE's alias: cdrom is ide2 with media=cdrom
            value = updates.pop("cdrom")
            updates["ide2"] = value if "media=" in value else value + ",media=cdrom"
        release = self.emu.release
        reverts = propstr.split_list(params.get("revert", ""))
        for key in reverts:
            if schema.config_key(key, release) is None:
                raise param_error({"revert": f"unknown option '{key}'"})
            if key in updates:
                raise param_error({"delete": f"you can't use '-{key}' and -revert {key}' at the same time"})
        deletes = []
        for key in propstr.split_list(params.get("delete", "")):
            key = "ide2" if key == "cdrom" else key
            if key in updates:
                raise param_error({"delete": f"you can't use '-{key}' and -delete {key}' at the same time"})
            if key in reverts:
                raise param_error(
                    {"revert": f"you can't use '-delete {key}' and -revert {key}' at the same time"}
                )
            if schema.config_key(key, release) is None:
                raise param_error({"delete": f"unknown option '{key}'"})
            deletes.append(key)
        self._check_update_permissions(req.identity.authuser, vmid, updates, deletes)
        for key, value in updates.items():
            if propstr.is_drive_key(key):
                self._check_drive_source(key, value)
        if updates.get("vmgenid") == "1":
            updates["vmgenid"] = str(uuid.uuid4())
        if params.get("digest") and params["digest"] != vm.digest:
            raise fail("checksum mismatch (file change by other user?)")
        self._check_lock(vm, skiplock)
        for key in reverts:  # back to the current value, or a pending-only key goes away
            if key in vm.conf:
                updates[key] = vm.conf[key]
            elif key in vm.pending:
                deletes.append(key)
        merged = {**vm.merged(), **updates}
        if "balloon" in updates or "memory" in updates:
            balloon = int(merged.get("balloon", 0) or 0)
            if balloon and balloon > propstr.memory_mib(merged.get("memory")):
                raise fail("balloon value too large (must be smaller than assigned memory)")
        if "boot" in updates:
            updates["boot"] = self._check_boot(updates["boot"], vm, updates, deletes)
        elif "boot" not in deletes:  # deleted devices leave the order, new CD drives join it
            order = self._boot_order(vm.merged().get("boot"))
            kept = [device for device in order if device not in deletes]
            if order:
                for key, value in sorted(updates.items()):
                    drive = _drive(key, value) if propstr.is_drive_key(key) else {}
                    cdrom = propstr.is_cdrom(drive) and not propstr.is_cloudinit(drive)
                    if cdrom and key not in kept:
                        kept.append(key)
            if kept != order:
                updates["boot"] = "order=" + ";".join(kept) if kept else ""
        return vm, updates, deletes, reverts

    @staticmethod
    def _boot_order(boot: str | None) -> list[str]:
        if not boot:
            return []
        try:
            parsed = propstr.parse(boot, propstr.LAYOUTS["pve-qm-boot"], "boot")
        except propstr.FormatError:
            return []
        return propstr.split_list(parsed.get("order", ""))

    def _check_boot(self, boot: str, vm: VMConfig, updates: dict[str, str], deletes: list[str]) -> str:
        """PVE's update: every device of a new order must exist and stay; stored as order=a;b."""
        devices = self._boot_order(boot)
        if not devices:
            return boot
        for device in devices:
            exists = vm.conf.get(device) or vm.pending.get(device) or updates.get(device)
            if not exists or device in deletes:
                raise fail(f"invalid bootorder: device '{device}' does not exist'")
        if "bootdisk" in vm.conf and "bootdisk" not in deletes:
            deletes.append("bootdisk")  # the legacy setting goes when an order is set
        return "order=" + ";".join(devices)

    def _check_drive_source(self, key: str, value: str) -> None:
        """Syntax and storage checks that PVE makes before forking a worker."""
        drive = propstr.parse_drive(key, value)
        file = drive["file"]
        new = NEW_DISK.match(file)
        if "import-from" in drive:
            if not new or float(new.group(2)) != 0 or not new.group(1):
                raise param_error(
                    {key: "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"}
                )
            content, _path = self._import_source(drive["import-from"])
            if content not in ("images", "import"):
                raise param_error(
                    {
                        key: f"'{drive['import-from']}' has wrong type '{content}' - needs to be "
                        "'images' or 'import'"
                    }
                )
        storage = file.split(":", 1)[0] if ":" in file else None
        if new and not new.group(1):
            raise param_error({key: "missing storage ID for new disk"})
        if storage and self.emu.settings.storage(storage) is None:
            raise fail(f"storage '{storage}' does not exist")
        if new or file.endswith(":cloudinit"):
            assert storage is not None
            content_types = self.emu.settings.storage(storage).content.split(",")  # type: ignore[union-attr]
            if "images" not in content_types:
                raise fail(f"storage '{storage}' does not support content-type 'images'")

    def _import_source(self, source: str) -> tuple[str, Path]:
        if ":" not in source:
            raise param_error({"import-from": f"unable to parse volume ID '{source}'"})
        storage, _, rel = source.partition(":")
        volumes = self.store.volumes()
        if source in volumes:
            return "images", Path()
        if self.emu.settings.storage(storage) is None:
            raise fail(f"storage '{storage}' does not exist")
        from .api_nodes import CONTENT_DIRS

        content = rel.split("/", 1)[0]
        if content not in CONTENT_DIRS:
            raise fail(f"unable to parse volume ID '{source}'")
        paths = self.emu.storage_paths()
        path = paths[storage] / CONTENT_DIRS[content] / rel.split("/", 1)[1]
        if content in ("images", "import") and not path.is_file():
            raise fail(f"volume '{source}' does not exist")
        return content, path

    def _allocate(self, vmid: int, key: str, value: str, ctx: TaskContext | None) -> str:
        """Turn ``local-lvm:32`` / ``:0,import-from=`` / ``:cloudinit`` into real volumes."""
        drive = propstr.parse_drive(key, value)
        file = drive["file"]
        new = NEW_DISK.match(file)
        if file.endswith(":cloudinit"):
            storage = file.split(":", 1)[0]
            drive["file"] = f"{storage}:vm-{vmid}-cloudinit"
            drive["media"] = "cdrom"
            if ctx:
                ctx.log(f"{key}: successfully created disk '{drive['file']},media=cdrom'")
            return propstr.render_drive(drive)
        if new is None:
            return self._existing_volume(drive)
        storage = new.group(1)
        name = self.store.next_disk_name(storage, vmid)
        if "import-from" in drive:
            source = drive.pop("import-from")
            _content, path = self._import_source(source)
            size = _image_virtual_size(path) if path.is_file() else self.store.volumes().get(source, GIB)
            if ctx:
                ctx.log(f"importing disk '{source}' to VM {vmid} ...")
                ctx.log(f"Successfully imported disk as '{key}:{storage}:{name}'")
        elif key in ("efidisk0", "tpmstate0"):
            size = 4 * MIB  # PVE sizes these itself (OVMF vars, TPM state); 4M on thin LVM
            if ctx:
                ctx.log(f'  Logical volume "{name}" created.')
        else:
            size = int(float(new.group(2)) * GIB)
            if ctx:
                ctx.log(f'  Logical volume "{name}" created.')
        drive["file"] = f"{storage}:{name}"
        drive["size"] = propstr.format_size(size)
        return propstr.render_drive(drive)

    def _existing_volume(self, drive: dict[str, str]) -> str:
        """qemu-server's create_disks for a named volume: it must exist; its size is the storage's."""
        file = drive["file"]
        if file in ("none", "cdrom") or file.startswith("/") or ":" not in file:
            return propstr.render_drive(drive)
        if propstr.is_cloudinit(drive):
            return propstr.render_drive(drive)
        size = self.store.volumes().get(file)
        if size is None and self.emu.settings.storage(file.split(":", 1)[0]) is not None:
            try:
                _content, path = self.emu.nodes_api.resolve_file_volume(file)
            except ApiError:
                path = None
            if path is not None and path.is_file():
                size = path.stat().st_size
        if size is None:
            raise fail(f"volume {file} does not exist")
        if size:
            drive["size"] = propstr.format_size(size)
        return propstr.render_drive(drive)

    def _apply_update(
        self,
        vm: VMConfig,
        updates: dict[str, str],
        deletes: list[str],
        reverts: list[str],
        ctx: TaskContext | None,
    ) -> None:
        """Write an update: at once when stopped (or hot-pluggable), else into [PENDING]."""
        with self.store.lock:
            vm = self.store.vms.get(vm.vmid, vm)
            running = self.store.is_running(vm.vmid)
            for key in reverts:
                vm.pending.pop(key, None)
                self._drop_pending_delete(vm, key)
            for key in deletes:
                if key not in vm.conf and key not in vm.pending:
                    message = f"cannot delete '{key}' - not set in current configuration!"
                    if ctx:
                        ctx.warn(message)
                    continue
                if running and not hotplug.delete_live(key, vm.conf):
                    marks = [k for k in vm.pending.get("delete", "").split(",") if k]
                    if key not in marks:
                        vm.pending["delete"] = ",".join([*marks, key])
                    vm.pending.pop(key, None)
                    continue
                vm.pending.pop(key, None)
                self._delete_key(vm, key)
            for key, value in updates.items():
                if propstr.is_drive_key(key):
                    value = self._allocate(vm.vmid, key, value, ctx)
                    old = vm.conf.get(key)
                    if old and old != value:
                        self._to_unused(vm, old)
                elif re.fullmatch(r"net\d+", key):
                    value = propstr.ensure_mac(value, vm.conf.get(key) or vm.pending.get(key))
                if key == "cipassword":
                    value = _hash_password(value)
                if running and not hotplug.set_live(key, value, vm.conf):
                    vm.pending[key] = value
                    self._drop_pending_delete(vm, key)
                else:
                    vm.conf[key] = value
                    vm.pending.pop(key, None)
            self._cleanup_pending(vm)
            self.store.save_vm(vm)

    @staticmethod
    def _cleanup_pending(vm: VMConfig) -> None:
        """PVE's cleanup_pending: drop pending values equal to the current ones, and pending
        deletes of keys that are not set."""
        for key in [k for k in vm.pending if k != "delete" and vm.pending[k] == vm.conf.get(k)]:
            vm.pending.pop(key)
        marks = [k for k in vm.pending.get("delete", "").split(",") if k and k.lstrip("!") in vm.conf]
        if marks:
            vm.pending["delete"] = ",".join(marks)
        else:
            vm.pending.pop("delete", None)

    @staticmethod
    def _drop_pending_delete(vm: VMConfig, key: str) -> None:
        marks = [k for k in vm.pending.get("delete", "").split(",") if k and k.lstrip("!") != key]
        if marks:
            vm.pending["delete"] = ",".join(marks)
        else:
            vm.pending.pop("delete", None)

    def _to_unused(self, vm: VMConfig, value: str) -> None:
        try:
            drive = propstr.parse(value, propstr.DRIVE_FORMAT, "drive")
        except propstr.FormatError:
            return
        if propstr.is_cdrom(drive) or ":" not in drive.get("file", ""):
            return
        n = 0
        while f"unused{n}" in vm.conf:
            n += 1
        vm.conf[f"unused{n}"] = drive["file"]

    def _delete_key(self, vm: VMConfig, key: str) -> None:
        value = vm.conf.pop(key, None)
        if value and propstr.is_drive_key(key):
            drive = propstr.parse(value, propstr.DRIVE_FORMAT, "drive")
            if not propstr.is_cloudinit(drive):
                self._to_unused(vm, value)

    def _apply_pending(self, vm: VMConfig) -> None:
        """At start/reboot PVE applies what waited in [PENDING]."""
        if not vm.pending:
            return
        for key in [k.lstrip("!") for k in vm.pending.get("delete", "").split(",") if k]:
            self._delete_key(vm, key)
        for key, value in vm.pending.items():
            if key != "delete":
                vm.conf[key] = value
        vm.pending = {}

    def put_config(self, req: Request) -> Any:
        params = self._params(req, self._update_spec, config_keys=True)
        with self.store.lock:
            vm, updates, deletes, reverts = self._prepare_update(req, params)
            self._apply_update(vm, updates, deletes, reverts, None)
        return None

    def post_config(self, req: Request) -> Any:
        spec = {
            **self._update_spec,
            "background_delay": P("integer", minimum=1, maximum=30),
            "import-working-storage": schema.STORAGE,
        }
        params = self._params(req, spec, config_keys=True)
        with self.store.lock:
            vm, updates, deletes, reverts = self._prepare_update(req, params)

        def work(ctx: TaskContext) -> None:
            ctx.simulate()
            self._apply_update(vm, updates, deletes, reverts, ctx)

        task = self.emu.tasks.start("qmconfig", str(vm.vmid), req.identity.authuser, work)
        delay = params.get("background_delay")
        if delay and task.done.wait(delay):
            if task.exitstatus != "OK":
                raise fail(task.exitstatus or "unknown error")
            return None
        return task.upid

    # --- create, clone, destroy -------------------------------------------------------------------

    def create(self, req: Request) -> Any:
        spec = {
            "storage": schema.STORAGE,
            "pool": P(format="pve-poolid"),
            "start": P("boolean"),
            "archive": P(max_length=255),
            "force": P("boolean", requires="archive"),
            "unique": P("boolean", requires="archive"),
            "import-working-storage": schema.STORAGE,
            "bwlimit": P("integer", minimum=0),
            "live-restore": P("boolean"),
            **({} if self.emu.release == "8.4" else {"ha-managed": P("boolean")}),
        }
        params = self._params(req, spec, config_keys=True)
        vmid = params["vmid"]
        if params.get("archive"):
            return self._restore(req, params, spec)
        self._check_pool(params.get("pool"))
        conf = {k: _as_str(v) for k, v in params.items() if k not in spec and k not in ("node", "vmid")}
        if "sshkeys" in conf:
            try:
                propstr.validate_ssh_keys(conf["sshkeys"])
            except propstr.SshKeyError as err:
                raise fail(str(err)) from err
        self._check_create_permissions(req.identity.authuser, vmid, params, conf)
        for key, value in conf.items():
            if propstr.is_drive_key(key):
                self._check_drive_source(key, value)
        balloon = int(conf.get("balloon", 0) or 0)
        if balloon and balloon > propstr.memory_mib(conf.get("memory")):
            raise fail("balloon value too large (must be smaller than assigned memory)")
        with self.store.lock:
            if vmid in self.store.vms:
                raise fail(
                    f"unable to create VM {vmid} - VM {vmid} already exists on node "
                    f"'{self.store.node_of(vmid)}'"
                )
            self.store.save_vm(VMConfig(vmid=vmid, conf={"lock": "create"}), node=params["node"])

        def work(ctx: TaskContext) -> None:
            try:
                final: dict[str, str] = {}
                with self.store.lock:
                    holder = self.store.vms.get(vmid)
                # drives in key order, as create_disks allocates them; each one visible at once so
                # the next gets the next free name (vm-N-disk-0, -1, ...)
                for key in sorted(k for k in conf if propstr.is_drive_key(k)):
                    final[key] = self._allocate(vmid, key, conf[key], ctx)
                    if holder is not None:
                        with self.store.lock:
                            holder.conf[key] = final[key]
                for key, value in conf.items():
                    if propstr.is_drive_key(key):
                        continue
                    if key == "cipassword":
                        value = _hash_password(value)
                    elif re.fullmatch(r"net\d+", key):
                        value = propstr.ensure_mac(value)
                    final[key] = value
                ctx.simulate()
                final.setdefault("meta", f"creation-qemu={_QEMU},ctime={int(time.time())}")
                final.setdefault("smbios1", f"uuid={uuid.uuid4()}")
                if final.get("vmgenid", "1") == "1":  # PVE generates one unless told 0 or given one
                    final["vmgenid"] = str(uuid.uuid4())
                if "boot" not in final and _default_boot(final):
                    final["boot"] = _default_boot(final)
                self.emu.backend.create(vmid, dict(final))
                self._store_new(vmid, final, params.get("pool"))
            except BaseException:
                with self.store.lock:
                    self.store.delete_vm(vmid)
                raise
            if params.get("ha-managed"):  # the HA manager starts it if asked to
                ctx.log("Add as HA resource")
                self.emu.ha.add_resource(vmid, "started" if params.get("start") else "stopped")
            elif params.get("start"):
                self._do_start(ctx, vmid, skiplock=False)

        return self._task(req, "qmcreate", vmid, work)

    def _ha_request(self, req: Request, vmid: int, state: str) -> str | None:
        """An HA-managed VM is started and stopped by its HA manager: the call becomes a request
        (``hastart``/``hastop``), as qemu-server hands it to ha-manager."""
        if not self.emu.ha.is_configured(vmid):
            return None
        self._vm(vmid)
        kind, verb = ("hastart", "start") if state == "started" else ("hastop", "stop")

        def work(ctx: TaskContext) -> None:
            ctx.log(f"Requesting HA {verb} for VM {vmid}")
            self.emu.ha.set_state(vmid, state)

        return self._task(req, kind, vmid, work)

    def _store_new(self, vmid: int, conf: dict[str, str], pool: str | None) -> None:
        """A created or restored VM's final config, in its pool if it was given one."""
        with self.store.lock:
            self.store.save_vm(VMConfig(vmid=vmid, conf=conf))
            if pool:
                self.store.add_to_pool(pool, vmid)

    def _restore(self, req: Request, params: dict[str, Any], spec: dict[str, P]) -> Any:
        """qemu-server's create_vm with ``archive``: a ``qmrestore`` task over a new or (force)
        an existing, stopped, unprotected VM; the archive's config with new volumes."""
        vmid = params["vmid"]
        authid = req.identity.authuser
        overrides = {k: _as_str(v) for k, v in params.items() if k not in spec and k not in ("node", "vmid")}
        for key in sorted(overrides):
            if propstr.is_drive_key(key):
                raise param_error({key: "option conflicts with option 'archive'"})
        if params.get("live-restore"):
            raise fail("live-restore is only compatible with backup images from a Proxmox Backup Server")
        self._check_pool(params.get("pool"))
        access = self.emu.access
        if not (
            access.allowed(authid, f"/vms/{vmid}", ["VM.Allocate"])
            or (params.get("pool") and access.allowed(authid, f"/pool/{params['pool']}", ["VM.Allocate"]))
        ):
            raise permission_error()
        if params.get("storage"):
            access.check(authid, f"/storage/{params['storage']}", ["Datastore.AllocateSpace"])
        if params.get("force") and vmid in self.store.vms:
            access.check_vm(authid, vmid, ["VM.Backup"])
        if params.get("start"):
            access.check_vm(authid, vmid, ["VM.PowerMgmt"])
        source = self.emu.vzdump.archive_path(authid, params["archive"], vmid, params["node"])
        with self.store.lock:
            existing = self.store.vms.get(vmid)
            holder = self.store.node_of(vmid)
            if existing is not None and holder != params["node"]:
                raise fail(f"unable to restore VM {vmid} - VM {vmid} already exists on node '{holder}'")
            if existing is not None:
                if existing.conf.get("protection") == "1":
                    raise fail(f"unable to restore VM {vmid} - protection mode enabled")
                if not params.get("force"):
                    raise fail(f"unable to restore VM {vmid} - config file already exists")
                if self.store.is_running(vmid):
                    raise fail(f"unable to restore VM {vmid} - VM is running")
                if existing.is_template:
                    raise fail(f"unable to restore VM {vmid} - VM is a template")
                self._check_lock(existing)
                existing.conf["lock"] = "create"
                self.store.save_vm(existing)
            else:
                self.store.save_vm(VMConfig(vmid=vmid, conf={"lock": "create"}), node=params["node"])

        def work(ctx: TaskContext) -> None:
            replaced = False  # until the old VM's disks go, a failure leaves it as it was
            try:
                tmp = f"/var/tmp/vzdumptmp{ctx.task.pid}"
                ctx.log(f"restore vma archive: zstd -q -d -c {source} | vma extract -v -r {tmp}.fifo - {tmp}")
                try:
                    lab_archive.verify_readable(source)
                    conf = lab_archive.read_config(source)
                except lab_archive.ArchiveError as error:
                    raise TaskFailed(str(error)) from error
                ctx.log(f"CFG: size: {len(lab_archive.config_text(conf))} name: qemu-server.conf")
                if existing is not None:
                    replaced = True
                    self.emu.backend.destroy(vmid)
                    for key, value in sorted(existing.conf.items()):
                        if propstr.is_drive_key(key) or key.startswith("unused"):
                            name = value.split(",", 1)[0].split(":", 1)[-1]
                            if re.match(r"(vm|base)-\d+-", name):
                                ctx.log(f'  Logical volume "{name}" successfully removed.')
                restored = self._restored_conf(conf, vmid, params, ctx)
                restored.update(overrides)
                ctx.simulate()
                self.emu.backend.restore(vmid, dict(restored), source)
                ctx.log("rescan volumes...")
                self._store_new(vmid, restored, params.get("pool"))
            except BaseException:
                with self.store.lock:
                    if existing is not None and not replaced:
                        existing.conf.pop("lock", None)
                        self.store.save_vm(existing)
                    else:
                        self.store.delete_vm(vmid)
                raise
            if params.get("start"):
                ctx.log("Execute autostart")
                self._do_start(ctx, vmid, skiplock=False)

        return self._task(req, "qmrestore", vmid, work)

    def _restored_conf(
        self, conf: dict[str, str], vmid: int, params: dict[str, Any], ctx: TaskContext
    ) -> dict[str, str]:
        """The archived config with each disk on a new volume (the given storage, else its own)."""
        restored: dict[str, str] = {}
        for key, value in sorted(conf.items()):
            if key in ("lock", "parent") or key.startswith("unused"):
                continue
            if propstr.is_drive_key(key):
                drive = propstr.parse_drive(key, value)
                if propstr.is_cloudinit(drive):
                    storage = params.get("storage") or drive["file"].split(":", 1)[0]
                    drive["file"] = f"{storage}:vm-{vmid}-cloudinit"
                elif not propstr.is_cdrom(drive) and ":" in drive["file"]:
                    storage = params.get("storage") or drive["file"].split(":", 1)[0]
                    if self.emu.settings.storage(storage) is None:
                        raise TaskFailed(f"storage '{storage}' does not exist")
                    with self.store.lock:
                        taken = {v for v in self.store.volumes() if v.startswith(storage + ":")}
                    number = 0
                    while f"{storage}:vm-{vmid}-disk-{number}" in taken or any(
                        f"{storage}:vm-{vmid}-disk-{number}" == propstr.parse_drive(k, v)["file"]
                        for k, v in restored.items()
                        if propstr.is_drive_key(k)
                    ):
                        number += 1
                    size = propstr.parse_size(drive["size"]) if drive.get("size") else 0
                    ctx.log(f"DEV: dev_id={len(restored) + 1} size: {size} devname: drive-{key}")
                    ctx.log(f'  Logical volume "vm-{vmid}-disk-{number}" created.')
                    drive["file"] = f"{storage}:vm-{vmid}-disk-{number}"
                    ctx.log(f"new volume ID is '{drive['file']}'")
                value = propstr.render_drive(drive)
            elif params.get("unique") and re.fullmatch(r"net\d+", key):
                value = propstr.with_new_mac(value)
            restored[key] = value
        if params.get("unique"):
            restored["smbios1"] = _new_uuid(restored.get("smbios1"))
            restored["vmgenid"] = str(uuid.uuid4())
        return restored

    def _check_create_permissions(
        self, authid: str, vmid: int, params: dict[str, Any], conf: dict[str, str]
    ) -> None:
        """What PVE's create_vm checks in code ("user: all" in its schema)."""
        access = self.emu.access
        pool = params.get("pool")
        if params.get("storage"):
            access.check(authid, f"/storage/{params['storage']}", ["Datastore.AllocateSpace"])
        if params.get("start"):
            access.check_vm(authid, vmid, ["VM.PowerMgmt"])
        if not (
            access.allowed(authid, f"/vms/{vmid}", ["VM.Allocate"])
            or (pool and access.allowed(authid, f"/pool/{pool}", ["VM.Allocate"]))
        ):
            raise permission_error()
        drives = {k: v for k, v in conf.items() if propstr.is_drive_key(k)}
        codeperms.drive_storage(access, authid, vmid, drives, params.get("storage"))
        codeperms.config_keys(access, authid, vmid, conf)
        codeperms.serial_ports(access, authid, vmid, conf)
        if "tags" in conf:
            codeperms.tags(access, authid, vmid)
        codeperms.bridges(access, authid, conf)

    def _check_update_permissions(
        self, authid: str, vmid: int, updates: dict[str, str], deletes: list[str]
    ) -> None:
        """What PVE's update_vm checks per key, beyond VM.Config.* on the VM."""
        access = self.emu.access
        codeperms.config_keys(access, authid, vmid, [k for k in deletes if not propstr.is_drive_key(k)])
        for key in deletes:
            if propstr.is_drive_key(key):
                access.check_vm(authid, vmid, ["VM.Config.Disk"])
            if key == "tags":
                codeperms.tags(access, authid, vmid)
        drives = {k: v for k, v in updates.items() if propstr.is_drive_key(k)}
        codeperms.drive_keys(access, authid, vmid, drives)
        codeperms.drive_storage(access, authid, vmid, drives, None)
        codeperms.config_keys(access, authid, vmid, [k for k in updates if k not in drives])
        codeperms.serial_ports(access, authid, vmid, updates)
        if "tags" in updates:
            codeperms.tags(access, authid, vmid)
        codeperms.bridges(access, authid, {k: v for k, v in updates.items() if re.fullmatch(r"net\d+", k)})

    def clone(self, req: Request) -> Any:
        spec = {
            "newid": P("integer", optional=False, minimum=100, maximum=999999999, format="pve-vmid"),
            "name": P(format="dns-name"),
            "description": P(),
            "pool": P(format="pve-poolid"),
            "snapname": schema.SNAPNAME_OPT,
            "storage": schema.STORAGE,
            "format": P(enum=("raw", "qcow2", "vmdk")),
            "full": P("boolean"),
            "target": P(format="pve-node"),
            "bwlimit": P("integer", minimum=0),
        }
        params = self._params(req, spec)
        vmid, newid = params["vmid"], params["newid"]
        target = params.get("target")
        if target in (params["node"], "localhost"):
            target = None
        with self.store.lock:
            if target:
                self.emu.check_target_node(target)
            storage_name = params.get("storage")
            if storage_name and target:  # a clone to another node lands on storage both reach
                chosen = self.emu.settings.storage(storage_name)
                if chosen is None:
                    raise fail(f"storage '{storage_name}' does not exist")
                if not chosen.shared:
                    raise fail(f"can't clone to non-shared storage '{storage_name}'")
            source = self._vm(vmid, self.emu.not_found(vmid))
            self._check_lock(source)
            full = params.get("full")
            if full is None:
                full = 0 if source.is_template else 1
            if not full:
                if params.get("storage"):
                    raise fail("parameter 'storage' not allowed for linked clones")
                if params.get("format"):
                    raise fail("parameter 'format' not allowed for linked clones")
                if not source.is_template:
                    raise fail("Linked clone feature is not supported for drive 'scsi0'")
            snapname = params.get("snapname")
            if snapname and snapname not in source.snapshots:
                raise fail(f"snapshot '{snapname}' does not exist")
            self._check_pool(params.get("pool"))
            if params.get("storage") and self.emu.settings.storage(params["storage"]) is None:
                raise fail(f"storage '{params['storage']}' does not exist")
            base = dict(source.snapshots[snapname]) if snapname else dict(source.conf)
            authid = req.identity.authuser
            codeperms.clone_storage(self.emu.access, authid, base, params.get("storage"))
            codeperms.bridges(self.emu.access, authid, base)
            if target and local_volumes(base, self.emu.shared_storages()):
                raise fail(f"can't clone VM to node '{target}' (VM uses local storage)")
            if newid in self.store.vms:
                raise fail(f"unable to create VM {newid}: config file already exists")
            new_node = target or params["node"]
            self.store.save_vm(VMConfig(vmid=newid, conf={"lock": "clone"}), node=new_node)

        def work(ctx: TaskContext) -> None:
            try:
                conf = self._clone_conf(base, vmid, newid, params, bool(full), ctx)
                ctx.simulate(lock_vmid=newid)
                self.emu.backend.clone(vmid, newid, dict(conf))
                with self.store.lock:
                    self.store.save_vm(VMConfig(vmid=newid, conf=conf))
                    if params.get("pool"):
                        self.store.add_to_pool(params["pool"], newid)
            except BaseException as err:
                with self.store.lock:
                    self.store.delete_vm(newid)
                message = err.message.strip() if isinstance(err, ApiError) else str(err)
                raise TaskFailed(f"clone failed: {message}") from err

        return self.emu.tasks.start("qmclone", str(vmid), req.identity.authuser, work).upid

    def _clone_conf(
        self,
        base: dict[str, str],
        vmid: int,
        newid: int,
        params: dict[str, Any],
        full: bool,
        ctx: TaskContext,
    ) -> dict[str, str]:
        conf: dict[str, str] = {}
        skip = {
            "template",
            "lock",
            "parent",
            "snaptime",
            "vmstate",
            "snapstate",
            "runningmachine",
            "runningcpu",
            "description",
        }
        disk_index = 0
        for key, value in sorted(base.items()):
            if key in skip or key.startswith("unused"):
                continue
            if key.startswith("net") and key[3:].isdigit():
                value = propstr.with_new_mac(value)
            elif propstr.is_drive_key(key):
                drive = propstr.parse_drive(key, value)
                file = drive["file"]
                if propstr.is_cloudinit(drive):
                    storage = file.split(":", 1)[0]
                    drive["file"] = f"{storage}:vm-{newid}-cloudinit"
                elif propstr.is_cdrom(drive) or ":" not in file:
                    pass
                else:
                    storage, volname = file.split(":", 1)
                    target_storage = params.get("storage") or storage
                    name = f"vm-{newid}-disk-{disk_index}"
                    disk_index += 1
                    kind = "full" if full else "linked"
                    ctx.log(f"create {kind} clone of drive {key} ({file})")
                    if full:
                        drive["file"] = f"{target_storage}:{name}"
                    else:
                        drive["file"] = f"{storage}:{volname.rsplit('/', 1)[-1]}/{name}"
                value = propstr.render_drive(drive)
            conf[key] = value
        conf["name"] = params.get("name") or f"Copy-of-VM-{base.get('name', vmid)}"
        if params.get("description"):
            conf["description"] = params["description"]
        conf["smbios1"] = _new_uuid(conf.get("smbios1"))
        conf["vmgenid"] = str(uuid.uuid4())
        conf["lock"] = "clone"
        with self.store.lock:
            self.store.save_vm(VMConfig(vmid=newid, conf=dict(conf)))  # stays on the node chosen
        conf.pop("lock")
        return conf

    def destroy(self, req: Request) -> Any:
        spec = {
            "purge": P("boolean"),
            "destroy-unreferenced-disks": P("boolean"),
            "skiplock": SKIPLOCK,
        }
        params = self._params(req, spec)
        vmid = params["vmid"]
        skiplock = self._skiplock(req, params)
        vm = self._vm(vmid)
        if vm.conf.get("protection") == "1":
            raise fail(f"can't remove VM {vmid} - protection mode enabled")
        ha_managed = self.emu.ha.is_configured(vmid)
        if ha_managed and not params.get("purge"):
            raise fail(f"unable to remove VM {vmid} - used in HA resources and purge parameter not set.")
        if self.store.is_running(vmid):
            raise fail(f"VM {vmid} is running - destroy failed")

        def work(ctx: TaskContext) -> None:
            with self.store.lock:
                current = self._vm(vmid)
                self._check_lock(current, skiplock)
                volumes = [
                    v for k, v in current.conf.items() if propstr.is_drive_key(k) or k.startswith("unused")
                ]
                current.conf["lock"] = "destroyed"
                self.store.save_vm(current)
            ctx.simulate()
            self.emu.backend.destroy(vmid)
            for value in volumes:
                name = value.split(",", 1)[0].split(":", 1)[-1].rsplit("/", 1)[-1]
                if re.match(r"(vm|base)-\d+-", name):
                    ctx.log(f'  Logical volume "{name}" successfully removed.')
            with self.store.lock:
                if params.get("purge"):
                    ctx.log(f"purging VM {vmid} from related configurations..")
                    self._purge_from_jobs(vmid, ctx)
                    if self.emu.ha.is_configured(vmid):
                        self.emu.ha.remove_resource(vmid)
                        ctx.log(f"NOTE: removed VM {vmid} from HA resource configuration.")
                self.store.delete_vm(vmid)

        return self._task(req, "qmdestroy", vmid, work)

    def _purge_from_jobs(self, vmid: int, ctx: TaskContext) -> None:
        changed = False
        for job in self.store.jobs.values():
            ids = [v for v in str(job.get("vmid", "")).split(",") if v]
            if str(vmid) in ids:
                ids.remove(str(vmid))
                job["vmid"] = ",".join(ids)
                if not ids:
                    job.pop("vmid")
                changed = True
                ctx.log(f"purging VM {vmid} from backup job '{job['id']}'")
        if changed:
            self.store.save_jobs()

    # --- resize and template -------------------------------------------------------------------------

    def resize(self, req: Request) -> Any:
        spec = {
            "disk": P(optional=False, pattern=propstr.DRIVE_KEY.pattern.strip("^$") + "|efidisk0|tpmstate0"),
            "size": P(optional=False, pattern=r"\+?\d+(\.\d+)?[KMGT]?"),
            "digest": schema.DIGEST,
            "skiplock": SKIPLOCK,
        }
        params = self._params(req, spec)
        vmid = params["vmid"]
        skiplock = self._skiplock(req, params)
        vm = self._vm(vmid)
        if params.get("digest") and params["digest"] != vm.digest:
            raise fail("checksum mismatch (file change by other user?)")
        disk, size_text = params["disk"], params["size"]
        volume = _drive(disk, vm.conf[disk]).get("file", "") if disk in vm.conf else ""
        if ":" in volume:  # as PVE's resize_vm: space on the disk's storage
            self.emu.access.check(
                req.identity.authuser, f"/storage/{volume.split(':')[0]}", ["Datastore.AllocateSpace"]
            )

        def work(ctx: TaskContext) -> None:
            with self.store.lock:
                current = self._vm(vmid)
                self._check_lock(current, skiplock)
                value = current.conf.get(disk)
                if value is None:
                    raise TaskFailed(f"disk '{disk}' does not exist")
                drive = propstr.parse_drive(disk, value)
                if propstr.is_cdrom(drive):
                    raise TaskFailed("you can't resize a cdrom")
                old = propstr.parse_size(drive.get("size", "0"))
                relative = size_text.startswith("+")
                amount = propstr.parse_size(size_text.lstrip("+"))
                new = old + amount if relative else amount
                if new < old:
                    raise TaskFailed("shrinking disks is not supported")
            ctx.simulate()
            with self.store.lock:
                current = self._vm(vmid)
                drive = propstr.parse_drive(disk, current.conf[disk])
                drive["size"] = propstr.format_size(new)
                current.conf[disk] = propstr.render_drive(drive)
                self.store.save_vm(current)
            name = drive["file"].split(":", 1)[-1].rsplit("/", 1)[-1]
            ctx.log(f"  Size of logical volume pve/{name} changed from {_gib(old)} to {_gib(new)}.")
            ctx.log(f"  Logical volume pve/{name} successfully resized.")

        return self._task(req, "resize", vmid, work)

    def template(self, req: Request) -> Any:
        params = self._params(req, {"disk": P(enum=TEMPLATE_DISKS)})
        vmid = params["vmid"]
        with self.store.lock:
            vm = self._vm(vmid)
            self._check_lock(vm)
            if vm.snapshots:
                raise fail("unable to create template, because VM contains snapshots")
            if vm.is_template:
                raise fail("you can't convert a template to a template")
            if self.store.is_running(vmid):
                raise fail("you can't convert a VM to template if VM is running")

        def work(ctx: TaskContext) -> None:
            ctx.simulate()
            with self.store.lock:
                current = self._vm(vmid)
                self._check_lock(current)
                for key, value in list(current.conf.items()):
                    if not propstr.is_drive_key(key) or (params.get("disk") and key != params["disk"]):
                        continue
                    drive = propstr.parse_drive(key, value)
                    if propstr.is_cdrom(drive) or ":" not in drive["file"]:
                        continue
                    storage, volname = drive["file"].split(":", 1)
                    if volname.startswith(f"vm-{vmid}-disk-"):
                        newname = "base-" + volname[3:]
                        ctx.log(f'  Renamed "{volname}" to "{newname}" in volume group "pve"')
                        drive["file"] = f"{storage}:{newname}"
                        current.conf[key] = propstr.render_drive(drive)
                current.conf["template"] = "1"
                self.store.save_vm(current)
                conf = dict(current.conf)
            self.emu.backend.register_template(vmid, conf)

        return self._task(req, "qmtemplate", vmid, work)

    # --- power ---------------------------------------------------------------------------------------

    def _do_start(self, ctx: TaskContext, vmid: int, skiplock: bool) -> None:
        with self.store.lock:
            vm = self._vm(vmid)
            self._check_lock(vm, skiplock)
            if vm.is_template:
                raise TaskFailed("you can't start a vm if it's a template")
            if self.store.is_running(vmid):
                raise TaskFailed(f"VM {vmid} already running")
            self._apply_pending(vm)
            self.store.save_vm(vm)
            conf = dict(vm.conf)
        if any(propstr.is_drive_key(k) and propstr.is_cloudinit(_drive(k, v)) for k, v in conf.items()):
            ctx.log("generating cloud-init ISO")
        ctx.simulate()
        self.emu.backend.start(vmid, conf)
        self.store.set_running(vmid, True)

    def start(self, req: Request) -> Any:
        spec = {
            "skiplock": SKIPLOCK,
            "timeout": P("integer", minimum=0),
            "machine": P(format=schema.machine_format(self.emu.release)),
            "migratedfrom": P(format="pve-node"),
            "stateuri": P(max_length=128),
            "targetstorage": P(format="storage-pair-list"),
            "force-cpu": P(),
            "migration_type": P(enum=("secure", "insecure")),
            "migration_network": P(format="CIDR"),
            **self._start_spec_since_9(),
        }
        params = self._params(req, spec)
        skiplock = self._skiplock(req, params)
        vmid = params["vmid"]
        if not params.get("stateuri") and (handed := self._ha_request(req, vmid, "started")):
            return handed
        return self._task(req, "qmstart", vmid, lambda ctx: self._do_start(ctx, vmid, skiplock))

    def _stop_work(self, vmid: int, skiplock: bool, shutdown_timeout: float | None) -> Any:
        def work(ctx: TaskContext) -> None:
            with self.store.lock:
                vm = self._vm(vmid)
                self._check_lock(vm, skiplock)
                running = self.store.is_running(vmid)
            if not running:
                return
            ctx.simulate()
            if shutdown_timeout is None:
                self.emu.backend.stop(vmid)
            else:
                self.emu.backend.shutdown(vmid, shutdown_timeout)
            self.store.set_running(vmid, False)

        return work

    def stop(self, req: Request) -> Any:
        spec = {
            "skiplock": SKIPLOCK,
            "timeout": P("integer", minimum=0),
            "keepActive": P("boolean"),
            "overrule-shutdown": P("boolean"),
            "migratedfrom": P(format="pve-node"),
        }
        params = self._params(req, spec)
        skiplock = self._skiplock(req, params)
        if not params.get("migratedfrom") and (handed := self._ha_request(req, params["vmid"], "stopped")):
            return handed
        return self._task(req, "qmstop", params["vmid"], self._stop_work(params["vmid"], skiplock, None))

    def shutdown(self, req: Request) -> Any:
        spec = {
            "skiplock": SKIPLOCK,
            "timeout": P("integer", minimum=0),
            "keepActive": P("boolean"),
            "forceStop": P("boolean"),
        }
        params = self._params(req, spec)
        skiplock = self._skiplock(req, params)
        if handed := self._ha_request(req, params["vmid"], "stopped"):
            return handed
        timeout = float(params.get("timeout", 180))
        work = self._stop_work(params["vmid"], skiplock, timeout)
        return self._task(req, "qmshutdown", params["vmid"], work)

    # --- the node's boot and shutdown (pve-guests.service runs these) -----------------------------

    def _guest_order(self, vms: str | None, *, onboot_only: bool, node: str) -> list[int]:
        """The node's VMs by their ``startup`` order, then vmid, as PVE's startall walks them."""
        wanted = {int(v) for v in re.split(r"[,;\s]+", vms) if v} if vms else None
        chosen = []
        with self.store.lock:
            for vm in self.store.vms_on(node):
                vmid = vm.vmid
                conf = vm.merged()
                if vm.is_template or (wanted is not None and vmid not in wanted):
                    continue
                if wanted is None and self.emu.ha.is_configured(vmid):
                    continue  # the HA manager starts and stops these (get_start_stop_list)
                if onboot_only and str(conf.get("onboot", "0")) != "1":
                    continue
                order = re.search(r"(?:^|,)order=(\d+)", str(conf.get("startup", "")))
                chosen.append((int(order.group(1)) if order else 1 << 30, vmid))
        return [vmid for _, vmid in sorted(chosen)]

    def start_all(self, req: Request) -> Any:
        spec = {
            "node": schema.NODE,
            "force": P("boolean"),
            "vms": P(format="pve-vmid-list"),
            **self._since_9({"max-workers": P("integer", minimum=1, maximum=64)}),
        }
        params = schema.check(req.params, spec)
        self.emu.check_node(params["node"])
        vmids = self._guest_order(params.get("vms"), onboot_only=not params.get("force"), node=params["node"])

        def work(ctx: TaskContext) -> None:
            for vmid in vmids:
                if self.store.is_running(vmid):
                    continue
                ctx.log(f"Starting VM {vmid}")
                try:
                    self._do_start(ctx, vmid, skiplock=False)
                except Exception as error:  # PVE goes on with the next guest
                    ctx.log(f"Starting VM {vmid} failed: {error}")

        return self.emu.tasks.start("startall", "", req.identity.authuser, work).upid

    def stop_all(self, req: Request) -> Any:
        spec = {
            "node": schema.NODE,
            "vms": P(format="pve-vmid-list"),
            "force-stop": P("boolean"),
            "timeout": P("integer", minimum=0, maximum=7200),
            **self._since_9({"max-workers": P("integer", minimum=1, maximum=64)}),
        }
        params = schema.check(req.params, spec)
        self.emu.check_node(params["node"])
        vmids = list(reversed(self._guest_order(params.get("vms"), onboot_only=False, node=params["node"])))
        timeout = float(params.get("timeout", 180))

        def work(ctx: TaskContext) -> None:
            for vmid in vmids:
                if not self.store.is_running(vmid):
                    continue
                ctx.log(f"Stopping VM {vmid} (timeout = {timeout:g} seconds)")
                try:
                    self._stop_work(vmid, False, timeout)(ctx)
                except Exception as error:
                    ctx.log(f"Stopping VM {vmid} failed: {error}")

        return self.emu.tasks.start("stopall", "", req.identity.authuser, work).upid

    def reboot(self, req: Request) -> Any:
        params = self._params(req, {"timeout": P("integer", minimum=0)})
        vmid = params["vmid"]
        self._vm(vmid, self.emu.not_found(vmid))
        if not self.store.is_running(vmid):
            raise fail(f"VM {vmid} not running")

        def work(ctx: TaskContext) -> None:
            with self.store.lock:
                vm = self._vm(vmid)
                self._check_lock(vm)
                self._apply_pending(vm)
                self.store.save_vm(vm)
                conf = dict(vm.conf)
            ctx.simulate()
            self.emu.backend.reboot(vmid, conf)
            self.store.set_running(vmid, True)

        return self._task(req, "qmreboot", vmid, work)

    # --- agent ----------------------------------------------------------------------------------------

    def agent_interfaces(self, req: Request) -> Any:
        params = self._params(req, {})
        vmid = params["vmid"]
        vm = self._vm(vmid)
        if not propstr.agent_enabled(vm.conf.get("agent")):
            raise fail("No QEMU guest agent configured")
        if not self.store.is_running(vmid):
            raise fail(f"VM {vmid} is not running")
        rule = self.emu.faults.match_request({"agent_not_running"}, req.method, req.path, vmid)
        if rule is not None:
            raise fail(rule.message or "QEMU guest agent is not running")
        try:
            return {"result": self.emu.backend.agent_network_interfaces(vmid)}
        except AgentNotRunning as err:
            raise fail(str(err) or "QEMU guest agent is not running") from err

    # --- snapshots ------------------------------------------------------------------------------------

    def snapshot_list(self, req: Request) -> Any:
        params = self._params(req, {})
        vm = self._vm(params["vmid"])
        result: list[dict[str, Any]] = []
        with self.store.lock:
            for name, snap in vm.snapshots.items():
                item: dict[str, Any] = {
                    "name": name,
                    "snaptime": int(snap.get("snaptime", 0)),
                    "vmstate": 1 if snap.get("vmstate") else 0,
                    "description": snap.get("description", ""),
                }
                if snap.get("parent"):
                    item["parent"] = snap["parent"]
                if snap.get("snapstate"):
                    item["snapstate"] = snap["snapstate"]
                result.append(item)
            current: dict[str, Any] = {
                "name": "current",
                "digest": vm.digest,
                "running": 1 if self.store.is_running(vm.vmid) else 0,
                "description": "You are here!",
            }
            if vm.conf.get("parent"):
                current["parent"] = vm.conf["parent"]
        result.append(current)
        return result

    def snapshot_index(self, req: Request) -> Any:
        params = self._params(req, {"snapname": schema.SNAPNAME})
        vm = self._vm(params["vmid"])
        if params["snapname"] not in vm.snapshots:
            raise fail(f"snapshot '{params['snapname']}' does not exist")
        return [{"cmd": "rollback"}, {"cmd": "config"}]

    def snapshot_config(self, req: Request) -> Any:
        params = self._params(req, {"snapname": schema.SNAPNAME})
        vm = self._vm(params["vmid"])
        snap = vm.snapshots.get(params["snapname"])
        if snap is None:
            raise fail(f"snapshot '{params['snapname']}' does not exist")
        return {k: schema.typed_config_value(k, v) for k, v in snap.items()}

    def snapshot_create(self, req: Request) -> Any:
        spec = {
            "snapname": schema.SNAPNAME,
            "vmstate": P("boolean"),
            "description": P(max_length=8192),
        }
        params = self._params(req, spec)
        vmid, name = params["vmid"], params["snapname"]
        if name == "current":
            raise fail("unable to use snapshot name 'current' (reserved name)")
        if name.lower() == "pending":
            raise fail("unable to use snapshot name 'pending' (reserved name)")
        self._vm(vmid)

        def work(ctx: TaskContext) -> None:
            with self.store.lock:
                vm = self._vm(vmid)
                self._check_lock(vm)
                if name in vm.snapshots:
                    raise TaskFailed(f"snapshot name '{name}' already used")
                snap = {k: v for k, v in vm.conf.items() if k not in ("lock", "description")}
                snap["snaptime"] = str(int(time.time()))
                snap["snapstate"] = "prepare"
                if params.get("description"):
                    snap["description"] = params["description"]
                if params.get("vmstate") and self.store.is_running(vmid):
                    snap["vmstate"] = f"local-lvm:vm-{vmid}-state-{name}"
                    snap["runningmachine"] = "pc-i440fx-8.1+pve0"
                vm.snapshots[name] = snap
                vm.conf["lock"] = "snapshot"
                self.store.save_vm(vm)
            ctx.log(f"snapshotting 'drive-scsi0' ({vm.conf.get('scsi0', '').split(',')[0]})")
            ctx.simulate()
            with self.store.lock:
                vm = self._vm(vmid)
                vm.snapshots[name].pop("snapstate", None)
                vm.conf["parent"] = name
                vm.conf.pop("lock", None)
                self.store.save_vm(vm)

        def guarded(ctx: TaskContext) -> None:
            try:
                work(ctx)
            except BaseException:
                with self.store.lock:
                    vm = self.store.vms.get(vmid)
                    if vm is not None and vm.conf.get("lock") == "snapshot":
                        # PVE leaves 'snapstate: prepare' and the lock; the lab cleans up like
                        # a successful 'qm unlock' + 'delsnapshot --force' would
                        vm.snapshots.pop(name, None)
                        vm.conf.pop("lock", None)
                        self.store.save_vm(vm)
                raise

        return self._task(req, "qmsnapshot", vmid, guarded)

    def snapshot_rollback(self, req: Request) -> Any:
        params = self._params(req, {"snapname": schema.SNAPNAME, "start": P("boolean")})
        vmid, name = params["vmid"], params["snapname"]
        self._vm(vmid)

        def work(ctx: TaskContext) -> None:
            with self.store.lock:
                vm = self._vm(vmid)
                self._check_lock(vm)
                if name not in vm.snapshots:
                    raise TaskFailed(f"snapshot '{name}' does not exist")
                running = self.store.is_running(vmid)
                vm.conf["lock"] = "rollback"
                self.store.save_vm(vm)
            if running:
                self.emu.backend.stop(vmid)
                self.store.set_running(vmid, False)
            ctx.simulate()
            with self.store.lock:
                vm = self._vm(vmid)
                snap = vm.snapshots[name]
                conf = {
                    k: v
                    for k, v in snap.items()
                    if k not in ("snaptime", "vmstate", "snapstate", "runningmachine", "description")
                }
                if "description" in vm.conf:
                    conf["description"] = vm.conf["description"]
                conf["parent"] = name
                vm.conf = conf
                vm.pending = {}
                self.store.save_vm(vm)
            if params.get("start"):
                self._do_start(ctx, vmid, skiplock=False)

        return self._task(req, "qmrollback", vmid, work)

    def snapshot_delete(self, req: Request) -> Any:
        params = self._params(req, {"snapname": schema.SNAPNAME, "force": P("boolean")})
        vmid, name = params["vmid"], params["snapname"]
        self._vm(vmid)

        def work(ctx: TaskContext) -> None:
            with self.store.lock:
                vm = self._vm(vmid)
                if not params.get("force"):
                    self._check_lock(vm)
                if name not in vm.snapshots:
                    raise TaskFailed(f"snapshot '{name}' does not exist")
                vm.conf["lock"] = "snapshot-delete"
                self.store.save_vm(vm)
            ctx.simulate()
            with self.store.lock:
                vm = self._vm(vmid)
                removed = vm.snapshots.pop(name)
                parent = removed.get("parent")
                for snap in vm.snapshots.values():
                    if snap.get("parent") == name:
                        _set_or_drop(snap, "parent", parent)
                if vm.conf.get("parent") == name:
                    _set_or_drop(vm.conf, "parent", parent)
                vm.conf.pop("lock", None)
                self.store.save_vm(vm)

        return self._task(req, "qmdelsnapshot", vmid, work)


_QEMU = "8.1.5"


def _as_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _drive(key: str, value: str) -> dict[str, str]:
    try:
        return propstr.parse_drive(key, value)
    except propstr.FormatError:
        return {}


def _default_boot(conf: dict[str, str]) -> str:
    """PVE's get_default_bootdevices: first disk, first cdrom, first NIC."""
    order = []
    drives = [(k, _drive(k, conf[k])) for k in BOOT_DRIVES if k in conf]
    disk = next((k for k, d in drives if d and not propstr.is_cdrom(d)), None)
    cdrom = next((k for k, d in drives if d and propstr.is_cdrom(d) and not propstr.is_cloudinit(d)), None)
    net = next((f"net{i}" for i in range(32) if f"net{i}" in conf), None)
    order = [x for x in (disk, cdrom, net) if x]
    return "order=" + ";".join(order) if order else ""


def _new_uuid(smbios1: str | None) -> str:
    parts = [p for p in (smbios1 or "").split(",") if p and not p.startswith("uuid=")]
    return ",".join([f"uuid={uuid.uuid4()}", *parts])


def _gib(size: int) -> str:
    return f"{size / GIB:.2f} GiB ({size // (4 * MIB)} extents)"


def _set_or_drop(conf: dict[str, str], key: str, value: str | None) -> None:
    if value:
        conf[key] = value
    else:
        conf.pop(key, None)


def _image_virtual_size(path: Path) -> int:
    """qcow2's virtual size from its header; other formats: the file size."""
    with path.open("rb") as handle:
        header = handle.read(32)
    if header[:4] == b"QFI\xfb" and len(header) >= 32:
        return int.from_bytes(header[24:32], "big")
    return path.stat().st_size
