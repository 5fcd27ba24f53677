"""Run the playbooks through ansible-runner: progress from the event stream, results from stats.

Nothing here parses ansible-playbook's text output. Secrets reach Ansible only as
``-e @file`` references to 0600 files; runner is told not to write env files.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import ansible_runner

import ailab_deploy
from ailab_deploy.adapters.statedir import STRATEGY_VERDICT_FILENAME, facts_dir, read_kept_json
from ailab_deploy.errors import AilabError, InputError

log = logging.getLogger(__name__)

ARTIFACTS_KEPT = 20
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|API_KEY", re.IGNORECASE)


def project_root() -> Path:
    """The checkout holding playbooks/ and roles/ (the tool runs from a checkout, like kubespray)."""
    root = Path(ailab_deploy.__file__).resolve().parent.parent
    if not (root / "playbooks" / "site.yml").is_file():
        raise InputError(f"{root}: playbooks/site.yml not found; run ailab-deploy from its checkout")
    return root


MITOGEN_STRATEGY = "mitogen_linear"
MITOGEN_FREE_STRATEGY = "mitogen_free"


@dataclass(frozen=True)
class Strategy:
    """The strategy plugin a run uses: mitogen's where it loads, else Ansible's own ``linear``."""

    name: str
    plugin_dir: str | None = None  # ANSIBLE_STRATEGY_PLUGINS for a third-party strategy
    notice: str = ""  # one line saying why the stock strategy is used instead


def _mitogen_plugin_dir() -> Path | None:
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "plugins" / "strategy"


@functools.cache
def choose_strategy(verdict_file: Path | None = None) -> Strategy:
    """mitogen_linear if ansible_mitogen loads with this Ansible (checked in a child interpreter,
    the way ansible-playbook would load it), else ``linear`` with a one-line notice.

    The check costs half a second of CPU; with ``verdict_file``, a passed check is kept there
    for as long as the interpreter, ansible-core and mitogen are the same.
    """
    if os.environ.get("AILAB_ANSIBLE_STRATEGY", "").strip() == "linear":
        return Strategy("linear", notice="stock linear strategy (AILAB_ANSIBLE_STRATEGY=linear)")
    plugin_dir = _mitogen_plugin_dir()
    if plugin_dir is None:
        return Strategy("linear", notice="mitogen is not installed: stock linear strategy")
    loads = Strategy(MITOGEN_STRATEGY, str(plugin_dir))
    installed = _installed_versions(plugin_dir)
    if verdict_file is not None and read_kept_json(verdict_file) == {"loads": installed}:
        return loads
    probe = subprocess.run(
        [sys.executable, "-c", "import ansible_mitogen.strategy"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    plugins = (plugin_dir / f"{name}.py" for name in (MITOGEN_STRATEGY, MITOGEN_FREE_STRATEGY))
    if probe.returncode != 0 or not all(plugin.is_file() for plugin in plugins):
        reason = (probe.stderr.strip().splitlines() or ["strategy plugin missing"])[-1][:200]
        return Strategy("linear", notice=f"mitogen does not load here ({reason}): stock linear strategy")
    if verdict_file is not None:
        verdict_file.parent.mkdir(parents=True, exist_ok=True)
        verdict_file.write_text(json.dumps({"loads": installed}) + "\n", encoding="utf-8")
    return loads


def _installed_versions(plugin_dir: Path) -> dict[str, str]:
    return {
        "python": sys.executable,
        "ansible-core": metadata.version("ansible-core"),
        "mitogen": metadata.version("mitogen"),
        "plugins": str(plugin_dir),
    }


def ansible_playbook_binary() -> str:
    """ansible-playbook from this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.is_file() else shutil.which("ansible-playbook")
    if found is None:
        raise AilabError("ansible-playbook not found: install the project with its dependencies")
    return found


@dataclass
class HostTally:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str = ""


@dataclass
class PlaybookResult:
    status: str
    rc: int
    seconds: float
    hosts: dict[str, HostTally]
    failures: list[str] = field(default_factory=list)
    artifact_dir: Path | None = None
    strategy: str = "linear"

    @property
    def changed(self) -> int:
        return sum(tally.changed for tally in self.hosts.values())

    @property
    def succeeded(self) -> bool:
        return self.rc == 0 and all(t.failed == 0 and t.unreachable == 0 for t in self.hosts.values())


ProgressCallback = Callable[[dict[str, HostTally]], None]


class EventTally:
    """Folds ansible-runner events into per-host counts and a current task."""

    def __init__(self, on_progress: ProgressCallback | None = None) -> None:
        self.hosts: dict[str, HostTally] = {}
        self.failures: list[str] = []
        self._on_progress = on_progress

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host = data.get("host")
        kind = event.get("event", "")
        if host:
            tally = self.hosts.setdefault(host, HostTally())
            if kind == "runner_on_start":
                tally.task = str(data.get("task", ""))
            elif kind == "runner_on_ok":
                tally.ok += 1
                if (data.get("res") or {}).get("changed"):
                    tally.changed += 1
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                tally.failed += 1
                self.failures.append(f"{host}: {data.get('task', '?')}: {_failure_message(data)}")
            elif kind == "runner_on_unreachable":
                tally.unreachable += 1
                self.failures.append(f"{host}: unreachable: {_failure_message(data)}")
            elif kind == "runner_on_skipped":
                tally.skipped += 1
            if self._on_progress is not None:
                self._on_progress(self.hosts)
        return True  # keep the event in the artifacts


def _failure_message(data: dict[str, Any]) -> str:
    result = data.get("res") or {}
    message = result.get("msg") or result.get("stderr") or result.get("reason") or "failed"
    return str(message).splitlines()[0][:300]


def run_playbook(
    *,
    inventory: Path,
    state_dir: Path,
    ident: str,
    playbook: str = "playbooks/site.yml",
    extra_vars_files: Sequence[Path] = (),
    tags: Sequence[str] = (),
    limit: str | None = None,
    stock_settings: bool = False,
    on_progress: ProgressCallback | None = None,
) -> PlaybookResult:
    """Run ``playbook`` against ``inventory``; raise :class:`AilabError` when it cannot start."""
    root = project_root()
    private_dir = state_dir / "runner"
    private_dir.mkdir(parents=True, exist_ok=True)
    envvars = {
        "PATH": f"{Path(ansible_playbook_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # runner turns host key checking off unless told otherwise; it stays on here.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_ROLES_PATH": str(root / "roles"),
        "ANSIBLE_LOCAL_TEMP": str(state_dir / "ansible-tmp"),
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
    }
    # runner's jsonfile fact cache, pointed at the state dir (an absolute path is kept as is)
    # instead of each run's artifacts, so `gathering = smart` finds last run's facts.
    fact_cache: dict[str, Any] = {"fact_cache_type": "jsonfile", "fact_cache": str(facts_dir(state_dir))}
    chosen = Strategy("linear") if stock_settings else choose_strategy(state_dir / STRATEGY_VERDICT_FILENAME)
    if chosen.notice:
        log.warning("%s", chosen.notice)
    if chosen.plugin_dir:
        envvars["ANSIBLE_STRATEGY_PLUGINS"] = chosen.plugin_dir
        envvars["ANSIBLE_STRATEGY"] = chosen.name
        # site.yml's play of all hosts' layers takes its free strategy from here.
        envvars["AILAB_FREE_STRATEGY"] = MITOGEN_FREE_STRATEGY
    if stock_settings:
        # Ansible's defaults, for comparison: an empty config (else the project's ansible.cfg in
        # the working directory would apply) and runner's per-run fact cache. Host key checking stays on.
        stock = state_dir / "stock-ansible.cfg"
        stock.write_text("# Ansible's defaults, for the stock-settings benchmark.\n[defaults]\n")
        envvars["ANSIBLE_CONFIG"] = str(stock)
        fact_cache = {"fact_cache_type": "jsonfile"}
    # runner records its whole environment in the artifacts: blank anything secret-like.
    envvars.update({name: "" for name in os.environ if _SECRET_NAME.search(name)})
    cmdline = " ".join(f"-e @{shlex.quote(str(path))}" for path in extra_vars_files)
    tally = EventTally(on_progress)
    started = time.monotonic()
    log.info("running %s against %s (ident %s)", playbook, inventory, ident)
    runner = ansible_runner.run(
        private_data_dir=str(private_dir),
        project_dir=str(root),
        playbook=playbook,
        **fact_cache,
        inventory=str(inventory.resolve()),
        ident=ident,
        rotate_artifacts=ARTIFACTS_KEPT,
        suppress_env_files=True,
        quiet=True,
        envvars=envvars,
        cmdline=cmdline or None,
        tags=",".join(tags) or None,
        limit=limit,
        event_handler=tally,
    )
    seconds = time.monotonic() - started
    if runner.status in ("failed", "successful") or runner.rc is not None:
        _merge_stats(tally.hosts, runner.stats or {})
    else:
        raise AilabError(f"ansible-runner did not run the playbook: status {runner.status}")
    return PlaybookResult(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else 1),
        seconds=seconds,
        hosts=tally.hosts,
        failures=tally.failures,
        artifact_dir=Path(runner.config.artifact_dir) if runner.config else None,
        strategy=chosen.name,
    )


def _merge_stats(hosts: dict[str, HostTally], stats: dict[str, Any]) -> None:
    """Runner's final stats are authoritative for the counts."""
    fields = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failed",
        "dark": "unreachable",
        "skipped": "skipped",
    }
    for stat_name, attribute in fields.items():
        for host, count in (stats.get(stat_name) or {}).items():
            setattr(hosts.setdefault(host, HostTally()), attribute, int(count))
