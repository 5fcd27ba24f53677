"""Print pgbench TPS for several run lengths on the same VMs, alternating, several rounds: how
short ``verify.pgbench_seconds`` can be before the figure moves.

Run as root against a lab plan whose VMs are converged (after ``ailab-deploy up``, or
``benchmarks/up_phases.py --keep``)::

    .venv/bin/python benchmarks/pgbench_duration.py --plan vms.lab.yaml [--seconds 3,5,10] [--rounds 4]

Each run is verify's own pgbench measurement (initialise, run, drop the tables) with only the
duration changed; scale and clients are the plan's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

from machine_load import print_load  # beside this script

from ailab_deploy.adapters.smoke import Targets, measure_pgbench
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.core.loader import LoadedPlan, load_plan


def with_duration(loaded: LoadedPlan, seconds: int) -> LoadedPlan:
    verify = loaded.plan.verify.model_copy(update={"pgbench_seconds": seconds})
    return replace(loaded, plan=loaded.plan.model_copy(update={"verify": verify}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--seconds", default="3,5,10", help="run lengths to compare, comma-separated")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    loaded = load_plan(args.plan)
    durations = [int(value) for value in args.seconds.split(",")]
    print_load("at the start")
    tps: dict[int, list[float]] = {seconds: [] for seconds in durations}
    for round_number in range(1, args.rounds + 1):
        for seconds in durations:
            targets = Targets(with_duration(loaded, seconds), state_dir_for(loaded.path))
            started = time.monotonic()
            try:
                result = measure_pgbench(targets)
            finally:
                targets.close()
            tps[seconds].append(result.tps)
            took = time.monotonic() - started
            print(f"round {round_number}: {seconds:3d} s  {result.tps:7.0f} tps  ({took:.1f} s)")
    longest = max(durations)
    reference = statistics.median(tps[longest])
    for seconds in durations:
        median, low, high = statistics.median(tps[seconds]), min(tps[seconds]), max(tps[seconds])
        print(
            f"{seconds:3d} s: median {median:7.0f} tps, range {low:.0f}-{high:.0f},"
            f" {median / reference:.2f} of the {longest} s median"
        )
    print_load("at the end")


if __name__ == "__main__":
    main()
