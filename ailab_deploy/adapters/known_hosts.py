"""SSH readiness and host keys: wait for port 22, record keys on first contact, check them after.

``<state>/known_hosts`` is an OpenSSH known_hosts file (Ansible uses it with strict
checking on). Each entry is preceded by a ``# ailab vmid=N`` comment that binds the
key to the VM it was first seen on: trust on first use per vmid+ip. A VM rebuilt by
``destroy`` + ``apply`` is forgotten by destroy, so its new key is accepted; any other
change of key is refused. Nothing here turns checking off.

Lines without a binding (the Proxmox node's key, appended by hand after comparing it with
the node's console, or pinned by ``lab up``) belong to :data:`NODE_BINDING` and are kept.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ailab_deploy.adapters.retry import Clock, Sleep, poll
from ailab_deploy.adapters.statedir import known_hosts_path
from ailab_deploy.errors import AilabError

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")
_BINDING = "# ailab vmid="
NODE_BINDING = 0  # not a valid VMID: keys of the node itself, or added by hand


class HostKeyMismatch(AilabError):
    """A VM presented a host key other than the one recorded for it."""


@dataclass(frozen=True)
class HostKey:
    vmid: int
    host: str
    key_type: str
    key_base64: str

    def line(self) -> str:
        return f"{self.host} {self.key_type} {self.key_base64}"


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    what: str,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> None:
    """Poll a TCP connect until it succeeds or ``timeout`` passes."""
    last = ["no answer"]

    def connects() -> bool | None:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, max(0.5, timeout))):
                return True
        except OSError as error:
            last[0] = error.strerror or type(error).__name__
            return None

    poll(
        connects,
        timeout=timeout,
        interval=1.0,
        on_timeout=lambda: AilabError(
            f"{what}: SSH on {host}:{port} did not answer within {timeout:g} s (last: {last[0]}); "
            "re-run apply to resume, or use --no-wait-ssh for API-only runs"
        ),
        clock=clock,
        sleep=sleep,
    )


def fetch_host_keys(host: str, port: int, timeout: float = 10.0) -> list[tuple[str, str]]:
    """(type, base64) of the server's host keys, one SSH handshake per key type."""
    found: list[tuple[str, str]] = []
    for key_type in KEY_TYPES:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            raise AilabError(f"cannot reach SSH on {host}:{port}: {error.strerror}") from None
        transport = paramiko.Transport(sock)
        try:
            transport.get_security_options().key_types = (key_type,)
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
            found.append((key.get_name(), key.get_base64()))
        except (paramiko.SSHException, EOFError, OSError):
            continue  # the server has no key of this type
        finally:
            transport.close()
    if not found:
        raise AilabError(f"SSH on {host}:{port} offered no usable host key")
    return found


class KnownHosts:
    """The state directory's known_hosts, safe to update from the engine's threads."""

    def __init__(self, state_dir: Path) -> None:
        self.path = known_hosts_path(state_dir)
        self._lock = threading.Lock()

    def entries(self) -> list[HostKey]:
        if not self.path.exists():
            return []
        entries: list[HostKey] = []
        vmid = NODE_BINDING
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith(_BINDING):
                vmid = int(line[len(_BINDING) :].split()[0])
            elif line.strip() and not line.startswith("#"):
                host, key_type, key_base64 = line.split()[:3]
                entries.append(HostKey(vmid, host, key_type, key_base64))
        return entries

    def _write(self, entries: list[HostKey]) -> None:
        lines = []
        for entry in sorted(entries, key=lambda e: (e.vmid, e.key_type)):
            lines += [f"{_BINDING}{entry.vmid}", entry.line()]
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        temporary.chmod(0o600)
        temporary.replace(self.path)

    def known(self, vmid: int, host: str) -> bool:
        return any(e.vmid == vmid and e.host == host for e in self.entries())

    def record_or_check(self, vmid: int, host: str, keys: list[tuple[str, str]]) -> str:
        """First contact: record ``keys``. Later: every offered key must match. Returns what happened."""
        with self._lock:
            entries = self.entries()
            mine = {(e.key_type, e.key_base64) for e in entries if e.vmid == vmid and e.host == host}
            if mine:
                recorded_types = {key_type for key_type, _ in mine}
                for key in keys:
                    if key[0] in recorded_types and key not in mine:
                        raise HostKeyMismatch(
                            f"VM {vmid} at {host} presents a different {key[0]} host key than the one "
                            f"recorded in {self.path}. If the VM was rebuilt outside ailab-deploy, remove "
                            "its entry there; otherwise treat this as an attack"
                        )
                return "host keys match"
            # A new VM on this address (or a new address for this VM) replaces older bindings.
            kept = [e for e in entries if e.vmid != vmid and e.host != host]
            self._write(kept + [HostKey(vmid, host, t, b) for t, b in keys])
            return f"recorded {len(keys)} host key(s) (first contact)"

    def pin_node(self, host: str, keys: list[tuple[str, str]]) -> None:
        """Trust exactly ``keys`` for the node at ``host``, learnt out of band (never over the network)."""
        with self._lock:
            kept = [e for e in self.entries() if not (e.vmid == NODE_BINDING and e.host == host)]
            self._write(kept + [HostKey(NODE_BINDING, host, t, b) for t, b in keys])

    def forget(self, vmid: int) -> None:
        with self._lock:
            entries = self.entries()
            kept = [e for e in entries if e.vmid != vmid]
            if len(kept) != len(entries):
                self._write(kept)
