"""/cluster: nextid, resources and backup jobs."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from . import schema
from .access import ROOT
from .apierror import fail, param_error
from .router import RawJson, Request
from .schema import P

if TYPE_CHECKING:
    from .app import Emulator

NEXTID_LOW, NEXTID_HIGH = 100, 1000000
_DOW = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def register(emu: Emulator) -> ClusterApi:
    api = ClusterApi(emu)
    add = emu.router.add
    add("GET", "/cluster/nextid", api.nextid)
    add("GET", "/cluster/resources", api.resources)
    add("GET", "/cluster/backup", api.backup_list)
    add("POST", "/cluster/backup", api.backup_create)
    add("GET", "/cluster/backup/{id}", api.backup_get)
    add("PUT", "/cluster/backup/{id}", api.backup_update)
    add("DELETE", "/cluster/backup/{id}", api.backup_delete)
    return api


JOB_ID = P(optional=False, pattern=r"\S+", max_length=50)


def job_spec(release: str) -> dict[str, P]:
    """vzdump's options as a backup job takes them (PVE/VZDump.pm confdesc), per PVE release."""
    spec = {
        "schedule": P(format="pve-calendar-event", max_length=128),
        "starttime": P(pattern=r"\d{1,2}:\d{1,2}"),
        "dow": P(format="pve-day-of-week-list", requires="starttime"),
        "enabled": P("boolean"),
        "storage": P(format="pve-storage-id"),
        "vmid": P(format="pve-vmid-list"),
        "all": P("boolean"),
        "exclude": P(format="pve-vmid-list"),
        "exclude-path": P(),
        "pool": P(),
        "node": P(format="pve-node"),
        "mode": P(enum=("snapshot", "suspend", "stop")),
        "compress": P(enum=("0", "1", "gzip", "lzo", "zstd")),
        "mailto": P(format="email-or-username-list"),
        "mailnotification": P(enum=("always", "failure")),
        "notification-mode": P(enum=("auto", "legacy-sendmail", "notification-system")),
        "notes-template": P(max_length=1024, requires="storage"),
        "pbs-change-detection-mode": P(enum=("legacy", "data", "metadata")),
        "prune-backups": P(format="prune-backups"),
        "protected": P("boolean", requires="storage"),
        "repeat-missed": P("boolean"),
        "comment": P(max_length=512),
        "remove": P("boolean"),
        "bwlimit": P("integer", minimum=0),
        "zstd": P("integer"),
        "ionice": P("integer", minimum=0, maximum=8),
        "fleecing": P(format="backup-fleecing"),
        "performance": P(format="backup-performance"),
        "pigz": P("integer"),
        "lockwait": P("integer", minimum=0),
        "stop": P("boolean"),
        "stopwait": P("integer", minimum=0),
        "tmpdir": P(),
        "dumpdir": P(),
        "script": P(),
        "maxfiles": P("integer", minimum=1),
        "quiet": P("boolean"),
        "stdexcludes": P("boolean"),
    }
    if release == "8.4":  # dropped in PVE 9 (the notification system decides)
        spec["notification-policy"] = P(enum=("always", "failure", "never"))
        spec["notification-target"] = P(format="pve-configid")
    return spec


JOB_SPEC = job_spec("8.4") | job_spec("9.1")  # every option a stored job may hold


class ClusterApi:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store = emu.store
        self._vm_cache: tuple[tuple[int, int], bytes] | None = None

    def nextid(self, req: Request) -> Any:
        params = schema.check(
            req.params, {"vmid": P("integer", minimum=100, maximum=999999999, format="pve-vmid")}
        )
        with self.store.lock:
            if "vmid" in params:
                if params["vmid"] in self.store.vms:
                    raise param_error({"vmid": f"VM {params['vmid']} already exists"})
                return str(params["vmid"])
            for vmid in range(NEXTID_LOW, NEXTID_HIGH):
                if vmid not in self.store.vms:
                    return str(vmid)
        raise fail("unable to get any free VMID in range [100, 999999]")

    def resources(self, req: Request) -> Any:
        params = schema.check(req.params, {"type": P(enum=("vm", "storage", "node", "sdn"))})
        wanted = params.get("type")
        if wanted not in (None, "vm"):
            return self._other_resources(req, wanted)
        # like pmxcfs' status cache: VM entries are re-encoded when state changes or a second
        # passes (uptime), not on every poll
        key = (self.store.generation, int(time.time()))
        if self._vm_cache is None or self._vm_cache[0] != key:
            self._vm_cache = (key, json.dumps(self._vm_resources()).encode())
        encoded = self._vm_cache[1]
        authid = req.identity.authuser
        if not self.emu.access.sees_all(authid, "/vms", ["VM.Audit"]):
            # as PVE: only guests the caller may audit (VM.Audit on /vms/{vmid})
            visible = [
                item
                for item in json.loads(encoded)
                if self.emu.access.allowed(authid, f"/vms/{item['vmid']}", ["VM.Audit"])
            ]
            encoded = json.dumps(visible).encode()
        if wanted == "vm":
            return RawJson(encoded)
        others = self._other_resources(req, None)
        if not others:
            return RawJson(encoded)
        rest = json.dumps(others).encode()
        if encoded == b"[]":
            return RawJson(rest)
        return RawJson(encoded[:-1] + b"," + rest[1:])

    def _vm_resources(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        qemu = self.emu.qemu
        with self.store.lock:
            vms = [(vm, self.store.node_of(vm.vmid)) for vm in self.store.vms.values()]
        for vm, node in vms:
            status = qemu.vmstatus(vm)
            item = {
                "id": f"qemu/{vm.vmid}",
                "vmid": vm.vmid,
                "node": node,
                "type": "qemu",
                # a failed node reports nothing: pmxcfs still lists its guests, their state unknown
                "status": "unknown" if node in self.emu.offline else status["status"],
                "name": status["name"],
                "uptime": status["uptime"],
                "template": 1 if vm.is_template else 0,
                "maxcpu": status["cpus"],
                "cpu": status["cpu"],
                "maxmem": status["maxmem"],
                "mem": status["mem"],
                "maxdisk": status["maxdisk"],
                "disk": 0,
                "netin": 0,
                "netout": 0,
                "diskread": 0,
                "diskwrite": 0,
            }
            for key in ("lock", "tags"):
                if key in status:
                    item[key] = status[key]
            pool = self.store.pool_of(vm.vmid)
            if pool is not None:
                item["pool"] = pool
            ha = self.emu.ha.resource_state(vm.vmid)
            if ha is not None:
                item["hastate"] = ha
            result.append(item)
        return result

    def _other_resources(self, req: Request, wanted: str | None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        nodes = self.emu.settings.nodes
        if wanted in (None, "node"):
            for node in nodes:
                item = {
                    k: v for k, v in self.emu.nodes_api.node_entry(node).items() if k != "ssl_fingerprint"
                }
                if item["status"] == "online":
                    item["cgroup-mode"] = 2
                result.append(item)
        if wanted in (None, "storage"):
            for node in nodes:  # every node lists each storage; a shared one is the same on all
                if node in self.emu.offline:  # no fresh figures from it: pve-manager says unknown
                    result += [
                        {
                            "id": f"storage/{node}/{s.storage}",
                            "storage": s.storage,
                            "node": node,
                            "type": "storage",
                            "status": "unknown",
                            "plugintype": s.type,
                            "content": s.content,
                            "shared": int(s.shared),
                        }
                        for s in self.emu.settings.storages
                    ]
                    continue
                result += self._storage_resources(node)
        return result

    def _storage_resources(self, node: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        used = self.emu.nodes_api.used_on(node)
        for storage in self.emu.settings.storages:
            result.append(
                {
                    "id": f"storage/{node}/{storage.storage}",
                    "storage": storage.storage,
                    "node": node,
                    "type": "storage",
                    "status": "available",
                    "plugintype": storage.type,
                    "content": storage.content,
                    "shared": int(storage.shared),
                    "disk": used.get(storage.storage, 0),
                    "maxdisk": storage.total,
                }
            )
        return result

    # --- backup jobs ---------------------------------------------------------------------------

    def _job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {"type": "vzdump", "enabled": 1}
        for key, value in job.items():
            view[key] = int(value) if key in _INT_FIELDS else value
        if view.get("enabled") and view.get("schedule"):
            next_run = next_event(view["schedule"], dt.datetime.now())
            if next_run is not None:
                view["next-run"] = int(next_run.timestamp())
        return view

    def backup_list(self, req: Request) -> Any:
        schema.check(req.params, {})
        with self.store.lock:
            return [self._job_view(j) for j in sorted(self.store.jobs.values(), key=lambda j: j["id"])]

    def _job_params(self, params: dict[str, str], extra: dict[str, P]) -> dict[str, str]:
        checked = schema.check(params, {**job_spec(self.emu.release), **extra})
        values = {k: str(v) for k, v in checked.items() if k not in extra}
        if "starttime" in values or "dow" in values:
            dow = values.pop("dow", "mon,tue,wed,thu,fri,sat,sun")
            start = values.pop("starttime", "00:00")
            values.setdefault("schedule", f"{dow} {start}")
        if "schedule" in values and next_event(values["schedule"], dt.datetime.now()) is None:
            raise param_error(
                {"schedule": f"invalid format - unable to parse calendar event '{values['schedule']}'\n"}
            )
        return values

    def backup_create(self, req: Request) -> Any:
        values = self._job_params(req.params, {"id": P(format="pve-configid")})
        job_id = req.params.get("id") or f"backup-{str(uuid.uuid4())[:13]}"
        if not any(k in values for k in ("vmid", "all", "pool")) or (
            values.get("all") == "0" and "vmid" not in values and "pool" not in values
        ):
            raise param_error({"vmid": "at least one of 'vmid', 'pool' or 'all' must be set"})
        self._job_permissions(req, values, None)
        with self.store.lock:
            if job_id in self.store.jobs:
                raise fail(f"Job '{job_id}' already exists")
            values.setdefault("schedule", "00:00")
            self.store.jobs[job_id] = {"id": job_id, "type": "vzdump", **values}
            self.store.save_jobs()
        return None

    def _job_permissions(self, req: Request, values: dict[str, str], current: dict[str, Any] | None) -> None:
        """PVE's Backup.pm assert_param_permission_*: a job writing to a storage needs
        Datastore.Allocate there; performance knobs need Sys.Modify; some keys are root's only."""
        authid, access = req.identity.authuser, self.emu.access
        if authid == ROOT:
            return
        for key in ("tmpdir", "dumpdir", "script", "job-id"):
            if key in values:
                raise param_error({key: "Only root may set this option."})
        if any(key in values for key in ("bwlimit", "ionice", "performance")):
            access.check(authid, "/", ["Sys.Modify"])
        storages = [values.get("storage"), (current or {}).get("storage")]
        for storage in dict.fromkeys(s for s in storages if s):
            access.check(authid, f"/storage/{storage}", ["Datastore.Allocate"])
        if values.get("pool"):
            access.check(authid, f"/pool/{values['pool']}", ["VM.Backup"])

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self.store.jobs.get(job_id)
        if job is None:
            raise param_error({"id": f"No such job '{job_id}'"})
        return job

    def backup_get(self, req: Request) -> Any:
        params = schema.check(req.params, {"id": JOB_ID})
        with self.store.lock:
            return self._job_view(self._job(params["id"]))

    def backup_update(self, req: Request) -> Any:
        extra = {"id": JOB_ID, "delete": P(format="pve-configid-list"), "digest": P(max_length=64)}
        values = self._job_params(req.params, extra)
        with self.store.lock:
            job = self._job(req.params["id"])
            self._job_permissions(req, values, job)
            for key in [k for k in re.split(r"[,;\s]+", req.params.get("delete", "")) if k]:
                if key not in JOB_SPEC:
                    raise param_error({"delete": f"unknown option '{key}'"})
                job.pop(key, None)
            job.update(values)
            self.store.save_jobs()
        return None

    def backup_delete(self, req: Request) -> Any:
        params = schema.check(req.params, {"id": JOB_ID})
        with self.store.lock:
            self._job(params["id"])
            del self.store.jobs[params["id"]]
            self.store.save_jobs()
        return None


_INT_FIELDS = {
    "enabled",
    "all",
    "protected",
    "repeat-missed",
    "remove",
    "bwlimit",
    "zstd",
    "ionice",
    "pigz",
    "lockwait",
    "stopwait",
    "maxfiles",
    "quiet",
    "stdexcludes",
}


def _expand(part: str, low: int, high: int) -> set[int] | None:
    """One systemd calendar field: ``*``, ``*/n``, ``a..b``, ``a/n``, lists with ``,``."""
    values: set[int] = set()
    for item in part.split(","):
        step = 1
        if "/" in item:
            item, step_text = item.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                return None
            step = int(step_text)
            start, end = (low, high) if item == "*" else (int(item), high) if item.isdigit() else (None, None)
        elif item == "*":
            start, end = low, high
        elif ".." in item:
            a, b = item.split("..", 1)
            if not (a.isdigit() and b.isdigit()):
                return None
            start, end = int(a), int(b)
        elif item.isdigit():
            start = end = int(item)
        else:
            return None
        if start is None or end is None or start < low or end > high:
            return None
        values.update(range(start, end + 1, step))
    return values


def _weekdays(spec: str) -> set[int] | None:
    days: set[int] = set()
    for item in spec.split(","):
        if ".." in item:
            a, b = item.split("..", 1)
            if a not in _DOW or b not in _DOW:
                return None
            i, j = _DOW.index(a), _DOW.index(b)
            days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif item in _DOW:
            days.add(_DOW.index(item))
        else:
            return None
    return days


def next_event(schedule: str, now: dt.datetime) -> dt.datetime | None:
    """The next time a (simple) systemd calendar event fires; None if it does not parse."""
    text = schedule.strip().lower()
    text = {"daily": "00:00", "hourly": "*:00", "weekly": "mon 00:00", "minutely": "*:*"}.get(text, text)
    parts = text.split()
    days: set[int] | None = set(range(7))
    if parts and not any(c.isdigit() or c == "*" for c in parts[0][:1]):
        days = _weekdays(parts.pop(0))
    if days is None or len(parts) > 1:
        return None
    hour_part, _, minute_part = (parts[0] if parts else "00:00").partition(":")
    hours = _expand(hour_part, 0, 23)
    minutes = _expand(minute_part or "0", 0, 59)
    if not hours or not minutes:
        return None
    candidate = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    for _ in range(8 * 24 * 60):
        if candidate.weekday() in days and candidate.hour in hours and candidate.minute in minutes:
            return candidate
        candidate += dt.timedelta(minutes=1)
    return None
