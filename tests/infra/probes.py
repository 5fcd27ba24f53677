"""Checks the infra tests share: firewall sources, TCP connects from a host, the controller's address."""

from __future__ import annotations

import ipaddress
import shlex
import socket
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# How long a connection attempt may take. One the firewall must let through gets time for two
# SYN retransmits (sent after 1 s and 3 s), so a lost packet does not fail a good firewall; it
# costs nothing when the port answers. One the firewall must drop is waited for one second: an
# accepting port on the same bridge or LAN answers within milliseconds, so a second in which
# nothing came back shows the drop.
EXPECTED_OPEN_TIMEOUT = 3.5
EXPECTED_DROP_WAIT = 1.0
ProbeResults = dict[tuple[str, int], bool]  # (client name or "controller", port) -> connected


def in_sources(address: str, sources: Iterable[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(source, strict=False) for source in sources)


def connect_timeout(expected_open: bool) -> float:
    return EXPECTED_OPEN_TIMEOUT if expected_open else EXPECTED_DROP_WAIT


def ports_reached_from(peer: Any, address: str, timeouts: Mapping[int, float]) -> dict[int, bool]:
    """Which ports on ``address`` ``peer`` opens a TCP connection to, each within its timeout.

    All ports are tried at once in one command: a dropped port costs its wait once per peer,
    not once per port. Each attempt prints its port when it connects.
    """
    attempts = " ".join(
        f"(timeout {timeouts[port]} bash -c {shlex.quote(f'exec 3<>/dev/tcp/{address}/{port}')}"
        f" && echo {port}) &"
        for port in sorted(timeouts)
    )
    output = peer.run(f"{attempts} wait").stdout
    reached = {int(word) for word in output.split() if word.isdigit()}
    return {port: port in reached for port in sorted(timeouts)}


def controller_reaches(address: str, port: int, timeout: float) -> bool:
    """Whether this controller opens a TCP connection to address:port within ``timeout`` seconds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def controller_source_address(address: str) -> str:
    """The address this controller uses towards ``address`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))
        return str(probe.getsockname()[0])


def probe_reachability(
    address: str,
    ports: Mapping[int, Iterable[Any]],
    peers: Mapping[str, tuple[str, Any]],
    me: str,
) -> ProbeResults:
    """(client, port) -> whether that client connected to address:port, for each port of ``ports``
    (port -> the source networks the firewall should let in), from every peer but ``me`` (name ->
    its address and testinfra host) and from this controller ("controller"), all at the same time:
    a dropped connection is waited for once, not once per client and port."""
    sources = {port: [str(network) for network in networks] for port, networks in ports.items()}
    mine = controller_source_address(address)
    others = {name: peer for name, peer in peers.items() if name != me}
    with ThreadPoolExecutor(max_workers=len(others) + len(sources) + 1) as pool:
        from_peers = {
            name: pool.submit(
                ports_reached_from,
                peer,
                address,
                {
                    port: connect_timeout(in_sources(peer_address, allowed))
                    for port, allowed in sources.items()
                },
            )
            for name, (peer_address, peer) in others.items()
        }
        from_controller = {
            port: pool.submit(controller_reaches, address, port, connect_timeout(in_sources(mine, allowed)))
            for port, allowed in sources.items()
        }
        found = {(name, port): ok for name, run in from_peers.items() for port, ok in run.result().items()}
        found.update({("controller", port): run.result() for port, run in from_controller.items()})
    return found
