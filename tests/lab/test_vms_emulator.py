"""The container backend behind the Proxmox API emulator: clone three VMs from template 9000,
configure cloud-init through the API, start them, read their address from the guest agent and
SSH in. Root only (``pytest --lab``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from ailab_deploy.lab.containers import ContainerBackend, lab_down, leftovers, network
from ailab_deploy.lab.containers.node import lab_key
from tests.lab.vm_fixtures import CIUSER, TEMPLATE_VMID, VMS, ssh_client, ssh_run

pytestmark = pytest.mark.vm


def _agent_ipv4(api: ProxmoxAPI, node: str, vmid: int, timeout: float = 60) -> str:
    """Poll the guest agent like a client would, until eth0 has an IPv4 address."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = api.nodes(node).qemu(vmid).agent("network-get-interfaces").get()["result"]
            for interface in result:
                for address in interface.get("ip-addresses", []):
                    if interface["name"] == "eth0" and address["ip-address-type"] == "ipv4":
                        return str(address["ip-address"])
        except ResourceException as exc:
            assert "QEMU guest agent is not running" in str(exc), exc
        assert time.monotonic() < deadline, f"VM {vmid}: no agent answer in {timeout} s"
        time.sleep(0.5)


def test_three_vms_through_the_api(make_emulator: Callable[..., Any], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("container VMs need root")
    lab = make_emulator(backend="containers")
    assert isinstance(lab.emulator.backend, ContainerBackend)
    assert lab.emulator.backend.storages.dir("local") == lab.lab_dir / "storage" / "local"
    api, node = lab.api(), lab.node
    user_key = lab_key(tmp_path / "user")
    public_key = user_key.with_suffix(".pub").read_text().strip()
    try:
        for vmid, (name, address) in VMS.items():
            upid = api.nodes(node).qemu(TEMPLATE_VMID).clone.post(newid=vmid, name=name)
            assert lab.wait(upid, timeout=60)["exitstatus"] == "OK"
            api.nodes(node).qemu(vmid).config.put(
                ciuser=CIUSER,
                sshkeys=quote(public_key, safe=""),
                ipconfig0=f"ip={address}/24,gw={network.GATEWAY}",
                nameserver=network.GATEWAY,
            )
            upid = api.nodes(node).qemu(vmid).status.start.post()
            assert lab.wait(upid, timeout=60)["exitstatus"] == "OK"
        for vmid, (name, address) in VMS.items():
            assert _agent_ipv4(api, node, vmid) == address
            backend: ContainerBackend = lab.emulator.backend
            client = ssh_client(address, CIUSER, user_key, backend.host_keys(vmid), tmp_path)
            try:
                assert ssh_run(client, "hostname; systemctl is-system-running") == (
                    0,
                    f"{name}\nrunning\n",
                    "",
                )
            finally:
                client.close()
        for vmid in VMS:
            # One clean shutdown (the guest powers itself off), the others hard stops.
            action = "shutdown" if vmid == min(VMS) else "stop"
            upid = getattr(api.nodes(node).qemu(vmid).status, action).post()
            assert lab.wait(upid, timeout=60)["exitstatus"] == "OK"
            assert not lab.emulator.backend.is_running(vmid)
            assert api.nodes(node).qemu(vmid).status.current.get()["status"] == "stopped"
            upid = api.nodes(node).qemu(vmid).delete()
            assert lab.wait(upid, timeout=60)["exitstatus"] == "OK"
            assert not (lab.lab_dir / "machines" / str(vmid)).exists()
    finally:
        lab.stop()
        lab_down(lab.lab_dir, purge=True)
    assert leftovers(lab.lab_dir) == []
