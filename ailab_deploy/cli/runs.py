"""`ailab-deploy runs` and `ailab-deploy runs show ID`: what earlier runs did, from the ledger."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ailab_deploy.adapters.ledger import LEDGER_FILENAME, Ledger, RunDetail, RunSummary
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.cli.output import JsonOption, PlanOption, out
from ailab_deploy.errors import AilabError

runs_app = typer.Typer(
    help="Earlier runs of plan/apply/configure/verify, from the ledger in .ailab/.",
    invoke_without_command=True,
    no_args_is_help=False,
)

_STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "yellow", "interrupted": "magenta"}


def open_ledger(plan: Path) -> Ledger:
    """The plan's ledger; the plan file itself need not be valid (or exist) to read history."""
    state_dir = state_dir_for(plan)
    if not (state_dir / LEDGER_FILENAME).is_file():
        raise AilabError(f"no runs recorded yet: {state_dir / LEDGER_FILENAME} does not exist")
    return Ledger(state_dir)


def _time(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:04.1f}s" if minutes else f"{rest:.1f}s"


def _status(status: str) -> str:
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _summary_json(summary: RunSummary) -> dict[str, object]:
    return {**asdict(summary), "duration": summary.duration}


def _detail_json(detail: RunDetail) -> dict[str, object]:
    return {
        "run": _summary_json(detail.summary),
        "error": detail.error,
        "steps": [{**asdict(step), "duration": step.duration} for step in detail.steps],
        "events": [asdict(event) for event in detail.events],
        "reports": [asdict(report) for report in detail.reports],
    }


@runs_app.callback()
def list_runs(
    context: typer.Context,
    plan: Path = PlanOption,
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many of the newest runs."),
    as_json: bool = JsonOption,
) -> None:
    """List the newest runs: command, plan hash, start, duration, status, steps ok/failed."""
    if context.invoked_subcommand is not None:
        return
    with open_ledger(plan) as ledger:
        summaries = ledger.runs(limit)
    if as_json:
        out.print_json(json.dumps([_summary_json(s) for s in summaries]))
        return
    table = Table(title=f"Runs ({state_dir_for(plan)})")
    for column in ("id", "command", "plan", "started", "duration", "status", "steps ok/failed"):
        table.add_column(column, justify="right" if column in ("id", "duration") else "left")
    for s in summaries:
        table.add_row(
            str(s.id),
            s.command,
            s.plan_hash_short,
            _time(s.started_at),
            _duration(s.duration),
            _status(s.status),
            f"{s.steps_succeeded}/{s.steps_failed} of {s.steps_total}",
        )
    out.print(table)


@runs_app.command("show")
def show_run(
    context: typer.Context,
    run_id: int = typer.Argument(..., help="Run id, from `ailab-deploy runs`."),
    plan: Path | None = typer.Option(None, "--plan", "-p", help="Plan file to read. [default: vms.yaml]"),
    as_json: bool = JsonOption,
) -> None:
    """Show one run: steps per VM and phase with timings and errors, events, reports."""
    if plan is None:  # `runs --plan X show ID` puts the option on the group
        plan = context.parent.params["plan"] if context.parent else Path("vms.yaml")
    with open_ledger(plan) as ledger:
        detail = ledger.run(run_id)
    if as_json:
        out.print_json(json.dumps(_detail_json(detail)))
        return
    s = detail.summary
    out.print(
        f"run {s.id}: {s.command}, plan {s.plan_hash_short}, started {_time(s.started_at)}, "
        f"took {_duration(s.duration)}, {_status(s.status)}"
    )
    if detail.error:
        out.print(f"error: {detail.error}", markup=False)
    steps = Table(title="Steps")
    for column in ("vm", "phase", "state", "started", "duration", "detail / error"):
        steps.add_column(column)
    for step in detail.steps:
        steps.add_row(
            step.vm,
            step.phase,
            _status(step.state),
            _time(step.started_at),
            _duration(step.duration),
            escape(step.error or step.detail),
        )
    out.print(steps)
    if detail.events:
        events = Table(title="Events")
        for column in ("time", "level", "vm", "message"):
            events.add_column(column)
        for event in detail.events:
            events.add_row(_time(event.at), event.level, escape(event.vm or ""), escape(event.message))
        out.print(events)
    for report in detail.reports:
        out.print(f"report ({report.kind}): {report.path}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
