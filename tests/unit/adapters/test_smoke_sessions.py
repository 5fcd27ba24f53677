"""Targets' shared SSH sessions: opened once per VM, a failed one tried again, all closed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.adapters import smoke
from ailab_deploy.adapters.smoke import Targets
from ailab_deploy.adapters.ssh import SshError
from ailab_deploy.core.loader import load_plan

PLAN = Path(__file__).resolve().parents[3] / "vms.yaml"


class FakeSession:
    def __init__(self, host: str) -> None:
        self.host = host
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_session_is_opened_once_per_vm_and_a_failed_one_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded = load_plan(PLAN)
    down, up = loaded.plan.vms[0], loaded.plan.vms[1]
    attempts: list[str] = []

    def ssh(self: Targets, vm: Any) -> FakeSession:
        attempts.append(vm.name)
        if vm.name == down.name:
            raise SshError(f"{vm.ip}: connection refused")
        return FakeSession(str(vm.ip))

    monkeypatch.setattr(smoke.Targets, "ssh", ssh)
    targets = Targets(loaded, tmp_path)
    with pytest.raises(SshError), targets.session(down):
        pass
    with targets.session(up) as session:
        assert session.host == str(up.ip)
    opened: Any = session
    with targets.session(up) as again:
        assert again is opened  # reused, not opened again
    with pytest.raises(SshError), targets.session(down):
        pass
    assert attempts == [down.name, up.name, down.name]
    targets.close()
    assert opened.closed
