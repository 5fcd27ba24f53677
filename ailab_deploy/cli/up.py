"""`ailab-deploy up`: the whole path in one command; prints what pipeline.up reports."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ailab_deploy.adapters.runner import HostTally
from ailab_deploy.cli.configure import host_table, print_outcome
from ailab_deploy.cli.output import PlanOption, err, out, print_warnings
from ailab_deploy.cli.verify import print_verify
from ailab_deploy.core.loader import LoadedPlan
from ailab_deploy.pipeline.configure import ConfigureOutcome
from ailab_deploy.pipeline.up import PhaseTiming, UpFailed, UpObserver, UpOptions, UpResult, up
from ailab_deploy.pipeline.verify import VerifyOutcome

PLAIN_PROGRESS_SECONDS = 5.0  # at most one plain progress line this often


def plain_progress_line(phase: str, tallies: dict[str, HostTally]) -> str:
    """One line for a log: per host, tasks done so far (changed, failed) and the current task."""
    parts = []
    for name in sorted(tallies):
        tally = tallies[name]
        done = tally.ok + tally.changed + tally.failed + tally.skipped + tally.unreachable
        failed = f", {tally.failed + tally.unreachable} failed" if tally.failed or tally.unreachable else ""
        task = f" [{tally.task}]" if tally.task else ""
        parts.append(f"{name} {done} tasks ({tally.changed} changed{failed}){task}")
    return f"{phase}: " + "; ".join(parts)


class _Printer(UpObserver):
    """Progress lines on stderr, the configure table live, each phase's outcome as it ends."""

    def __init__(
        self,
        console: Console,
        as_json: bool,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.as_json = as_json
        self.quiet = quiet
        self.phases: list[PhaseTiming] = []
        self.plan_loaded = False
        self._live: Live | None = None
        # Where nobody watches a live table (a log, CI, a pipe), plain lines say what happens.
        self._plain = not err.is_terminal
        self._clock = clock
        self._last_line = float("-inf")

    def loaded(self, loaded: LoadedPlan) -> None:
        self.plan_loaded = True
        if not self.as_json:
            print_warnings(loaded)

    def progress(self, message: str) -> None:
        if not self.quiet:
            err.print(message, markup=False)

    def phase_started(self, name: str) -> None:
        if self._plain and not self.quiet:
            err.print(f"{name}: started", markup=False)
        if name == "configure" and self.console.is_terminal:
            self._live = Live(
                host_table({}, "configure"), console=self.console, transient=True, auto_refresh=False
            )
            self._live.start()

    def hosts(self, tallies: dict[str, HostTally]) -> None:
        if self._live is not None:
            self._live.update(host_table(tallies, "configure"), refresh=True)
        if self._plain and not self.quiet and self._clock() - self._last_line >= PLAIN_PROGRESS_SECONDS:
            self._last_line = self._clock()
            err.print(plain_progress_line("configure", tallies), markup=False)

    def phase_finished(self, phase: PhaseTiming) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.phases.append(phase)

    def configured(self, outcome: ConfigureOutcome) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        print_outcome(outcome.playbook, self.console)

    def verified(self, outcome: VerifyOutcome) -> None:
        if not self.as_json:
            print_verify(outcome)


def _print_phases(phases: list[PhaseTiming], console: Console) -> None:
    table = Table(title="up: phases")
    for column in ("phase", "seconds", "result"):
        table.add_column(column)
    for phase in phases:
        table.add_row(phase.name, f"{phase.seconds:.1f}", phase.result)
    table.add_row("total", f"{sum(p.seconds for p in phases):.1f}", "")
    console.print(table)
    console.print("phases: " + " ".join(f"{p.name}={p.seconds:.1f}s" for p in phases))


QuietOption = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr.")


def run_up(plan: Path, options: UpOptions, *, as_json: bool = False, quiet: bool = False) -> UpResult:
    """`up` as the command prints it: progress, the configure table, verify's report, the phases."""
    console = err if as_json else out
    printer = _Printer(console, as_json, quiet)
    summary: dict[str, object] | None = None
    try:
        result = up(plan, options, observer=printer)
        summary = result.to_dict()
        return result
    except UpFailed as failure:
        summary = failure.result.to_dict() if failure.result.plan_path else None
        raise
    finally:
        if printer.plan_loaded:  # a plan that does not load gets its problems, not a phase table
            _print_phases(printer.phases, console)
        if as_json and summary is not None:
            out.print_json(json.dumps(summary))


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up_command(
        plan: Path = PlanOption,
        parallel: int = typer.Option(4, "--parallel", min=1, max=64, help="VMs provisioned at once."),
        skip_verify: bool = typer.Option(False, "--no-verify", help="Stop after configure."),
        as_json: bool = typer.Option(
            False, "--json", help="Print a JSON summary on stdout (progress goes to stderr)."
        ),
        quiet: bool = QuietOption,
    ) -> None:
        """validate -> plan/apply -> configure -> verify, with the time of each phase."""
        run_up(plan, UpOptions(parallel=parallel, verify=not skip_verify), as_json=as_json, quiet=quiet)
