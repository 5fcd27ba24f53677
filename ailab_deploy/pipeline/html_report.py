"""The HTML report of a verify run: gates, measurements, phase timings, screenshots, trend charts.

One self-contained file: charts are inline SVG (pygal, no script fetched), screenshots are
embedded as data URIs, styles are inline. It is written beside the run's JSON and Markdown.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pygal

from ailab_deploy.adapters.ledger import Ledger, RunSummary
from ailab_deploy.core.trends import Trend, trends
from ailab_deploy.errors import AilabError, InputError

HTML_FILENAME = "report.html"
_RUN_LIMIT = 1_000_000  # every run the ledger holds
_GATE_DASHES = "8,5"


@dataclass(frozen=True)
class VerifyRun:
    summary: RunSummary
    report: dict[str, Any]
    json_path: Path


def verify_runs(ledger: Ledger) -> list[VerifyRun]:
    """Every verify run with a readable JSON report, oldest first."""
    found = []
    for summary in reversed(ledger.runs(limit=_RUN_LIMIT)):
        if summary.command != "verify":
            continue
        paths = ledger.reports(summary.id, "json")
        if not paths or not paths[-1].is_file():
            continue
        try:
            data = json.loads(paths[-1].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append(VerifyRun(summary, data, paths[-1]))
    return found


def _chart(trend: Trend) -> str:
    chart = pygal.Line(
        js=[],  # no script from the network; the SVG stands alone
        disable_xml_declaration=True,
        width=760,
        height=320,
        title=f"{trend.title} ({trend.unit})",
        x_title="verify run",
        show_x_guides=False,
        allow_interruptions=True,
        legend_at_bottom=True,
        truncate_legend=-1,
        print_values=False,
        dots_size=3,
    )
    chart.x_labels = [str(run_id) for run_id in trend.run_ids]
    for series in trend.measured:
        chart.add(series.name, list(series.values))
    for gate in trend.gates:
        chart.add(
            gate.name, list(gate.values), stroke_style={"dasharray": _GATE_DASHES, "width": 2}, dots_size=1
        )
    return str(chart.render(is_unicode=True))


def _timings(ledger: Ledger, runs: list[VerifyRun], index: int) -> list[dict[str, Any]]:
    """The runs since the previous verify (an `up`'s apply and configure), then verify's own steps."""
    current = runs[index].summary
    previous_id = runs[index - 1].summary.id if index > 0 else 0
    rows: list[dict[str, Any]] = []
    for summary in reversed(ledger.runs(limit=_RUN_LIMIT)):
        if previous_id < summary.id < current.id and summary.command != "verify":
            rows.append({"phase": f"{summary.command} (run {summary.id})", "seconds": summary.duration})
    rows.append({"phase": f"verify (run {current.id})", "seconds": current.duration})
    for step in runs[index].report.get("timings") or ():
        rows.append({"phase": f"  verify: {step.get('phase')}", "seconds": step.get("seconds")})
    return rows


def _screenshots(report: dict[str, Any], json_path: Path) -> list[dict[str, str]]:
    shots = []
    for check in report.get("browser") or ():
        name = check.get("screenshot")
        if not name:
            continue
        path = json_path.parent / Path(name).name
        if path.is_file():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            shots.append({"app": str(check.get("app", "")), "data": f"data:image/png;base64,{encoded}"})
    return shots


def render_html(ledger: Ledger, run_id: int | None = None) -> tuple[int, str]:
    """(run id, HTML) for ``run_id`` or the latest verify run, with charts over every verify run."""
    runs = verify_runs(ledger)
    if not runs:
        raise AilabError("no verify run with a report in the ledger: run `ailab-deploy verify` first")
    if run_id is None:
        index = len(runs) - 1
    else:
        index = next((i for i, run in enumerate(runs) if run.summary.id == run_id), -1)
        if index < 0:
            raise InputError(
                f"run {run_id} is not a verify run with a report (`ailab-deploy runs` lists them)"
            )
    chosen = runs[index]
    series = trends([(run.summary.id, run.report) for run in runs])
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("ailab_deploy.pipeline", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = environment.get_template("report.html.j2").render(
        run=chosen.summary,
        started=datetime.fromtimestamp(chosen.summary.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        report=chosen.report,
        timings=_timings(ledger, runs, index),
        screenshots=_screenshots(chosen.report, chosen.json_path),
        charts=[{"title": t.title, "svg": _chart(t)} for t in series if not t.empty],
        run_count=len(runs),
    )
    return chosen.summary.id, html


def write_html_report(ledger: Ledger, run_id: int | None = None, output: Path | None = None) -> Path:
    """Write the run's HTML report beside its JSON (or to ``output``); return its path."""
    chosen_id, html = render_html(ledger, run_id)
    if output is None:
        json_paths = ledger.reports(chosen_id, "json")
        output = json_paths[-1].parent / HTML_FILENAME
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    return output
