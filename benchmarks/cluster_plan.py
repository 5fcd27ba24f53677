"""``plan`` on a cluster: time and API reads for many managed VMs across the nodes of the
in-process Proxmox API emulator (loopback only, null backend).

    .venv/bin/python benchmarks/cluster_plan.py [--vms 1000] [--nodes 3] [--repeats 3]

Apply creates the VMs first (placed by the plan over the nodes: clones onto a node's local
storage go beside the shared template, then migrate); then ``plan`` (load and validate the
plan, placement included, and compare with what the cluster runs) is timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ailab_deploy.core.loader import load_plan  # noqa: E402
from benchmarks.provision import small_vms  # noqa: E402  (small VMs on each node's HDD pool)
from tests.lab.conftest import Lab  # noqa: E402  (the emulator harness the lab tests use)
from tests.lab.provision_fixtures import LAB_OPTIONS, Engine, write_lab_plan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    nodes = [f"pve{i}" for i in range(1, args.nodes + 1)]
    with tempfile.TemporaryDirectory(prefix="ailab-bench-") as tmp:
        workdir = Path(tmp)
        lab = Lab(workdir / "lab", {"task_seconds": 0.005, "nodes": nodes})
        try:
            plan_path = write_lab_plan(lab, workdir / "plan", small_vms(args.vms), nodes=nodes, vzdump=False)
            engine = Engine(lab, plan_path)
            started = time.perf_counter()
            report = engine.provisioner().apply(replace(LAB_OPTIONS, parallel=8, agent_timeout=60))
            assert not report.failed, report.failed
            took = time.perf_counter() - started
            print(f"setup: apply of {args.vms} VMs on {args.nodes} nodes took {took:.1f} s")
            found = lab.api().cluster.resources.get(type="vm")
            per_node = Counter(str(r["node"]) for r in found if int(r["vmid"]) != 9000)
            print("VMs per node: " + ", ".join(f"{node} {per_node[node]}" for node in nodes))

            loads, computes, calls = [], [], {}
            for _ in range(args.repeats):
                started = time.perf_counter()
                load_plan(plan_path)  # parse and validate: per-node capacity and placement
                loads.append(time.perf_counter() - started)
                started = time.perf_counter()
                provisioner = engine.provisioner()
                plan = provisioner.compute()
                computes.append(time.perf_counter() - started)
                calls = provisioner.client.stats.as_dict()
                assert plan.counts() == {"no-op": args.vms}, plan.counts()
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(calls["by_kind"].items()))
            print(f"plan of {args.vms} VMs on {args.nodes} nodes (median of {args.repeats}):")
            print(f"  load and validate the plan: {statistics.median(loads):7.3f} s")
            print(f"  plan (read the cluster, place, diff): {statistics.median(computes):7.3f} s")
            print(f"  API calls: {calls['reads']} reads, {calls['writes']} writes ({kinds})")
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
