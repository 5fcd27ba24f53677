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
