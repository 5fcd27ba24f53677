"""pipeline.up from Python: phases are timed on the injected clock and a failure carries them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.core.loader import LoadedPlan
from ailab_deploy.errors import PlanError, ProxmoxError
from ailab_deploy.pipeline.up import PhaseTiming, UpFailed, UpObserver, up


class Recorder(UpObserver):
    def __init__(self) -> None:
        self.events: list[str] = []

    def loaded(self, loaded: LoadedPlan) -> None:
        self.events.append(f"loaded {len(loaded.plan.vms)}")

    def phase_started(self, name: str) -> None:
        self.events.append(f"start {name}")

    def phase_finished(self, phase: PhaseTiming) -> None:
        self.events.append(f"end {phase.name} {phase.result}")


def test_a_failure_after_validation_carries_the_timed_phases(repo_root: Path) -> None:
    ticks = iter([10.0, 10.5])

    def unreachable(_loaded: LoadedPlan) -> ProxmoxClient:
        raise ProxmoxError("cannot reach the node")

    recorder = Recorder()
    with pytest.raises(UpFailed, match="cannot reach the node") as failure:
        up(
            repo_root / "tests/plans/valid-minimal.yaml",
            observer=recorder,
            client_factory=unreachable,
            clock=lambda: next(ticks),
        )
    result = failure.value.result
    assert failure.value.exit_code == 1
    assert result.plan_path == (repo_root / "tests/plans/valid-minimal.yaml").absolute()
    assert [(p.name, p.seconds) for p in result.phases] == [("validate", 0.5)]
    assert result.applied is None and result.configured is None and not result.passed
    assert recorder.events == ["start validate", "loaded 3", "end validate 3 VMs"]
    assert result.to_dict()["phases"] == [{"phase": "validate", "seconds": 0.5, "result": "3 VMs"}]


def test_a_broken_plan_fails_validation_with_exit_2(tmp_path: Path) -> None:
    plan = tmp_path / "vms.yaml"
    plan.write_text("vms: []\n")
    with pytest.raises(UpFailed) as failure:
        up(plan)
    assert failure.value.exit_code == 2
    assert isinstance(failure.value.__cause__, PlanError)
    assert [(p.name, p.result) for p in failure.value.result.phases] == [("validate", "failed")]
