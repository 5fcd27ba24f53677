"""SSH readiness and host keys: wait for port 22, fetch a server's keys, keep ``known_hosts``.

``<state>/known_hosts`` is a plain OpenSSH known_hosts file (Ansible and pyinfra use it with
strict checking on): ``ssh-keygen -F/-R`` work on it and a line appended by hand (the node's
key, after comparing it with the node's console) is kept as written. Which address belongs
to which VM is recorded in the ledger, not here. Whether a key is trusted is decided in
:mod:`ailab_deploy.core.hostkeys`; nothing here turns checking off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from ailab_deploy.adapters.retry import Clock, Sleep, poll
from ailab_deploy.adapters.statedir import known_hosts_path
from ailab_deploy.core.hostkeys import HostKeyPair
from ailab_deploy.errors import AilabError

if TYPE_CHECKING:
    from ailab_deploy.adapters.ledger import Ledger

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")


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


def _host_pattern_matches(pattern: str, host: str) -> bool:
    """One host field of a known_hosts line (plain, ``[host]:port`` or hashed ``|1|salt|hash``)."""
    if pattern.startswith("|1|"):
        try:
            _, _, salt, digest = pattern.split("|", 3)
            mac = hmac.new(base64.b64decode(salt), host.encode(), hashlib.sha1).digest()
        except (ValueError, TypeError):
            return False
        return hmac.compare_digest(base64.b64encode(mac).decode(), digest)
    return pattern == host


def _line_hosts(line: str) -> list[str] | None:
    """The host patterns of a key line; None for blanks, comments and marker lines."""
    fields = line.split()
    if len(fields) < 3 or fields[0].startswith("#") or fields[0].startswith("@"):
        return None
    return fields[0].split(",")


class KnownHosts:
    """The state directory's known_hosts, safe to update from the engine's threads."""

    def __init__(self, state_dir: Path) -> None:
        self.path = known_hosts_path(state_dir)
        self._lock = threading.Lock()

    def _lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []

    @staticmethod
    def _matches(line: str, host: str) -> bool:
        patterns = _line_hosts(line)
        return patterns is not None and any(_host_pattern_matches(p, host) for p in patterns)

    def keys_for(self, host: str) -> set[HostKeyPair]:
        """The (type, base64) keys recorded for ``host``."""
        found = set()
        for line in self._lines():
            if self._matches(line, host):
                fields = line.split()
                found.add((fields[1], fields[2]))
        return found

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        temporary.chmod(0o600)
        temporary.replace(self.path)

    def replace(self, host: str, keys: list[HostKeyPair]) -> None:
        """Trust exactly ``keys`` for ``host`` (like ``ssh-keygen -R`` then appending the new lines)."""
        with self._lock:
            kept = [line for line in self._lines() if not self._matches(line, host)]
            self._write(kept + [f"{host} {key_type} {key_base64}" for key_type, key_base64 in keys])

    def remove(self, host: str) -> bool:
        """Drop every line for ``host``; True if there was one."""
        with self._lock:
            lines = self._lines()
            kept = [line for line in lines if not self._matches(line, host)]
            if len(kept) != len(lines):
                self._write(kept)
            return len(kept) != len(lines)

    def pin_node(self, host: str, keys: list[HostKeyPair]) -> None:
        """Trust exactly ``keys`` for the node at ``host``, learnt out of band (never over the network)."""
        self.replace(host, keys)


def forget_vm(ledger: Ledger, known_hosts: KnownHosts, vmid: int) -> None:
    """A VM that is gone: its host keys and its place in the ledger."""
    address = ledger.address_of(vmid)
    if address is not None:
        known_hosts.remove(address)
    ledger.forget_vm(vmid)
