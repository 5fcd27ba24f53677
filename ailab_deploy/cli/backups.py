"""`backups` (what there is to restore, per VM) and `restore` (a VM back from its archive)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from ailab_deploy.cli.configure import print_outcome
from ailab_deploy.cli.output import JsonOption, PlanOption, err, load, out
from ailab_deploy.cli.provision import TaskTimeoutOption, YesOption
from ailab_deploy.cli.verify import print_verify
from ailab_deploy.errors import AilabError
from ailab_deploy.pipeline.backups import list_backups, restore_vm
from ailab_deploy.pipeline.provision import ApplyOptions


def _size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def _age(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.0f} min"


def _progress(message: str) -> None:
    """Progress goes to stderr, also with --json (stdout is the JSON alone)."""
    err.print(message, markup=False)


def backups_command(
    plan: Path = PlanOption,
    run: bool = typer.Option(False, "--run", help="Run the node's backup job now, then list."),
    task_timeout: float = TaskTimeoutOption,
    as_json: bool = JsonOption,
) -> None:
    """The vzdump archives of each VM on the node and the database dumps, with age and size."""
    loaded = load(plan, quiet=as_json)
    if run:
        _progress("running the backup job now")
    listing = list_backups(
        loaded, run_now=run, options=ApplyOptions(clone_timeout=task_timeout), progress=_progress
    )
    if as_json:
        out.print_json(json.dumps(listing.to_dict()))
    else:
        table = Table(title="Backups")
        for column in ("VM", "kind", "name", "age", "size", "notes"):
            table.add_column(column, overflow="fold")
        for item in listing.items:
            table.add_row(item.vm, item.kind, item.name, _age(item.age_hours), _size(item.size), item.notes)
        out.print(table)
        for problem in listing.problems:
            err.print(f"problem: {problem}", markup=False)
    if not listing.items:
        raise AilabError("no backups found: `ailab-deploy backups --run` takes the VMs' first archives")


def restore_command(
    plan: Path = PlanOption,
    vm: str = typer.Option(..., "--vm", help="The VM to restore (its name in the plan)."),
    archive: str | None = typer.Option(
        None, "--archive", help="Volume id of the archive (default: the VM's newest; see `backups`)."
    ),
    yes: bool = YesOption,
    task_timeout: float = TaskTimeoutOption,
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip verify after configure."),
    as_json: bool = JsonOption,
) -> None:
    """Restore a VM from its vzdump archive (over the VM if it still exists), start it, check its
    host keys, then configure it and verify the lab."""
    loaded = load(plan, quiet=as_json)
    if not yes:
        what = f"{vm} from {archive or 'its newest archive'}, replacing the VM if it exists"
        if not sys.stdin.isatty():
            raise AilabError(f"restore would put back {what}; pass --yes to confirm (no terminal to ask)")
        typer.confirm(f"Restore {what}?", abort=True)
    outcome = restore_vm(
        loaded,
        vm,
        archive,
        options=ApplyOptions(task_timeout=task_timeout),
        run_verify=not no_verify,
        progress=_progress,
    )
    restored = outcome.restored
    passed = outcome.verified is None or (outcome.verified.report.passed and not outcome.verified.problems)
    if as_json:
        summary = {
            "vm": restored.name,
            "vmid": restored.vmid,
            "archive": restored.archive,
            "restore_seconds": round(restored.restore_seconds, 2),
            "seconds": round(restored.seconds, 2),
            "configure_run": outcome.configured.run_id,
            "verify": outcome.verified.report.to_dict() | {"problems": list(outcome.verified.problems)}
            if outcome.verified
            else None,
            "passed": passed,
        }
        out.print_json(json.dumps(summary))
    else:
        out.print(
            f"{restored.name}: VM {restored.vmid} restored from {restored.archive} in "
            f"{restored.restore_seconds:.1f} s; running with its host keys after {restored.seconds:.1f} s"
        )
        print_outcome(outcome.configured.playbook)
        if outcome.verified is not None:
            print_verify(outcome.verified)
    if not passed:
        assert outcome.verified is not None
        raise AilabError(f"{vm} was restored, but verification failed (run {outcome.verified.run_id})")


def register(app: typer.Typer) -> None:
    app.command("backups")(backups_command)
    app.command("restore")(restore_command)
