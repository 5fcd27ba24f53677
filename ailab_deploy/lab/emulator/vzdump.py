"""vzdump as a node runs it: on demand (``POST /nodes/{node}/vzdump``) and for the backup jobs on
their schedules, archives named as PVE names them in the storage's ``dump/`` directory (with
``.notes`` and ``.log``), retention (``prune-backups``) after each backup, and the restore that
``POST /nodes/{node}/qemu`` with ``archive=`` runs.

Names, log lines and the retention marks follow pve-manager's PVE/VZDump.pm and
PVE/API2/VZDump.pm and pve-storage's PVE/Storage.pm (``prune_mark_backup_group``). The archive
itself is the lab's (see ``ailab_deploy/lab/archive.py``), not VMA.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ailab_deploy.lab import archive
from ailab_deploy.lab.backend import BackendError

from . import codeperms, propstr, schema
from .apierror import fail, param_error
from .router import Request
from .schema import P
from .tasks import TaskContext, TaskFailed

if TYPE_CHECKING:
    from .app import Emulator
    from .settings import StorageSettings

log = logging.getLogger(__name__)

# vzdump's --compress -> the archive's extension (PVE/VZDump.pm compressor_info, qemu: VMA)
EXTENSIONS = {"0": "vma", "1": "vma.lzo", "lzo": "vma.lzo", "gzip": "vma.gz", "zstd": "vma.zst"}
STAMP_FORMAT = "%Y_%m_%d-%H_%M_%S"
ARCHIVE_RE = re.compile(
    r"vzdump-(qemu|lxc)-(\d+)-(\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2})\.(vma(?:\.(?:zst|gz|lzo))?|tar(?:\.\w+)?)"
)
KEEP_OPTIONS = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
# job options that only schedule a job; everything else is passed to vzdump when it runs
JOB_ONLY = ("schedule", "starttime", "dow", "enabled", "comment", "repeat-missed", "id", "type", "next-run")


# --- names and retention (pure) -----------------------------------------------------------------


def archive_name(vmid: int, ctime: int, compress: str = "0", subtype: str = "qemu") -> str:
    """``vzdump-qemu-100-2026_11_30-02_00_00.vma.zst``: the node's local time of the backup."""
    stamp = time.strftime(STAMP_FORMAT, time.localtime(ctime))
    return f"vzdump-{subtype}-{vmid}-{stamp}.{EXTENSIONS[compress]}"


@dataclass(frozen=True)
class ArchiveName:
    subtype: str
    vmid: int
    ctime: int
    extension: str

    @property
    def stem(self) -> str:
        """The name without its extension: ``.notes``, ``.log`` and ``.protected`` hang off it."""
        stamp = time.strftime(STAMP_FORMAT, time.localtime(self.ctime))
        return f"vzdump-{self.subtype}-{self.vmid}-{stamp}"


def parse_archive_name(name: str) -> ArchiveName | None:
    match = ARCHIVE_RE.fullmatch(name)
    if match is None:
        return None
    ctime = int(time.mktime(time.strptime(match.group(3), STAMP_FORMAT)))
    return ArchiveName(match.group(1), int(match.group(2)), ctime, match.group(4))


def parse_keep(text: str | None) -> dict[str, int]:
    """``keep-daily=7,keep-weekly=4`` -> {"keep-daily": 7, "keep-weekly": 4}; None: keep all."""
    if not text:
        return {"keep-all": 1}
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {key.strip(): int(value) for key, value in pairs}


def _period_id(option: str, ctime: int) -> str:
    """The period a backup falls in, per option (localtime, ISO weeks, as prune_mark_backup_group)."""
    moment = time.localtime(ctime)
    if option == "keep-last":
        return str(ctime)
    if option == "keep-hourly":
        return time.strftime("%H/%d/%m/%Y", moment)
    if option == "keep-daily":
        return time.strftime("%d/%m/%Y", moment)
    if option == "keep-weekly":
        return time.strftime("%V/%G", moment)
    if option == "keep-monthly":
        return time.strftime("%m/%Y", moment)
    return time.strftime("%Y", moment)


def mark_backup_group(
    backups: Sequence[tuple[str, int]], keep: Mapping[str, int], protected: Iterable[str] = ()
) -> dict[str, str]:
    """Each backup of one guest (id, ctime) -> 'keep', 'remove' or 'protected'.

    As PVE: newest first, each keep-* option in turn keeps the newest backup of each of the next
    N periods not yet covered by a kept one; keep-all, or no positive option, keeps everything.
    """
    marks = {backup_id: "protected" for backup_id in protected}
    positive = [key for key in KEEP_OPTIONS if keep.get(key, 0) > 0]
    if keep.get("keep-all") or not positive:
        return {backup_id: marks.get(backup_id, "keep") for backup_id, _ in backups}
    newest_first = sorted(backups, key=lambda backup: backup[1], reverse=True)
    for option in KEEP_OPTIONS:
        count = keep.get(option, 0)
        if not count:
            continue
        covered = {
            _period_id(option, ctime) for backup_id, ctime in newest_first if marks.get(backup_id) == "keep"
        }
        newly: set[str] = set()
        for backup_id, ctime in newest_first:
            period = _period_id(option, ctime)
            if backup_id in marks or period in covered:
                continue
            if period not in newly:
                if len(newly) >= count:
                    break
                newly.add(period)
                marks[backup_id] = "keep"
            else:
                marks[backup_id] = "remove"
    return {backup_id: marks.get(backup_id, "remove") for backup_id, _ in backups}


def notes_from_template(template: str, guest_name: str, vmid: int, node: str) -> str:
    """vzdump's notes-template: {{guestname}}, {{vmid}}, {{node}}, {{cluster}}; '\\n' is a newline."""
    values = {"guestname": guest_name, "vmid": str(vmid), "node": node, "cluster": ""}
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), m.group(0)), template)
    return text.replace("\\n", "\n").replace("\\\\", "\\")


def _size_text(size: int) -> str:
    """vzdump's 'archive file size' (format_size: two decimals and a binary unit)."""
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.2f}{unit}"
    return f"{size}B"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


# --- the API ------------------------------------------------------------------------------------


def vzdump_spec(job_spec: Mapping[str, P]) -> dict[str, P]:
    """``POST /nodes/{node}/vzdump``: a job's vzdump options, plus stdout and job-id."""
    spec = {key: value for key, value in job_spec.items() if key not in JOB_ONLY}
    spec["stdout"] = P("boolean")
    spec["job-id"] = P(max_length=50)
    return spec


class Vzdump:
    def __init__(self, emu: Emulator, job_spec: Callable[[str], dict[str, P]]) -> None:
        self.emu = emu
        self.store = emu.store
        self._job_spec = job_spec
        self._origin_real = time.time()
        self._origin_lab = self._origin_real
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_run: dict[str, float] = {}

    # lab time: sped up by the settings' clock_speed, so a week of schedules passes in minutes
    def now(self) -> float:
        return self._origin_lab + (time.time() - self._origin_real) * self.emu.settings.clock_speed

    def register(self) -> None:
        self.emu.router.add("POST", "/nodes/{node}/vzdump", self.vzdump)

    # --- on demand ---------------------------------------------------------------------------

    def vzdump(self, req: Request) -> Any:
        spec = {"node": schema.NODE, **vzdump_spec(self._job_spec(self.emu.release))}
        params = schema.check(req.params, spec)
        self.emu.check_node(params["node"])
        if params.get("stdout"):
            raise fail("lab: vzdump to stdout is not supported")
        node = params["node"]
        options = {key: str(value) for key, value in params.items() if key != "node"}
        vmids, external = self._guests(options, node)
        storage = self._backup_storage(options)
        self._check_permissions(req.identity.authuser, vmids, storage, options)
        if not vmids and options.get("all") != "1":
            return "OK"  # PVE/API2/VZDump.pm: a silent exit when the guests run on other nodes
        return self.start(req.identity.authuser, vmids, storage, options, node, external)

    def _guests(self, options: Mapping[str, str], node: str) -> tuple[list[int], list[int]]:
        """PVE/VZDump.pm verify_vzdump_parameters and get_included_guests: the guests ``node``
        holds, and those other nodes hold (which it skips)."""
        if options.get("all") == "1" and options.get("vmid"):
            raise param_error({"all": "option conflicts with option 'vmid'"})
        if options.get("exclude") and options.get("all") != "1":
            raise param_error({"exclude": "option only makes sense in combination with option 'all'"})
        if not (options.get("all") == "1" or options.get("vmid") or options.get("pool")):
            raise fail("no VMs specified")
        with self.store.lock:
            if options.get("all") == "1":
                excluded = {int(v) for v in propstr.split_list(options.get("exclude", ""))}
                wanted = [
                    vmid for vmid, vm in self.store.vms.items() if not vm.is_template and vmid not in excluded
                ]
            elif options.get("pool"):
                wanted = [vmid for vmid in self.store.vms if self.store.pool_of(vmid) == options["pool"]]
            else:
                wanted = [int(v) for v in propstr.split_list(options["vmid"])]
                missing = [vmid for vmid in wanted if vmid not in self.store.vms]
                if missing:
                    raise fail(f"unable to find VM {missing[0]}")
            local = sorted({vmid for vmid in wanted if self.store.node_of(vmid) == node})
            return local, sorted(set(wanted) - set(local))

    def _backup_storage(self, options: dict[str, str]) -> StorageSettings:
        name = options.setdefault("storage", "local")
        storage = self.emu.settings.storage(name)
        if storage is None:
            raise fail(f"storage '{name}' does not exist")
        if "backup" not in storage.content.split(",") or storage.path is None:
            raise fail(f"storage '{name}' does not support backups")
        return storage

    def _check_permissions(
        self, authid: str, vmids: Sequence[int], storage: StorageSettings, options: Mapping[str, str]
    ) -> None:
        """What PVE/API2/VZDump.pm checks in code ("user: all" in its schema)."""
        access = self.emu.access
        for key in ("tmpdir", "dumpdir", "script", "job-id"):
            if key in options and authid != "root@pam":
                raise param_error({key: "Only root may set this option."})
        for vmid in vmids:
            access.check_vm(authid, vmid, ["VM.Backup"])
        access.check(authid, f"/storage/{storage.storage}", ["Datastore.AllocateSpace"])
        if "prune-backups" in options or "maxfiles" in options:
            access.check(authid, f"/storage/{storage.storage}", ["Datastore.Allocate"])
        if any(key in options for key in ("bwlimit", "ionice", "performance")):
            access.check(authid, "/", ["Sys.Modify"])

    def start(
        self,
        authid: str,
        vmids: Sequence[int],
        storage: StorageSettings,
        options: dict[str, str],
        node: str,
        external: Sequence[int] = (),
    ) -> str:
        """The ``vzdump`` task: one archive per guest, then retention; a failed guest fails the task."""
        command = " ".join(
            ["vzdump", *map(str, vmids), *(f"--{k} {v}" for k, v in sorted(options.items()) if k != "vmid")]
        )
        task_id = str(vmids[0]) if len(vmids) == 1 else ""

        def work(ctx: TaskContext) -> None:
            ctx.log(f"INFO: starting new backup job: {command}")
            if external:
                ctx.log(f"INFO: skip external VMs: {', '.join(map(str, external))}")
            failed = []
            for vmid in vmids:
                try:
                    self._backup_guest(ctx, vmid, storage, options, node)
                except (TaskFailed, BackendError, archive.ArchiveError) as error:
                    failed.append(vmid)
                    ctx.log(f"ERROR: Backup of VM {vmid} failed - {error}")
                    ctx.log(f"INFO: Failed at {self._stamp(self.now())}")
            if failed:
                raise TaskFailed(f"job errors (backup of VM(s) {', '.join(map(str, failed))} failed)")
            ctx.log("INFO: Backup job finished successfully")

        return self.emu.tasks.start("vzdump", task_id, authid, work, node=node).upid

    @staticmethod
    def _stamp(moment: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))

    def _backup_guest(
        self, ctx: TaskContext, vmid: int, storage: StorageSettings, options: Mapping[str, str], node: str
    ) -> None:
        with self.store.lock:
            vm = self.store.vms.get(vmid)
            if vm is None:
                raise TaskFailed(f"unable to find VM {vmid}")
            if vm.lock:
                raise TaskFailed(f"VM is locked ({vm.lock})")
            conf = {k: v for k, v in vm.conf.items() if k != "lock"}
            running = self.store.is_running(vmid)
            vm.conf["lock"] = "backup"
            self.store.save_vm(vm)
        started = self.now()
        ctime = int(started)
        dump_dir = self.dump_dir(storage, node)
        dump_dir.mkdir(parents=True, exist_ok=True)
        name = archive_name(vmid, ctime, options.get("compress", "0"))
        target = dump_dir / name
        stem = dump_dir / name.split(".", 1)[0]
        lines = [
            f"INFO: Starting Backup of VM {vmid} (qemu)",
            f"INFO: Backup started at {self._stamp(started)}",
            f"INFO: status = {'running' if running else 'stopped'}",
            f"INFO: VM Name: {conf.get('name', f'VM{vmid}')}",
        ]
        for key in sorted(k for k in conf if propstr.is_drive_key(k)):
            drive = propstr.parse_drive(key, conf[key])
            if propstr.is_cdrom(drive) or propstr.is_cloudinit(drive) or drive.get("backup") == "0":
                continue
            lines.append(f"INFO: include disk '{key}' '{drive['file']}' {drive.get('size', '0')}")
        mode = options.get("mode", "snapshot")
        lines += [f"INFO: backup mode: {mode}", "INFO: ionice priority: 7"]
        lines.append(f"INFO: creating vzdump archive '{target}'")
        if running and conf.get("agent", "0").split(",")[0] in ("1", "enabled=1"):
            lines.append("INFO: issuing guest-agent 'fs-freeze' command")
        for line in lines:
            ctx.log(line)
        try:
            ctx.simulate(lock_vmid=vmid)
            self.emu.backend.backup(vmid, conf, target)
            if running and "fs-freeze" in lines[-1]:
                ctx.log("INFO: issuing guest-agent 'fs-thaw' command")
            size = target.stat().st_size
            ctx.log(f"INFO: archive file size: {_size_text(size)}")
            if options.get("notes-template"):
                ctx.log("INFO: adding notes to backup")
                notes = notes_from_template(options["notes-template"], conf.get("name", ""), vmid, node)
                Path(f"{target}.notes").write_text(notes)
            if options.get("protected") == "1":
                ctx.log("INFO: marking backup as protected")
                Path(f"{target}.protected").touch()
            if options.get("remove", "1") == "1":
                self._prune(ctx, vmid, dump_dir, storage, options.get("prune-backups"))
            finished = self.now()
            ctx.log(f"INFO: Finished Backup of VM {vmid} ({_duration(finished - started)})")
            ctx.log(f"INFO: Backup finished at {self._stamp(finished)}")
            Path(f"{stem}.log").write_text("\n".join(ctx.task.log[-(len(lines) + 8) :]) + "\n")
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        finally:
            with self.store.lock:
                current = self.store.vms.get(vmid)
                if current is not None and current.conf.get("lock") == "backup":
                    current.conf.pop("lock")
                    self.store.save_vm(current)

    def _prune(
        self, ctx: TaskContext, vmid: int, dump_dir: Path, storage: StorageSettings, job_keep: str | None
    ) -> None:
        """Retention for the guest just backed up: the job's prune-backups, else the storage's."""
        keep = parse_keep(job_keep or storage.options.get("prune-backups"))
        if keep.get("keep-all"):
            return
        text = ",".join(f"{k}={v}" for k, v in keep.items())
        ctx.log(f"INFO: prune older backups with retention: {text}")
        group = self.backups(dump_dir, vmid)
        protected = [path.name for path, _ in group if Path(f"{path}.protected").exists()]
        marks = mark_backup_group([(path.name, ctime) for path, ctime in group], keep, protected)
        removed = 0
        for path, _ in group:
            if marks[path.name] != "remove":
                continue
            ctx.log(f"INFO: removing backup '{storage.storage}:backup/{path.name}'")
            stem = path.parent / path.name.split(".", 1)[0]
            for extra in (path, Path(f"{path}.notes"), Path(f"{stem}.log")):
                extra.unlink(missing_ok=True)
            removed += 1
        ctx.log(f"INFO: pruned {removed} backup(s)" if removed else "INFO: pruned 0 backup(s)")

    def dump_dir(self, storage: StorageSettings, node: str) -> Path:
        """Where ``node`` keeps a storage's archives (its own disk for a local storage)."""
        path = self.emu.settings.storage_dir(storage, node)
        assert path is not None
        return path / "dump"

    @staticmethod
    def backups(folder: Path, vmid: int) -> list[tuple[Path, int]]:
        """The guest's archives in a storage's dump folder, with their backup times."""
        found = []
        for path in sorted(folder.glob(f"vzdump-qemu-{vmid}-*")) if folder.is_dir() else []:
            parsed = parse_archive_name(path.name)
            if parsed is not None and parsed.vmid == vmid:
                found.append((path, parsed.ctime))
        return found

    # --- on schedule -------------------------------------------------------------------------

    def start_scheduler(self) -> None:
        if not self.emu.settings.run_backup_jobs or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._schedule_loop, name="vzdump-jobs", daemon=True)
        self._thread.start()

    def stop_scheduler(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _schedule_loop(self) -> None:
        from .api_cluster import next_event  # the one calendar-event reader

        while not self._stop.wait(1.0):
            now = self.now()
            with self.store.lock:
                jobs = [dict(job) for job in self.store.jobs.values()]
            for job in jobs:
                if str(job.get("enabled", "1")) == "0" or not job.get("schedule"):
                    continue
                since = self._last_run.setdefault(job["id"], now)
                due = next_event(job["schedule"], dt.datetime.fromtimestamp(since))
                if due is None or due.timestamp() > now:
                    continue
                self._last_run[job["id"]] = now  # missed runs are not repeated (repeat-missed 0)
                try:
                    self.run_job(job)
                except Exception:  # a broken job must not stop the others
                    log.exception("backup job %s could not start", job["id"])

    def run_job(self, job: Mapping[str, Any]) -> list[str]:
        """A job as each node's scheduler (pvescheduler) starts it: vzdump as root@pam, on the
        job's node, or on every node for its own guests; the UPIDs of the tasks started."""
        options = {k: str(v) for k, v in job.items() if k not in JOB_ONLY and k != "node"}
        options["job-id"] = str(job["id"])
        storage = self._backup_storage(options)
        upids = []
        for node in [job["node"]] if job.get("node") else self.emu.settings.nodes:
            if node in self.emu.offline:
                continue  # a node that is down runs nothing
            vmids, external = self._guests(options, node)
            if vmids or options.get("all") == "1":
                upids.append(self.start("root@pam", vmids, storage, dict(options), node, external))
        return upids

    # --- restore -----------------------------------------------------------------------------

    def archive_path(self, authid: str, volid: str, vmid: int, node: str) -> Path:
        """``local:backup/vzdump-qemu-100-….vma.zst`` -> its file, access checked as PVE does."""
        storage_name, _, rel = volid.partition(":")
        storage = self.emu.settings.storage(storage_name)
        content, _, name = rel.partition("/")
        if storage is None or storage.path is None or content != "backup" or not name or "/" in name:
            raise fail(f"unable to parse volume ID '{volid}'")
        parsed = parse_archive_name(name)
        if parsed is None:
            raise fail(f"unable to parse volume filename '{name}'")
        codeperms.volume_access(self.emu.access, authid, vmid, volid)
        path = self.dump_dir(storage, node) / name
        if not path.is_file():
            raise fail(f"volume '{volid}' does not exist")
        return path
