"""/version, /nodes, node status, storage (status, content, download-url) and tasks."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from . import propstr, schema
from .apierror import fail, param_error
from .router import Reply, Request
from .schema import P
from .settings import StorageSettings
from .tasks import UPID_RE, TaskContext, TaskFailed

if TYPE_CHECKING:
    from .app import Emulator

REPOID = "ec5affc9e41f1d79"
GIB = 1024**3
CONTENT_DIRS = {
    "iso": "template/iso",
    "vztmpl": "template/cache",
    "import": "import",
    "snippets": "snippets",
    "backup": "dump",
}
FILENAME_PATTERNS = {
    "iso": r".+\.(iso|img)",
    "vztmpl": r".+\.tar\.(gz|xz|zst|bz2)",
    "import": r".+\.(qcow2|raw|vmdk|ova)",
}


STORAGE = P(optional=False, format="pve-storage-id")
_COMPRESSOR = r"gz|lzo|zst|bz2"
_BACKUP = re.compile(
    rf"(vzdump-(qemu|lxc|openvz)-(\d+)-(\d{{4}}_\d{{2}}_\d{{2}}-\d{{2}}_\d{{2}}_\d{{2}}))"
    rf"\.(tgz|(?:tar|vma)(?:\.(?:{_COMPRESSOR}))?)"
)


def file_volume(storage: str, content: str, path: Path) -> dict[str, Any] | None:
    """One file of a dir storage as pve-storage's get_subdir_files lists it (None: not listed)."""
    name = path.name
    item: dict[str, Any] = {"volid": f"{storage}:{content}/{name}", "content": content}
    if content == "iso":
        if not re.fullmatch(r".+\.(iso|img)", name, re.IGNORECASE):
            return None
        item["format"] = "iso"
    elif content == "vztmpl":
        match = re.fullmatch(r".+\.tar\.(gz|xz|zst|bz2)", name)
        if not match:
            return None
        item["format"] = "t" + match.group(1)
    elif content == "snippets":
        item["format"] = "snippet"
    elif content == "import":
        match = re.fullmatch(r".+\.(ova|ovf|qcow2|raw|vmdk)", name)
        if not match:
            return None
        item["format"] = match.group(1)
    elif content == "backup":
        backup = _BACKUP.fullmatch(name)
        if not backup:
            return None
        item["format"] = backup.group(5)
        item["subtype"] = backup.group(2)
        item["vmid"] = int(backup.group(3))
        stamp = time.strptime(backup.group(4), "%Y_%m_%d-%H_%M_%S")
        item["ctime"] = int(time.mktime(stamp))
        # pve-storage's list_volumes: the .notes file beside the archive, a .protected marker
        notes = path.with_name(f"{name}.notes")
        if notes.is_file():
            item["notes"] = notes.read_text(errors="replace")
        if path.with_name(f"{name}.protected").exists():
            item["protected"] = 1
    stat = path.stat()
    item["size"] = stat.st_size
    item.setdefault("ctime", int(stat.st_ctime))
    return item


VMID_OPT = P("integer", minimum=100, maximum=999999999, format="pve-vmid")


def register(emu: Emulator) -> NodesApi:
    api = NodesApi(emu)
    add = emu.router.add
    add("GET", "/version", api.version)
    add("GET", "/nodes", api.nodes)
    add("GET", "/nodes/{node}", api.node_index)
    add("GET", "/nodes/{node}/status", api.node_status)
    add("GET", "/nodes/{node}/storage", api.storage_list)
    add("GET", "/nodes/{node}/storage/{storage}/status", api.storage_status)
    add("GET", "/nodes/{node}/storage/{storage}/content", api.storage_content)
    add("POST", "/nodes/{node}/storage/{storage}/download-url", api.download_url)
    add("GET", "/nodes/{node}/tasks", api.task_list)
    add("GET", "/nodes/{node}/tasks/{upid}/status", api.task_status)
    add("GET", "/nodes/{node}/tasks/{upid}/log", api.task_log)
    return api


class NodesApi:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.settings = emu.settings

    # --- version and node ---------------------------------------------------------------------

    def version(self, req: Request) -> Any:
        schema.check(req.params, {})
        version = self.settings.version
        return {"version": version, "release": ".".join(version.split(".")[:2]), "repoid": REPOID}

    def _node_numbers(self, node: str | None = None) -> dict[str, Any]:
        emu = self.emu
        node = node or emu.node
        running_mem = 0
        running = 0
        with emu.store.lock:
            for vmid in list(emu.store.runtime):
                vm = emu.store.vms.get(vmid)
                if vm is not None and emu.store.node_of(vmid) == node:
                    from .propstr import memory_mib

                    running += 1
                    running_mem += memory_mib(vm.merged().get("memory")) * 1024 * 1024
        total = self.settings.host_memory
        used = min(total, 3 * GIB + running_mem)
        root_total = 94 * GIB
        return {
            "uptime": int(time.time() - emu.started) + 86400,
            "cpu": 0.0123 + 0.002 * running,
            "mem": used,
            "maxmem": total,
            "disk": 9 * GIB,
            "maxdisk": root_total,
        }

    def node_entry(self, node: str) -> dict[str, Any]:
        """A node as /nodes and /cluster/resources list it; an offline one without figures."""
        if node in self.emu.offline:
            return {"node": node, "status": "offline", "id": f"node/{node}", "type": "node", "level": ""}
        n = self._node_numbers(node)
        return {
            "node": node,
            "status": "online",
            "id": f"node/{node}",
            "type": "node",
            "cpu": n["cpu"],
            "maxcpu": self.settings.host_cpus,
            "mem": n["mem"],
            "maxmem": n["maxmem"],
            "disk": n["disk"],
            "maxdisk": n["maxdisk"],
            "uptime": n["uptime"],
            "level": "",
            "ssl_fingerprint": self.emu.fingerprint,
        }

    def nodes(self, req: Request) -> Any:
        schema.check(req.params, {})
        return [self.node_entry(node) for node in self.settings.nodes]

    def node_index(self, req: Request) -> Any:
        self._node(req)
        names = ["qemu", "storage", "tasks", "status", "version"]
        return [{"name": name} for name in names]

    def _node(self, req: Request, spec: dict[str, P] | None = None) -> dict[str, Any]:
        params = schema.check(req.params, {"node": schema.NODE, **(spec or {})})
        self.emu.check_node(params["node"])
        return params

    def node_status(self, req: Request) -> Any:
        params = self._node(req)
        hw = self.settings.hardware
        n = self._node_numbers(params["node"])
        sockets = int(hw["sockets"])
        cores = sockets * int(hw["cores_per_socket"])
        return {
            "uptime": n["uptime"],
            "idle": 0,
            "loadavg": ["0.05", "0.10", "0.08"],
            "cpu": n["cpu"],
            "wait": 0.0,
            "kversion": "Linux 6.8.12-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-4 (2024-11-06T15:04Z)",
            "current-kernel": {
                "sysname": "Linux",
                "release": "6.8.12-4-pve",
                "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-4 (2024-11-06T15:04Z)",
                "machine": "x86_64",
            },
            "boot-info": {"mode": "efi", "secureboot": 0},
            "cpuinfo": {
                "user_hz": 100,
                "model": str(hw["cpu_model"]),
                "mhz": str(hw["mhz"]),
                "cpus": self.settings.host_cpus,
                "sockets": sockets,
                "cores": cores,
                "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
                "clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm "
                "constant_tsc pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt "
                "aes xsave avx f16c rdrand lahf_lm abm avx2 bmi1 bmi2 erms invpcid",
                "hvm": "1",
            },
            "memory": {
                "total": n["maxmem"],
                "used": n["mem"],
                "free": n["maxmem"] - n["mem"],
                "available": n["maxmem"] - n["mem"],
            },
            "swap": {"total": 8 * GIB, "used": 0, "free": 8 * GIB},
            "ksm": {"shared": 0},
            "rootfs": {
                "total": n["maxdisk"],
                "used": n["disk"],
                "free": n["maxdisk"] - n["disk"],
                "avail": n["maxdisk"] - n["disk"],
            },
            "pveversion": f"pve-manager/{self.settings.version}/{REPOID}",
        }

    # --- storage ------------------------------------------------------------------------------

    def _file_usage(self, storage: StorageSettings, node: str | None) -> int:
        path = self.settings.storage_dir(storage, node)
        if path is None or not path.exists():
            return 0
        total = 0
        for sub in CONTENT_DIRS.values():
            folder = path / sub
            if folder.is_dir():
                total += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        return total

    def storage_dict(
        self, storage: StorageSettings, used_by_volumes: dict[str, int], node: str | None = None
    ) -> dict[str, Any]:
        used = used_by_volumes.get(storage.storage, 0) + self._file_usage(storage, node)
        return {
            "storage": storage.storage,
            "type": storage.type,
            "content": storage.content,
            "shared": int(storage.shared),
            "active": 1,
            "enabled": 1,
            "total": storage.total,
            "used": used,
            "avail": max(0, storage.total - used),
            "used_fraction": used / storage.total if storage.total else 0,
        }

    def storage_list(self, req: Request) -> Any:
        params = self._node(
            req,
            {
                "content": P(format="pve-storage-content-list"),
                "enabled": P("boolean"),
                "format": P("boolean"),
                "storage": schema.STORAGE,
                "target": P(format="pve-node"),
            },
        )
        if "storage" in params and self.settings.storage(params["storage"]) is None:
            raise param_error({"storage": "No such storage."})
        used = self.used_on(params["node"])
        result = []
        for storage in self.settings.storages:
            if "storage" in params and storage.storage != params["storage"]:
                continue
            if not self.emu.access.allowed(  # as PVE: only storages the caller may use or audit
                req.identity.authuser,
                f"/storage/{storage.storage}",
                ["Datastore.Audit", "Datastore.AllocateSpace"],
                any_of=True,
            ):
                continue
            if "content" in params:
                wanted = set(params["content"].split(","))
                if not wanted & set(storage.content.split(",")):
                    continue
            result.append(self.storage_dict(storage, used, params["node"]))
        return result

    def used_on(self, node: str) -> dict[str, int]:
        """Bytes per storage as ``node`` sees them: its own local volumes, everyone's shared ones."""
        return self.emu.store.storage_used(node, self.emu.shared_storages())

    def _storage(self, name: str) -> StorageSettings:
        storage = self.settings.storage(name)
        if storage is None:
            raise fail(f"storage '{name}' does not exist")
        return storage

    def storage_status(self, req: Request) -> Any:
        params = self._node(req, {"storage": STORAGE})
        storage = self._storage(params["storage"])
        data = self.storage_dict(storage, self.used_on(params["node"]), params["node"])
        del data["storage"], data["used_fraction"]
        return data

    def storage_content(self, req: Request) -> Any:
        params = self._node(
            req,
            {"storage": STORAGE, "content": P(format="pve-storage-content"), "vmid": VMID_OPT},
        )
        storage = self._storage(params["storage"])
        result: list[dict[str, Any]] = []
        on_node = None if storage.shared else params["node"]  # a local storage holds its node's disks
        for volid, size in sorted(self.emu.store.volumes(on_node).items()):
            if not volid.startswith(storage.storage + ":"):
                continue
            name = volid.split(":", 1)[1]
            match = re.search(r"(?:vm|base)-(\d+)-", name.rsplit("/", 1)[-1])
            owner = int(match.group(1)) if match else None
            if params.get("vmid") is not None and owner != params["vmid"]:
                continue
            if params.get("content") not in (None, "images"):
                continue
            item = {"volid": volid, "content": "images", "format": "raw", "size": size, "ctime": 0}
            if owner is not None:
                item["vmid"] = owner
            result.append(item)
        files = self.settings.storage_dir(storage, params["node"])
        if files is not None:
            for content, sub in CONTENT_DIRS.items():
                if params.get("content") not in (None, content):
                    continue
                folder = files / sub
                if not folder.is_dir():
                    continue
                for path in sorted(folder.iterdir()):
                    if not path.is_file() or path.name.startswith("."):
                        continue
                    listed = file_volume(storage.storage, content, path)
                    if listed is None:
                        continue
                    if params.get("vmid") is not None and listed.get("vmid") != params["vmid"]:
                        continue
                    result.append(listed)
        return result

    def resolve_file_volume(self, volid: str, node: str | None = None) -> tuple[str, Path]:
        """``local:import/x.qcow2`` -> (content type, path on ``node``); errors as PVE words them."""
        storage_name, _, rel = volid.partition(":")
        storage = self.settings.storage(storage_name)
        node = node or self.emu.current_node()
        files = self.settings.storage_dir(storage, node) if storage is not None else None
        if files is None:
            raise fail(f"storage '{storage_name}' does not exist")
        content, _, name = rel.partition("/")
        if content not in CONTENT_DIRS or not name or "/" in name:
            raise fail(f"unable to parse volume ID '{volid}'")
        return content, files / CONTENT_DIRS[content] / name

    def download_url(self, req: Request) -> Any:
        params = self._node(
            req,
            {
                "storage": STORAGE,
                "url": P(optional=False, pattern=r"https?://.*"),
                "content": P(optional=False, enum=("iso", "vztmpl", "import"), format="pve-storage-content"),
                "filename": P(optional=False, max_length=255),
                "checksum": P(requires="checksum-algorithm"),
                "checksum-algorithm": P(
                    enum=("md5", "sha1", "sha224", "sha256", "sha384", "sha512"), requires="checksum"
                ),
                "compression": P(),
                "verify-certificates": P("boolean"),
            },
        )
        storage = self._storage(params["storage"])
        content = params["content"]
        if content not in storage.content.split(","):
            raise fail(f"storage '{storage.storage}' does not support content-type '{content}'")
        filename = params["filename"]
        if "/" in filename or not re.fullmatch(FILENAME_PATTERNS[content], filename):
            raise param_error({"filename": "value does not match the regex pattern"})
        if "checksum" in params and "checksum-algorithm" not in params:
            raise param_error({"checksum-algorithm": "'checksum-algorithm' is required"})
        files = self.settings.storage_dir(storage, params["node"])
        assert files is not None
        target = files / CONTENT_DIRS[content] / filename
        url = params["url"]

        def work(ctx: TaskContext) -> None:
            source = self._local_source(url)
            if target.exists():
                raise TaskFailed(f"refusing to override existing file '{target}'")
            ctx.log(f"downloading {url} to {target}")
            ctx.simulate()
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp.{os.getpid()}")
            shutil.copyfile(source, tmp)
            if "checksum" in params:
                ctx.log("calculating checksum...")
                digest = hashlib.new(params["checksum-algorithm"])
                with tmp.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
                if digest.hexdigest() != params["checksum"].lower():
                    tmp.unlink(missing_ok=True)
                    raise TaskFailed(
                        f"checksum mismatch: got '{digest.hexdigest()}' != expect "
                        f"'{params['checksum'].lower()}'"
                    )
                ctx.log("checksum verified")
            os.replace(tmp, target)
            ctx.log(f"download of '{url}' to '{target}' finished")

        task = self.emu.tasks.start("download", quote(filename, safe=""), req.identity.authuser, work)
        return task.upid

    def _local_source(self, url: str) -> Path:
        """Map a URL to a local file. The lab never sends traffic anywhere."""
        mapped = self.settings.download_map.get(url)
        if mapped is not None:
            path = Path(mapped)
            if not path.is_absolute():
                path = self.settings.lab_dir / path
        else:
            raise TaskFailed(
                f"lab: will not download '{url}': the lab sends no network traffic; map the URL "
                "to a local file in settings.json 'download_map'"
            )
        if not path.is_file():
            raise TaskFailed(f"lab: source file '{path}' for '{url}' does not exist")
        return path

    # --- tasks --------------------------------------------------------------------------------

    def _task(self, req: Request, spec: dict[str, P] | None = None) -> Any:
        params = self._node(req, {"upid": P(optional=False), **(spec or {})})
        upid = unquote(params["upid"])
        if not UPID_RE.match(upid):
            raise param_error({"upid": "unable to parse worker upid"})
        task = self.emu.tasks.get(upid)
        if task is None or task.node != params["node"]:  # each node keeps its own task logs
            raise param_error({"upid": "no such task"})
        # as PVE's Tasks.pm: one's own tasks (a user's include its tokens'), else Sys.Audit on the node
        caller = req.identity.authuser
        if caller not in (task.user, task.user.partition("!")[0]):
            self.emu.access.check(caller, f"/nodes/{params['node']}", ["Sys.Audit"])
        return task

    def task_status(self, req: Request) -> Any:
        return self._task(req).status_dict()

    def task_log(self, req: Request) -> Any:
        spec = {"start": P("integer", minimum=0), "limit": P("integer", minimum=0), "download": P("boolean")}
        task = self._task(req, spec)
        if req.params.get("download") == "1" and ("start" in req.params or "limit" in req.params):
            raise fail("'download' cannot be used together with 'start' or 'limit' parameters")
        lines = list(task.log) or ["no content"]
        first = int(req.params.get("start", "0"))
        count = int(req.params.get("limit", "50"))
        chunk = lines[first : first + count] if count else lines[first:]
        data = [{"n": first + i + 1, "t": text} for i, text in enumerate(chunk)]
        return Reply(data, {"total": len(lines)})

    def task_list(self, req: Request) -> Any:
        params = self._node(
            req,
            {
                "start": P("integer", minimum=0),
                "limit": P("integer", minimum=0),
                "vmid": VMID_OPT,
                "typefilter": P(),
                "userfilter": P(),
                "errors": P("boolean"),
                "source": P(enum=("archive", "active", "all")),
                "statusfilter": P(format="pve-task-status-type-list"),
                "since": P("integer"),
                "until": P("integer"),
            },
        )
        # PVE/API2/Tasks.pm node_tasks: filters, then start/limit over the matches; total counts them
        source = params.get("source", "archive")
        start, limit = params.get("start", 0), params.get("limit", 50)
        wanted = {"ok", "warning", "error", "unknown"}
        if "statusfilter" in params and not params.get("errors"):
            wanted = {item.lower() for item in propstr.split_list(params["statusfilter"])}
        elif params.get("errors"):
            wanted.discard("ok")
        tasks = [t for t in self.emu.tasks.all() if t.node == params["node"]]
        running = [t for t in tasks if t.status == "running"]
        finished = [t for t in tasks if t.status != "running"]
        candidates = (running if source in ("active", "all") else []) + (
            finished if source != "active" else []
        )
        result: list[dict[str, Any]] = []
        count = 0
        for task in candidates:
            user = params.get("userfilter")
            if user and user.lower() not in task.user.lower():
                continue
            if params.get("typefilter") and task.type != params["typefilter"]:
                continue
            if params.get("vmid") and task.id != str(params["vmid"]):
                continue
            if "since" in params and task.starttime < params["since"]:
                continue
            if "until" in params and task.starttime > params["until"]:
                continue
            if _status_type(task.exitstatus if task.status == "stopped" else None) not in wanted:
                continue
            count += 1
            if count <= start or len(result) >= limit:
                continue
            item = task.status_dict()
            item.pop("exitstatus", None)
            if task.status == "stopped":
                item["status"] = task.exitstatus
                item["endtime"] = task.endtime
            else:
                item["status"] = "RUNNING"
            result.append(item)
        return Reply(result, {"total": count})


def _status_type(status: str | None) -> str:
    """PVE's UPID::normalize_status_type."""
    if not status or status == "unexpected status":
        return "unknown"
    if status == "OK":
        return "ok"
    if re.fullmatch(r"WARNINGS: \d+", status):
        return "warning"
    return "error"
