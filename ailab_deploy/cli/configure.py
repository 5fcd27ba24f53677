"""`ailab-deploy configure`: converge the VMs with the Ansible roles."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ailab_deploy.adapters.runner import HostTally, PlaybookResult
from ailab_deploy.cli.output import PlanOption, err, load, out
from ailab_deploy.errors import AilabError
from ailab_deploy.pipeline.configure import configure as run_configure


def host_table(hosts: dict[str, HostTally], title: str) -> Table:
    table = Table(title=title)
    for column in ("host", "ok", "changed", "failed", "unreachable", "task"):
        table.add_column(column)
    for name in sorted(hosts):
        tally = hosts[name]
        table.add_row(
            name, str(tally.ok), str(tally.changed), str(tally.failed), str(tally.unreachable), tally.task
        )
    return table


def print_outcome(result: PlaybookResult, console: Console = out) -> None:
    console.print(host_table(result.hosts, f"configure: {result.status} in {result.seconds:.1f}s"))
    console.print(f"changed={result.changed} hosts={len(result.hosts)} seconds={result.seconds:.1f}")
    for failure in result.failures:
        err.print(f"failed: {failure}", markup=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def configure(
        plan: Path = PlanOption,
        tags: list[str] = typer.Option([], "--tags", "-t", help="Only these layers (e.g. postgresql)."),
        limit: str | None = typer.Option(None, "--limit", help="Only these hosts (Ansible pattern)."),
    ) -> None:
        """Converge every VM with the Ansible roles (through ansible-runner)."""
        loaded = load(plan)
        with Live(host_table({}, "configure"), console=out, transient=True, auto_refresh=False) as live:
            outcome = run_configure(
                loaded,
                tags=tags,
                limit=limit,
                on_progress=lambda hosts: live.update(host_table(hosts, "configure"), refresh=True),
            )
        print_outcome(outcome.playbook)
        out.print(f"run {outcome.run_id}; inventory {outcome.inventory.inventory_path}")
        if not outcome.playbook.succeeded:
            broken = [name for name, t in outcome.playbook.hosts.items() if t.failed or t.unreachable]
            raise AilabError(f"configure failed on {', '.join(sorted(broken)) or 'the playbook'}")
