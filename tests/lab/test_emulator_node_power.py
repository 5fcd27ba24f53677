"""The node's startall/stopall (what pve-guests.service runs at boot and shutdown, and what
`lab up` / `lab down` call): onboot VMs by startup order, stopped in reverse."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab


def clone(lab, api, vmid: int, **config: object) -> None:
    node = api.nodes(lab.node)
    assert lab.wait(node.qemu(9000).clone.post(newid=vmid, name=f"vm{vmid}"))["exitstatus"] == "OK"
    if config:
        node.qemu(vmid).config.put(**config)


def running(api, lab) -> set[int]:
    return {int(vm["vmid"]) for vm in api.nodes(lab.node).qemu.get() if vm["status"] == "running"}


def test_startall_starts_onboot_vms_in_startup_order(emulator):
    api = emulator.api()
    clone(emulator, api, 101, onboot=1, startup="order=2")
    clone(emulator, api, 102, onboot=1, startup="order=1")
    clone(emulator, api, 103, onboot=0)
    upid = api.nodes(emulator.node).startall.post()
    assert ":startall:" in upid
    assert emulator.wait(upid)["exitstatus"] == "OK"
    assert running(api, emulator) == {101, 102}
    log = [line["t"] for line in api.nodes(emulator.node).tasks(upid).log.get()]
    starts = [line for line in log if line.startswith("Starting VM")]
    assert starts == ["Starting VM 102", "Starting VM 101"]  # order=1 first


def test_startall_with_force_starts_every_vm_but_templates(emulator):
    api = emulator.api()
    clone(emulator, api, 101, onboot=0)
    assert emulator.wait(api.nodes(emulator.node).startall.post(force=1))["exitstatus"] == "OK"
    assert running(api, emulator) == {101}


def test_stopall_stops_every_running_vm(emulator):
    api = emulator.api()
    clone(emulator, api, 101, onboot=1)
    clone(emulator, api, 102, onboot=1)
    emulator.wait(api.nodes(emulator.node).startall.post())
    assert running(api, emulator) == {101, 102}
    assert emulator.wait(api.nodes(emulator.node).stopall.post(timeout=5))["exitstatus"] == "OK"
    assert running(api, emulator) == set()


def test_startall_refuses_an_unknown_parameter(emulator):
    api = emulator.api()
    with pytest.raises(Exception, match="400"):
        api.nodes(emulator.node).startall.post(bogus=1)
