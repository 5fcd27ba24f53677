from __future__ import annotations

from pathlib import Path

from ailab_deploy.core.plan import Verify
from ailab_deploy.core.report import LlmResult, Report, evaluate_gates, parse_pgbench
from ailab_deploy.pipeline.verify import VerifyOutcome
from tests.unit.core.test_report import PGBENCH_15


def test_a_verify_outcome_names_the_missed_gates_then_the_measurements_not_taken(tmp_path: Path) -> None:
    thresholds = Verify(min_tokens_per_second=5, min_pgbench_tps=20, max_app_latency_ms=1000)
    slow = LlmResult("llamacpp", "gemma3:270m", 64, 3.0, 40.0, 9.5, 35.0)
    pgbench = parse_pgbench(PGBENCH_15, 2, 10)
    report = Report("ab" * 32, slow, pgbench, (), evaluate_gates(thresholds, slow, pgbench, ()))
    outcome = VerifyOutcome(7, report, tmp_path, tmp_path, tmp_path, ("apps: connection refused",))
    assert outcome.failures() == ["llm tokens/s 3 (wanted >= 5)", "apps: connection refused"]
