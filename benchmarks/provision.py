"""Provisioning figures against the in-process Proxmox API emulator (loopback only).

    .venv/bin/python benchmarks/provision.py [--sizes 3,50,300] [--clone-seconds 1]

1. ``plan`` latency and API calls for N existing managed VMs (one /cluster/resources call,
   then one config read per managed VM, 8 at a time).
2. Time to provision 3 VMs in parallel versus one at a time, with clone tasks that take
   ``--clone-seconds`` on the emulator.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.lab.conftest import Lab  # noqa: E402  (the emulator harness the lab tests use)
from tests.lab.provision_fixtures import LAB_OPTIONS, Engine, lab_vm, write_lab_plan  # noqa: E402


def small_vms(count: int) -> list[dict[str, Any]]:
    # Small VMs on the big HDD pool so 300 of them fit the plan's capacity checks; the LLM
    # VM keeps enough memory for the model.
    return [
        lab_vm(i, storage="HDDStorage", disk="4G", cores=1, memory="8G" if i == 1 else "256M")
        for i in range(count)
    ]


def plan_latency(workdir: Path, count: int, repeats: int = 3) -> tuple[float, dict[str, Any]]:
    lab = Lab(workdir / f"lab-{count}", {"task_seconds": 0.005})
    try:
        engine = Engine(lab, write_lab_plan(lab, workdir / f"plan-{count}", small_vms(count)))
        report = engine.provisioner().apply(replace(LAB_OPTIONS, parallel=8, agent_timeout=30))
        assert not report.failed, report.failed
        timings = []
        calls: dict[str, Any] = {}
        for _ in range(repeats):
            provisioner = engine.provisioner()
            started = time.perf_counter()
            plan = provisioner.compute()
            timings.append(time.perf_counter() - started)
            calls = provisioner.client.stats.as_dict()
            assert plan.counts() == {"no-op": count}, plan.counts()
        return statistics.median(timings), calls
    finally:
        lab.stop()


def provision_time(workdir: Path, parallel: int, clone_seconds: float) -> float:
    lab = Lab(
        workdir / f"lab-p{parallel}",
        {"task_seconds": 0.05, "task_seconds_by_type": {"qmclone": clone_seconds}},
    )
    try:
        engine = Engine(
            lab, write_lab_plan(lab, workdir / f"plan-p{parallel}", [lab_vm(i) for i in range(3)])
        )
        report = engine.provisioner().apply(replace(LAB_OPTIONS, parallel=parallel, clone_timeout=60))
        assert not report.failed, report.failed
        return report.seconds
    finally:
        lab.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="3,50,300", help="VM counts for the plan benchmark")
    parser.add_argument("--clone-seconds", type=float, default=1.0, help="simulated clone task duration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ailab-bench-") as tmp:
        workdir = Path(tmp)
        print("plan latency against the emulator (existing managed VMs; median of 3)")
        print(f"{'VMs':>5} {'seconds':>8} {'API reads':>10} {'writes':>7}  calls by kind")
        for count in (int(n) for n in args.sizes.split(",")):
            seconds, calls = plan_latency(workdir, count)
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(calls["by_kind"].items()))
            print(f"{count:>5} {seconds:>8.3f} {calls['reads']:>10} {calls['writes']:>7}  {kinds}")
        print(f"\nprovision 3 VMs (clone tasks take {args.clone_seconds:g} s, API-only, no SSH wait)")
        parallel = provision_time(workdir, 3, args.clone_seconds)
        serial = provision_time(workdir, 1, args.clone_seconds)
        print(f"  parallel (3 at once): {parallel:6.2f} s")
        print(f"  one at a time:        {serial:6.2f} s")
        print(f"  speed-up:             {serial / parallel:6.2f}x")


if __name__ == "__main__":
    main()
