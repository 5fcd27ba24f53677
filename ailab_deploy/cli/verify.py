"""`verify`: measure the lab against the plan's gates."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ailab_deploy.cli.output import JsonOption, PlanOption, err, load, out
from ailab_deploy.core.report import Report, bound_ratio_text, number_or_dash
from ailab_deploy.errors import AilabError
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
            f"ratio {bound_ratio_text(llm)}",
        )
        table.add_row(
            "",
            "",
            f"llama-bench {number_or_dash(llm.engine_ceiling_tokens_per_second)}",
            f"deployed / llama-bench {number_or_dash(llm.ratio_to_engine_ceiling)}",
        )
    if report.cost is not None:
        cost = report.cost
        table.add_row(
            "electricity per 1M tokens",
            f"{cost.cost_per_million_tokens:.2f} {cost.currency}",
            f"{cost.joules_per_token:.1f} J/token at {cost.load_watts:g} W",
            "",
        )
    if report.idle is not None:
        idle = report.idle
        table.add_row(
            "electricity idle month",
            f"{idle.cost_per_month:.2f} {idle.currency}",
            f"{idle.kwh_per_month:.1f} kWh at {idle.idle_watts:g} W",
            "",
        )
    if report.pgbench is not None:
        pg = report.pgbench
        table.add_row("pgbench", f"{pg.tps:.1f} tps, {pg.latency_ms:.2f} ms", f"{pg.failed} failed", "")
    for app in report.apps:
        latency = f"{app.latency_ms:.0f} ms" if app.latency_ms is not None else "-"
        table.add_row(f"app {app.name}", f"HTTP {app.health_status}", latency, app.detail)
    for check in report.browser:
        answer = f"answered in {check.answer_ms:.0f} ms" if check.answer_ms is not None else "-"
        table.add_row(
            f"browser {check.app}",
            f"database {check.database_status or '-'}, LLM {check.llm_status or '-'}",
            f"{answer}, stored #{check.stored_id}" if check.stored_in_log else answer,
            check.detail or (check.screenshot or ""),
        )
    if report.dump is not None:
        dump = report.dump
        age = f"{dump.age_hours:.1f} h old" if dump.age_hours is not None else "no dump"
        table.add_row(
            "database dump",
            f"{age}, {dump.tables} tables, {dump.rows} rows",
            dump.manifest or "-",
            "restored, rows match" if dump.passed else "; ".join(dump.problems)[:200],
        )
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


def print_verify(outcome: VerifyOutcome) -> None:
    out.print(report_table(outcome.report))
    for problem in outcome.problems:
        err.print(f"problem: {problem}", markup=False)
    out.print(f"run {outcome.run_id}; reports {outcome.json_path} {outcome.markdown_path}")
    out.print(f"HTML report: {outcome.html_path}")


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_command(
        plan: Path = PlanOption,
        no_infra: bool = typer.Option(False, "--no-infra", help="Skip the testinfra suite."),
        browser: bool | None = typer.Option(
            None,
            "--browser/--no-browser",
            help="Check the Streamlit apps in headless Chromium (default: when chromium is installed).",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Check the VMs with testinfra and measure LLM, PostgreSQL and apps against the gates."""
        loaded = load(plan, quiet=as_json)
        outcome = verify(loaded, infra=not no_infra, browser=browser)
        if as_json:
            out.print_json(json.dumps(outcome.report.to_dict() | {"problems": list(outcome.problems)}))
        else:
            print_verify(outcome)
        if not outcome.report.passed or outcome.problems:
            raise AilabError(f"verification failed (run {outcome.run_id}): {'; '.join(outcome.failures())}")
