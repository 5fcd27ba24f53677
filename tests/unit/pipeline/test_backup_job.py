from __future__ import annotations

from typing import Any

import pytest

from ailab_deploy.errors import ProxmoxError
from ailab_deploy.pipeline.backup_job import (
    DEFAULT_SCHEDULE,
    JOB_COMMENT,
    NOTES_TEMPLATE,
    backup_storage,
    ensure_backup_job,
)


class FakePve:
    """Just enough of /cluster/backup and /nodes/{n}/storage, behind the ProxmoxClient's ``call``."""

    def __init__(self, storages: list[dict[str, Any]] | None = None) -> None:
        self.jobs: dict[str, dict[str, str]] = {}
        self.storages = storages or [
            {"storage": "local", "content": "iso,vztmpl,backup", "enabled": 1},
            {"storage": "local-lvm", "content": "images,rootdir", "enabled": 1},
        ]
        self.writes: list[tuple[str, str, dict[str, Any]]] = []

    def call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        if method != "GET":
            self.writes.append((method, path, dict(params)))
        match method, tuple(path.split("/")):
            case "GET", ("cluster", "backup"):
                return [{"type": "vzdump", **job} for job in self.jobs.values()]
            case "POST", ("cluster", "backup"):
                assert all(isinstance(v, str) for v in params.values()), "form values are text"
                self.jobs[params["id"]] = dict(params)
                return None
            case "PUT", ("cluster", "backup", job_id):
                self.jobs[job_id].update(params)
                return None
            case "DELETE", ("cluster", "backup", job_id):
                del self.jobs[job_id]
                return None
            case "GET", ("nodes", _, "storage"):
                wanted = params.get("content")
                return [s for s in self.storages if wanted is None or wanted in s["content"].split(",")]
        raise AssertionError(f"unexpected {method} {path}")


def test_creates_the_job_then_is_a_no_op() -> None:
    api = FakePve()
    first = ensure_backup_job(api, "pve", [102, 100, 101])
    assert first.action == "created"
    assert api.jobs["ailab-pve"] == {
        "id": "ailab-pve",
        "schedule": DEFAULT_SCHEDULE,
        "storage": "local",  # the only backup-capable storage
        "vmid": "100,101,102",
        "node": "pve",
        "mode": "snapshot",
        "compress": "zstd",
        "enabled": "1",
        "comment": JOB_COMMENT,
        "notes-template": NOTES_TEMPLATE,
    }
    writes = len(api.writes)
    second = ensure_backup_job(api, "pve", [100, 101, 102])
    assert second.action == "unchanged"
    assert second.describe() == "backup job ailab-pve: unchanged"
    assert len(api.writes) == writes  # no PUT on a second run


def test_updates_only_what_differs() -> None:
    api = FakePve()
    ensure_backup_job(api, "pve", [100, 101])
    api.jobs["ailab-pve"]["mailto"] = "me@example.test"  # the user's own setting stays
    api.jobs["ailab-pve"]["vmid"] = "101;100"  # PVE's other separators mean the same list
    assert ensure_backup_job(api, "pve", [100, 101]).action == "unchanged"
    result = ensure_backup_job(api, "pve", [100, 101, 103], schedule="sun 03:30")
    assert result.action == "updated"
    assert api.writes[-1] == (
        "PUT",
        "cluster/backup/ailab-pve",
        {"vmid": "100,101,103", "schedule": "sun 03:30"},
    )
    assert api.jobs["ailab-pve"]["mailto"] == "me@example.test"
    assert result.describe() == (
        "backup job ailab-pve: updated (schedule sat 02:00 -> sun 03:30, vmid 100,101 -> 100,101,103)"
    )


@pytest.mark.parametrize(
    "stored, planned, write",
    [
        (None, "keep-last=2,keep-weekly=4", {"prune-backups": "keep-last=2,keep-weekly=4"}),
        ("keep-weekly=4,keep-last=2", "keep-last=2,keep-weekly=4", None),  # the same options
        ("keep-last=2", "keep-last=3", {"prune-backups": "keep-last=3"}),
        ("keep-all=1", None, None),  # no retention in the plan: the job's own is left alone
    ],
)
def test_retention_is_compared_as_options(
    stored: str | None, planned: str | None, write: dict[str, str] | None
) -> None:
    api = FakePve()
    ensure_backup_job(api, "pve", [100])
    if stored is not None:
        api.jobs["ailab-pve"]["prune-backups"] = stored
    writes = len(api.writes)
    result = ensure_backup_job(api, "pve", [100], prune_backups=planned)
    if write is None:
        assert (result.action, len(api.writes)) == ("unchanged", writes)
    else:
        assert result.action == "updated" and api.writes[-1] == ("PUT", "cluster/backup/ailab-pve", write)


def test_disabled_job_is_enabled_again() -> None:
    api = FakePve()
    ensure_backup_job(api, "pve", [100])
    api.jobs["ailab-pve"]["enabled"] = "0"
    result = ensure_backup_job(api, "pve", [100])
    assert result.changes == {"enabled": ("0", "1")}


def test_no_managed_vms_removes_the_job() -> None:
    api = FakePve()
    ensure_backup_job(api, "pve", [100])
    assert ensure_backup_job(api, "pve", []).action == "removed"
    assert api.jobs == {}
    assert ensure_backup_job(api, "pve", []).action == "absent"


def test_dry_run_writes_nothing() -> None:
    api = FakePve()
    assert ensure_backup_job(api, "pve", [100], dry_run=True).action == "created"
    assert api.writes == []


def test_other_jobs_are_left_alone() -> None:
    api = FakePve()
    api.jobs["backup-1234"] = {"id": "backup-1234", "vmid": "200", "schedule": "daily"}
    ensure_backup_job(api, "pve", [100])
    assert api.jobs["backup-1234"] == {"id": "backup-1234", "vmid": "200", "schedule": "daily"}


def test_storage_choice() -> None:
    api = FakePve(
        [
            {"storage": "nas", "content": "backup", "enabled": 1},
            {"storage": "local", "content": "backup,iso", "enabled": 1},
            {"storage": "old", "content": "backup", "enabled": 0},
        ]
    )
    assert backup_storage(api, "pve") == "local"  # first by name among enabled ones
    assert backup_storage(api, "pve", "nas") == "nas"
    with pytest.raises(ProxmoxError, match=r"'old' on node pve does not take backups.*local, nas"):
        backup_storage(api, "pve", "old")


def test_no_backup_storage_says_what_to_enable() -> None:
    api = FakePve([{"storage": "local-lvm", "content": "images", "enabled": 1}])
    with pytest.raises(ProxmoxError, match=r"pvesm set local --content iso,vztmpl,backup,snippets"):
        ensure_backup_job(api, "pve", [100])
