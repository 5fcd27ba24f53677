"""Measurements across verify runs: one series per quantity, and each gate as a series too.

Input is each run's ``report.json`` (as :meth:`Report.to_dict` wrote it), oldest run first.
A run that could not measure a quantity leaves a gap (``None``) rather than a zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float | None, ...]  # one per run, in the trend's run order


@dataclass(frozen=True)
class Trend:
    title: str
    unit: str
    run_ids: tuple[int, ...]
    measured: tuple[Series, ...]
    gates: tuple[Series, ...]

    @property
    def empty(self) -> bool:
        return all(value is None for series in self.measured for value in series.values)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _gate_threshold(report: Mapping[str, Any], name: str) -> float | None:
    for gate in report.get("gates") or ():
        if gate.get("name") == name:
            return _number(gate.get("threshold"))
    return None


def _section_value(report: Mapping[str, Any], section: str, key: str) -> float | None:
    part = report.get(section)
    return _number(part.get(key)) if isinstance(part, Mapping) else None


def _app_latency(report: Mapping[str, Any], app: str) -> float | None:
    for entry in report.get("apps") or ():
        if entry.get("name") == app:
            return _number(entry.get("latency_ms"))
    return None


def _app_names(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """Apps that reported an end-to-end latency in any run, in first-seen order."""
    names: list[str] = []
    for report in reports:
        for entry in report.get("apps") or ():
            name = entry.get("name")
            if isinstance(name, str) and _number(entry.get("latency_ms")) is not None and name not in names:
                names.append(name)
    return names


def trends(runs: Sequence[tuple[int, Mapping[str, Any]]]) -> tuple[Trend, ...]:
    """Tokens/s, pgbench TPS and app latency across ``runs`` ((run id, report), oldest first)."""
    run_ids = tuple(run_id for run_id, _ in runs)
    reports = [report for _, report in runs]

    def gate(name: str, label: str) -> Series:
        return Series(label, tuple(_gate_threshold(report, name) for report in reports))

    tokens = Trend(
        "LLM generation speed",
        "tokens/s",
        run_ids,
        (Series("tokens/s", tuple(_section_value(r, "llm", "tokens_per_second") for r in reports)),),
        (gate("llm tokens/s", "gate: min tokens/s"),),
    )
    tps = Trend(
        "PostgreSQL (pgbench)",
        "TPS",
        run_ids,
        (Series("TPS", tuple(_section_value(r, "pgbench", "tps") for r in reports)),),
        (gate("pgbench tps", "gate: min TPS"),),
    )
    apps = _app_names(reports)
    latency = Trend(
        "App end-to-end latency",
        "ms",
        run_ids,
        tuple(Series(f"{app} ms", tuple(_app_latency(r, app) for r in reports)) for app in apps),
        tuple(gate(f"{app} end-to-end ms", f"gate: {app} max ms") for app in apps),
    )
    return (tokens, tps, latency)
