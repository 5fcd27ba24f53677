"""One test per emulator fault kind: the engine recovers, or fails clearly and resumes.

After recovery the node holds exactly the plan: no duplicate, no half-made VM.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from proxmoxer import ResourceException

from ailab_deploy.pipeline.provision import ApplyFailed
from tests.lab.provision_fixtures import LAB_OPTIONS, make_engine
from tests.lab.test_provision import assert_exactly_the_plan, guests

pytestmark = pytest.mark.lab


def fired(lab: Any) -> dict[str, int]:
    return {rule["id"]: rule.get("fired", 0) for rule in lab.admin("GET", "/faults")}


def test_http_500_on_reads_and_writes_is_retried(emulator: Any, tmp_path: Path) -> None:
    emulator.add_fault(kind="http_500", path="^/cluster/resources$", count=2)
    emulator.add_fault(kind="http_500", method="PUT", path="/config$", count=2)
    emulator.add_fault(kind="http_500", method="POST", path="/clone$", count=1)
    engine = make_engine(emulator, tmp_path)
    report = engine.provisioner().apply(LAB_OPTIONS)
    assert not report.failed
    assert emulator.admin("GET", "/faults") == []  # every injected 500 was hit and survived
    assert_exactly_the_plan(engine)


@pytest.mark.parametrize("where", ["request", "task"])
def test_clone_lock_timeouts_serialise_the_storage(make_emulator: Any, tmp_path: Path, where: str) -> None:
    lab = make_emulator(task_seconds_by_type={"qmclone": 0.3})
    if where == "request":
        lab.add_fault(kind="lock_timeout", method="POST", path="/clone$", count=2)
    else:
        lab.add_fault(kind="lock_timeout", task_type="qmclone", count=2)
    engine = make_engine(lab, tmp_path)
    report = engine.provisioner().apply(LAB_OPTIONS)
    assert not report.failed
    assert any("cloning one at a time" in event for event in engine.events), engine.events
    assert any("attempt 2" in step or "attempt 3" in step for r in report.results for step in r.done)
    assert_exactly_the_plan(engine)


@pytest.mark.parametrize("task_type", ["qmclone", "resize", "qmstart"])
def test_task_failing_midway_leaves_a_resumable_state(
    make_emulator: Any, tmp_path: Path, task_type: str
) -> None:
    lab = make_emulator()
    vmid = 9000 if task_type == "qmclone" else 101  # a clone task's id is its source
    lab.add_fault(kind="task_error", task_type=task_type, vmid=vmid, count=1, message="disk on fire")
    engine = make_engine(lab, tmp_path)
    with pytest.raises(ApplyFailed, match="disk on fire") as failure:
        engine.provisioner().apply(LAB_OPTIONS)
    assert "run apply again to resume" in str(failure.value)
    if task_type == "qmclone":
        # PVE removes a failed clone's target: exactly one VM is missing, none is half-made
        assert len(set(guests(lab)) - {9000}) == 2
    engine.provisioner().apply(LAB_OPTIONS)
    assert_exactly_the_plan(engine)


def test_slow_clone_hits_the_bound_then_resumes(make_emulator: Any, tmp_path: Path) -> None:
    lab = make_emulator()
    lab.add_fault(kind="slow_task", task_type="qmclone", seconds=3, count=1)
    engine = make_engine(lab, tmp_path)
    with pytest.raises(ApplyFailed, match=r"still running after 0.5 s .*Re-run the command to resume"):
        engine.provisioner().apply(replace(LAB_OPTIONS, clone_timeout=0.5))
    # the clone goes on on the node; the next apply waits for its lock and finishes the VM
    report = engine.provisioner().apply(LAB_OPTIONS)
    assert not report.failed
    assert_exactly_the_plan(engine)


def test_ticket_expiry_does_not_affect_token_auth(emulator: Any, tmp_path: Path) -> None:
    # Armed on the listing every run starts with and on the clones: paths the engine really calls.
    rule = emulator.add_fault(kind="ticket_expired", path=r"^/cluster/resources$|/clone$")
    engine = make_engine(emulator, tmp_path)
    provisioner = engine.provisioner()
    assert not provisioner.apply(LAB_OPTIONS).failed
    called = provisioner.client.stats.by_kind
    assert called["GET cluster/resources"] > 0 and called["POST nodes/{node}/qemu/{vmid}/clone"] == 3, called
    assert fired(emulator)[rule["id"]] == 0  # the token passed where the rule stood
    # The rule is live: a ticket session on the same path is refused, as an expired ticket is.
    with pytest.raises(ResourceException) as refused:
        emulator.api("ticket").cluster.resources.get()
    assert (refused.value.status_code, refused.value.content) == (401, "Authentication failed!")
    assert fired(emulator)[rule["id"]] == 1
    assert_exactly_the_plan(engine)


def test_guest_agent_not_running_is_a_bounded_clear_failure(emulator: Any, tmp_path: Path) -> None:
    rule = emulator.add_fault(kind="agent_not_running", vmid=100)
    engine = make_engine(emulator, tmp_path)
    with pytest.raises(ApplyFailed) as failure:
        engine.provisioner().apply(replace(LAB_OPTIONS, agent_timeout=1))
    message = str(failure.value)
    assert "postgres (VM 100): the guest agent did not report 10.77.0.10 within 1 s" in message
    assert "QEMU guest agent is not running" in message and "qemu-guest-agent" in message
    assert "llm" not in message  # the other VMs finished
    emulator.admin("DELETE", f"/faults/{rule['id']}")
    resumed = engine.provisioner()
    assert not resumed.apply(LAB_OPTIONS).failed
    # Every VM step was already done; the backup job waits for an apply that succeeds.
    assert resumed.client.stats.write_calls == ["POST cluster/backup"]
    assert_exactly_the_plan(engine)
