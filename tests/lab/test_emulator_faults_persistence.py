"""Fault injection (each kind, by count and probability) and state across restarts."""

from __future__ import annotations

import time

import pytest
import requests
from proxmoxer import ResourceException

pytestmark = pytest.mark.lab


def test_http_500_by_count(emulator):
    api = emulator.api()
    rule = emulator.add_fault(
        kind="http_500", method="GET", path="^/cluster/resources$", count=2, message="proxy loop detected"
    )
    assert rule["kind"] == "http_500" and rule["count"] == 2
    for _ in range(2):
        with pytest.raises(ResourceException) as err:
            api.cluster.resources.get()
        assert (err.value.status_code, err.value.content) == (500, "proxy loop detected")
    assert api.cluster.resources.get()
    assert emulator.admin("GET", "/faults") == []
    assert api.version.get()  # other paths never matched


def test_http_500_by_probability(emulator):
    api = emulator.api()
    emulator.add_fault(kind="http_500", path="^/version$", probability=0.0)
    assert all(api.version.get() for _ in range(5))
    emulator.clear_faults()
    emulator.add_fault(kind="http_500", path="^/version$", probability=1.0)
    with pytest.raises(ResourceException):
        api.version.get()
    with pytest.raises(ResourceException):
        api.version.get()


def test_lock_timeout_on_request(emulator):
    node = emulator.api().nodes(emulator.node)
    emulator.add_fault(kind="lock_timeout", method="POST", path="/clone$", count=1)
    with pytest.raises(ResourceException) as err:
        node.qemu(9000).clone.post(newid=101)
    assert err.value.status_code == 500
    assert err.value.content == "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
    assert emulator.wait(node.qemu(9000).clone.post(newid=101))["exitstatus"] == "OK"


def test_lock_timeout_in_task_and_clone_cleanup(emulator):
    node = emulator.api().nodes(emulator.node)
    emulator.add_fault(kind="lock_timeout", task_type="qmclone", count=1)
    status = emulator.wait(node.qemu(9000).clone.post(newid=101))
    assert status["exitstatus"] == (
        "clone failed: can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
    )
    with pytest.raises(ResourceException):
        node.qemu(101).config.get()
    assert emulator.wait(node.qemu(9000).clone.post(newid=101))["exitstatus"] == "OK"


def test_task_error_midway(emulator):
    node = emulator.api().nodes(emulator.node)
    emulator.add_fault(
        kind="task_error", task_type="qmstart", message="start failed: QEMU exited with code 1"
    )
    emulator.wait(node.qemu(9000).clone.post(newid=101))
    upid = node.qemu(101).status.start.post()
    assert emulator.wait(upid)["exitstatus"] == "start failed: QEMU exited with code 1"
    assert node.qemu(101).status.current.get()["status"] == "stopped"
    assert node.tasks(upid).log.get()[-1]["t"] == "TASK ERROR: start failed: QEMU exited with code 1"


def test_slow_task(emulator):
    node = emulator.api().nodes(emulator.node)
    emulator.add_fault(kind="slow_task", task_type="qmclone", seconds=1.5, count=1)
    started = time.monotonic()
    upid = node.qemu(9000).clone.post(newid=101)
    time.sleep(0.5)
    assert node.tasks(upid).status.get()["status"] == "running"
    emulator.wait(upid)
    assert time.monotonic() - started >= 1.5


def test_ticket_expiry(emulator):
    api = emulator.api("ticket")
    assert api.version.get()
    emulator.add_fault(kind="ticket_expired", count=1)
    with pytest.raises(ResourceException) as err:
        api.version.get()
    assert (err.value.status_code, err.value.content) == (401, "Authentication failed!")
    assert emulator.api().version.get()  # token auth has no ticket to expire
    assert api.version.get()


def test_real_ticket_lifetime(make_emulator):
    lab = make_emulator(ticket_lifetime=1)
    api = lab.api("ticket")
    assert api.version.get()
    time.sleep(2.1)
    with pytest.raises(ResourceException) as err:
        api.version.get()
    assert err.value.content == "Authentication failed!"


def test_agent_not_running(emulator):
    node = emulator.api().nodes(emulator.node)
    emulator.wait(node.qemu(9000).clone.post(newid=101))
    emulator.wait(node.qemu(101).status.start.post())
    emulator.add_fault(kind="agent_not_running", vmid=101, count=1)
    with pytest.raises(ResourceException) as err:
        node.qemu(101).agent("network-get-interfaces").get()
    assert (err.value.status_code, err.value.content) == (500, "QEMU guest agent is not running")
    assert node.qemu(101).agent("network-get-interfaces").get()["result"]


def test_faults_from_settings_file(make_emulator):
    lab = make_emulator(faults=[{"kind": "http_500", "path": "^/nodes$", "count": 1}])
    with pytest.raises(ResourceException):
        lab.api().nodes.get()
    assert lab.api().nodes.get()


def test_admin_api_needs_the_root_token(emulator):
    url = f"{emulator.base_url}/_lab/faults"
    assert requests.get(url, verify=emulator.ca_path, timeout=10).status_code == 401
    ticket = emulator.api("ticket")._backend.auth.pve_auth_ticket
    answer = requests.get(url, cookies={"PVEAuthCookie": ticket}, verify=emulator.ca_path, timeout=10)
    assert answer.status_code in (401, 403)
    bad = requests.post(
        url, json={"kind": "nope"}, headers=emulator.token_header(), verify=emulator.ca_path, timeout=10
    )
    assert bad.status_code == 400 and "fault kind must be one of" in bad.reason


def test_state_survives_a_restart(emulator):
    api = emulator.api()
    node = api.nodes(emulator.node)
    clone_upid = node.qemu(9000).clone.post(newid=101, name="keep")
    emulator.wait(clone_upid)
    node.qemu(101).config.put(cores=3, tags="x")
    emulator.wait(node.qemu(101).snapshot.post(snapname="s1"))
    emulator.wait(node.qemu(101).status.start.post())
    api.cluster.backup.post(id="nightly", schedule="02:00", all=1)
    before = node.qemu(101).config.get()
    fingerprint = emulator.fingerprint
    emulator.restart()
    api = emulator.api()
    node = api.nodes(emulator.node)
    assert node.qemu(101).config.get() == before
    assert node.qemu(101).status.current.get()["status"] == "running"
    assert [s["name"] for s in node.qemu(101).snapshot.get()] == ["s1", "current"]
    assert api.cluster.backup("nightly").get()["schedule"] == "02:00"
    assert node.tasks(clone_upid).status.get()["exitstatus"] == "OK"
    assert emulator.fingerprint == fingerprint
    assert api.cluster.nextid.get() == "100"


def test_ticket_survives_a_restart(emulator):
    api = emulator.api("ticket")
    assert api.version.get()
    emulator.restart()
    assert api.version.get()


def test_concurrent_writes_are_safe(emulator):
    import threading

    node = emulator.api().nodes(emulator.node)
    emulator.wait(node.qemu(9000).clone.post(newid=101))
    errors: list[Exception] = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                node.qemu(101).config.put(**{"description": f"{i}-{j}"})
                node.qemu(101).config.get()
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    text = (emulator.lab_dir / "state" / "qemu-server" / "101.conf").read_text()
    assert text.startswith("#") and "cores: 2" in text
