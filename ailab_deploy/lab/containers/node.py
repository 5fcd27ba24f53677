"""The Proxmox node itself: container ``pve`` at 10.77.0.2, root SSH with the lab key, and the
emulator's storage (<lab-dir>/storage/local) bind-mounted at /var/lib/vz."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailab_deploy.lab.containers import network
from ailab_deploy.lab.containers.backend import machines_dir, storage_root
from ailab_deploy.lab.containers.cloudinit import Storages
from ailab_deploy.lab.containers.machine import Machine
from ailab_deploy.lab.containers.node_hardware import write_node_hardware
from ailab_deploy.lab.containers.provision import HOST_CA_BUNDLE, start_guest
from ailab_deploy.lab.emulator.settings import load_settings

log = logging.getLogger(__name__)

NODE_NAME = "pve"
NODE_VMID = 0  # only names the cloud-init instance; the node is not a VM
STORAGE_CONTENT_DIRS = ("snippets", "import", "iso", "images", "template/cache", "dump")
BOOT_TIMEOUT = 90.0


@dataclass(frozen=True)
class NodeInfo:
    address: str
    user: str
    private_key: Path
    known_hosts: Path
    storage_dir: Path


def ssh_dir(lab_dir: Path) -> Path:
    return lab_dir / "ssh"


def lab_key(lab_dir: Path) -> Path:
    """The controller's key for the node (ed25519, 0600), generated once per lab dir."""
    private = ssh_dir(lab_dir) / "lab_ed25519"
    public = private.with_suffix(".pub")
    if private.is_file() and public.is_file():
        return private
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    private.touch(mode=0o600)
    private.write_bytes(pem)
    openssh = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public.write_text(openssh.decode() + " ailab-lab\n")
    return private


def node_machine(lab_dir: Path) -> Machine:
    return Machine(NODE_NAME, machines_dir(lab_dir) / NODE_NAME)


def node_storage(lab_dir: Path, local: Path | None = None) -> Path:
    """The ``local`` storage dir (created with PVE's content dirs), shared as /var/lib/vz."""
    local = local or storage_root(lab_dir) / "local"
    for content in STORAGE_CONTENT_DIRS:
        (local / content).mkdir(parents=True, exist_ok=True)
    return local


# The node's own view of the storage it shares with the emulator: ``local`` at PVE's path.
NODE_STORAGE_CFG = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup,snippets,import\n"


def write_node_storage_cfg(rootfs: Path) -> None:
    """``/etc/pve/storage.cfg`` on the node, which node preparation reads the snippets path from."""
    cfg = rootfs / "etc/pve/storage.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(NODE_STORAGE_CFG)


def node_up(
    lab_dir: Path,
    template_rootfs: Path,
    *,
    host_ca_bundle: Path | None = HOST_CA_BUNDLE,
    storage_dir: Path | None = None,
) -> NodeInfo:
    """Boot the node container (idempotent) and wait until it answers SSH."""
    private_key = lab_key(lab_dir)
    storage = node_storage(lab_dir, storage_dir)
    machine = node_machine(lab_dir)
    if not machine.is_running():
        if not machine.exists():
            machine.create([template_rootfs])
        config = {
            "name": NODE_NAME,
            "ciuser": "root",  # as PVE renders it: root keeps its keys, no default user
            "sshkeys": quote(private_key.with_suffix(".pub").read_text().strip(), safe=""),
            "ipconfig0": f"ip={network.NODE_ADDRESS}/{network.SUBNET.prefixlen},gw={network.GATEWAY}",
            "nameserver": network.GATEWAY,
        }
        network.claim(lab_dir)
        network.bridge_up()
        start_guest(
            machine,
            NODE_VMID,
            config,
            storages=Storages(storage_root(lab_dir), {"local": storage}),
            host_ca_bundle=host_ca_bundle,
            binds={storage: "/var/lib/vz"},
        )
    write_node_storage_cfg(machine.rootfs)
    write_node_hardware(machine.rootfs, load_settings(lab_dir))  # what discover reads over SSH
    machine.wait_booted(BOOT_TIMEOUT)
    network.wait_ssh(network.NODE_ADDRESS, BOOT_TIMEOUT)
    known_hosts = ssh_dir(lab_dir) / "known_hosts"
    host_keys = sorted((machine.rootfs / "etc/ssh").glob("ssh_host_*_key.pub"))
    known_hosts.write_text(
        "".join(f"{network.NODE_ADDRESS} {' '.join(k.read_text().split()[:2])}\n" for k in host_keys)
    )
    log.info("node %s up at %s", NODE_NAME, network.NODE_ADDRESS)
    return NodeInfo(network.NODE_ADDRESS, "root", private_key, known_hosts, storage)


def node_down(lab_dir: Path) -> None:
    """Stop and remove the node container (its storage dir stays: it is the emulator's)."""
    node_machine(lab_dir).destroy()
