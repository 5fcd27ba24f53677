"""Checks the infra tests share: firewall sources, TCP connects from a host, the controller's address."""

from __future__ import annotations

import ipaddress
import shlex
import socket
from collections.abc import Iterable
from typing import Any

CONNECT_TIMEOUT = 3  # seconds a dropped SYN is waited for before the port counts as closed


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
