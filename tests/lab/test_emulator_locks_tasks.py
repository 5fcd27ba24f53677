"""Locks visible and enforced as on PVE, parallel clones, and the task life cycle."""

from __future__ import annotations

import re
import threading
import time

import pytest
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

pytestmark = pytest.mark.lab

UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_clone_lock_is_visible_and_enforced(make_emulator):
    lab = make_emulator(task_seconds_by_type={"qmclone": 1.5})
    api = lab.api()
    node = api.nodes(lab.node)
    upid = node.qemu(9000).clone.post(newid=101, name="web1")
    assert node.qemu(101).config.get()["lock"] == "clone"
    assert node.qemu(101).status.current.get()["lock"] == "clone"
    resource = next(r for r in api.cluster.resources.get(type="vm") if r["vmid"] == 101)
    assert resource["lock"] == "clone"
    with pytest.raises(ResourceException) as err:
        node.qemu(101).config.put(cores=4)
    assert (err.value.status_code, err.value.content) == (500, "VM is locked (clone)")
    with pytest.raises(ResourceException) as err:
        node.qemu(101).clone.post(newid=102)
    assert err.value.content == "VM is locked (clone)"
    status = node.qemu(101).status.start.post()
    assert lab.wait(status)["exitstatus"] == "VM is locked (clone)"
    assert node.tasks(upid).status.get()["status"] == "running"
    assert lab.wait(upid)["exitstatus"] == "OK"
    assert "lock" not in node.qemu(101).config.get()


def test_create_lock_and_snapshot_lock(make_emulator):
    lab = make_emulator(task_seconds_by_type={"qmcreate": 1.0, "qmsnapshot": 1.0})
    node = lab.api().nodes(lab.node)
    upid = node.qemu.post(vmid=150, memory="512")
    assert node.qemu(150).config.get()["lock"] == "create"
    lab.wait(upid)
    upid = node.qemu(150).snapshot.post(snapname="s1")
    assert wait_for(lambda: node.qemu(150).config.get().get("lock") == "snapshot")
    snap = next(s for s in node.qemu(150).snapshot.get() if s["name"] == "s1")
    assert snap["snapstate"] == "prepare"
    with pytest.raises(ResourceException) as err:
        node.qemu(150).template.post()
    assert err.value.content == "VM is locked (snapshot)"
    lab.wait(upid)
    assert "lock" not in node.qemu(150).config.get()


def test_parallel_clones_of_one_template_all_succeed(make_emulator):
    lab = make_emulator(task_seconds=0.3)
    api = lab.api()
    upids: list[str] = []
    lock = threading.Lock()

    def clone(newid: int) -> None:
        upid = api.nodes(lab.node).qemu(9000).clone.post(newid=newid, name=f"vm{newid}")
        with lock:
            upids.append(upid)

    threads = [threading.Thread(target=clone, args=(200 + i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(upids) == 8
    assert [lab.wait(u)["exitstatus"] for u in upids] == ["OK"] * 8
    disks = {api.nodes(lab.node).qemu(200 + i).config.get()["scsi0"].split(",")[0] for i in range(8)}
    assert len(disks) == 8
    assert "lock" not in api.nodes(lab.node).qemu(9000).config.get()


def test_upid_format_and_task_life_cycle(make_emulator):
    lab = make_emulator(task_seconds=0.8)
    api = lab.api()
    upid = api.nodes(lab.node).qemu(9000).clone.post(newid=101)
    assert UPID_RE.match(upid)
    decoded = Tasks.decode_upid(upid)
    assert decoded["type"] == "qmclone" and decoded["id"] == "9000" and decoded["user"] == "root@pam"
    assert abs(decoded["starttime"] - time.time()) < 10
    running = api.nodes(lab.node).tasks(upid).status.get()
    assert running["status"] == "running" and "exitstatus" not in running
    assert running["pid"] == decoded["pid"]
    final = lab.wait(upid)
    assert final["status"] == "stopped" and final["exitstatus"] == "OK"


def test_failed_task_ends_with_task_error_line(emulator):
    node = emulator.api().nodes(emulator.node)
    upid = node.qemu(9000).resize.put(disk="scsi0", size="1G")
    status = emulator.wait(upid)
    assert status["exitstatus"] == "shrinking disks is not supported"
    assert node.tasks(upid).log.get()[-1]["t"] == "TASK ERROR: shrinking disks is not supported"
