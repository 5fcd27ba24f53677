"""Shared CLI plumbing: consoles, the --plan option, loading the plan with its warnings."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ailab_deploy.core.loader import LoadedPlan, load_plan

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

PlanOption = typer.Option(Path("vms.yaml"), "--plan", "-p", help="Plan file to read.", show_default=True)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


def load(plan_path: Path, *, quiet: bool = False) -> LoadedPlan:
    """Load and check the plan; print its warnings to stderr unless ``quiet``."""
    loaded = load_plan(plan_path)
    if not quiet:
        print_warnings(loaded)
    return loaded


def print_warnings(loaded: LoadedPlan) -> None:
    for warning in loaded.warnings:
        err.print(f"[yellow]warning:[/] {warning}", markup=True)
