"""verify runs the infra suite with the plan it verifies: the suite's expected values come from it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.pipeline import verify


def test_the_infra_suite_gets_the_plan_and_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        seen.update(command=command, env=options["env"])
        junit = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--junitxml="))
        Path(junit).write_text('<testsuite tests="5" failures="1" errors="0" skipped="2"/>')
        return subprocess.CompletedProcess(command, 1, "", "")

    monkeypatch.setattr(verify.subprocess, "run", fake_run)
    monkeypatch.chdir(tmp_path)
    counts = verify.run_testinfra(
        tmp_path / "hosts.yml", tmp_path / ".ailab", tmp_path / "junit.xml", Path("vms.yaml")
    )
    assert counts == {"passed": 2, "failed": 1, "errors": 0, "skipped": 2}
    assert seen["env"]["AILAB_PLAN"] == str(tmp_path / "vms.yaml")  # absolute: pytest runs elsewhere
    assert seen["env"]["AILAB_STATE_DIR"] == str(tmp_path / ".ailab")
    assert f"--ansible-inventory={tmp_path / 'hosts.yml'}" in seen["command"]
