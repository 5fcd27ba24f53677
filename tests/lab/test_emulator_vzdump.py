"""vzdump and qmrestore in the API emulator (null backend): archives named and listed as on a node,
retention after each backup, jobs on a sped-up schedule, restores over a new or an existing VMID."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ResourceException

from ailab_deploy.lab import archive

from .conftest import Lab

pytestmark = pytest.mark.lab

ARCHIVE = re.compile(r"vzdump-qemu-(\d+)-(\d{4})_(\d\d)_(\d\d)-(\d\d)_(\d\d)_(\d\d)\.vma\.zst")


def _clone(emulator: Lab, newid: int, name: str) -> None:
    api = emulator.api()
    emulator.wait(api.nodes(emulator.node).qemu(9000).clone.post(newid=newid, name=name))


def _backups(emulator: Lab, vmid: int | None = None) -> list[dict[str, Any]]:
    storage = emulator.api().nodes(emulator.node).storage("local")
    params = {"content": "backup", **({"vmid": vmid} if vmid else {})}
    return list(storage.content.get(**params))


def _dump_dir(emulator: Lab) -> Path:
    return emulator.lab_dir / "storage" / "local" / "dump"


def test_vzdump_on_demand_writes_a_listed_archive_with_notes(emulator: Lab) -> None:
    _clone(emulator, 100, "postgres")
    api = emulator.api()
    before = int(time.time())
    upid = api.nodes(emulator.node).vzdump.post(
        vmid=100,
        storage="local",
        mode="snapshot",
        compress="zstd",
        **{"notes-template": "{{guestname}} ({{vmid}})"},
    )
    assert upid.split(":")[5:7] == ["vzdump", "100"]  # task type and id, as PVE forks it
    status = emulator.wait(upid)
    assert status["exitstatus"] == "OK"
    log = [line["t"] for line in api.nodes(emulator.node).tasks(upid).log.get(limit=0)]
    assert log[0].startswith("INFO: starting new backup job: vzdump 100")
    assert "INFO: Starting Backup of VM 100 (qemu)" in log
    assert "INFO: Backup job finished successfully" in log[-2]
    (listed,) = _backups(emulator)
    name = listed["volid"].removeprefix("local:backup/")
    match = ARCHIVE.fullmatch(name)
    assert match is not None and int(match.group(1)) == 100
    assert f"INFO: creating vzdump archive '{_dump_dir(emulator) / name}'" in log
    assert (listed["subtype"], listed["vmid"], listed["format"]) == ("qemu", 100, "vma.zst")
    assert before - 1 <= listed["ctime"] <= int(time.time())
    assert listed["size"] == (_dump_dir(emulator) / name).stat().st_size > 0
    assert (_dump_dir(emulator) / f"{name}.notes").read_text() == "postgres (100)"
    # The archive holds the VM's config as the API reports it.
    config = api.nodes(emulator.node).qemu(100).config.get()
    held = archive.read_config(_dump_dir(emulator) / name)
    assert held["name"] == "postgres" and held["net0"] == config["net0"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "no VMs specified"),
        ({"vmid": 100, "all": 1}, "option conflicts with option 'vmid'"),
        ({"vmid": 4242}, "unable to find VM 4242"),
        ({"vmid": 100, "storage": "local-lvm"}, "storage 'local-lvm' does not support backups"),
    ],
)
def test_vzdump_refuses_as_pve_does(emulator: Lab, params: dict[str, Any], message: str) -> None:
    _clone(emulator, 100, "postgres")
    with pytest.raises(ResourceException) as refused:
        emulator.api().nodes(emulator.node).vzdump.post(**params)
    assert message in str(refused.value)


def test_retention_prunes_after_each_backup(make_emulator: Any) -> None:
    # a sped-up clock, so successive backups fall in different seconds of lab time
    emulator = make_emulator(clock_speed=3600.0)
    _clone(emulator, 100, "postgres")
    api = emulator.api()
    for _ in range(3):
        emulator.wait(
            api.nodes(emulator.node).vzdump.post(
                vmid=100, compress="zstd", **{"prune-backups": "keep-last=2"}
            )
        )
        time.sleep(0.05)
    listed = _backups(emulator, 100)
    assert len(listed) == 2
    upid = api.nodes(emulator.node).vzdump.post(vmid=100, compress="zstd", **{"prune-backups": "keep-last=2"})
    emulator.wait(upid)
    log = [line["t"] for line in api.nodes(emulator.node).tasks(upid).log.get(limit=0)]
    assert "INFO: prune older backups with retention: keep-last=2" in log
    oldest = min(listed, key=lambda item: item["ctime"])
    assert f"INFO: removing backup '{oldest['volid']}'" in log
    assert {item["volid"] for item in _backups(emulator, 100)} >= {
        max(listed, key=lambda i: i["ctime"])["volid"]
    }
    assert len(_backups(emulator, 100)) == 2


def test_a_job_runs_on_its_schedule_in_sped_up_lab_time(make_emulator: Any) -> None:
    emulator = make_emulator(clock_speed=3600.0, run_backup_jobs=True)  # an hour per second
    _clone(emulator, 100, "postgres")
    api = emulator.api()
    api.cluster.backup.post(id="hourly", vmid="100", storage="local", schedule="*:00", compress="zstd")
    deadline = time.monotonic() + 10
    while not _backups(emulator) and time.monotonic() < deadline:
        time.sleep(0.2)
    listed = _backups(emulator)
    assert listed and listed[0]["vmid"] == 100
    tasks = api.nodes(emulator.node).tasks.get(typefilter="vzdump", source="all")
    assert tasks and tasks[-1]["user"] == "root@pam"


def test_restore_over_a_destroyed_and_over_an_existing_vm(emulator: Lab) -> None:
    _clone(emulator, 100, "postgres")
    api = emulator.api()
    node = api.nodes(emulator.node)
    before = node.qemu(100).config.get()
    emulator.wait(node.vzdump.post(vmid=100, compress="zstd"))
    (listed,) = _backups(emulator, 100)

    with pytest.raises(ResourceException) as exists:
        node.qemu.post(vmid=100, archive=listed["volid"])
    assert "unable to restore VM 100 - config file already exists" in str(exists.value)

    upid = node.qemu.post(vmid=100, archive=listed["volid"], force=1)
    assert upid.split(":")[5:7] == ["qmrestore", "100"]
    assert emulator.wait(upid)["exitstatus"] == "OK"
    emulator.wait(node.qemu(100).delete())
    emulator.wait(node.qemu.post(vmid=100, archive=listed["volid"], start=1))
    after = node.qemu(100).config.get()
    kept = ("name", "net0", "smbios1", "ipconfig0", "memory", "cores")
    assert {k: after.get(k) for k in kept} == {k: before.get(k) for k in kept}
    # a linked clone comes back as a full volume of its own, as vma extract writes one
    assert before["scsi0"].startswith("local-lvm:base-9000-disk-0/vm-100-disk-0,")
    assert after["scsi0"].startswith("local-lvm:vm-100-disk-0,")
    assert node.qemu(100).status.current.get()["status"] == "running"


def test_restore_refuses_a_damaged_archive(emulator: Lab) -> None:
    _clone(emulator, 100, "postgres")
    node = emulator.api().nodes(emulator.node)
    emulator.wait(node.vzdump.post(vmid=100, compress="zstd"))
    (listed,) = _backups(emulator, 100)
    path = _dump_dir(emulator) / listed["volid"].removeprefix("local:backup/")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    over = emulator.wait(node.qemu.post(vmid=100, archive=listed["volid"], force=1))
    assert over["exitstatus"] != "OK"
    assert node.qemu(100).config.get()["name"] == "postgres"  # the VM it would have replaced is intact
    assert "lock" not in node.qemu(100).config.get()
    emulator.wait(node.qemu(100).delete())
    status = emulator.wait(node.qemu.post(vmid=100, archive=listed["volid"]))
    assert status["exitstatus"] != "OK" and path.name in status["exitstatus"]
    assert 100 not in {vm["vmid"] for vm in node.qemu.get()}
