"""What makes a no-op configure fast: mitogen where it loads, and facts kept across runs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.adapters import runner
from ailab_deploy.adapters.statedir import cached_facts_files, facts_dir, forget_facts

from .test_runner import local_play

PLAYBOOK = """\
- name: Gather when needed, then work
  hosts: all
  gather_facts: true
  tasks:
    - name: Use a fact
      ansible.builtin.debug:
        msg: "{{ ansible_facts['distribution'] }}"
"""


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AILAB_ANSIBLE_STRATEGY", raising=False)
    runner.choose_strategy.cache_clear()
    yield
    runner.choose_strategy.cache_clear()


def test_mitogen_is_chosen_where_it_loads() -> None:
    chosen = runner.choose_strategy()
    assert chosen.name == "mitogen_linear" and chosen.notice == ""
    assert chosen.plugin_dir is not None
    assert {p.name for p in Path(chosen.plugin_dir).iterdir()} >= {"mitogen_linear.py", "mitogen_free.py"}


def test_stock_strategy_with_one_line_notice_when_mitogen_does_not_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        stderr = (
            "Traceback ...\nansible.errors.AnsibleError: Your version of Ansible (2.99) is not supported\n"
        )
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(runner.subprocess, "run", failing)
    chosen = runner.choose_strategy()
    assert (chosen.name, chosen.plugin_dir) == ("linear", None)
    assert "\n" not in chosen.notice
    assert "mitogen does not load" in chosen.notice and "Your version of Ansible (2.99)" in chosen.notice


def test_a_passed_check_is_kept_while_the_installed_versions_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[list[str]] = []
    real_run = subprocess.run

    def counting(command: list[str], **options: Any) -> Any:
        probes.append(command)
        return real_run(command, **options)

    monkeypatch.setattr(runner.subprocess, "run", counting)
    verdict = tmp_path / "state" / "mitogen-loads.json"
    assert runner.choose_strategy(verdict).name == "mitogen_linear"
    assert len(probes) == 1 and json.loads(verdict.read_text())["loads"]["ansible-core"] == version(
        "ansible-core"
    )
    runner.choose_strategy.cache_clear()  # a new ailab-deploy process
    assert runner.choose_strategy(verdict).name == "mitogen_linear"
    assert len(probes) == 1
    # Another ansible-core since: checked again.
    kept = json.loads(verdict.read_text())
    verdict.write_text(json.dumps({"loads": kept["loads"] | {"ansible-core": "2.18.0"}}))
    runner.choose_strategy.cache_clear()
    assert runner.choose_strategy(verdict).name == "mitogen_linear"
    assert len(probes) == 2 and json.loads(verdict.read_text()) == kept


def test_a_failed_check_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ImportError: no\n")

    monkeypatch.setattr(runner.subprocess, "run", failing)
    verdict = tmp_path / "mitogen-loads.json"
    assert runner.choose_strategy(verdict).name == "linear"
    assert not verdict.exists()


def test_the_stock_strategy_can_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILAB_ANSIBLE_STRATEGY", "linear")
    assert runner.choose_strategy().name == "linear"


def _run(tmp_path: Path, ident: str, **options: Any) -> runner.PlaybookResult:
    playbook, inventory = local_play(tmp_path, PLAYBOOK)
    result = runner.run_playbook(
        inventory=inventory, state_dir=tmp_path / "state", ident=ident, playbook=str(playbook), **options
    )
    assert result.succeeded, result.failures
    return result


def test_facts_are_cached_in_the_state_dir_and_reused_by_the_next_run(tmp_path: Path) -> None:
    first = _run(tmp_path, "first")
    assert first.strategy == "mitogen_linear"
    (cached,) = cached_facts_files(tmp_path / "state", "controller")
    assert cached.parent == facts_dir(tmp_path / "state") and "_ansible_facts_gathered" in cached.read_text()
    assert first.artifact_dir is not None and not list(first.artifact_dir.rglob("fact_cache"))
    second = _run(tmp_path, "second")
    # The first run gathered and ran the task (2 ok); the second found the facts (1 ok).
    assert (first.hosts["controller"].ok, second.hosts["controller"].ok) == (2, 1)
    assert forget_facts(tmp_path / "state", "controller") and not cached.exists()
    assert not forget_facts(tmp_path / "state", "controller")  # nothing left to forget
    third = _run(tmp_path, "third")
    assert third.hosts["controller"].ok == 2  # a forgotten host is gathered again


def test_stock_settings_keep_runners_per_run_cache_and_the_linear_strategy(tmp_path: Path) -> None:
    result = _run(tmp_path, "stock", stock_settings=True)
    assert result.strategy == "linear"
    assert not facts_dir(tmp_path / "state").exists()


@pytest.mark.parametrize("name", ["web", "s1_web", "s12_web"])
def test_forgetting_a_host_removes_its_cache_file_in_either_naming(tmp_path: Path, name: str) -> None:
    directory = facts_dir(tmp_path)
    directory.mkdir()
    for other in ("web2", "s1_web2", "s1_xweb"):
        (directory / other).write_text("{}")
    (directory / name).write_text("{}")
    assert forget_facts(tmp_path, "web")
    assert sorted(p.name for p in directory.iterdir()) == ["s1_web2", "s1_xweb", "web2"]
