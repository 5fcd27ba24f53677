"""ansible-runner integration on localhost: counts come from events and stats, secrets stay out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ailab_deploy.adapters.runner import run_playbook

PLAYBOOK = """\
- name: Exercise the runner
  hosts: all
  gather_facts: false
  tasks:
    - name: Report something
      ansible.builtin.debug:
        msg: hello
    - name: Change something
      ansible.builtin.command: "true"
      changed_when: true
    - name: Use a secret
      ansible.builtin.set_fact:
        seen: "{{ db_password | length }}"
      no_log: true
"""


def local_play(directory: Path, text: str) -> tuple[Path, Path]:
    """``text`` as a playbook, and an inventory whose one host is this machine (local connection)."""
    playbook = directory / "play.yml"
    playbook.write_text(text)
    inventory = directory / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    controller:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    return playbook, inventory


def test_run_playbook_counts_and_keeps_secrets_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILAB_PVE_TOKEN_SECRET", "Env-Token-Secret-Value")
    playbook, inventory = local_play(tmp_path, PLAYBOOK)
    secrets = tmp_path / "secrets.yml"
    secrets.write_text("db_password: Sup3r-Secret-Value\n")
    secrets.chmod(0o600)
    progress: list[int] = []
    result = run_playbook(
        inventory=inventory,
        state_dir=tmp_path / "state",
        ident="test-1",
        playbook=str(playbook),
        extra_vars_files=[secrets],
        on_progress=lambda hosts: progress.append(hosts["controller"].ok),
    )
    assert result.succeeded, result.failures
    tally = result.hosts["controller"]
    assert (tally.ok, tally.changed, tally.failed) == (3, 1, 0)
    assert progress and progress[-1] >= 1
    assert result.artifact_dir is not None and result.artifact_dir.is_dir()
    written = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert not any(p.parent.name == "env" for p in written)  # suppress_env_files
    for path in written:
        text = path.read_text(errors="replace")
        assert "Sup3r-Secret-Value" not in text, path
        assert "Env-Token-Secret-Value" not in text, path
    command = json.loads((result.artifact_dir / "command").read_text())
    assert command["env"]["ANSIBLE_HOST_KEY_CHECKING"] == "True"


def test_failures_are_reported_per_host(tmp_path: Path) -> None:
    playbook = tmp_path / "fail.yml"
    playbook.write_text(
        "- name: Fail\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Break on purpose\n      ansible.builtin.fail:\n        msg: broken on purpose\n"
    )
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    controller:\n      ansible_connection: local\n")
    result = run_playbook(
        inventory=inventory, state_dir=tmp_path / "state", ident="t2", playbook=str(playbook)
    )
    assert not result.succeeded
    assert result.hosts["controller"].failed == 1
    assert result.failures == ["controller: Break on purpose: broken on purpose"]
