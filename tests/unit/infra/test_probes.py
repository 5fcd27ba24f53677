"""The infra suite's reachability probes, run here against loopback listeners."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.infra.probes import controller_reaches, ports_reached_from, probe_reachability


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
    assert ports_reached_from(peer, "127.0.0.1", [listening, closed]) == {listening: True, closed: False}
    assert len(peer.commands) == 1


def test_the_controller_probe_tells_open_from_refused(listening: int) -> None:
    assert controller_reaches("127.0.0.1", listening) is True
    assert controller_reaches("127.0.0.1", _closed_port()) is False


def test_reachability_covers_every_other_peer_and_the_controller(listening: int) -> None:
    closed = _closed_port()
    peers = {"me": _LocalPeer(), "a": _LocalPeer(), "b": _LocalPeer()}
    found = probe_reachability("127.0.0.1", [listening, closed], peers, "me")
    expected = {
        (client, port): port == listening
        for client in ("a", "b", "controller")
        for port in (listening, closed)
    }
    assert found == expected
    assert peers["me"].commands == []  # a host is not probed from itself
