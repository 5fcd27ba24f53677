"""Verification results: what was measured, against what, and whether the plan's gates pass.

Tokens/s is read from the server's own timings (never from wall-clock around the
request): Ollama's ``eval_count / eval_duration`` (nanoseconds), llama.cpp's
``timings.predicted_per_second``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ailab_deploy.core.cluster import llm_and_other_hardware
from ailab_deploy.core.energy import IdleCost, TokenCost, idle_month_cost, token_cost
from ailab_deploy.core.plan import Host, Plan, Verify


class MeasurementError(ValueError):
    """A server or tool answered in a shape we cannot read."""


@dataclass(frozen=True)
class LlmResult:
    engine: str
    model: str
    tokens: int
    tokens_per_second: float
    predicted_tokens_per_second: float
    bandwidth_gbs: float
    bound_tokens_per_second: float
    # llama-bench on the same VM, model, threads and context: what the engine itself reaches.
    engine_ceiling_tokens_per_second: float | None = None

    @property
    def ratio_to_prediction(self) -> float:
        return self.tokens_per_second / self.predicted_tokens_per_second

    @property
    def ratio_to_bound(self) -> float:
        return self.tokens_per_second / self.bound_tokens_per_second

    @property
    def ratio_to_engine_ceiling(self) -> float | None:
        if not self.engine_ceiling_tokens_per_second:
            return None
        return self.tokens_per_second / self.engine_ceiling_tokens_per_second

    @property
    def bandwidth_bound_applies(self) -> bool:
        """False when the engine on its own stays far below the bandwidth bound: the model is
        then compute-bound (a tiny model on a few cores) and a ratio to the bound misleads."""
        ceiling = self.engine_ceiling_tokens_per_second
        return ceiling is None or ceiling >= COMPUTE_BOUND_SHARE * self.bound_tokens_per_second


# An engine that cannot reach this share of the bandwidth bound is limited by compute instead.
COMPUTE_BOUND_SHARE = 0.5


def engine_ceiling_from_llama_bench(output: str) -> float:
    """Generation tokens/s from ``llama-bench -o json``: its text-generation test's best repetition."""
    try:
        records = json.loads(output[output.index("[") :])
    except ValueError:
        raise MeasurementError(f"llama-bench printed no JSON: {output[:200]!r}") from None
    generation = [
        r for r in records if isinstance(r, dict) and r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0
    ]
    if not generation or not isinstance(generation[0].get("avg_ts"), int | float):
        raise MeasurementError("llama-bench's JSON has no text-generation result (n_gen > 0, avg_ts)")
    # A ceiling is the best the engine did: the fastest repetition (others lost time to neighbours).
    samples = [s for s in generation[0].get("samples_ts") or [] if isinstance(s, int | float)]
    return float(max(samples)) if samples else float(generation[0]["avg_ts"])


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    latency_ms: float
    transactions: int
    failed: int
    clients: int
    seconds: int


@dataclass(frozen=True)
class AppResult:
    name: str
    health_status: int
    latency_ms: float | None = None  # the end-to-end request, for apps that take one
    detail: str = ""


@dataclass(frozen=True)
class BrowserResult:
    """A Streamlit app as a person sees it: rendered, statuses ok, a question answered and stored."""

    app: str
    url: str
    passed: bool
    database_status: str = ""
    llm_status: str = ""
    answer: str = ""
    answer_ms: float | None = None  # from submitting the form until the stored answer showed
    stored_id: int | None = None
    stored_in_log: bool = False
    screenshot: str | None = None  # file name, beside the run's reports
    detail: str = ""  # why it failed


@dataclass(frozen=True)
class DumpCheck:
    """The latest database dump restored into a scratch database and compared with its manifest."""

    passed: bool
    age_hours: float | None  # since the dump was taken (None: no manifest found)
    manifest: str = ""
    tables: int = 0
    rows: int = 0
    seconds: float = 0.0  # the check's own time on the database VM
    problems: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DumpCheck:
        """What ``ailab-pg-dump-check check --json`` prints."""
        try:
            age = data.get("age_hours")
            return cls(
                passed=bool(data["passed"]),
                age_hours=float(age) if age is not None else None,
                manifest=str(data.get("manifest", "")),
                tables=int(data.get("tables", 0)),
                rows=int(data.get("rows", 0)),
                seconds=float(data.get("seconds", 0.0)),
                problems=tuple(str(problem) for problem in data.get("problems", [])),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise MeasurementError(f"the dump check's answer lacks or garbles {error}") from None


@dataclass(frozen=True)
class Gate:
    name: str
    measured: float
    threshold: float
    comparison: str  # ">=" or "<=" or "=="
    passed: bool


@dataclass(frozen=True)
class Report:
    plan_hash: str
    llm: LlmResult | None
    pgbench: PgbenchResult | None
    apps: tuple[AppResult, ...]
    gates: tuple[Gate, ...]
    infra: dict[str, Any] = field(default_factory=dict)  # testinfra outcome counts
    browser: tuple[BrowserResult, ...] = ()
    cost: TokenCost | None = None  # electricity per token at the measured speed
    idle: IdleCost | None = None  # electricity of an idle month
    dump: DumpCheck | None = None  # the latest database dump, restored and compared

    @property
    def passed(self) -> bool:
        return not self.failures()

    def failures(self) -> list[str]:
        """What failed, a short phrase each: the gates missed and the testinfra failures."""
        found = [
            f"{gate.name} {gate.measured:g} (wanted {gate.comparison} {gate.threshold:g})"
            for gate in self.gates
            if not gate.passed
        ]
        broken = int(self.infra.get("failed", 0)) + int(self.infra.get("errors", 0))
        if broken:
            found.append(f"{broken} testinfra check(s) failed")
        return found

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.llm is not None:
            data["llm"]["ratio_to_prediction"] = round(self.llm.ratio_to_prediction, 3)
            applies = self.llm.bandwidth_bound_applies
            data["llm"]["bandwidth_bound_applies"] = applies
            data["llm"]["ratio_to_bound"] = round(self.llm.ratio_to_bound, 3) if applies else None
            ceiling = self.llm.ratio_to_engine_ceiling
            data["llm"]["ratio_to_engine_ceiling"] = None if ceiling is None else round(ceiling, 3)
        data["passed"] = self.passed
        return data


def tokens_per_second_from_response(engine: str, body: dict[str, Any]) -> tuple[int, float]:
    """(generated tokens, tokens/s) from a non-streamed generation response."""
    if engine == "ollama":
        count = int(body.get("eval_count") or 0)  # omitempty: a missing field means 0
        duration_ns = int(body.get("eval_duration") or 0)
        if count == 0 or duration_ns == 0:
            raise MeasurementError("Ollama response has no eval_count/eval_duration")
        return count, count / duration_ns * 1e9
    timings = body.get("timings")
    if not isinstance(timings, dict) or "predicted_per_second" not in timings:
        raise MeasurementError("llama.cpp response has no timings.predicted_per_second")
    return int(timings.get("predicted_n") or 0), float(timings["predicted_per_second"])


_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def parse_pgbench(output: str, clients: int, seconds: int) -> PgbenchResult:
    """Read pgbench's summary (PostgreSQL 15+ prints failed transactions)."""
    found = {
        name: rx.search(output)
        for name, rx in (("tps", _TPS), ("latency", _LATENCY), ("processed", _PROCESSED))
    }
    missing = [name for name, match in found.items() if match is None]
    if missing:
        raise MeasurementError(f"pgbench output lacks {', '.join(missing)}: {output[-300:]!r}")
    failed = _FAILED.search(output)
    return PgbenchResult(
        tps=float(found["tps"].group(1)),  # type: ignore[union-attr]
        latency_ms=float(found["latency"].group(1)),  # type: ignore[union-attr]
        transactions=int(found["processed"].group(1)),  # type: ignore[union-attr]
        failed=int(failed.group(1)) if failed else 0,
        clients=clients,
        seconds=seconds,
    )


_COMPARISONS = {
    ">=": lambda measured, threshold: measured >= threshold,
    "<=": lambda measured, threshold: measured <= threshold,
    "==": lambda measured, threshold: measured == threshold,
}


def _gate(name: str, measured: float | None, comparison: str, threshold: float, missing: float = 0.0) -> Gate:
    """A gate; a measurement that could not be taken (``None``) fails and shows as ``missing``."""
    if measured is None:
        return Gate(name, missing, threshold, comparison, False)
    return Gate(name, measured, threshold, comparison, bool(_COMPARISONS[comparison](measured, threshold)))


def evaluate_gates(
    thresholds: Verify,
    llm: LlmResult | None,
    pgbench: PgbenchResult | None,
    apps: tuple[AppResult, ...],
    browser: tuple[BrowserResult, ...] = (),
    dump: DumpCheck | None = None,
    dump_expected: bool = False,
) -> tuple[Gate, ...]:
    """The plan's verify section decides pass or fail; a missing measurement fails its gate.
    ``dump_expected``: a VM has the backup role, so its latest dump is gated (age, restore)."""
    gates = [
        _gate("llm tokens/s", llm.tokens_per_second if llm else None, ">=", thresholds.min_tokens_per_second),
        _gate("pgbench tps", pgbench.tps if pgbench else None, ">=", thresholds.min_pgbench_tps),
        _gate(
            "pgbench failed transactions", float(pgbench.failed) if pgbench else None, "==", 0.0, missing=-1.0
        ),
    ]
    for app in apps:
        gates.append(_gate(f"{app.name} health", float(app.health_status), "==", 200.0))
        if app.latency_ms is not None:
            gates.append(
                _gate(f"{app.name} end-to-end ms", app.latency_ms, "<=", thresholds.max_app_latency_ms)
            )
    for check in browser:
        gates.append(_gate(f"{check.app} in a browser", 1.0 if check.passed else 0.0, "==", 1.0))
    if dump_expected:
        age = dump.age_hours if dump is not None else None
        gates.append(
            _gate("database dump age hours", age, "<=", thresholds.max_backup_age_hours, missing=-1.0)
        )
        restored = (1.0 if dump.passed else 0.0) if dump is not None else None
        gates.append(_gate("database dump restores", restored, "==", 1.0))
    return tuple(gates)


def electricity_of(plan: Plan, llm: LlmResult | None) -> tuple[TokenCost | None, IdleCost]:
    llm_host, others = llm_and_other_hardware(plan)
    return electricity(llm_host, llm, other_nodes=others)


def electricity(
    host: Host, llm: LlmResult | None, *, other_nodes: Sequence[Host] = ()
) -> tuple[TokenCost | None, IdleCost]:
    """The cost of a token at the measured speed on the LLM's node (none without a measurement),
    and of an idle month of every node."""
    cost = token_cost(host, llm.tokens_per_second, "measured") if llm and llm.tokens_per_second > 0 else None
    return cost, idle_month_cost(host, *other_nodes)


def _energy_markdown(report: Report) -> list[str]:
    if report.cost is None and report.idle is None:
        return []
    lines = ["## Electricity", ""]
    if report.cost is not None:
        cost = report.cost
        lines.append(
            f"At the measured {cost.tokens_per_second:.2f} tokens/s: {cost.joules_per_token:.1f} J per "
            f"token, {cost.cost_per_million_tokens:.2f} {cost.currency} per 1M tokens."
        )
        lines += ["", *(f"- {step}" for step in cost.steps)]
    if report.idle is not None:
        idle = report.idle
        lines += ["", f"Idle for a month: {idle.cost_per_month:.2f} {idle.currency}.", ""]
        lines += [f"- {step}" for step in idle.steps]
    return [*lines, ""]


def bound_ratio_text(llm: LlmResult) -> str:
    """The measured/bound ratio, or why there is none."""
    if not llm.bandwidth_bound_applies:
        return "not applicable (compute-bound: llama-bench stays below half the bound)"
    return f"{llm.ratio_to_bound:.2f}"


def number_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_markdown(report: Report) -> str:
    lines = [f"# ailab-deploy verification: {'PASSED' if report.passed else 'FAILED'}", ""]
    lines.append(f"Plan hash: `{report.plan_hash[:16]}`")
    lines.append("")
    if report.llm is not None:
        llm = report.llm
        lines += [
            "## LLM",
            "",
            "| quantity | value |",
            "|---|---|",
            f"| engine / model | {llm.engine} / {llm.model} |",
            f"| measured tokens/s ({llm.tokens} tokens, server timings) | {llm.tokens_per_second:.2f} |",
            f"| sizing prediction | {llm.predicted_tokens_per_second:.2f} |",
            f"| bandwidth bound ({llm.bandwidth_gbs:.1f} GB/s probed / model bytes) | "
            f"{llm.bound_tokens_per_second:.2f} |",
            f"| engine ceiling (llama-bench, same model, threads, context) | "
            f"{number_or_dash(llm.engine_ceiling_tokens_per_second)} |",
            f"| measured / prediction | {llm.ratio_to_prediction:.2f} |",
            f"| measured / bound | {bound_ratio_text(llm)} |",
            f"| deployed / llama-bench | {number_or_dash(llm.ratio_to_engine_ceiling)} |",
            "",
        ]
    lines += _energy_markdown(report)
    if report.pgbench is not None:
        pg = report.pgbench
        lines += [
            "## PostgreSQL (pgbench over the network)",
            "",
            f"TPS {pg.tps:.1f}, latency {pg.latency_ms:.2f} ms, {pg.transactions} transactions, "
            f"{pg.failed} failed ({pg.clients} clients, {pg.seconds} s)",
            "",
        ]
    if report.apps:
        lines += ["## Apps", "", "| app | health | end-to-end ms |", "|---|---|---|"]
        for app in report.apps:
            latency = f"{app.latency_ms:.0f}" if app.latency_ms is not None else "-"
            lines.append(f"| {app.name} | {app.health_status} | {latency} |")
        lines.append("")
    if report.browser:
        lines += ["## In a browser", "", "| app | database | LLM | answer | stored | screenshot |"]
        lines.append("|---|---|---|---|---|---|")
        for check in report.browser:
            answer = f"{check.answer_ms:.0f} ms" if check.answer_ms is not None else check.detail or "-"
            stored = f"#{check.stored_id}" if check.stored_in_log else "no"
            lines.append(
                f"| {check.app} | {check.database_status or '-'} | {check.llm_status or '-'} | {answer} | "
                f"{stored} | {check.screenshot or '-'} |"
            )
        lines.append("")
    if report.dump is not None:
        dump = report.dump
        age = f"{dump.age_hours:.1f} h old" if dump.age_hours is not None else "no dump found"
        verdict = "restored and matched its manifest" if dump.passed else "FAILED"
        lines += [
            "## Database dump",
            "",
            f"{dump.manifest or '-'}: {age}; {verdict} ({dump.tables} tables, {dump.rows} rows, "
            f"{dump.seconds:.1f} s)",
            "",
            *(f"- {problem}" for problem in dump.problems),
            *([""] if dump.problems else []),
        ]
    if report.infra:
        lines += ["## testinfra", "", ", ".join(f"{k}: {v}" for k, v in sorted(report.infra.items())), ""]
    lines += ["## Gates", "", "| gate | measured | threshold | result |", "|---|---|---|---|"]
    for gate in report.gates:
        result = "pass" if gate.passed else "FAIL"
        lines.append(
            f"| {gate.name} | {gate.measured:.2f} | {gate.comparison} {gate.threshold:g} | {result} |"
        )
    return "\n".join(lines) + "\n"
