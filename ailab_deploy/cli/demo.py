"""`ailab-deploy demo`: the lab up (if it is not), `up` of the lab plan, and what to do next.

The closing lines are what a person wants after the long first run: whether verification
passed, the apps' URLs (the lab bridge is on this machine, so they open here), how to get a
shell on a VM and how to tear it all down. A second `demo` is a no-op `up` (changed=0).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ailab_deploy.adapters.statedir import known_hosts_path, state_dir_for
from ailab_deploy.cli.output import err, out
from ailab_deploy.cli.up import QuietOption, run_up
from ailab_deploy.core.loader import load_plan
from ailab_deploy.core.plan import Plan
from ailab_deploy.errors import InputError
from ailab_deploy.lab import assemble, control
from ailab_deploy.pipeline.up import UpOptions, UpResult

LabDirOption = typer.Option(None, "--lab-dir", help="lab directory (default: $AILAB_LAB_DIR or .ailab/lab)")


def _command_name() -> str:
    """How this command was started, so the printed next steps can be pasted as they are."""
    argv0 = Path(sys.argv[0])
    return shlex.quote(str(argv0)) if argv0.name == "ailab-deploy" else "ailab-deploy"


def app_urls(plan: Plan) -> list[tuple[str, str]]:
    """(app name, URL) of each app, on the address of the VM with the python_app role."""
    host = next((vm for vm in plan.vms if "python_app" in vm.roles), None)
    if host is None or plan.apps is None:
        return []
    return [(app.name, f"http://{host.ip}:{app.port}/") for app in plan.apps.apps]


def closing_lines(plan: Plan, plan_path: Path, result: UpResult, command: str) -> list[str]:
    """The demo's last lines: verification, changes, URLs, a shell per VM, the way out."""
    lines = []
    if result.verified is not None:
        report = result.verified.report
        gates = sum(gate.passed for gate in report.gates)
        infra = report.infra.get("passed", 0)
        state = "passed" if report.passed else "FAILED"
        lines.append(
            f"verification: {state} ({gates}/{len(report.gates)} gates, {infra} infra checks passed;"
            f" report {result.verified.html_path})"
        )
    changed = result.configured.playbook.changed if result.configured is not None else 0
    lines.append(f"changed={changed} api_writes={result.api_calls.get('writes', 0)}")
    for name, url in app_urls(plan):
        lines.append(f"app {name}: {url}")
    known_hosts = known_hosts_path(state_dir_for(plan_path))
    key = plan.template.ssh_private_key_file
    identity = f" -i {shlex.quote(str(key))}" if key else ""
    for vm in plan.vms:
        lines.append(
            f"shell on {vm.name}: ssh -o UserKnownHostsFile={shlex.quote(str(known_hosts))}"
            f"{identity} {plan.template.admin_user}@{vm.ip}"
        )
    lines.append(
        f"tear down: {command} demo --down (VMs kept for the next demo); "
        f"{command} demo --down --purge (everything)"
    )
    return lines


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        down: bool = typer.Option(False, "--down", help="Stop the lab instead (VMs and disks kept)."),
        purge: bool = typer.Option(False, "--purge", help="With --down: throw every lab VM away too."),
        lab_dir: Path | None = LabDirOption,
        quiet: bool = QuietOption,
    ) -> None:
        """The lab up and the lab plan deployed and verified; ends with URLs and next steps."""
        if purge and not down:
            raise InputError("demo: --purge goes with --down")
        directory = control.resolve_lab_dir(lab_dir)
        if down:
            stopped = assemble.down(directory, purge=purge)
            kept = "every VM and disk removed" if purge else "VMs and their disks kept for the next demo"
            out.print(f"lab {'stopped' if stopped else 'was not running'}; {kept}", markup=False)
            return
        if not quiet:
            err.print(f"lab: starting in {directory} (if not running)", markup=False)
        info = assemble.up(directory, api_only=False)
        plan_path = Path(info["lab_plan"])
        result = run_up(plan_path, UpOptions(), quiet=quiet)
        plan = load_plan(plan_path).plan
        out.print("")
        for line in closing_lines(plan, plan_path, result, _command_name()):
            out.print(line, markup=False)
