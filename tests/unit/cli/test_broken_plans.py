"""Every broken plan under tests/plans/broken gets its own message naming file, line and field.

Each file's first line says what it must produce: ``# expect: <line>: <path>: <message>``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ailab_deploy.cli.main import main

BROKEN = sorted((Path(__file__).resolve().parents[2] / "plans" / "broken").glob("*.yaml"))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    saved = sys.argv
    sys.argv = ["ailab-deploy", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_there_are_at_least_thirty_broken_plans() -> None:
    assert len(BROKEN) >= 30


def test_each_broken_plan_has_a_distinct_expectation() -> None:
    expectations = [path.read_text().splitlines()[0] for path in BROKEN]
    assert len(set(expectations)) == len(expectations)


@pytest.mark.parametrize("path", BROKEN, ids=[path.stem for path in BROKEN])
def test_broken_plan_is_rejected_with_its_message(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    code, _, err = run_cli(["validate", "--plan", str(path)], capsys)
    assert code == 2
    first_line = err.splitlines()[0]
    assert first_line == f"error: {path}:{expected}"
    assert "Traceback" not in err


def test_errors_are_all_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = (Path(__file__).resolve().parents[2] / "plans" / "valid-minimal.yaml").read_text()
    broken = base.replace("memory: 4G", "memory: 4X", 1).replace("ip: 10.10.0.12", "ip: 10.10.0.300")
    broken = broken.replace("engine: ollama", "engine: vllm")
    plan = tmp_path / "vms.yaml"
    plan.write_text(broken)
    code, _, err = run_cli(["validate", "--plan", str(plan)], capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 3
    assert any("vms[0].memory" in line for line in lines)
    assert any("vms[2].ip" in line for line in lines)
    assert any("llm.engine" in line for line in lines)


def test_a_password_in_the_plan_is_never_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = (Path(__file__).resolve().parents[2] / "plans" / "valid-minimal.yaml").read_text()
    plan = tmp_path / "vms.yaml"
    plan.write_text(
        base.replace("    - name: ailab\napps", "    - name: ailab\n      password: s3cr3t-pw\napps")
    )
    code, out, err = run_cli(["validate", "--plan", str(plan)], capsys)
    assert code == 2
    assert "s3cr3t-pw" not in out + err


def test_missing_plan_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["validate", "--plan", str(tmp_path / "absent.yaml")], capsys)
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'absent.yaml'}: no such file (pass --plan PATH)"


def test_no_traceback_through_the_real_entry_point(tmp_path: Path) -> None:
    plan = tmp_path / "vms.yaml"
    plan.write_text("version: [1\n")
    result = subprocess.run(
        [sys.executable, "-m", "ailab_deploy", "validate", "--plan", str(plan)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {plan}:")
