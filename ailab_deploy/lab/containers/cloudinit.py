"""PVE's cloud-init drive, as a NoCloud seed directory.

The data is derived from the VM config exactly as qemu-server's Cloudinit.pm does for
``citype: nocloud``: user-data from ciuser/sshkeys/cipassword/name/searchdomain, a v1
network-config from net0/ipconfig0/nameserver/searchdomain, and ``cicustom`` volumes
replacing the generated parts. The instance-id is a digest of the generated data and the
cicustom volume ids (not the snippets' content, as in PVE), so a config change re-runs
cloud-init's per-instance modules.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ailab_deploy.lab.backend import BackendError, VMConfig

SEED_DIR = "var/lib/cloud/seed/nocloud"
SEED_PARTS = ("user", "network", "meta", "vendor")
MASKED_PASSWORD = "**********"


@dataclass(frozen=True)
class Seed:
    user_data: str
    network_config: str
    meta_data: str
    vendor_data: str | None = None

    def files(self) -> dict[str, str]:
        files = {
            "user-data": self.user_data,
            "network-config": self.network_config,
            "meta-data": self.meta_data,
        }
        if self.vendor_data is not None:
            files["vendor-data"] = self.vendor_data
        return files


def property_string(value: object) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}; a leading bare value is kept under its position key."""
    fields = {}
    for part in str(value or "").split(","):
        key, sep, val = part.partition("=")
        if sep:
            fields[key.strip()] = val.strip()
    return fields


def hostname_and_fqdn(vmid: int, config: VMConfig) -> tuple[str, str | None]:
    name = str(config.get("name") or f"VM{vmid}")
    if "." in name:
        return name.split(".", 1)[0], name
    domains = address_list(config.get("searchdomain"))
    return name, f"{name}.{domains[0]}" if domains else None


def address_list(value: object) -> list[str]:
    return [item for item in str(value or "").replace(",", " ").split() if item]


def ssh_keys(config: VMConfig) -> list[str]:
    """sshkeys is stored percent-encoded, several keys separated by newlines."""
    text = unquote(str(config.get("sshkeys") or ""))
    return [line.strip() for line in text.splitlines() if line.strip()]


def user_data(vmid: int, config: VMConfig) -> str:
    hostname, fqdn = hostname_and_fqdn(vmid, config)
    data: dict[str, Any] = {"hostname": hostname, "manage_etc_hosts": True}
    if fqdn:
        data["fqdn"] = fqdn
    user = config.get("ciuser")
    if user:
        data["user"] = str(user)
        if user == "root":
            data["disable_root"] = False
    password = str(config.get("cipassword") or "")
    if password and password != MASKED_PASSWORD:
        data["password"] = password
    keys = ssh_keys(config)
    if keys:
        data["ssh_authorized_keys"] = keys
    data["chpasswd"] = {"expire": False}
    if user != "root":
        data["users"] = ["default"]
    # PVE defaults ciupgrade to on; the lab upgrades only when asked, to boot offline and fast.
    if str(config.get("ciupgrade", "0")) == "1":
        data["package_upgrade"] = True
    return "#cloud-config\n" + json.dumps(data, indent=2) + "\n"


def network_config(config: VMConfig) -> str:
    """A cloud-init v1 network config for net0 (the container's only NIC, ``eth0``)."""
    # PVE also matches net0's MAC; cloud-init ignores a veth as "not physical", so the
    # container's NIC is matched by name (it still carries net0's MAC).
    interface: dict[str, Any] = {"type": "physical", "name": "eth0"}
    ipconfig = property_string(config.get("ipconfig0"))
    subnets: list[dict[str, str]] = []
    ip = ipconfig.get("ip")
    if ip == "dhcp":
        subnets.append({"type": "dhcp4"})
    elif ip:
        try:
            network = ipaddress.IPv4Interface(ip)
        except ValueError as exc:
            raise BackendError(f"ipconfig0: invalid ip {ip!r}") from exc
        subnet = {
            "type": "static",
            "address": str(network.ip),
            "netmask": str(network.netmask),
        }
        if ipconfig.get("gw"):
            subnet["gateway"] = ipconfig["gw"]
        subnets.append(subnet)
    interface["subnets"] = subnets
    entries: list[dict[str, Any]] = [interface]
    nameservers = address_list(config.get("nameserver"))
    domains = address_list(config.get("searchdomain"))
    if nameservers or domains:
        entries.append({"type": "nameserver", "address": nameservers, "search": domains})
    return json.dumps({"version": 1, "config": entries}, indent=2) + "\n"


def mac_address(config: VMConfig) -> str | None:
    """net0 is ``model=MAC,bridge=...``; the MAC is the value of the model key."""
    for key, value in property_string(config.get("net0")).items():
        if key in ("virtio", "e1000", "e1000e", "vmxnet3", "rtl8139", "macaddr"):
            return value.lower()
    return None


@dataclass(frozen=True)
class Storages:
    """Where each PVE storage keeps its files: ``<root>/<storage>`` unless ``paths`` says else
    (the emulator's settings may give a storage its own path)."""

    root: Path
    paths: Mapping[str, Path] = field(default_factory=dict)

    def dir(self, storage: str) -> Path:
        return self.paths.get(storage, self.root / storage)


def snippet_path(volume: str, storages: Storages) -> Path:
    """``local:snippets/u.yaml`` -> <local's dir>/snippets/u.yaml (must exist)."""
    storage, sep, relative = volume.partition(":")
    parts = Path(relative).parts
    if not sep or not parts or parts[0] != "snippets" or ".." in parts:
        raise BackendError(f"cicustom: unable to parse volume '{volume}'")
    path = storages.dir(storage) / relative
    if not path.is_file():
        raise BackendError(f"volume '{volume}' does not exist")
    return path


def render_seed(vmid: int, config: VMConfig, storages: Storages) -> Seed:
    custom = property_string(config.get("cicustom"))
    unknown = set(custom) - set(SEED_PARTS)
    if unknown:
        raise BackendError(f"cicustom: unknown key(s) {', '.join(sorted(unknown))}")
    texts = {part: snippet_path(custom[part], storages).read_text() for part in custom}
    generated_user = user_data(vmid, config)
    generated_network = network_config(config)
    digest_input = generated_user + generated_network + str(config.get("cicustom") or "")
    instance_id = hashlib.sha1(digest_input.encode()).hexdigest()
    return Seed(
        user_data=texts.get("user", generated_user),
        network_config=texts.get("network", generated_network),
        meta_data=texts.get("meta", f"instance-id: {instance_id}\n"),
        vendor_data=texts.get("vendor"),
    )


def write_seed(rootfs: Path, seed: Seed) -> None:
    """Replace the guest's NoCloud seed (regenerated on every start, like PVE's drive)."""
    seed_dir = rootfs / SEED_DIR
    seed_dir.mkdir(parents=True, exist_ok=True)
    for stale in seed_dir.iterdir():
        stale.unlink()
    for name, content in seed.files().items():
        path = seed_dir / name
        path.write_text(content)
        path.chmod(0o600)
