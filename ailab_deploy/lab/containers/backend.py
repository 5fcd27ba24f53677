"""ContainerBackend: the emulator's VMs as systemd-nspawn containers (see docs/lab-vms.md)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ailab_deploy.errors import LabError
from ailab_deploy.lab import archive
from ailab_deploy.lab.backend import AgentNotRunning, BackendError, VMConfig
from ailab_deploy.lab.containers import network
from ailab_deploy.lab.containers.cloudinit import Storages
from ailab_deploy.lab.containers.image import DEFAULT_RELEASE, build_template
from ailab_deploy.lab.containers.machine import Machine, frozen
from ailab_deploy.lab.containers.proc import run
from ailab_deploy.lab.containers.provision import HOST_CA_BUNDLE, start_guest

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 60.0
_bridge_lock = threading.Lock()


def machines_dir(lab_dir: Path) -> Path:
    return lab_dir / "machines"


def storage_root(lab_dir: Path) -> Path:
    """The emulator's default: storage ``<name>`` keeps its files in <lab-dir>/storage/<name>."""
    return lab_dir / "storage"


@contextmanager
def _as_task_error() -> Iterator[None]:
    """Lab failures become BackendError, so the emulator fails the task with the message."""
    try:
        yield
    except LabError as exc:
        raise BackendError(str(exc)) from exc


def agent_interfaces(ip_json: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ip -j -s addr`` output in QEMU guest-agent ``network-get-interfaces`` shape."""
    interfaces = []
    for link in ip_json:
        addresses = [
            {
                "ip-address-type": "ipv4" if addr["family"] == "inet" else "ipv6",
                "ip-address": addr["local"],
                "prefix": addr["prefixlen"],
            }
            for addr in link.get("addr_info", [])
            if addr.get("family") in ("inet", "inet6") and "local" in addr
        ]
        interface: dict[str, Any] = {"name": link["ifname"], "ip-addresses": addresses}
        if "address" in link:
            interface["hardware-address"] = link["address"]
        stats = link.get("stats64")
        if stats:
            interface["statistics"] = {
                f"{direction}-{name}": stats[direction][key]
                for direction in ("rx", "tx")
                for name, key in (
                    ("bytes", "bytes"),
                    ("packets", "packets"),
                    ("errs", "errors"),
                    ("dropped", "dropped"),
                )
            }
        interfaces.append(interface)
    return interfaces


class ContainerBackend:
    """VMs as overlayfs copies of the template image, booted by systemd-nspawn."""

    name = "containers"

    def __init__(
        self,
        lab_dir: Path,
        *,
        image_cache: Path | None = None,
        template_rootfs: Path | None = None,
        trust_host_ca: bool = True,
        host_ca_bundle: Path = HOST_CA_BUNDLE,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        storage_paths: Mapping[str, Path] | None = None,
        debian_release: int = DEFAULT_RELEASE,
    ) -> None:
        self.lab_dir = Path(lab_dir)
        self.debian_release = debian_release
        self.image_cache = image_cache
        self._template_rootfs = template_rootfs
        self.host_ca_bundle = host_ca_bundle if trust_host_ca else None
        self.shutdown_timeout = shutdown_timeout
        self.storages = Storages(storage_root(self.lab_dir), dict(storage_paths or {}))
        # a cluster lab (attach_cluster): which node holds a VM, and the emulator's settings
        self.node_of: Callable[[int], str] | None = None
        self.settings: Any = None

    # -- helpers ----------------------------------------------------------------------------

    def machine(self, vmid: int) -> Machine:
        if self.node_of is None:
            return Machine(str(int(vmid)), machines_dir(self.lab_dir) / str(int(vmid)))
        return self._cluster_machine(int(vmid), self.node_of(int(vmid)))

    def template_rootfs(self) -> Path:
        """The lab template image (built on first use; cached by recipe hash)."""
        if self._template_rootfs is None:
            self._template_rootfs = build_template(self.image_cache, release=self.debian_release).rootfs
        return self._template_rootfs

    def _existing(self, vmid: int) -> Machine:
        machine = self.machine(vmid)
        if not machine.exists():
            raise BackendError(f"VM {vmid} has no disk in the container lab")
        return machine

    # -- VMBackend --------------------------------------------------------------------------

    def register_template(self, vmid: int, config: VMConfig) -> None:
        with _as_task_error():
            machine = self.machine(vmid)
            if not machine.exists():
                machine = self._new_machine(vmid, config)
            if not machine.exists():
                machine.create([self.template_rootfs()])

    def clone(self, source_vmid: int, new_vmid: int, config: VMConfig) -> None:
        with _as_task_error():
            target = self._new_machine(new_vmid, config)
            if target.exists():
                raise BackendError(f"unable to create VM {new_vmid}: disk already exists")
            source = self.machine(source_vmid)
            if source.exists():
                target.create(source.lower, copy_of=source)
            else:
                # The lab plan's template (vmid 9000) may predate this backend's state.
                log.info("VM %s is not registered; cloning the lab template image", source_vmid)
                target.create([self.template_rootfs()])

    def create(self, vmid: int, config: VMConfig) -> None:
        """A disk imported with ``import-from`` is the lab's (only) cloud image: the template."""
        with _as_task_error():
            if any("import-from=" in str(value) for value in config.values()):
                self._new_machine(vmid, config).create([self.template_rootfs()])
            # Without an imported disk the VM has nothing to boot; start() says so.

    def start(self, vmid: int, config: VMConfig) -> None:
        self._start(vmid, config, self.machine(vmid), self._storages_on(vmid))

    def _start(self, vmid: int, config: VMConfig, machine: Machine, storages: Storages) -> None:
        with _as_task_error():
            if not machine.exists():
                raise BackendError(f"VM {vmid} has no disk in the container lab")
            if machine.is_running():
                raise BackendError(f"VM {vmid} already running")
            with _bridge_lock:
                network.claim(self.lab_dir)
                network.bridge_up()
            start_guest(
                machine,
                vmid,
                config,
                storages=storages,
                host_ca_bundle=self.host_ca_bundle,
            )

    def stop(self, vmid: int) -> None:
        with _as_task_error():
            self.machine(vmid).stop()

    def shutdown(self, vmid: int, timeout: float) -> None:
        with _as_task_error():
            self.machine(vmid).shutdown(timeout)

    def reboot(self, vmid: int, config: VMConfig) -> None:
        self.shutdown(vmid, self.shutdown_timeout)
        self.start(vmid, config)

    def destroy(self, vmid: int) -> None:
        with _as_task_error():
            self.machine(vmid).destroy()

    def is_running(self, vmid: int) -> bool:
        return self.machine(vmid).is_running()

    def agent_network_interfaces(self, vmid: int) -> list[dict[str, Any]]:
        with _as_task_error():
            machine = self.machine(vmid)
            if not machine.is_booted():
                raise AgentNotRunning("QEMU guest agent is not running")
            # The netns is the guest's own network stack, so this is what the guest sees.
            result = run(
                ["ip", "-n", machine.netns, "-j", "-s", "addr", "show"],
                what=f"reading VM {vmid}'s interfaces",
            )
            return agent_interfaces(json.loads(result.stdout or "[]"))

    # -- a cluster: each VM's disk is on its node's local storage or on the shared one ---------

    def attach_cluster(self, node_of: Callable[[int], str]) -> None:
        """The emulator of a cluster lab tells which node holds each VM."""
        self.node_of = node_of

    def _shared_dirs(self) -> list[Path]:
        storages = getattr(self.settings, "storages", None) or []
        return [Path(s.path) / "machines" for s in storages if s.shared and s.path is not None]

    def node_machines(self, node: str) -> Path:
        """A node's local disks: <lab>/nodes/<node>/machines."""
        return self.lab_dir / "nodes" / node / "machines"

    def _cluster_machine(self, vmid: int, node: str, config: VMConfig | None = None) -> Machine:
        """The VM's disk as ``node`` reaches it: on a shared storage, or on the node's own
        storage. ``config`` places a new disk (by the storage of its boot disk)."""
        if config is not None:
            shared = self._shared_home(config)
            home = shared if shared is not None else self.node_machines(node)
            return Machine(str(vmid), home / str(vmid))
        for place in [*self._shared_dirs(), self.node_machines(node)]:
            if (place / str(vmid) / "lower").exists():
                return Machine(str(vmid), place / str(vmid))
        return Machine(str(vmid), self.node_machines(node) / str(vmid))  # none: start() says so

    def _shared_home(self, config: VMConfig) -> Path | None:
        storages = {s.storage: s for s in getattr(self.settings, "storages", None) or []}
        for key in sorted(config):
            value = str(config[key])
            if not _is_disk(key, value):
                continue
            storage = storages.get(value.split(":", 1)[0])
            if storage is not None and storage.shared and storage.path is not None:
                return Path(storage.path) / "machines"
            return None
        return None

    def _new_machine(self, vmid: int, config: VMConfig) -> Machine:
        if self.node_of is None:
            return self.machine(vmid)
        return self._cluster_machine(vmid, self.node_of(vmid), config)

    def _storages_on(self, vmid: int, node: str | None = None) -> Storages:
        """Cloud-init snippets come from the files of the storages as the VM's node sees them."""
        if self.node_of is None or self.settings is None:
            return self.storages
        node = node or self.node_of(vmid)
        paths = {s.storage: self.settings.storage_dir(s, node) for s in self.settings.storages}
        return Storages(storage_root(self.lab_dir), {k: Path(v) for k, v in paths.items() if v is not None})

    def migrate(self, vmid: int, source: str, target: str, config: VMConfig, online: bool) -> None:
        """Stop the guest, move its disk to the target's storage if it is local (a shared one
        stays), and start it there with the same disk: same host keys, same data."""
        with _as_task_error():
            machine = self._cluster_machine(vmid, source)
            if not machine.exists():
                raise BackendError(f"VM {vmid} has no disk in the container lab")
            running = machine.is_running()
            if running:
                machine.shutdown(self.shutdown_timeout)
            home = self._cluster_machine(vmid, target, config)
            if home.dir != machine.dir:
                home.dir.parent.mkdir(parents=True, exist_ok=True)
                os.replace(machine.dir, home.dir)  # the same filesystem: the disk itself moves
            if running:
                self._start(vmid, config, home, self._storages_on(vmid, target))

    def backup(self, vmid: int, config: VMConfig, target: Path) -> None:
        """The overlay's upper layer and the list of lower layers: everything the VM changed
        on top of the template image, i.e. the whole VM given the image the lab is built on."""
        with _as_task_error():
            machine = self._existing(vmid)
            try:
                with frozen(machine):
                    archive.write(target, config, machine.dir, ["upper", "lower"])
            except archive.ArchiveError as error:
                raise BackendError(str(error)) from error

    def restore(self, vmid: int, config: VMConfig, source: Path) -> None:
        with _as_task_error():
            machine = self._new_machine(vmid, config)
            if machine.exists():
                raise BackendError(f"unable to restore VM {vmid}: its disk already exists")
            try:
                archive.extract_disk(source, machine.dir)
            except archive.ArchiveError as error:
                machine.destroy()
                raise BackendError(str(error)) from error
            missing = [layer for layer in machine.lower if not (layer / "etc/os-release").exists()]
            if not machine.lower or missing:
                machine.destroy()
                raise BackendError(
                    f"{source.name}: the lab image it was made on is gone "
                    f"({', '.join(map(str, missing)) or 'no layers listed'})"
                )
            (machine.dir / "work").mkdir(exist_ok=True)
            machine.rootfs.mkdir(exist_ok=True)

    # -- beyond the protocol: for lab tests and tools ----------------------------------------

    def wait_booted(self, vmid: int, timeout: float = 60.0) -> str:
        """Wait until the guest's systemd reports running/degraded; returns that state."""
        with _as_task_error():
            return self._existing(vmid).wait_booted(timeout)

    def system_state(self, vmid: int) -> str | None:
        return self.machine(vmid).system_state()

    def host_keys(self, vmid: int) -> list[str]:
        """The guest's SSH host public keys (``type base64``), generated on its first boot."""
        machine = self._existing(vmid)
        if not machine.is_booted():
            raise BackendError(f"VM {vmid} has not booted: its host keys are not final yet")
        keys = sorted((machine.rootfs / "etc/ssh").glob("ssh_host_*_key.pub"))
        return [" ".join(path.read_text().split()[:2]) for path in keys]


def create_backend(lab_dir: Path, settings: Any = None) -> ContainerBackend:
    """The emulator's factory (``backend: containers``): storage paths from its settings."""
    paths = {
        str(storage.storage): Path(storage.path)
        for storage in getattr(settings, "storages", None) or []
        if getattr(storage, "path", None)
    }
    release = int(getattr(settings, "debian_release", DEFAULT_RELEASE))
    backend = ContainerBackend(lab_dir, storage_paths=paths, debian_release=release)
    backend.settings = settings
    return backend


def _is_disk(key: str, value: str) -> bool:
    """A VM's disk (not a CD-ROM or cloud-init drive) in a config key of the drive buses."""
    bus = key.rstrip("0123456789")
    if bus not in ("scsi", "virtio", "sata", "ide") or key == bus:
        return False
    return "media=cdrom" not in value and "cloudinit" not in value and ":" in value
