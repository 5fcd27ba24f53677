"""Print what each of verify's speed levers buys, side by side on the same converged lab,
alternating, several rounds: median and range of each variant.

Run as root against a lab plan whose VMs are converged (after ``ailab-deploy up``, or
``benchmarks/up_phases.py --keep``)::

    .venv/bin/python benchmarks/verify_levers.py --plan vms.lab.yaml [--rounds 5]

- testinfra, three ways: testinfra's own (``ansible://``: an SSH session and a sudo per command,
  ``ansible-inventory`` in every process); with the kept inventory listing; and as verify runs it
  (the listing and one root process per host). Every variant must report the same counts.
- the browser check of each Streamlit app, with a fresh HTTP cache and with the kept one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from machine_load import print_load  # beside this script

from ailab_deploy.adapters.browser import find_browser
from ailab_deploy.adapters.inventory import generate_inventory, inventory_listing
from ailab_deploy.adapters.runner import project_root
from ailab_deploy.adapters.smoke import Targets
from ailab_deploy.adapters.statedir import browser_cache_dir, state_dir_for
from ailab_deploy.core.loader import load_plan, private_key_of
from ailab_deploy.pipeline.configure import plan_addresses
from ailab_deploy.pipeline.verify import HOST_SCHEME, check_apps_in_browser, run_testinfra


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.monotonic()
    outcome = action()
    return time.monotonic() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    loaded = load_plan(args.plan)
    state = state_dir_for(loaded.path)
    inventory = generate_inventory(
        loaded, plan_addresses(loaded), state_dir=state, private_key_file=private_key_of(loaded)
    )
    listing = inventory_listing(inventory, state, project_root() / "ansible.cfg")
    hosts = [vm.name for vm in loaded.plan.vms]
    scratch = Path(tempfile.mkdtemp(prefix="verify-levers-"))

    def testinfra(scheme: str, with_listing: bool) -> Callable[[], object]:
        return lambda: run_testinfra(
            inventory.inventory_path,
            listing if with_listing else None,
            state,
            scratch / "junit.xml",
            loaded.path,
            hosts,
            scheme=scheme,
        )

    variants: dict[str, Callable[[], object]] = {
        "testinfra, testinfra's own way": testinfra("ansible", with_listing=False),
        "testinfra, kept inventory listing": testinfra("ansible", with_listing=True),
        "testinfra, listing + root shell (verify)": testinfra(HOST_SCHEME, with_listing=True),
    }
    browser = find_browser()
    if browser is not None:
        targets = Targets(loaded, state)
        fresh = scratch / "fresh-cache"

        def browser_check(kept: bool) -> Callable[[], object]:
            def check() -> object:
                if not kept:
                    shutil.rmtree(fresh, ignore_errors=True)
                cache = browser_cache_dir(state) if kept else fresh
                results = check_apps_in_browser(targets, browser, scratch, cache_dir=cache)
                return [(result.passed, round(result.answer_ms or 0), result.detail) for result in results]

            return check

        variants["browser, fresh HTTP cache"] = browser_check(kept=False)
        variants["browser, kept HTTP cache (verify)"] = browser_check(kept=True)
    print_load("at the start")
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(1, args.rounds + 1):
        for name, action in variants.items():
            took, outcome = timed(action)
            seconds[name].append(took)
            print(f"round {round_number}: {name}: {took:.2f} s  {outcome}")
            if name.startswith("browser") and isinstance(outcome, list):
                # The LLM's answer takes as long as the model's answer is, whatever the browser
                # does: the check's own time is what is left.
                answering = sum(answer_ms for _, answer_ms, _ in outcome) / 1000
                seconds.setdefault(f"{name}, without the LLM's answer", []).append(took - answering)
    for name, values in seconds.items():
        median, low, high = statistics.median(values), min(values), max(values)
        print(f"{name}: median {median:.2f} s, range {low:.2f}-{high:.2f} s")
    print_load("at the end")


if __name__ == "__main__":
    main()
