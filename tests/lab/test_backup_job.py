"""The backup job against the API emulator: created once, then a no-op, then updated in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.pipeline.backup_job import backup_storage, ensure_backup_job
from tests.lab.provision_fixtures import emulator_client

pytestmark = pytest.mark.lab


def _job(emulator: Any, job_id: str) -> dict[str, Any]:
    return dict(emulator.api().cluster.backup(job_id).get())


def _client(emulator: Any, kind: str) -> Any:
    if kind == "proxmoxer":
        return emulator.api()
    return emulator_client(emulator, ca_file=Path(emulator.ca_path))


@pytest.mark.parametrize("kind", ["proxmoxer", "ProxmoxClient"])
def test_backup_job_round_trip(emulator: Any, kind: str) -> None:
    api = _client(emulator, kind)
    storage = backup_storage(api, emulator.node)
    created = ensure_backup_job(api, emulator.node, [101, 100])
    assert created.action == "created"
    job = _job(emulator, f"ailab-{emulator.node}")
    assert (job["vmid"], job["schedule"], job["mode"], job["storage"]) == (
        "100,101",
        "sat 02:00",
        "snapshot",
        storage,
    )
    assert "next-run" in job  # PVE parsed the schedule

    assert ensure_backup_job(api, emulator.node, [100, 101]).action == "unchanged"

    updated = ensure_backup_job(api, emulator.node, [100, 101, 102], schedule="sun 03:00")
    assert updated.action == "updated"
    assert set(updated.changes) == {"vmid", "schedule"}
    job = _job(emulator, f"ailab-{emulator.node}")
    assert (job["vmid"], job["schedule"]) == ("100,101,102", "sun 03:00")
    assert ensure_backup_job(api, emulator.node, [102, 101, 100], schedule="sun 03:00").action == "unchanged"

    assert ensure_backup_job(api, emulator.node, []).action == "removed"
    assert all(j["id"] != f"ailab-{emulator.node}" for j in emulator.api().cluster.backup.get())
