"""The vzdump backup job for the VMs this tool manages: read, diff, act, with an explicit no-op.

One job per node, id ``ailab-<node>``, in ``/cluster/backup``; in a cluster the job names no
node, since PVE backs up only the VMs on the job's node when it names one. It lists exactly the
managed VMIDs; when there are none left the job is removed (PVE refuses a job with
no ``vmid``, ``pool`` or ``all``). Only fields that differ are PUT, so a second
run changes nothing.

``api`` is either a proxmoxer ``ProxmoxAPI`` or the project's ``ProxmoxClient`` (anything
with ``call(method, path, params)``, which adds retries and logging).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from proxmoxer import ProxmoxResource

from ailab_deploy.errors import ProxmoxError

log = logging.getLogger(__name__)

DEFAULT_SCHEDULE = "sat 02:00"
DEFAULT_MODE = "snapshot"
DEFAULT_COMPRESS = "zstd"
JOB_COMMENT = "managed by ailab-deploy: vzdump of the lab VMs"
NOTES_TEMPLATE = "{{guestname}}"  # each archive's notes name the VM, as the GUI's default does
BACKUP_CONTENT = "backup"
# The fields this tool owns; anything else on the job (mailto, ...) is the user's, and so is
# prune-backups while the plan sets no retention.
MANAGED_FIELDS = (
    "schedule",
    "storage",
    "vmid",
    "node",
    "mode",
    "compress",
    "enabled",
    "comment",
    "notes-template",
    "prune-backups",
)
KEEP_ORDER = (
    "keep-all",
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
)

Action = Literal["created", "updated", "unchanged", "removed", "absent"]


def job_id_for(node: str) -> str:
    return f"ailab-{node}"


def _vmid_list(value: object) -> str:
    """``"102;100 101"`` or ``[100, 102]`` -> ``"100,101,102"``: the canonical, comparable form."""
    if isinstance(value, str):
        items: Iterable[object] = (part for part in re.split(r"[,;\s]+", value) if part)
    elif isinstance(value, Iterable):
        items = value
    else:
        items = [value]
    return ",".join(str(vmid) for vmid in sorted({int(str(item)) for item in items}))


def _retention(value: object) -> str:
    """``keep-weekly=4,keep-last=2`` or {"keep-last": 2, ...} -> its options in PVE's order."""
    if isinstance(value, Mapping):
        pairs = {str(key): str(number) for key, number in value.items()}
    else:
        pairs = dict(item.split("=", 1) for item in str(value).split(",") if "=" in item)
    ordered = sorted(pairs.items(), key=lambda kv: KEEP_ORDER.index(kv[0]) if kv[0] in KEEP_ORDER else 99)
    return ",".join(f"{key}={number}" for key, number in ordered)


def _normalised(job: Mapping[str, Any]) -> dict[str, str]:
    """The managed fields of a job as PVE's form values (booleans 0/1, vmids sorted)."""
    values: dict[str, str] = {}
    for key in MANAGED_FIELDS:
        if key not in job or job[key] is None:
            continue
        value = job[key]
        if key == "vmid":
            values[key] = _vmid_list(value)
        elif key == "prune-backups":
            values[key] = _retention(value)
        elif isinstance(value, bool):
            values[key] = "1" if value else "0"
        else:
            values[key] = str(value)
    values.setdefault("enabled", "1")  # PVE omits enabled=1 on reading
    return values


@dataclass(frozen=True)
class BackupJobSpec:
    """What the job should look like."""

    node: str
    vmids: tuple[int, ...]
    storage: str
    schedule: str = DEFAULT_SCHEDULE
    mode: str = DEFAULT_MODE
    compress: str = DEFAULT_COMPRESS
    every_node: bool = False  # a cluster: no ``node``, so each node backs up the listed VMs it holds
    prune_backups: str | None = None  # None: the job's retention is left as it is

    @property
    def id(self) -> str:
        return job_id_for(self.node)

    def form(self) -> dict[str, str]:
        """The job as the form fields PVE takes (booleans as 0/1: proxmoxer would send 'True')."""
        return _normalised(
            {
                "schedule": self.schedule,
                "storage": self.storage,
                "vmid": self.vmids,
                "node": None if self.every_node else self.node,
                "mode": self.mode,
                "compress": self.compress,
                "enabled": True,
                "comment": JOB_COMMENT,
                "notes-template": NOTES_TEMPLATE,
                "prune-backups": self.prune_backups,
            }
        )


@dataclass(frozen=True)
class BackupJobResult:
    job_id: str
    action: Action
    # field -> (current, desired); current is None for a field the job did not have
    changes: dict[str, tuple[str | None, str]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.action != "updated":
            return f"backup job {self.job_id}: {self.action}"
        details = ", ".join(
            f"{key} {old or '-'} -> {new}" for key, (old, new) in sorted(self.changes.items())
        )
        return f"backup job {self.job_id}: updated ({details})"


def _request(api: Any, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
    """One API call through proxmoxer (``api(path).get()``) or a client's ``call``."""
    if isinstance(api, ProxmoxResource):
        return getattr(api(path), method.lower())(**(params or {}))
    return api.call(method, path, params or {})


def backup_storage(api: Any, node: str, preferred: str | None = None) -> str:
    """``preferred`` if it takes backups, else the first enabled storage that does."""
    pools = _request(api, "GET", f"nodes/{node}/storage", {"content": BACKUP_CONTENT})
    capable = sorted(str(pool["storage"]) for pool in pools if int(pool.get("enabled", 1)))
    if preferred is not None:
        if preferred in capable:
            return preferred
        raise ProxmoxError(
            f"storage {preferred!r} on node {node} does not take backups; enable it with "
            f"`pvesm set {preferred} --content <its current types>,backup` or choose one of: "
            f"{', '.join(capable) or 'none'}"
        )
    if not capable:
        raise ProxmoxError(
            f"no storage on node {node} takes backups; enable one, e.g. "
            "`pvesm set local --content iso,vztmpl,backup,snippets`"
        )
    return capable[0]


def _current_job(api: Any, job_id: str) -> dict[str, Any] | None:
    # The list, not GET /cluster/backup/{id}: a missing job is then a plain absence, not a 400.
    for job in _request(api, "GET", "cluster/backup"):
        if job.get("id") == job_id:
            return dict(job)
    return None


def ensure_backup_job(
    api: Any,
    node: str,
    vmids: Iterable[int],
    *,
    storage: str | None = None,
    schedule: str = DEFAULT_SCHEDULE,
    prune_backups: str | None = None,
    dry_run: bool = False,
    every_node: bool = False,
) -> BackupJobResult:
    """Make ``/cluster/backup/ailab-<node>`` back up exactly ``vmids`` (on every node of a cluster
    with ``every_node``); change only what differs."""
    job_id = job_id_for(node)
    wanted_vmids = tuple(sorted(set(vmids)))
    current = _current_job(api, job_id)
    if not wanted_vmids:
        if current is None:
            return BackupJobResult(job_id, "absent")
        if not dry_run:
            _request(api, "DELETE", f"cluster/backup/{job_id}")
        log.info("backup job %s removed: no managed VMs left", job_id)
        return BackupJobResult(job_id, "removed")
    spec = BackupJobSpec(
        node=node,
        vmids=wanted_vmids,
        storage=backup_storage(api, node, storage),
        schedule=schedule,
        every_node=every_node,
        prune_backups=prune_backups,
    )
    desired = spec.form()
    if current is None:
        if not dry_run:
            _request(api, "POST", "cluster/backup", {"id": job_id, **desired})
        log.info("backup job %s created", job_id)
        return BackupJobResult(job_id, "created", {key: (None, value) for key, value in desired.items()})
    have = _normalised(current)
    changes = {key: (have.get(key), value) for key, value in desired.items() if have.get(key) != value}
    params: dict[str, str] = {key: new for key, (_, new) in changes.items()}
    if every_node and "node" in have:  # a one-node job the cluster outgrew
        changes["node"] = (have["node"], "every node")
        params["delete"] = "node"
    if not changes:
        return BackupJobResult(job_id, "unchanged")
    if "notes-template" in params:  # PVE's schema: notes-template requires storage in the same call
        params.setdefault("storage", desired["storage"])
    if not dry_run:
        _request(api, "PUT", f"cluster/backup/{job_id}", params)
    log.info("backup job %s updated: %s", job_id, ", ".join(sorted(changes)))
    return BackupJobResult(job_id, "updated", changes)


# vzdump's options a job passes on when it runs (PVE's "Run now" sends these to /nodes/{node}/vzdump)
_RUN_SKIP = {
    "id",
    "type",
    "schedule",
    "enabled",
    "comment",
    "next-run",
    "node",
    "starttime",
    "dow",
    "repeat-missed",
}


def run_job_now(api: Any, node: str, wait: Any, run_on: str | None = None) -> str:
    """Start the node's job now, as the GUI's "Run now" does, on ``run_on`` (default: ``node``),
    which backs up the job's guests it holds; ``wait(upid)`` waits for its task."""
    job = _current_job(api, job_id_for(node))
    if job is None:
        raise ProxmoxError(
            f"node {node} has no backup job {job_id_for(node)}: run `ailab-deploy apply` with "
            "proxmox.vzdump.enabled: true first"
        )
    params = {key: str(value) for key, value in job.items() if key not in _RUN_SKIP}
    params["vmid"] = _vmid_list(job.get("vmid", ""))
    upid = str(_request(api, "POST", f"nodes/{run_on or node}/vzdump", params))
    if upid.startswith("UPID:"):  # "OK": none of the job's guests is on that node
        wait(upid)
    return upid
