"""Checks the infra tests share: firewall sources, TCP connects from a host, the controller's address."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any


def in_sources(address: str, sources: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(source, strict=False) for source in sources)


def connects_from(peer: Any, address: str, port: int) -> bool:
    """Whether ``peer`` opens a TCP connection to address:port within 3 s."""
    return bool(peer.run(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}'").rc == 0)


def controller_source_address(address: str) -> str:
    """The address this controller uses towards ``address`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))
        return str(probe.getsockname()[0])
