"""The backup job run now and a VM restored through the provisioning engine, against the API
emulator: the archive chosen, the VM back under the tool's management and in the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.errors import AilabError, InputError
from tests.lab.provision_fixtures import LAB_OPTIONS, make_engine

pytestmark = pytest.mark.lab


def _wait(emulator: Any, upid: str) -> None:
    assert emulator.wait(upid)["exitstatus"] == "OK"


def test_restore_brings_a_lost_vm_back_from_its_newest_archive(make_emulator: Any, tmp_path: Path) -> None:
    emulator = make_emulator(clock_speed=600.0)  # ten lab minutes a second: archives a second apart differ
    engine = make_engine(emulator, tmp_path)
    engine.provisioner().apply(LAB_OPTIONS)
    with pytest.raises(AilabError, match=r"postgres \(VM 100\) has no vzdump archive on any backup storage"):
        engine.provisioner().restore("postgres", None, LAB_OPTIONS)

    [upid] = engine.provisioner().back_up_now(LAB_OPTIONS)  # one node: one task
    assert upid.split(":")[5] == "vzdump"
    first = engine.provisioner().backup_archives(100)
    engine.provisioner().back_up_now(LAB_OPTIONS)
    archives = engine.provisioner().backup_archives(100)
    assert len(archives) == len(first) + 1 == 2
    assert archives[0]["ctime"] > archives[1]["ctime"]  # newest first
    assert {int(a["vmid"]) for a in engine.provisioner().backup_archives()} == {100, 101, 102}

    api = emulator.api().nodes(emulator.node)
    _wait(emulator, api.qemu(100).status.stop.post())
    _wait(emulator, api.qemu(100).delete())  # lost on the node; the tool's ledger still has it
    with pytest.raises(
        InputError, match=r"--archive: local:backup/nosuch\.vma\.zst is not an archive of postgres"
    ):
        engine.provisioner().restore("postgres", "local:backup/nosuch.vma.zst", LAB_OPTIONS)
    with pytest.raises(InputError, match="--vm: no VM named 'nosuch'"):
        engine.provisioner().restore("nosuch", None, LAB_OPTIONS)

    result = engine.provisioner().restore("postgres", None, LAB_OPTIONS)
    assert (result.vmid, result.archive) == (100, archives[0]["volid"])
    assert 0 < result.restore_seconds <= result.seconds
    assert api.qemu(100).status.current.get()["status"] == "running"
    assert engine.provisioner().compute().vms[0].actions[0].kind == "no-op"
    job = emulator.api().cluster.backup(f"ailab-{emulator.node}").get()
    assert job["vmid"] == "100,101,102"

    # over the existing (running) VM, from the older archive: stopped, then restored with force
    older = engine.provisioner().restore("postgres", archives[1]["volid"], LAB_OPTIONS)
    assert older.archive == archives[1]["volid"]
    tasks = api.tasks.get(typefilter="qmrestore", vmid=100)
    assert len(tasks) == 2 and all(task["status"] == "OK" for task in tasks)
    assert any(event == "postgres: stop: stopped" for event in engine.events)


def test_restore_refuses_to_overwrite_a_vm_it_does_not_manage(make_emulator: Any, tmp_path: Path) -> None:
    emulator = make_emulator()
    engine = make_engine(emulator, tmp_path)
    engine.provisioner().apply(LAB_OPTIONS)
    engine.provisioner().back_up_now(LAB_OPTIONS)
    made = engine.provisioner()
    made.ledger.forget_vm(100)  # the ledger no longer knows VM 100...
    emulator.api().nodes(emulator.node).qemu(100).config.put(name="someone-else")  # ...and it is another VM
    with pytest.raises(AilabError, match="VM 100 on the node is 'someone-else', not postgres"):
        engine.provisioner().restore("postgres", None, LAB_OPTIONS)
