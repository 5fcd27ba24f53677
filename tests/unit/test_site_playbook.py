"""Static checks of playbooks/site.yml: the layers' tags still select them, the apps wait first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SITE = Path(__file__).resolve().parents[2] / "playbooks" / "site.yml"


def _layers_play() -> dict[str, Any]:
    plays = yaml.safe_load(SITE.read_text())
    return next(play for play in plays if any("ansible.builtin.include_role" in t for t in play["tasks"]))


def _role_includes(play: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        task["ansible.builtin.include_role"]["name"]: task
        for task in play["tasks"]
        if "ansible.builtin.include_role" in task
    }


def test_every_role_of_the_product_is_included_once() -> None:
    assert set(_role_includes(_layers_play())) == {"common", "postgresql", "backup", "llm", "python_app"}


def test_each_include_gives_its_tasks_its_own_tags() -> None:
    """Tags on an include select the include only; `apply` carries them to the role's tasks,
    so `configure --tags postgresql` still runs PostgreSQL's tasks."""
    for role, task in _role_includes(_layers_play()).items():
        applied = task["ansible.builtin.include_role"].get("apply", {}).get("tags")
        assert applied is not None, f"{role}: no apply.tags"
        assert set(applied) == set(task["tags"]), role


def test_the_apps_wait_for_the_database_and_the_llm_before_their_role() -> None:
    tasks = _layers_play()["tasks"]
    names = [task.get("name", "") for task in tasks]
    apps_at = next(
        i
        for i, t in enumerate(tasks)
        if t.get("ansible.builtin.include_role", {}).get("name") == "python_app"
    )
    waits = [i for i, name in enumerate(names) if name.startswith("Wait until")]
    database_wait = next(i for i in waits if "database" in names[i])
    llm_wait = next(i for i in waits if "LLM" in names[i])
    assert database_wait < apps_at and llm_wait < apps_at
    for index in (database_wait, llm_wait):
        assert "apps" in tasks[index]["tags"], names[index]  # `--tags apps` keeps the waits
    the_roles = {
        t["ansible.builtin.include_role"]["name"]: i
        for i, t in enumerate(tasks)
        if "ansible.builtin.include_role" in t
    }
    assert the_roles["common"] < min(the_roles[r] for r in ("postgresql", "backup", "llm", "python_app"))


def _role_tasks() -> list[tuple[str, dict[str, Any]]]:
    """Every task of every role, blocks opened, with the file it is in."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(where: str, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            found.append((where, task))
            for part in ("block", "rescue", "always"):
                walk(where, task.get(part) or [])

    for path in sorted((SITE.parents[1] / "roles").glob("*/tasks/*.yml")):
        walk(str(path.relative_to(SITE.parents[1])), yaml.safe_load(path.read_text()) or [])
    return found


def test_no_play_sets_an_environment_for_all_of_its_tasks() -> None:
    """A play-wide environment is templated again for every task on every host."""
    for play in yaml.safe_load(SITE.read_text()):
        assert "environment" not in play, play["name"]


def test_every_download_over_http_goes_through_the_proxy_environment() -> None:
    def downloads(task: dict[str, Any]) -> bool:
        if "ansible.builtin.get_url" in task:
            return True
        url = str((task.get("ansible.builtin.uri") or {}).get("url", ""))
        # The health checks and Ollama's API are on the host itself or the private network.
        return bool(url) and "__llm" not in url and "python_app_listen_address" not in url

    found = [(where, task) for where, task in _role_tasks() if downloads(task)]
    assert len(found) >= 4
    for where, task in found:
        assert "ailab_proxy_env" in str(task.get("environment")), f"{where}: {task['name']}"
