"""`privileges`: the PVE role, user and token ailab-deploy needs, as `pveum` commands."""

from __future__ import annotations

from pathlib import Path

import typer

from ailab_deploy.cli.output import PlanOption, load, out
from ailab_deploy.core import privileges as catalogue
from ailab_deploy.errors import InputError

VersionOption = typer.Option(
    catalogue.DEFAULT_RELEASE, "--pve-version", help=f"PVE release: {', '.join(catalogue.RELEASES)}."
)


def privileges(
    plan: Path = PlanOption,
    pve_version: str = VersionOption,
    explain: bool = typer.Option(False, "--explain", help="Say what each privilege is for."),
    markdown: bool = typer.Option(False, "--markdown", help="Print SETUP.md's section (all releases)."),
) -> None:
    """Print the pveum commands for the role, user and token the plan's features need."""
    if markdown:
        out.print(catalogue.setup_markdown(), markup=False, soft_wrap=True, highlight=False)
        return
    if pve_version not in catalogue.RELEASES:
        raise InputError(f"--pve-version {pve_version}: not one of {', '.join(catalogue.RELEASES)}")
    features = catalogue.plan_features(load(plan, quiet=True).plan)
    out.print(f"# PVE {pve_version}; features: {', '.join(features)}", markup=False, soft_wrap=True)
    for line in catalogue.pveum_commands(pve_version, features):
        out.print(line, markup=False, soft_wrap=True)
    if explain:
        for need in catalogue.needs(pve_version, features):
            out.print(f"# {need.privilege} on {need.path}: {need.used_for}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("privileges")(privileges)
