"""The lab network's claim: a lab killed without ``lab down`` (its controller killed, the machine's
session ended) must not lock every later lab out of the network. That a running lab keeps it
is in test_vms.py.

Run as root: ``pytest --lab tests/lab/test_lab_network_claim.py``.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from ailab_deploy.lab.containers import lab_down, lab_up, leftovers, network
from ailab_deploy.lab.containers.cleanup import lab_processes
from ailab_deploy.lab.containers.proc import send_signal, wait_gone

pytestmark = pytest.mark.vm


@pytest.fixture
def no_lab() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab network needs root")
    if lab_processes():
        pytest.fail(f"a lab is running on this machine: {leftovers()}")


def test_a_killed_lab_gives_way_to_the_next_one(
    no_lab: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    killed, following = tmp_path / "killed", tmp_path / "following"
    killed.mkdir()
    following.mkdir()
    lab_up(killed, with_node=False)
    try:
        pids = [pid for _, pid in lab_processes()]
        assert pids, "the lab runs its proxy"
        for pid in pids:
            send_signal(pid, signal.SIGKILL)
        assert wait_gone(pids, timeout=10)
        assert network.owner() == killed.resolve()
        assert network.BRIDGE in network.link_names()

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ailab_deploy.lab.containers.cleanup"):
            lab_up(following, with_node=False)
        assert network.owner() == following.resolve()
        assert [r.getMessage() for r in caplog.records] == [
            f"the lab in {killed.resolve()} was left without its processes: clearing its network"
        ]
        assert [kind for kind, _ in lab_processes()] == ["tinyproxy"]  # the new lab's proxy
    finally:
        lab_down()
    assert leftovers() == []
