"""`plan`, `apply`, `destroy`, `rollback`: parse, call the provisioning engine, print."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.cli.output import JsonOption, PlanOption, err, load, out
from ailab_deploy.core.diff import (
    Action,
    Change,
    Conflict,
    Create,
    Error,
    Grow,
    Migrate,
    ProvisionPlan,
    Update,
)
from ailab_deploy.errors import AilabError
from ailab_deploy.pipeline.provision import ApplyFailed, ApplyOptions, ApplyReport, Provisioner

ParallelOption = typer.Option(4, "--parallel", min=1, max=64, help="VMs worked on at once.")
NoWaitSshOption = typer.Option(
    False, "--no-wait-ssh", help="Skip waiting for SSH and recording host keys (API-only labs)."
)
TaskTimeoutOption = typer.Option(600.0, "--task-timeout", help="Seconds to wait for one PVE task.")
CloneTimeoutOption = typer.Option(1800.0, "--clone-timeout", help="Seconds to wait for one full clone.")
AgentTimeoutOption = typer.Option(300.0, "--agent-timeout", help="Seconds to wait for the guest agent's IP.")
SshTimeoutOption = typer.Option(300.0, "--ssh-timeout", help="Seconds to wait for SSH.")
YesOption = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


ReplacePlacementOption = typer.Option(
    False, "--replace-placement", help="Place every VM afresh (existing ones migrate), as on a new cluster."
)


def _open(
    plan_path: Path, quiet: bool, progress: bool = True, replace_placement: bool = False
) -> Provisioner:
    loaded = load(plan_path, quiet=quiet)
    client = ProxmoxClient.from_plan(loaded)
    state_dir = state_dir_for(loaded.path)
    ledger = Ledger(state_dir, secrets=client.secrets)
    printer = (
        (lambda message: err.print(message, markup=False)) if progress and not quiet else (lambda _: None)
    )
    return Provisioner(
        loaded, client, ledger, state_dir, progress=printer, replace_placement=replace_placement
    )


def _short(value: str | None, width: int = 48) -> str:
    if value is None:
        return "(unset)"
    text = value.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def _change_text(change: Change) -> str:
    if change.new is None:
        return f"{change.key}: {_short(change.old)} -> (delete)"
    return f"{change.key}: {_short(change.old)} -> {_short(change.new)}"


def _action_text(action: Action) -> str:
    if isinstance(action, Create):
        return f"clone onto {action.storage}, {action.disk_gib} GiB"
    if isinstance(action, Update):
        restart = " (needs restart)" if action.needs_restart else ""
        return "; ".join(_change_text(c) for c in action.changes) + restart
    if isinstance(action, Grow):
        return f"grow {action.disk} {action.from_gib:g}G -> {action.to_gib}G"
    if isinstance(action, Migrate):
        how = "running: offline unless apply --online" if action.running else "stopped"
        return f"migrate {action.source} -> {action.target} ({how})"
    if isinstance(action, Conflict | Error):
        return action.reason
    return {"start": "start", "wait": "locked; apply waits for it", "no-op": "matches the plan"}.get(
        action.kind, "managed but not in the plan; `destroy --vm NAME` removes it"
    )


def _print_plan(plan: ProvisionPlan) -> None:
    table = Table(title="Provisioning plan")
    for column in ("VM", "vmid", "node", "action", "details"):
        table.add_column(column, overflow="fold")
    for vm in plan.vms:
        for index, action in enumerate(vm.actions):
            style = {"conflict": "red", "error": "red", "no-op": "dim"}.get(action.kind, "")
            table.add_row(
                vm.name if index == 0 else "",
                str(vm.vmid) if index == 0 else "",
                vm.node if index == 0 else "",
                f"[{style}]{action.kind}[/]" if style else action.kind,
                _action_text(action),
            )
    out.print(table)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(plan.counts().items()))
    out.print(f"summary: {counts}")


def _calls_text(calls: dict[str, Any]) -> str:
    return f"API calls: {calls['reads']} reads, {calls['writes']} writes"


def _print_report(report: ApplyReport, what: str) -> None:
    for result in report.results:
        done = "; ".join(result.done) or "nothing to change"
        out.print(f"{result.name} (VM {result.vmid}): {'FAILED: ' + result.error if result.error else done}")
    out.print(
        f"{what} run {report.run_id} finished in {report.seconds:.1f} s. {_calls_text(report.api_calls)}"
    )


def _report_json(report: ApplyReport) -> str:
    return json.dumps(
        {
            "run": report.run_id,
            "seconds": round(report.seconds, 3),
            "vms": [asdict(r) for r in report.results],
            "api_calls": report.api_calls,
        }
    )


def plan_command(
    plan: Path = PlanOption, as_json: bool = JsonOption, replace_placement: bool = ReplacePlacementOption
) -> None:
    """Show, per VM, what apply would change on the node (read-only)."""
    provisioner = _open(plan, quiet=as_json, replace_placement=replace_placement)
    started = time.monotonic()
    result = provisioner.compute()
    seconds = time.monotonic() - started
    calls = provisioner.client.stats.as_dict()
    if as_json:
        out.print_json(json.dumps({**result.to_dict(), "api_calls": calls, "seconds": round(seconds, 3)}))
    else:
        _print_plan(result)
        out.print(f"read the node in {seconds:.2f} s. {_calls_text(calls)}")
    if result.problems:
        raise AilabError(
            f"{len(result.problems)} conflict(s) or error(s); apply refuses until they are fixed"
        )


def apply_command(
    plan: Path = PlanOption,
    parallel: int = ParallelOption,
    no_wait_ssh: bool = NoWaitSshOption,
    snapshot: bool = typer.Option(False, "--snapshot", help="Snapshot each existing VM before changing it."),
    restart: bool = typer.Option(False, "--restart", help="Reboot running VMs whose changes need it."),
    online: bool = typer.Option(
        False, "--online", help="Migrate running VMs live (with local disks) instead of shut down and moved."
    ),
    replace_placement: bool = ReplacePlacementOption,
    task_timeout: float = TaskTimeoutOption,
    clone_timeout: float = CloneTimeoutOption,
    agent_timeout: float = AgentTimeoutOption,
    ssh_timeout: float = SshTimeoutOption,
    as_json: bool = JsonOption,
) -> None:
    """Make the node match the plan: clone, configure, grow, start, wait, record host keys."""
    provisioner = _open(plan, quiet=as_json, replace_placement=replace_placement)
    options = ApplyOptions(
        parallel=parallel,
        wait_ssh=not no_wait_ssh,
        snapshot=snapshot,
        restart=restart,
        online=online,
        task_timeout=task_timeout,
        clone_timeout=clone_timeout,
        agent_timeout=agent_timeout,
        ssh_timeout=ssh_timeout,
    )
    try:
        report = provisioner.apply(options)
    except ApplyFailed as failure:
        if as_json:
            out.print_json(_report_json(failure.report))
        raise
    if as_json:
        out.print_json(_report_json(report))
    else:
        _print_report(report, "apply")


def destroy_command(
    plan: Path = PlanOption,
    vm: list[str] | None = typer.Option(None, "--vm", help="Destroy only this VM (repeatable)."),
    yes: bool = YesOption,
    parallel: int = ParallelOption,
    task_timeout: float = TaskTimeoutOption,
) -> None:
    """Stop and delete the VMs ailab-deploy manages (all, or --vm NAME). Honours protection."""
    provisioner = _open(plan, quiet=False)
    targets = provisioner.destroy_targets(vm or None)
    if not targets:
        out.print("nothing to destroy: no managed VM exists")
        return
    listing = ", ".join(f"{t.name} (VM {t.vmid})" for t in targets)
    if not yes:
        if not sys.stdin.isatty():
            raise AilabError(f"destroy would delete {listing}; pass --yes to confirm (no terminal to ask)")
        typer.confirm(f"Destroy {listing}, with their disks?", abort=True)
    report = provisioner.destroy(targets, ApplyOptions(parallel=parallel, task_timeout=task_timeout))
    _print_report(report, "destroy")


def rollback_command(
    plan: Path = PlanOption,
    vm: str = typer.Option(..., "--vm", help="The VM to roll back."),
    snapshot: str | None = typer.Option(None, "--snapshot", help="Snapshot name (default: newest ailab-*)."),
    task_timeout: float = TaskTimeoutOption,
) -> None:
    """Roll a VM back to the snapshot `apply --snapshot` took before changing it."""
    provisioner = _open(plan, quiet=False)
    out.print(f"{vm}: {provisioner.rollback(vm, snapshot, ApplyOptions(task_timeout=task_timeout))}")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command("apply")(apply_command)
    app.command("destroy")(destroy_command)
    app.command("rollback")(rollback_command)
