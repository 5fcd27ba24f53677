from __future__ import annotations

import pytest

from ailab_deploy.core.plan import Verify
from ailab_deploy.core.report import (
    AppResult,
    DumpCheck,
    LlmResult,
    MeasurementError,
    Report,
    evaluate_gates,
    parse_pgbench,
    render_markdown,
    tokens_per_second_from_response,
)

PGBENCH_15 = """\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 2
query mode: simple
number of clients: 2
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 4321
number of failed transactions: 0 (0.000%)
latency average = 4.629 ms
initial connection time = 12.345 ms
tps = 432.061234 (without initial connection time)
"""

THRESHOLDS = Verify(min_tokens_per_second=5, min_pgbench_tps=20, max_app_latency_ms=1000)


def test_ollama_tokens_per_second_from_nanoseconds() -> None:
    # the docs' example: 259 tokens in 4.23271 s
    count, tps = tokens_per_second_from_response("ollama", {"eval_count": 259, "eval_duration": 4232710000})
    assert count == 259
    assert tps == pytest.approx(61.19, abs=0.01)


def test_ollama_missing_fields_are_an_error_not_zero_speed() -> None:
    with pytest.raises(MeasurementError):
        tokens_per_second_from_response("ollama", {"done": True})


def test_llamacpp_tokens_per_second_from_timings() -> None:
    body = {
        "content": "x",
        "timings": {"predicted_n": 64, "predicted_ms": 800.0, "predicted_per_second": 80.0},
    }
    assert tokens_per_second_from_response("llamacpp", body) == (64, 80.0)


def test_parse_pgbench() -> None:
    result = parse_pgbench(PGBENCH_15, clients=2, seconds=10)
    assert (result.tps, result.latency_ms, result.transactions, result.failed) == (432.061234, 4.629, 4321, 0)


def test_parse_pgbench_counts_failures_and_rejects_garbage() -> None:
    failing = PGBENCH_15.replace("number of failed transactions: 0", "number of failed transactions: 7")
    assert parse_pgbench(failing, 2, 10).failed == 7
    with pytest.raises(MeasurementError, match="lacks tps"):
        parse_pgbench("connection refused", 2, 10)


def _llm(tps: float) -> LlmResult:
    return LlmResult("llamacpp", "gemma3:270m", 64, tps, 40.0, 9.5, 35.0)


def test_gates_pass_and_fail_on_thresholds() -> None:
    pg = parse_pgbench(PGBENCH_15, 2, 10)
    apps = (AppResult("lab-api", 200, 850.0),)
    gates = evaluate_gates(THRESHOLDS, _llm(30.0), pg, apps)
    assert all(gate.passed for gate in gates)
    slow = evaluate_gates(THRESHOLDS, _llm(3.0), pg, (AppResult("lab-api", 503, 1500.0),))
    failed = {gate.name for gate in slow if not gate.passed}
    assert failed == {"llm tokens/s", "lab-api health", "lab-api end-to-end ms"}


def test_missing_measurement_fails_its_gate() -> None:
    gates = evaluate_gates(THRESHOLDS, None, None, ())
    assert not any(gate.passed for gate in gates)


def test_report_ratios_and_markdown() -> None:
    pg = parse_pgbench(PGBENCH_15, 2, 10)
    llm = _llm(30.0)
    report = Report(
        "ab" * 32, llm, pg, (AppResult("lab-api", 200, 850.0),), evaluate_gates(THRESHOLDS, llm, pg, ())
    )
    data = report.to_dict()
    assert data["llm"]["ratio_to_prediction"] == 0.75
    assert data["llm"]["ratio_to_bound"] == pytest.approx(0.857, abs=0.001)
    assert data["passed"] is True
    text = render_markdown(report)
    assert "| measured / prediction | 0.75 |" in text
    assert "PASSED" in text
    failing = Report("ab" * 32, llm, pg, (), report.gates, infra={"failed": 1})
    assert not failing.passed
    assert failing.failures() == ["1 testinfra check(s) failed"]


def test_failures_name_each_missed_gate_with_its_figures() -> None:
    slow = _llm(3.0)  # below the 5 tokens/s the thresholds ask for
    pg = parse_pgbench(PGBENCH_15, 2, 10)
    report = Report("ab" * 32, slow, pg, (), evaluate_gates(THRESHOLDS, slow, pg, ()), infra={"errors": 2})
    assert report.failures() == ["llm tokens/s 3 (wanted >= 5)", "2 testinfra check(s) failed"]
    assert not report.passed


def _dump_gates(dump: DumpCheck | None, expected: bool = True) -> dict[str, tuple[float, bool]]:
    gates = evaluate_gates(THRESHOLDS, None, None, (), dump=dump, dump_expected=expected)
    return {
        gate.name: (gate.measured, gate.passed) for gate in gates if gate.name.startswith("database dump")
    }


@pytest.mark.parametrize(
    "dump, gates",
    [
        (
            DumpCheck(True, 3.5),
            {"database dump age hours": (3.5, True), "database dump restores": (1.0, True)},
        ),
        (
            DumpCheck(True, 26.0),
            {"database dump age hours": (26.0, True), "database dump restores": (1.0, True)},
        ),
        (
            DumpCheck(True, 26.5),
            {"database dump age hours": (26.5, False), "database dump restores": (1.0, True)},
        ),
        (
            DumpCheck(False, 2.0, problems=("ailab: dump x.dump is damaged",)),
            {"database dump age hours": (2.0, True), "database dump restores": (0.0, False)},
        ),
        (
            DumpCheck(False, None),
            {"database dump age hours": (-1.0, False), "database dump restores": (0.0, False)},
        ),
        (None, {"database dump age hours": (-1.0, False), "database dump restores": (0.0, False)}),
    ],
)
def test_dump_gates(dump: DumpCheck | None, gates: dict[str, tuple[float, bool]]) -> None:
    assert THRESHOLDS.max_backup_age_hours == 26.0  # the plan's default
    assert _dump_gates(dump) == gates


def test_no_backup_role_no_dump_gates() -> None:
    assert _dump_gates(None, expected=False) == {}


def test_dump_check_answer_is_read_strictly() -> None:
    answer = {"passed": True, "age_hours": 1.25, "manifest": "manifest-x.json", "tables": 3, "rows": 42}
    dump = DumpCheck.from_json(answer | {"seconds": 0.8, "problems": []})
    assert (dump.passed, dump.age_hours, dump.tables, dump.rows) == (True, 1.25, 3, 42)
    with pytest.raises(MeasurementError):
        DumpCheck.from_json({"age_hours": 1.0})
    report = Report(
        "0" * 64,
        None,
        None,
        (),
        (),
        dump=DumpCheck(False, 2.0, "manifest-x.json", problems=("lab: not restored",)),
    )
    markdown = render_markdown(report)
    assert "## Database dump" in markdown and "- lab: not restored" in markdown
