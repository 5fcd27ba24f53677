"""Fixtures for the container-VM tests (``pytest --lab``, root): the lab infrastructure, three
VMs cloned from the template, and SSH into them with host-key checking."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import paramiko
import pytest

from ailab_deploy.lab.containers import ContainerBackend, LabInfra, lab_down, lab_up, network
from ailab_deploy.lab.containers.node import lab_key

TEMPLATE_VMID = 9000
CIUSER = "ailab"
VMS = {101: ("lab-vm1", "10.77.0.10"), 102: ("lab-vm2", "10.77.0.11"), 103: ("lab-vm3", "10.77.0.12")}
BOOT_TIMEOUT = 60.0


def vm_config(vmid: int, public_key: str, **extra: str) -> dict[str, str]:
    """A VM config as the emulator's GET .../config returns it."""
    name, address = VMS[vmid]
    return {
        "name": name,
        "ciuser": CIUSER,
        "sshkeys": quote(public_key, safe=""),
        "ipconfig0": f"ip={address}/24,gw={network.GATEWAY}",
        "nameserver": network.GATEWAY,
        "searchdomain": "lab.test",
        "net0": f"virtio=BC:24:11:00:00:{vmid % 100:02X},bridge={network.BRIDGE}",
        **extra,
    }


SSH_CONNECT_ATTEMPTS = 4


def ssh_client(address: str, user: str, key: Path, host_keys: list[str], tmp: Path) -> paramiko.SSHClient:
    """Connect with key auth, trusting only the host keys read from the guest's disk."""
    known_hosts = tmp / f"known_hosts-{address}"
    known_hosts.write_text("".join(f"{address} {key_line}\n" for key_line in host_keys))
    # sshd may still be restarted by first-boot units just after it first answers (seen once in
    # CI as an EOF during key auth), so a few attempts, bounded; a wrong key still fails.
    for attempt in range(1, SSH_CONNECT_ATTEMPTS + 1):
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                address,
                username=user,
                key_filename=str(key),
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            return client
        except (paramiko.SSHException, EOFError, OSError):
            client.close()
            if attempt == SSH_CONNECT_ATTEMPTS:
                raise
            time.sleep(2.0 * attempt)
    raise AssertionError("unreachable")


def ssh_run(client: paramiko.SSHClient, command: str, timeout: float = 300) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    rc = stdout.channel.recv_exit_status()
    return rc, stdout.read().decode(), stderr.read().decode()


@dataclass
class VMLab:
    lab_dir: Path
    infra: LabInfra
    backend: ContainerBackend
    user_key: Path
    tmp: Path
    ready_seconds: dict[int, float]
    clients: dict[int, paramiko.SSHClient]


@contextmanager
def running_vm_lab(tmp: Path) -> Iterator[VMLab]:
    """Lab up, three VMs cloned from the template and SSH-ready; everything removed after."""
    if os.geteuid() != 0:
        pytest.skip("container VMs need root")
    for tool in ("debootstrap", "systemd-nspawn", "tinyproxy", "nft", "ip"):
        assert shutil.which(tool), f"{tool} is not installed (see .ci/apt-packages.txt)"
    lab_dir = tmp / "lab"
    user_key = lab_key(tmp / "user")
    public_key = user_key.with_suffix(".pub").read_text().strip()
    infra = lab_up(lab_dir)
    backend = ContainerBackend(lab_dir, template_rootfs=infra.template.rootfs)
    lab = VMLab(lab_dir, infra, backend, user_key, tmp, {}, {})
    try:
        backend.register_template(TEMPLATE_VMID, {"name": "debian-13-cloud", "template": 1})
        started = {}
        for vmid in VMS:
            backend.clone(TEMPLATE_VMID, vmid, {})
            started[vmid] = time.monotonic()
            backend.start(vmid, vm_config(vmid, public_key))
        for vmid, (_, address) in VMS.items():
            network.wait_ssh(address, BOOT_TIMEOUT)
            lab.ready_seconds[vmid] = time.monotonic() - started[vmid]
            backend.wait_booted(vmid, BOOT_TIMEOUT)
            lab.clients[vmid] = ssh_client(address, CIUSER, user_key, backend.host_keys(vmid), tmp)
        yield lab
    finally:
        for client in lab.clients.values():
            client.close()
        for vmid in (*VMS, TEMPLATE_VMID):
            backend.destroy(vmid)
        lab_down(lab_dir, purge=True)
