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


def node_machine(lab_dir: Path, name: str = NODE_NAME) -> Machine:
    return Machine(name, machines_dir(lab_dir) / name)


def node_storage(lab_dir: Path, local: Path | None = None) -> Path:
    """The ``local`` storage dir (created with PVE's content dirs), shared as /var/lib/vz."""
    local = local or storage_root(lab_dir) / "local"
    for content in STORAGE_CONTENT_DIRS:
        (local / content).mkdir(parents=True, exist_ok=True)
    return local


# The node's own view of the storage it shares with the emulator: ``local`` at PVE's path.
NODE_STORAGE_CFG = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup,snippets,import\n"


# A cluster node also mounts the storage all nodes share, where PVE mounts network storage
SHARED_MOUNT = "/mnt/pve/shared"
NODE_SHARED_STORAGE_CFG = (
    f"\ndir: shared\n\tpath {SHARED_MOUNT}\n\tcontent images,rootdir,snippets,import,iso,backup\n\tshared 1\n"
)


def write_node_storage_cfg(rootfs: Path, shared: bool = False) -> None:
    """``/etc/pve/storage.cfg`` on the node, which node preparation reads the snippets path from."""
    cfg = rootfs / "etc/pve/storage.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(NODE_STORAGE_CFG + (NODE_SHARED_STORAGE_CFG if shared else ""))


def node_up(
    lab_dir: Path,
    template_rootfs: Path,
    *,
    host_ca_bundle: Path | None = HOST_CA_BUNDLE,
    storage_dir: Path | None = None,
    name: str = NODE_NAME,
    address: str = network.NODE_ADDRESS,
    shared_dir: Path | None = None,
) -> NodeInfo:
    """Boot the node container (idempotent) and wait until it answers SSH. A cluster node
    (``name``, ``address``) has its own ``storage_dir`` and mounts ``shared_dir`` too."""
    private_key = lab_key(lab_dir)
    storage = node_storage(lab_dir, storage_dir)
    machine = node_machine(lab_dir, name)
    binds = {storage: "/var/lib/vz"}
    if shared_dir is not None:
        shared_dir.mkdir(parents=True, exist_ok=True)
        binds[shared_dir] = SHARED_MOUNT
    if not machine.is_running():
        if not machine.exists():
            machine.create([template_rootfs])
        config = {
            "name": name,
            "ciuser": "root",  # as PVE renders it: root keeps its keys, no default user
            "sshkeys": quote(private_key.with_suffix(".pub").read_text().strip(), safe=""),
            "ipconfig0": f"ip={address}/{network.SUBNET.prefixlen},gw={network.GATEWAY}",
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
            binds=binds,
        )
    write_node_storage_cfg(machine.rootfs, shared=shared_dir is not None)
    write_node_hardware(machine.rootfs, load_settings(lab_dir))  # what discover reads over SSH
    machine.wait_booted(BOOT_TIMEOUT)
    network.wait_ssh(address, BOOT_TIMEOUT)
    known_hosts = ssh_dir(lab_dir) / "known_hosts"
    host_keys = sorted((machine.rootfs / "etc/ssh").glob("ssh_host_*_key.pub"))
    # one line per key of this node; other nodes' lines stay
    kept = [
        line
        for line in (known_hosts.read_text().splitlines() if known_hosts.exists() else [])
        if line.split(" ", 1)[0] != address
    ]
    lines = kept + [f"{address} {' '.join(k.read_text().split()[:2])}" for k in host_keys]
    known_hosts.write_text("".join(line + "\n" for line in lines))
    log.info("node %s up at %s", name, address)
    return NodeInfo(address, "root", private_key, known_hosts, storage)


def node_down(lab_dir: Path, name: str = NODE_NAME) -> None:
    """Stop and remove the node container (its storage dir stays: it is the emulator's)."""
    node_machine(lab_dir, name).destroy()
