"""Print where a configure run's time went, from ansible-runner's recorded events.

Run: ``.venv/bin/python benchmarks/configure_profile.py --state-dir <plan dir>/.ailab [--run N] [--top 15]``.
It reads ``<state>/runner/artifacts/run-<N>-configure/job_events`` (default: the newest run) and
prints the run's span, each play's span, how many tasks were started and skipped per host, each
host's summed module time, and the tasks that held the run longest (from one task's start to the
next task's start, the time the controller spent on it, with each host's own module time).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

TASK_STARTS = ("playbook_on_task_start", "playbook_on_handler_task_start")
RESULTS = ("runner_on_ok", "runner_on_skipped", "runner_on_failed", "runner_on_unreachable")


def newest_run(artifacts: Path) -> Path:
    runs = [
        (int(m[1]), path)
        for path in artifacts.glob("run-*-configure")
        if (m := re.match(r"run-(\d+)-", path.name))
    ]
    if not runs:
        raise SystemExit(f"{artifacts}: no configure run recorded")
    return max(runs)[1]


def load_events(run: Path) -> list[dict[str, Any]]:
    events = [json.loads(path.read_text()) for path in (run / "job_events").glob("*.json")]
    return sorted(events, key=lambda event: event["counter"])


def seconds(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["created"]).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--run", type=int, default=None)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    artifacts = args.state_dir / "runner" / "artifacts"
    run = artifacts / f"run-{args.run}-configure" if args.run is not None else newest_run(artifacts)
    events = load_events(run)
    if not events:
        raise SystemExit(f"{run}: no events")
    start, end = seconds(events[0]), seconds(events[-1])
    print(f"{run.name}: {end - start:.1f} s from the first event to the last, {len(events)} events")
    plays = [
        (seconds(e) - start, e["event_data"].get("play", ""))
        for e in events
        if e["event"] == "playbook_on_play_start"
    ]
    for index, (at, name) in enumerate(plays):
        until = plays[index + 1][0] if index + 1 < len(plays) else end - start
        print(f"  play {at:6.1f} s  +{until - at:5.1f} s  {name}")
    starts = [
        (seconds(e) - start, e["event_data"].get("task", "")) for e in events if e["event"] in TASK_STARTS
    ]
    module_time: dict[str, float] = defaultdict(float)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per_task: dict[str, list[str]] = defaultdict(list)
    for event in events:
        data = event.get("event_data") or {}
        if event["event"] in RESULTS and data.get("host"):
            took = float(data.get("duration") or 0)
            module_time[data["host"]] += took
            outcomes[data["host"]][event["event"].removeprefix("runner_on_")] += 1
            per_task[data.get("task", "")].append(f"{data['host']} {took:.2f}")
    print(f"  task starts: {len(starts)}")
    for host in sorted(outcomes):
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(outcomes[host].items()))
        print(f"  {host}: {counts}; module time {module_time[host]:.1f} s")
    held = [
        ((starts[i + 1][0] if i + 1 < len(starts) else end - start) - at, at, name)
        for i, (at, name) in enumerate(starts)
    ]
    print(f"  the {args.top} tasks that held the run longest (start to next start):")
    for took, at, name in sorted(held, reverse=True)[: args.top]:
        print(f"    {took:5.2f} s at {at:5.1f} s  {name[:70]}  [{', '.join(per_task.get(name, [])[:3])}]")


if __name__ == "__main__":
    main()
