"""The HTML report: a ledger with several verify runs gives charts that hold every run's value."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.errors import AilabError, InputError
from ailab_deploy.pipeline.html_report import write_html_report

from ..cli.test_broken_plans import run_cli

SVG = "{http://www.w3.org/2000/svg}"
# One PNG pixel, to stand in for a browser screenshot.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
# (tokens/s, pgbench TPS, lab-api ms, tokens/s gate) per verify run, oldest first
RUNS = [(5.25, 410.5, 1830.0, 4.0), (4.75, 395.25, 2104.0, 4.0), (6.125, 455.0, 1622.5, 5.0)]


def _report(tps: float, pg_tps: float, app_ms: float, gate: float, screenshot: str | None) -> dict[str, Any]:
    return {
        "plan_hash": "ab" * 32,
        "passed": tps >= gate,
        "llm": {
            "engine": "llamacpp",
            "model": "m",
            "tokens": 64,
            "tokens_per_second": tps,
            "predicted_tokens_per_second": 5.0,
            "bandwidth_gbs": 9.5,
            "bound_tokens_per_second": 12.0,
        },
        "pgbench": {
            "tps": pg_tps,
            "latency_ms": 9.5,
            "transactions": 4000,
            "failed": 0,
            "clients": 4,
            "seconds": 15,
        },
        "apps": [
            {"name": "lab-status", "health_status": 200, "latency_ms": None, "detail": ""},
            {"name": "lab-api", "health_status": 200, "latency_ms": app_ms, "detail": ""},
        ],
        "gates": [
            {
                "name": "llm tokens/s",
                "measured": tps,
                "threshold": gate,
                "comparison": ">=",
                "passed": tps >= gate,
            },
            {
                "name": "pgbench tps",
                "measured": pg_tps,
                "threshold": 50.0,
                "comparison": ">=",
                "passed": True,
            },
            {
                "name": "lab-api end-to-end ms",
                "measured": app_ms,
                "threshold": 60000.0,
                "comparison": "<=",
                "passed": True,
            },
        ],
        "infra": {"passed": 30, "failed": 0, "errors": 0, "skipped": 0},
        "browser": [
            {
                "app": "lab-status",
                "url": "http://10.77.0.12:8501/",
                "passed": True,
                "answer_ms": 900.0,
                "screenshot": screenshot,
            }
        ]
        if screenshot
        else [],
        "problems": [],
        "timings": [{"phase": "llm", "seconds": 12.5}, {"phase": "pgbench", "seconds": 20.0}],
    }


def _ledger_with_runs(state: Path) -> tuple[Ledger, list[int]]:
    ledger = Ledger(state)
    ids = []
    for number, (tps, pg_tps, app_ms, gate) in enumerate(RUNS):
        with ledger.start_run("apply", "ab" * 32) as apply_run:
            apply_run.finish("succeeded")
        with ledger.start_run("verify", "ab" * 32) as run:
            directory = state / "reports" / f"run-{run.id}"
            directory.mkdir(parents=True)
            screenshot = None
            if number == len(RUNS) - 1:
                screenshot = "browser-lab-status.png"
                (directory / screenshot).write_bytes(PIXEL_PNG)
            path = directory / "report.json"
            path.write_text(json.dumps(_report(tps, pg_tps, app_ms, gate, screenshot)))
            run.attach_report("json", path)
            run.finish("succeeded")
            ids.append(run.id)
    return ledger, ids


class _Page(HTMLParser):
    """Collects the charts' inline SVG and the images of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[str] = []
        self.images: list[str] = []
        self.scripts_with_src: list[str] = []
        self._depth = 0
        self._current: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "script" and values.get("src"):
            self.scripts_with_src.append(values["src"] or "")
        if tag == "div" and values.get("class") == "chart":
            self._depth = 1
            self._current = []
        elif self._depth and tag == "div":
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "div":
            self._depth -= 1
            if self._depth == 0:
                self.charts.append("".join(self._current))


def _chart_svgs(html: str) -> list[ElementTree.Element]:
    return [ElementTree.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", html, flags=re.DOTALL)]


def _series(svg: ElementTree.Element) -> dict[str, list[float]]:
    """Series title -> the values its points carry, read from the SVG's legend and series groups."""
    titles = [
        "".join(node.itertext()).strip()
        for legend in svg.iter(f"{SVG}g")
        if "legend" in (legend.get("class") or "").split()
        for node in legend.iter(f"{SVG}text")
    ]
    values: dict[str, list[float]] = {}
    for group in svg.iter(f"{SVG}g"):
        classes = (group.get("class") or "").split()
        index = next((int(c.removeprefix("serie-")) for c in classes if c.startswith("serie-")), None)
        if index is None or "series" not in classes:
            continue
        points = [
            float(desc.text or "nan") for desc in group.iter(f"{SVG}desc") if desc.get("class") == "value"
        ]
        if points:  # the same series also has (empty) groups in the text and tooltip overlays
            assert titles[index] not in values
            values[titles[index]] = points
    return values


def _title(svg: ElementTree.Element) -> str:
    return "".join(
        "".join(node.itertext())
        for node in svg.iter(f"{SVG}text")
        if "plot_title" in (node.get("class") or "").split()
    )


def test_charts_hold_every_verify_runs_value_and_each_gate(tmp_path: Path) -> None:
    ledger, ids = _ledger_with_runs(tmp_path / ".ailab")
    with ledger:
        path = write_html_report(ledger)
    assert path == tmp_path / ".ailab" / "reports" / f"run-{ids[-1]}" / "report.html"
    html = path.read_text()
    svgs = {_title(svg): _series(svg) for svg in _chart_svgs(html)}
    tokens = svgs["LLM generation speed (tokens/s)"]
    assert tokens["tokens/s"] == [run[0] for run in RUNS]
    assert tokens["gate: min tokens/s"] == [run[3] for run in RUNS]  # the gate moved in the last run
    pgbench = svgs["PostgreSQL (pgbench) (TPS)"]
    assert pgbench["TPS"] == [run[1] for run in RUNS]
    assert pgbench["gate: min TPS"] == [50.0] * len(RUNS)
    latency = svgs["App end-to-end latency (ms)"]
    assert latency["lab-api ms"] == [run[2] for run in RUNS]
    assert latency["gate: lab-api max ms"] == [60000.0] * len(RUNS)
    assert "lab-status ms" not in latency  # it reports no end-to-end latency


def test_page_is_self_contained_with_gates_timings_and_the_screenshot(tmp_path: Path) -> None:
    ledger, ids = _ledger_with_runs(tmp_path / ".ailab")
    with ledger:
        html = write_html_report(ledger).read_text()
    page = _Page()
    page.feed(html)
    assert len(page.charts) == 3
    assert page.scripts_with_src == []
    assert not re.search(r"""(src|href)=["']https?://""", html)  # nothing is fetched at view time
    assert page.images == ["data:image/png;base64," + base64.b64encode(PIXEL_PNG).decode()]
    gate_rows = re.findall(r"<tr class=\"(pass|fail)\"><td>([^<]+)</td>", html)
    assert [name for _, name in gate_rows] == ["llm tokens/s", "pgbench tps", "lab-api end-to-end ms"]
    assert f"apply (run {ids[-1] - 1})" in html and f"verify (run {ids[-1]})" in html


def test_an_earlier_run_and_an_output_path(tmp_path: Path) -> None:
    ledger, ids = _ledger_with_runs(tmp_path / ".ailab")
    with ledger:
        path = write_html_report(ledger, ids[0], tmp_path / "out" / "first.html")
        assert path.is_file() and f"Verify run {ids[0]}" in path.read_text()
        with pytest.raises(InputError, match=f"run {ids[0] - 1} is not a verify run"):
            write_html_report(ledger, ids[0] - 1)


def test_no_verify_run_yet(tmp_path: Path) -> None:
    with Ledger(tmp_path / ".ailab") as ledger, pytest.raises(AilabError, match="no verify run"):
        write_html_report(ledger)


def test_cli_report_prints_the_path_and_rejects_a_run_that_is_not_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, ids = _ledger_with_runs(tmp_path / ".ailab")
    ledger.close()
    plan = tmp_path / "vms.yaml"
    code, out, _ = run_cli(["report", "--plan", str(plan)], capsys)
    assert code == 0
    printed = Path(out.split("HTML report:", 1)[1].strip().replace("\n", ""))
    assert printed.is_file() and printed.name == "report.html"
    code, _, err = run_cli(["report", str(ids[0] - 1), "--plan", str(plan)], capsys)
    assert code == 2 and "is not a verify run" in err


def _cell(html: str, cell_id: str) -> str:
    found = re.search(rf'<td class="num" id="{cell_id}">(.*?)</td>', html)
    assert found, cell_id
    return found.group(1)


@pytest.mark.parametrize(
    ("llm_fields", "bound_cell", "ceiling_cell", "ratio_cell"),
    [
        (  # a tiny model: llama-bench far below the bandwidth bound
            {
                "bandwidth_bound_applies": False,
                "ratio_to_bound": None,
                "engine_ceiling_tokens_per_second": 6.5,
                "ratio_to_engine_ceiling": 0.96,
            },
            "not applicable (compute-bound)",
            "6.50",
            "0.96",
        ),
        (
            {
                "bandwidth_bound_applies": True,
                "ratio_to_bound": 0.81,
                "engine_ceiling_tokens_per_second": 10.0,
                "ratio_to_engine_ceiling": 0.97,
            },
            "0.81",
            "10.00",
            "0.97",
        ),
        ({}, "-", "-", "-"),  # a report written before llama-bench was measured
    ],
)
def test_deployed_over_llama_bench_and_the_bound_or_why_not(
    tmp_path: Path, llm_fields: dict[str, Any], bound_cell: str, ceiling_cell: str, ratio_cell: str
) -> None:
    state = tmp_path / ".ailab"
    with Ledger(state) as ledger:
        with ledger.start_run("verify", "ab" * 32) as run:
            report = _report(6.25, 400.0, 1500.0, 4.0, None)
            report["llm"] |= llm_fields
            path = state / "report.json"
            path.write_text(json.dumps(report))
            run.attach_report("json", path)
            run.finish("succeeded")
        html = write_html_report(ledger, run.id).read_text()
    assert _cell(html, "ratio-to-bound") == bound_cell
    assert _cell(html, "engine-ceiling") == ceiling_cell
    assert _cell(html, "ratio-to-engine-ceiling") == ratio_cell
