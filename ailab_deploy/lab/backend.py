"""The boundary between the Proxmox API emulator and whatever makes its VMs real.

The emulator owns the VM *state* (config files, locks, tasks). On life-cycle
events it calls a backend. The config passed in is the VM's current config as
the emulator stores it (the same strings GET .../config returns, e.g.
``{"name": "postgres", "ipconfig0": "ip=10.77.0.10/24,gw=10.77.0.1",
"sshkeys": "ssh-ed25519%20AAAA...", "ciuser": "ailab", ...}``), so a backend
derives cloud-init data exactly as PVE does when it builds the cloud-init drive.

Backend methods run inside the emulator's task workers: raising
:class:`BackendError` fails the task with that message (``TASK ERROR: msg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ailab_deploy.lab import archive

VMConfig = dict[str, Any]


class BackendError(Exception):
    """A backend action failed; the message becomes the task's exit status."""


class AgentNotRunning(BackendError):
    """The guest has not booted far enough to answer (PVE: 'QEMU guest agent is not running')."""


@runtime_checkable
class VMBackend(Protocol):
    """What the emulator needs from a VM implementation."""

    name: str

    def register_template(self, vmid: int, config: VMConfig) -> None:
        """Make ``vmid`` (already a template in state) a valid clone source."""

    def clone(self, source_vmid: int, new_vmid: int, config: VMConfig) -> None:
        """Create ``new_vmid``'s disk as a copy of ``source_vmid``'s (copy-on-write is fine)."""

    def create(self, vmid: int, config: VMConfig) -> None:
        """Create an empty VM, or one whose disk is imported (``import-from``)."""

    def start(self, vmid: int, config: VMConfig) -> None:
        """Boot the VM. Regenerate cloud-init data from ``config`` first, as PVE does."""

    def stop(self, vmid: int) -> None:
        """Hard stop. A stopped VM is a no-op."""

    def shutdown(self, vmid: int, timeout: float) -> None:
        """Clean shutdown, forced after ``timeout`` seconds."""

    def reboot(self, vmid: int, config: VMConfig) -> None:
        """Shutdown then start with the (possibly changed) config."""

    def destroy(self, vmid: int) -> None:
        """Remove everything the VM owns. Must leave nothing behind."""

    def is_running(self, vmid: int) -> bool:
        """Whether the VM's guest is up (used for status after an emulator restart)."""

    def agent_network_interfaces(self, vmid: int) -> list[dict[str, Any]]:
        """The guest's interfaces in QEMU guest-agent shape; raise AgentNotRunning before boot."""

    def backup(self, vmid: int, config: VMConfig, target: Path) -> None:
        """Write ``config`` and the VM's disk into the archive ``target`` (see lab/archive.py);
        a running guest is frozen meanwhile, as PVE's snapshot mode freezes its filesystems."""

    def restore(self, vmid: int, config: VMConfig, source: Path) -> None:
        """Make ``vmid``'s disk the one in the archive ``source`` (no disk of it exists yet)."""


class NullBackend:
    """API-only lab: VMs exist only as state. The agent reports the ipconfig0 address."""

    name = "null"

    def __init__(self) -> None:
        self._running: set[int] = set()
        self._configs: dict[int, VMConfig] = {}

    def register_template(self, vmid: int, config: VMConfig) -> None:
        self._configs[vmid] = dict(config)

    def clone(self, source_vmid: int, new_vmid: int, config: VMConfig) -> None:
        self._configs[new_vmid] = dict(config)

    def create(self, vmid: int, config: VMConfig) -> None:
        self._configs[vmid] = dict(config)

    def start(self, vmid: int, config: VMConfig) -> None:
        self._configs[vmid] = dict(config)
        self._running.add(vmid)

    def stop(self, vmid: int) -> None:
        self._running.discard(vmid)

    def shutdown(self, vmid: int, timeout: float) -> None:
        self._running.discard(vmid)

    def reboot(self, vmid: int, config: VMConfig) -> None:
        self._configs[vmid] = dict(config)
        self._running.add(vmid)

    def destroy(self, vmid: int) -> None:
        self._running.discard(vmid)
        self._configs.pop(vmid, None)

    def is_running(self, vmid: int) -> bool:
        return vmid in self._running

    def backup(self, vmid: int, config: VMConfig, target: Path) -> None:
        try:
            archive.write(target, config)  # no disk: the archive holds the config only
        except archive.ArchiveError as error:
            raise BackendError(str(error)) from error

    def restore(self, vmid: int, config: VMConfig, source: Path) -> None:
        self._configs[vmid] = dict(config)

    def agent_network_interfaces(self, vmid: int) -> list[dict[str, Any]]:
        if vmid not in self._running:
            raise AgentNotRunning("QEMU guest agent is not running")
        ipconfig = str(self._configs.get(vmid, {}).get("ipconfig0", ""))
        fields = dict(part.split("=", 1) for part in ipconfig.split(",") if "=" in part)
        addresses = [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]
        interfaces: list[dict[str, Any]] = [
            {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": addresses}
        ]
        ip = fields.get("ip", "")
        if "/" in ip:
            address, prefix = ip.split("/", 1)
            interfaces.append(
                {
                    "name": "eth0",
                    "ip-addresses": [
                        {"ip-address-type": "ipv4", "ip-address": address, "prefix": int(prefix)}
                    ],
                }
            )
        return interfaces
