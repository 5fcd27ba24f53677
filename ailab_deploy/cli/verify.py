"""`verify` and `up`: measure the lab against the plan's gates; the whole path in one command."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ailab_deploy.adapters.ledger import Ledger, state_dir_for
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.cli.configure import host_table, print_outcome
from ailab_deploy.cli.output import JsonOption, PlanOption, err, load, out
from ailab_deploy.core.report import Report
from ailab_deploy.errors import AilabError
from ailab_deploy.pipeline.configure import configure
from ailab_deploy.pipeline.provision import ApplyOptions, Provisioner
from ailab_deploy.pipeline.verify import VerifyOutcome, verify


def report_table(report: Report) -> Table:
    table = Table(title=f"verification: {'PASSED' if report.passed else 'FAILED'}")
    for column in ("check", "measured", "reference", "result"):
        table.add_column(column)
    if report.llm is not None:
        llm = report.llm
        table.add_row(
            "LLM tokens/s",
            f"{llm.tokens_per_second:.2f}",
            f"predicted {llm.predicted_tokens_per_second:.2f}",
            f"ratio {llm.ratio_to_prediction:.2f}",
        )
        table.add_row(
            "",
            "",
            f"bound {llm.bound_tokens_per_second:.2f} ({llm.bandwidth_gbs:.1f} GB/s)",
            f"ratio {llm.ratio_to_bound:.2f}",
        )
    if report.pgbench is not None:
        pg = report.pgbench
        table.add_row("pgbench", f"{pg.tps:.1f} tps, {pg.latency_ms:.2f} ms", f"{pg.failed} failed", "")
    for app in report.apps:
        latency = f"{app.latency_ms:.0f} ms" if app.latency_ms is not None else "-"
        table.add_row(f"app {app.name}", f"HTTP {app.health_status}", latency, app.detail)
    if report.infra:
        table.add_row("testinfra", ", ".join(f"{k} {v}" for k, v in sorted(report.infra.items())), "", "")
    for gate in report.gates:
        table.add_row(
            f"gate: {gate.name}",
            f"{gate.measured:.2f}",
            f"{gate.comparison} {gate.threshold:g}",
            "pass" if gate.passed else "FAIL",
        )
    return table


def _print_verify(outcome: VerifyOutcome) -> None:
    out.print(report_table(outcome.report))
    for problem in outcome.problems:
        err.print(f"problem: {problem}", markup=False)
    out.print(f"run {outcome.run_id}; reports {outcome.json_path} {outcome.markdown_path}")


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_command(
        plan: Path = PlanOption,
        no_infra: bool = typer.Option(False, "--no-infra", help="Skip the testinfra suite."),
        as_json: bool = JsonOption,
    ) -> None:
        """Check the VMs with testinfra and measure LLM, PostgreSQL and apps against the gates."""
        loaded = load(plan, quiet=as_json)
        outcome = verify(loaded, infra=not no_infra)
        if as_json:
            out.print_json(json.dumps(outcome.report.to_dict() | {"problems": list(outcome.problems)}))
        else:
            _print_verify(outcome)
        if not outcome.report.passed or outcome.problems:
            raise AilabError(f"verification failed (run {outcome.run_id})")

    @app.command("up")
    def up_command(
        plan: Path = PlanOption,
        parallel: int = typer.Option(4, "--parallel", min=1, max=64, help="VMs provisioned at once."),
        skip_verify: bool = typer.Option(False, "--no-verify", help="Stop after configure."),
        as_json: bool = typer.Option(
            False, "--json", help="Print a JSON summary on stdout (progress goes to stderr)."
        ),
    ) -> None:
        """validate -> plan/apply -> configure -> verify, with the time of each phase."""
        console = err if as_json else out
        phases = Phases()
        with phases.timed("validate") as phase:
            loaded = load(plan, quiet=as_json)
            phase.result = f"{len(loaded.plan.vms)} VMs"
        summary: dict[str, Any] = {"plan": str(loaded.path), "phases": phases.rows}
        client = ProxmoxClient.from_plan(loaded)
        state = state_dir_for(loaded.path)
        outcome = None
        try:
            with Ledger(state, secrets=client.secrets) as ledger:
                with phases.timed("apply") as phase:
                    provisioner = Provisioner(
                        loaded, client, ledger, state, progress=lambda m: err.print(m, markup=False)
                    )
                    applied = provisioner.apply(ApplyOptions(parallel=parallel))
                    summary["api_calls"] = applied.api_calls
                    phase.result = f"{applied.api_calls.get('writes', 0)} API writes"

                with phases.timed("configure") as phase:
                    with Live(
                        host_table({}, "configure"), console=console, transient=True, auto_refresh=False
                    ) as live:
                        configured = configure(
                            loaded,
                            ledger=ledger,
                            on_progress=lambda hosts: live.update(
                                host_table(hosts, "configure"), refresh=True
                            ),
                        )
                    print_outcome(configured.playbook, console)
                    summary["changed"] = {name: t.changed for name, t in configured.playbook.hosts.items()}
                    phase.result = f"changed={configured.playbook.changed}"
                if not configured.playbook.succeeded:
                    raise AilabError(f"configure failed (run {configured.run_id})")

                if not skip_verify:
                    with phases.timed("verify") as phase:
                        outcome = verify(loaded, ledger=ledger)
                        if not as_json:
                            _print_verify(outcome)
                        summary["report"] = outcome.report.to_dict() | {"problems": list(outcome.problems)}
                        summary["report_files"] = [str(outcome.json_path), str(outcome.markdown_path)]
                        phase.result = "passed" if outcome.report.passed else "FAILED"
        finally:
            _print_phases(phases, console)
            if as_json:
                out.print_json(json.dumps(summary))
        if outcome is not None and (not outcome.report.passed or outcome.problems):
            raise AilabError(f"verification failed (run {outcome.run_id})")


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    result: str = ""


class Phases:
    """Each phase's wall time, recorded even when the phase fails."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.done: list[Phase] = []

    @contextmanager
    def timed(self, name: str) -> Iterator[Phase]:
        phase = Phase(name)
        started = time.monotonic()
        try:
            yield phase
        except BaseException:
            phase.result = phase.result or "failed"
            raise
        finally:
            phase.seconds = time.monotonic() - started
            self.done.append(phase)
            self.rows.append({"phase": name, "seconds": round(phase.seconds, 1), "result": phase.result})


def _print_phases(phases: Phases, console: Console) -> None:
    table = Table(title="up: phases")
    for column in ("phase", "seconds", "result"):
        table.add_column(column)
    for phase in phases.done:
        table.add_row(phase.name, f"{phase.seconds:.1f}", phase.result)
    table.add_row("total", f"{sum(p.seconds for p in phases.done):.1f}", "")
    console.print(table)
    console.print("phases: " + " ".join(f"{p.name}={p.seconds:.1f}s" for p in phases.done))
