"""Booting a machine the way PVE boots a VM: fresh cloud-init seed, trusted CAs, then start."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ailab_deploy.lab.backend import VMConfig
from ailab_deploy.lab.containers.cloudinit import (
    Seed,
    Storages,
    mac_address,
    render_seed,
    write_seed,
)
from ailab_deploy.lab.containers.machine import Machine

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
GUEST_CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
GUEST_CA_DIR = "usr/local/share/ca-certificates/ailab-host"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def pem_certificates(text: str) -> list[str]:
    return ["\n".join(line.strip() for line in m.splitlines()) for m in _PEM.findall(text)]


def install_host_ca(rootfs: Path, host_bundle: Path = HOST_CA_BUNDLE) -> int:
    """Add the host's CAs the guest lacks (e.g. an intercepting proxy's) to its trust store.

    Each goes to /usr/local/share/ca-certificates (kept by update-ca-certificates) and into
    the bundle itself, so it works at once without running anything in the guest.
    Returns how many were added.
    """
    bundle = rootfs / GUEST_CA_BUNDLE
    known = set(pem_certificates(bundle.read_text())) if bundle.is_file() else set()
    missing = [c for c in pem_certificates(host_bundle.read_text()) if c not in known]
    if not missing:
        return 0
    directory = rootfs / GUEST_CA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for cert in missing:
        name = hashlib.sha256(cert.encode()).hexdigest()[:16]
        (directory / f"host-{name}.crt").write_text(cert + "\n")
    with bundle.open("a") as out:
        out.write("".join(cert + "\n" for cert in missing))
    return len(missing)


def start_guest(
    machine: Machine,
    vmid: int,
    config: VMConfig,
    *,
    storages: Storages,
    host_ca_bundle: Path | None,
    binds: dict[Path, str] | None = None,
    seed: Seed | None = None,
) -> None:
    """Mount the disk, write the NoCloud seed (and CAs), and boot. Torn down again on failure."""
    seed = seed or render_seed(vmid, config, storages)
    try:
        rootfs = machine.mount()
        write_seed(rootfs, seed)
        if host_ca_bundle is not None:
            install_host_ca(rootfs, host_ca_bundle)
        machine.boot(mac=mac_address(config), binds=binds)
    except BaseException:
        machine.stop()
        raise
