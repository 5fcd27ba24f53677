"""Configure the VMs: generate the inventory, run the playbooks, record the outcome in the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ailab_deploy.adapters.inventory import GeneratedInventory, generate_inventory
from ailab_deploy.adapters.ledger import Ledger, apply_lock
from ailab_deploy.adapters.runner import PlaybookResult, ProgressCallback, run_playbook
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.core.loader import LoadedPlan, private_key_of


@dataclass(frozen=True)
class ConfigureOutcome:
    run_id: int
    inventory: GeneratedInventory
    playbook: PlaybookResult


def plan_addresses(loaded: LoadedPlan) -> dict[str, str]:
    """VM name -> address; the plan's static addresses are what cloud-init configured."""
    return {vm.name: str(vm.ip) for vm in loaded.plan.vms}


def configure(
    loaded: LoadedPlan,
    *,
    tags: Sequence[str] = (),
    limit: str | None = None,
    addresses: dict[str, str] | None = None,
    stock_settings: bool = False,
    on_progress: ProgressCallback | None = None,
    ledger: Ledger | None = None,
) -> ConfigureOutcome:
    """Converge every VM of the plan; the run and its per-host steps go into the ledger."""
    state = state_dir_for(loaded.path)
    own_ledger = ledger is None
    ledger = ledger or Ledger(state)
    try:
        with apply_lock(state, loaded.text_sha256):
            inventory = generate_inventory(
                loaded,
                addresses or plan_addresses(loaded),
                state_dir=state,
                private_key_file=private_key_of(loaded),
            )
            with ledger.start_run("configure", loaded.text_sha256) as run:
                steps = {vm.name: run.step(vm.name, "configure") for vm in loaded.plan.vms}
                for step in steps.values():
                    step.start()
                result = run_playbook(
                    inventory=inventory.inventory_path,
                    state_dir=state,
                    ident=f"run-{run.id}-configure",
                    extra_vars_files=inventory.extra_vars_files,
                    tags=tags,
                    limit=limit,
                    stock_settings=stock_settings,
                    on_progress=on_progress,
                )
                for name, step in steps.items():
                    tally = result.hosts.get(name)
                    if tally is None:
                        step.skip("not in this run (limit or tags)")
                    elif tally.failed or tally.unreachable:
                        failures = [f for f in result.failures if f.startswith(f"{name}:")]
                        step.fail(
                            "; ".join(failures) or f"{tally.failed} failed, {tally.unreachable} unreachable"
                        )
                    else:
                        step.succeed(f"ok={tally.ok} changed={tally.changed}")
                run.event(f"playbook finished in {result.seconds:.1f}s, changed={result.changed}")
                run.finish("succeeded" if result.succeeded else "failed")
            return ConfigureOutcome(run.id, inventory, result)
    finally:
        if own_ledger:
            ledger.close()
