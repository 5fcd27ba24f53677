"""Print the configure phase's time with the project's ansible.cfg versus Ansible's stock settings.

Run as root against a lab plan whose VMs are already converged (e.g. after
``benchmarks/up_phases.py --keep`` or ``ailab-deploy up``)::

    .venv/bin/python benchmarks/ansible_settings.py --plan .ailab/lab/vms.lab.yaml [--rounds 2]

Each round runs the same playbooks (playbooks/site.yml, every layer) once tuned and once stock,
alternating so neither benefits from running second. On converged VMs both report changed=0, so
the difference is what pipelining, ControlPersist, fact caching, smart gathering and forks save
on every redeploy.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ailab_deploy.core.loader import load_plan
from ailab_deploy.pipeline.configure import configure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    loaded = load_plan(args.plan)
    seconds: dict[str, list[float]] = {"tuned": [], "stock": []}
    for round_number in range(1, args.rounds + 1):
        for label in ("tuned", "stock"):
            outcome = configure(loaded, stock_settings=label == "stock")
            result = outcome.playbook
            if not result.succeeded:
                raise SystemExit(f"{label} run failed: {result.failures[:3]}")
            seconds[label].append(result.seconds)
            print(f"round {round_number} {label}: {result.seconds:.1f} s, changed={result.changed}")
    tuned, stock = statistics.median(seconds["tuned"]), statistics.median(seconds["stock"])
    print(f"median tuned {tuned:.1f} s, stock {stock:.1f} s: tuned takes {tuned / stock:.0%} of stock")


if __name__ == "__main__":
    main()
