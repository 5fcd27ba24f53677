"""`ailab-deploy report [RUN]`: a verify run as one self-contained HTML page, with trends."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer

from ailab_deploy.cli.output import PlanOption, out
from ailab_deploy.cli.runs import open_ledger
from ailab_deploy.pipeline.html_report import write_html_report


def report(
    run: int | None = typer.Argument(None, help="Verify run id (default: the latest verify run)."),
    plan: Path = PlanOption,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the page here instead of beside the run's JSON report."
    ),
    open_page: bool = typer.Option(False, "--open", help="Open the page in this desktop's browser."),
) -> None:
    """Write a verify run's HTML report: gates, timings, screenshots, charts across all runs."""
    with open_ledger(plan) as ledger:
        path = write_html_report(ledger, run, output)
    out.print(f"HTML report: {path}")
    if open_page:
        webbrowser.open(path.resolve().as_uri())


def register(app: typer.Typer) -> None:
    app.command()(report)
