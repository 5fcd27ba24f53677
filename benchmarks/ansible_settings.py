"""Print the no-op configure phase's time per Ansible setting: stock, then each lever added.

Run as root against a lab plan whose VMs are already converged (e.g. after
``benchmarks/up_phases.py --keep`` or ``ailab-deploy up``)::

    .venv/bin/python benchmarks/ansible_settings.py --plan /path/to/vms.lab.yaml [--rounds 3]

Variants, each the previous plus one lever:

- ``stock``: Ansible's defaults (empty ansible.cfg), linear strategy, runner's per-run fact cache;
- ``project-linear``: the project's ansible.cfg (pipelining, ControlPersist, forks, smart
  gathering with the persistent fact cache), stock linear strategy;
- ``project-mitogen-cold-facts``: plus mitogen, but the fact cache emptied before the run;
- ``project-mitogen``: plus the facts cached across runs;
- ``project``: everything, as ``configure`` runs: plus the callback that freezes the controller's
  heap before each worker fork (playbooks/callback_plugins/ailab_fork_friendly.py), which the
  variants before it leave out.

Each round runs every variant once, in that order, so neither benefits from running second on
average over rounds; the median and the spread (min-max) per variant are printed. On converged
VMs every run reports changed=0: the difference is what each lever saves on every redeploy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from pathlib import Path

from machine_load import print_load  # beside this script

from ailab_deploy.adapters import runner
from ailab_deploy.adapters.statedir import facts_dir, state_dir_for
from ailab_deploy.core.loader import load_plan
from ailab_deploy.pipeline.configure import configure

VARIANTS = ("stock", "project-linear", "project-mitogen-cold-facts", "project-mitogen", "project")


def run_variant(label: str, plan: Path) -> tuple[float, int, str]:
    loaded = load_plan(plan)
    if label == "project-linear":
        os.environ["AILAB_ANSIBLE_STRATEGY"] = "linear"
    else:
        os.environ.pop("AILAB_ANSIBLE_STRATEGY", None)
    runner.choose_strategy.cache_clear()
    if label == "project":
        os.environ.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # ansible.cfg's: the heap-freeze callback
    else:
        # Overrides ansible.cfg's list: a stdout callback here is skipped (runner's is in use), so
        # no extra callback runs. (An empty value is refused by Ansible.)
        os.environ["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.builtin.default"
    if label == "project-mitogen-cold-facts":
        shutil.rmtree(facts_dir(state_dir_for(loaded.path)), ignore_errors=True)
    result = configure(loaded, stock_settings=label == "stock").playbook
    if not result.succeeded:
        raise SystemExit(f"{label} run failed: {result.failures[:3]}")
    return result.seconds, result.changed, result.strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    args = parser.parse_args()
    print_load("at the start")
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    seconds: dict[str, list[float]] = {label: [] for label in variants}
    try:
        for round_number in range(1, args.rounds + 1):
            for label in variants:
                took, changed, strategy = run_variant(label, args.plan)
                seconds[label].append(took)
                print(
                    f"round {round_number} {label:<27} {took:6.1f} s  changed={changed}  strategy={strategy}"
                )
    finally:
        os.environ.pop("AILAB_ANSIBLE_STRATEGY", None)
        os.environ.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    print_load("at the end")
    stock = statistics.median(seconds["stock"]) if seconds.get("stock") else None
    print(f"{'variant':<27} {'median':>8} {'spread':>15} {'of stock':>9}")
    for label, values in seconds.items():
        median = statistics.median(values)
        share = f"{median / stock:8.0%}" if stock else ""
        print(f"{label:<27} {median:7.1f}s {min(values):6.1f}-{max(values):6.1f} s {share:>9}")


if __name__ == "__main__":
    main()
