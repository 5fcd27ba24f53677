"""Print `ailab-deploy up`'s phase timings on the lab: a first run from nothing, then a no-op run.

Run as root: ``.venv/bin/python benchmarks/up_phases.py [--lab-dir DIR] [--keep]``.
It brings the lab up in DIR (default: a temporary dir), destroys any VM of the lab plan so the
first run starts from nothing, runs ``up --json`` twice, prints both runs' phases, API writes and
changed counts, then destroys the VMs and takes the lab down (unless --keep).
Target: the no-op run takes under 60 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NOOP_TARGET_SECONDS = 60.0


def cli(*args: str, timeout: float = 3600) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ailab_deploy", *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        sys.exit(f"ailab-deploy {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def timed_up(plan: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    summary: dict[str, Any] = json.loads(cli("up", "--plan", plan, "--json"))
    return summary, time.monotonic() - started


def print_run(title: str, summary: dict[str, Any], wall: float) -> None:
    print(f"{title}: {wall:.1f} s wall")
    for row in summary["phases"]:
        print(f"  {row['phase']:<10} {row['seconds']:>8.1f} s  {row['result']}")
    print(f"  API writes: {summary['api_calls']['writes']}, changed per host: {summary['changed']}")
    report = summary.get("report") or {}
    if report.get("llm"):
        llm = report["llm"]
        print(
            f"  LLM {llm['tokens_per_second']:.1f} tok/s (x{llm['ratio_to_prediction']:.2f} of prediction, "
            f"x{llm['ratio_to_bound']:.2f} of bound); pgbench {report['pgbench']['tps']:.0f} tps"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="leave the lab and its VMs running")
    args = parser.parse_args()
    lab_dir = args.lab_dir or Path(tempfile.mkdtemp(prefix="ailab-bench-")) / "lab"
    plan = json.loads(cli("lab", "up", "--lab-dir", str(lab_dir), "--json"))["lab_plan"]
    try:
        cli("destroy", "--plan", plan, "--yes")
        first, first_wall = timed_up(plan)
        second, second_wall = timed_up(plan)
        print_run("first up (from nothing)", first, first_wall)
        print_run("second up (no change)", second, second_wall)
        verdict = "meets" if second_wall < NOOP_TARGET_SECONDS else "MISSES"
        print(f"no-op up: {second_wall:.1f} s, {verdict} the {NOOP_TARGET_SECONDS:.0f} s target")
    finally:
        if not args.keep:
            cli("destroy", "--plan", plan, "--yes")
            cli("lab", "down", "--purge", "--lab-dir", str(lab_dir))


if __name__ == "__main__":
    main()
