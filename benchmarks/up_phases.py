"""Print `ailab-deploy up`'s phase timings on the lab: a first run from nothing, then a no-op run.

Run as root: ``.venv/bin/python benchmarks/up_phases.py [--lab-dir DIR] [--keep] [--cold-build]``.
It brings the lab up in DIR (default: a temporary dir), destroys any VM of the lab plan so the
first run starts from nothing, runs ``up --json`` twice, prints both runs' phases (and verify's
own steps), API writes, changed counts and testinfra outcome, the llama.cpp build's share of the
first run and whether the controller's build cache was warm, then destroys the VMs and takes the
lab down (unless --keep). ``--cold-build`` moves the build cache aside for the first run (and
back afterwards) to measure a build from source.
Targets: no-op up <= 30 s (configure <= 15 s, verify <= 15 s); first up with a warm cache <= 180 s.
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

from machine_load import print_load  # beside this script

from ailab_deploy.lab.labplan import LAB_LLAMACPP_CACHE_DIR

NOOP_TARGET_SECONDS = 30.0
NOOP_PHASE_TARGETS = {"configure": 15.0, "verify": 15.0}
WARM_FIRST_TARGET_SECONDS = 180.0
BUILD_TASK_PREFIX = "Build llama-server"


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


def build_seconds(state_dir: Path, after: float) -> float:
    """Seconds the llama.cpp build task took in the configure runs that started after ``after``."""
    total = 0.0
    for run in (state_dir / "runner" / "artifacts").glob("run-*-configure"):
        if run.stat().st_mtime < after:
            continue
        for event_file in (run / "job_events").glob("*.json"):
            event = json.loads(event_file.read_text())
            data = event.get("event_data") or {}
            if event.get("event") == "runner_on_ok" and str(data.get("task", "")).startswith(
                BUILD_TASK_PREFIX
            ):
                total += float(data.get("duration") or 0)
    return total


def print_run(title: str, summary: dict[str, Any], wall: float) -> None:
    print(f"{title}: {wall:.1f} s wall")
    for row in summary["phases"]:
        print(f"  {row['phase']:<10} {row['seconds']:>8.1f} s  {row['result']}")
    report_files = summary.get("report_files") or []
    if report_files:
        timings = json.loads(Path(report_files[0]).read_text()).get("timings", [])
        steps = ", ".join(f"{row['phase']} {row['seconds']:.1f} s" for row in timings)
        print(f"  verify steps: {steps}")
    print(f"  API writes: {summary['api_calls']['writes']}, changed per host: {summary['changed']}")
    report = summary.get("report") or {}
    if report.get("infra"):
        print(f"  testinfra: {report['infra']}")
    if report.get("llm"):
        llm = report["llm"]
        bound = (
            f"x{llm['ratio_to_bound']:.2f} of bound"
            if llm.get("ratio_to_bound") is not None
            else "bandwidth bound not applicable (compute-bound)"
        )
        ceiling = llm.get("ratio_to_engine_ceiling")
        print(
            f"  LLM {llm['tokens_per_second']:.1f} tok/s (x{llm['ratio_to_prediction']:.2f} of prediction, "
            f"{bound}); llama-bench {llm.get('engine_ceiling_tokens_per_second') or 0:.1f} tok/s, "
            f"deployed / llama-bench {ceiling if ceiling is None else format(ceiling, '.2f')}"
        )
    if report.get("pgbench"):
        print(f"  pgbench {report['pgbench']['tps']:.0f} tps")


def verdict(value: float, target: float) -> str:
    return f"{value:.1f} s, {'meets' if value <= target else 'MISSES'} the {target:.0f} s target"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="leave the lab and its VMs running")
    parser.add_argument("--cold-build", action="store_true", help="first run without the build cache")
    args = parser.parse_args()
    print_load("at the start")
    lab_dir = args.lab_dir or Path(tempfile.mkdtemp(prefix="ailab-bench-")) / "lab"
    plan = json.loads(cli("lab", "up", "--lab-dir", str(lab_dir), "--json"))["lab_plan"]
    state_dir = Path(plan).parent / ".ailab"
    cache = Path(LAB_LLAMACPP_CACHE_DIR)
    aside = cache.with_name(cache.name + ".aside")
    try:
        cli("destroy", "--plan", plan, "--yes")
        if args.cold_build and cache.is_dir():
            cache.rename(aside)
        archives = sorted(p.name for p in cache.glob("*.tar.gz")) if cache.is_dir() else []
        started = time.time()
        first, first_wall = timed_up(plan)
        built = build_seconds(state_dir, started)
        if aside.is_dir():
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            aside.rename(cache)
        second, second_wall = timed_up(plan)
        print(f"llama.cpp build cache before the first run: {', '.join(archives) or 'empty (cold)'}")
        print_run("first up (from nothing)", first, first_wall)
        print(f"  llama.cpp build: {built:.1f} s ({built / first_wall:.0%} of the first up)")
        print_run("second up (no change)", second, second_wall)
        phases = {row["phase"]: row["seconds"] for row in second["phases"]}
        print(f"no-op up: {verdict(second_wall, NOOP_TARGET_SECONDS)}")
        for phase, target in NOOP_PHASE_TARGETS.items():
            print(f"no-op {phase}: {verdict(phases[phase], target)}")
        if archives:
            print(f"first up with a warm build cache: {verdict(first_wall, WARM_FIRST_TARGET_SECONDS)}")
        print_load("at the end")
    finally:
        if aside.is_dir() and not cache.is_dir():
            aside.rename(cache)
        if not args.keep:
            cli("destroy", "--plan", plan, "--yes")
            cli("lab", "down", "--purge", "--lab-dir", str(lab_dir))


if __name__ == "__main__":
    main()
