"""Where a plan's state lives: ``.ailab/`` next to the plan file, and the files in it that
several adapters share (the known_hosts file the tool trusts)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

STATE_DIRNAME = ".ailab"
STATE_DIR_ENV = "AILAB_STATE_DIR"
KNOWN_HOSTS_FILENAME = "known_hosts"
STRATEGY_VERDICT_FILENAME = "mitogen-loads.json"  # which installed versions mitogen was seen to load with


def state_dir_for(plan_path: Path) -> Path:
    """``.ailab/`` next to the plan file, unless ``AILAB_STATE_DIR`` names another directory."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser().absolute()
    return plan_path.expanduser().absolute().parent / STATE_DIRNAME


def known_hosts_path(state_dir: Path) -> Path:
    """The one known_hosts file the tool trusts: for the node (pyinfra) and the VMs (Ansible)."""
    return state_dir / KNOWN_HOSTS_FILENAME


FACTS_DIRNAME = "facts"


def facts_dir(state_dir: Path) -> Path:
    """Ansible's fact cache (jsonfile, one file per inventory host), kept across runs."""
    return state_dir / FACTS_DIRNAME


def cached_facts_files(state_dir: Path, host: str) -> list[Path]:
    """``host``'s fact cache files: ``<host>``, or ``s<schema>_<host>`` (ansible-core >= 2.19)."""
    directory = facts_dir(state_dir)
    if not directory.is_dir():
        return []
    pattern = re.compile(rf"(s\d+_)?{re.escape(host)}")
    return [path for path in directory.iterdir() if pattern.fullmatch(path.name)]


def forget_facts(state_dir: Path, host: str) -> bool:
    """Drop ``host``'s cached facts (its VM was re-created or changed); True if there were any."""
    found = cached_facts_files(state_dir, host)
    for path in found:
        path.unlink(missing_ok=True)
    return bool(found)


def browser_cache_dir(state_dir: Path) -> Path:
    """Chromium's HTTP cache for the browser check (the apps' static files), kept across runs."""
    return state_dir / "browser-cache"


def read_kept_json(path: Path) -> Any:
    """A JSON file the tool keeps in its state dir; None when it is missing or unreadable, and
    then made again by whoever keeps it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
