"""verify runs the infra suite with the plan it verifies, one pytest per host, all hosts at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from ailab_deploy.pipeline import verify

# Per host: (tests, failures, errors, skipped) its JUnit file reports.
OUTCOMES = {"db": (5, 1, 0, 2), "llm": (7, 0, 1, 0)}


class FakePytest:
    """Records each pytest command; writes its JUnit file when waited for."""

    started: ClassVar[list[list[str]]] = []
    events: ClassVar[list[str]] = []

    def __init__(self, command: list[str], **options: Any) -> None:
        self.command, self.env = command, options["env"]
        self.host = next(a.split("://", 1)[1] for a in command if a.startswith("--hosts="))
        self.junit = Path(next(a.split("=", 1)[1] for a in command if a.startswith("--junitxml=")))
        FakePytest.started.append(command)
        FakePytest.events.append(f"start {self.host}")

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        FakePytest.events.append(f"wait {self.host}")
        tests, failures, errors, skipped = OUTCOMES[self.host]
        self.junit.write_text(
            f'<testsuite tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}"/>'
        )
        return "", ""


def test_one_suite_per_host_in_parallel_with_the_plan_and_counts_summed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakePytest.started, FakePytest.events = [], []
    monkeypatch.setattr(verify.subprocess, "Popen", FakePytest)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    counts = verify.run_testinfra(
        tmp_path / "hosts.yml",
        tmp_path / "listing.json",
        tmp_path / ".ailab",
        tmp_path / "junit.xml",
        Path("vms.yaml"),
        ["db", "llm"],
    )
    assert counts == {"passed": 2 + 6, "failed": 1, "errors": 1, "skipped": 2}
    # Both started before either is waited for: the hosts are tested at the same time.
    assert FakePytest.events[:2] == ["start db", "start llm"]
    hosts = [next(a for a in command if a.startswith("--hosts=")) for command in FakePytest.started]
    assert hosts == ["--hosts=ailab-root-shell://db", "--hosts=ailab-root-shell://llm"]
    for command in FakePytest.started:
        assert f"--ansible-inventory={tmp_path / 'hosts.yml'}" in command
    # The controller's own checks run once, not once per host.
    ignored = [[a for a in command if a.startswith("--ignore=")] for command in FakePytest.started]
    assert ignored[0] == [] and [Path(a.split("=", 1)[1]).name for a in ignored[1]] == ["test_controller.py"]


def test_the_suite_gets_the_plan_the_state_dir_and_the_ssh_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, str]] = []

    class Recording(FakePytest):
        def __init__(self, command: list[str], **options: Any) -> None:
            super().__init__(command, **options)
            seen.append(options["env"])

    monkeypatch.setattr(verify.subprocess, "Popen", Recording)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    verify.run_testinfra(
        tmp_path / "hosts.yml",
        tmp_path / "listing.json",
        tmp_path / ".ailab",
        tmp_path / "j.xml",
        Path("vms.yaml"),
        ["db"],
    )
    (env,) = seen
    assert env["AILAB_PLAN"] == str(tmp_path / "vms.yaml")  # absolute: pytest runs elsewhere
    assert env["AILAB_STATE_DIR"] == str(tmp_path / ".ailab")
    assert env["AILAB_INVENTORY_LISTING"] == str(tmp_path / "listing.json")
    assert env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] == "1"  # testinfra's plugin is named instead:
    (command,) = Recording.started[-1:]
    assert command[command.index("testinfra.plugin") - 1] == "-p"
    config = Path(env["ANSIBLE_CONFIG"])
    assert config.name == "ansible.cfg" and "ControlPersist" in config.read_text()
    assert (tmp_path / ".ansible" / "cp").is_dir()  # where that config puts the control sockets


def test_a_host_whose_suite_wrote_no_junit_counts_as_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Crashing(FakePytest):
        def communicate(self, timeout: float | None = None) -> tuple[str, str]:
            return "ImportError: boom", ""

    monkeypatch.setattr(verify.subprocess, "Popen", Crashing)
    monkeypatch.setenv("HOME", str(tmp_path))
    counts = verify.run_testinfra(
        tmp_path / "h.yml", tmp_path / "l.json", tmp_path, tmp_path / "j.xml", Path("p.yaml"), ["db"]
    )
    assert counts["errors"] == 1 and counts["passed"] == 0
    assert "db: ImportError: boom" in counts["detail"]
