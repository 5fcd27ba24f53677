"""Checks the infra tests share: firewall sources, TCP connects from a host, the controller's address."""

from __future__ import annotations

import ipaddress
import shlex
import socket
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CONNECT_TIMEOUT = 3  # seconds a dropped SYN is waited for before the port counts as closed
ProbeResults = dict[tuple[str, int], bool]  # (client name or "controller", port) -> connected


def in_sources(address: str, sources: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(source, strict=False) for source in sources)


def ports_reached_from(peer: Any, address: str, ports: Iterable[int]) -> dict[int, bool]:
    """Which of ``ports`` on ``address`` ``peer`` opens a TCP connection to within CONNECT_TIMEOUT.

    All ports are tried at once in one command: a dropped port costs its timeout once per peer,
    not once per port. Each attempt prints its port when it connects.
    """
    wanted = sorted({int(port) for port in ports})
    attempts = " ".join(
        f"(timeout {CONNECT_TIMEOUT} bash -c {shlex.quote(f'exec 3<>/dev/tcp/{address}/{port}')}"
        f" && echo {port}) &"
        for port in wanted
    )
    output = peer.run(f"{attempts} wait").stdout
    reached = {int(word) for word in output.split() if word.isdigit()}
    return {port: port in reached for port in wanted}


def controller_reaches(address: str, port: int) -> bool:
    """Whether this controller opens a TCP connection to address:port within CONNECT_TIMEOUT."""
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def controller_source_address(address: str) -> str:
    """The address this controller uses towards ``address`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))
        return str(probe.getsockname()[0])


def probe_reachability(address: str, ports: Iterable[int], peers: Mapping[str, Any], me: str) -> ProbeResults:
    """(client, port) -> whether that client connected to address:port, for every peer but ``me``
    (testinfra hosts by name) and for this controller ("controller"), all probes at the same time:
    a dropped connection is waited for once, not once per client and port."""
    wanted = sorted({int(port) for port in ports})
    others = {name: peer for name, peer in peers.items() if name != me}
    with ThreadPoolExecutor(max_workers=len(others) + len(wanted) + 1) as pool:
        from_peers = {
            name: pool.submit(ports_reached_from, peer, address, wanted) for name, peer in others.items()
        }
        from_controller = {port: pool.submit(controller_reaches, address, port) for port in wanted}
        found = {(name, port): ok for name, run in from_peers.items() for port, ok in run.result().items()}
        found.update({("controller", port): run.result() for port, run in from_controller.items()})
    return found
