"""The infra suite's reachability probes, run here against loopback listeners."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.infra.probes import (
    EXPECTED_DROP_WAIT,
    EXPECTED_OPEN_TIMEOUT,
    connect_timeout,
    controller_reaches,
    ports_reached_from,
    probe_reachability,
)


@dataclass
class _Ran:
    stdout: str
    rc: int


class _LocalPeer:
    """A stand-in for a testinfra host: runs the command with this machine's shell."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str) -> _Ran:
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        return _Ran(done.stdout, done.returncode)


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # bound, never listening: refused


def test_a_peer_reports_which_ports_it_reached_in_one_command(listening: int) -> None:
    peer = _LocalPeer()
    closed = _closed_port()
    found = ports_reached_from(peer, "127.0.0.1", {listening: 3.5, closed: 1.0})
    assert found == {listening: True, closed: False}
    (command,) = peer.commands
    assert f"timeout 3.5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{listening}'" in command
    assert f"timeout 1.0 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{closed}'" in command


def test_the_controller_probe_tells_open_from_refused(listening: int) -> None:
    assert controller_reaches("127.0.0.1", listening, 3.5) is True
    assert controller_reaches("127.0.0.1", _closed_port(), 1.0) is False


def test_an_expected_connection_gets_time_for_retransmits_an_expected_drop_one_second() -> None:
    assert EXPECTED_OPEN_TIMEOUT > 3.0  # the second SYN retransmit leaves 3 s after the first SYN
    assert connect_timeout(True) == EXPECTED_OPEN_TIMEOUT
    assert connect_timeout(False) == EXPECTED_DROP_WAIT == 1.0


def test_reachability_covers_every_other_peer_and_the_controller(listening: int) -> None:
    closed = _closed_port()
    peers = {name: ("127.0.0.1", _LocalPeer()) for name in ("me", "a", "b")}
    # The listening port is open to loopback; the closed one only to a network nobody here is in.
    ports = {listening: [ipaddress.ip_network("127.0.0.0/8")], closed: [ipaddress.ip_network("192.0.2.0/24")]}
    found = probe_reachability("127.0.0.1", ports, peers, "me")
    expected = {
        (client, port): port == listening
        for client in ("a", "b", "controller")
        for port in (listening, closed)
    }
    assert found == expected
    assert peers["me"][1].commands == []  # a host is not probed from itself
    (command,) = peers["a"][1].commands
    assert f"timeout {EXPECTED_OPEN_TIMEOUT} bash -c 'exec 3<>/dev/tcp/127.0.0.1/{listening}'" in command
    assert f"timeout {EXPECTED_DROP_WAIT} bash -c 'exec 3<>/dev/tcp/127.0.0.1/{closed}'" in command
