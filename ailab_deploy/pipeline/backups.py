"""Backups as a user meets them: what there is per VM (vzdump archives on the node, database
dumps on the database VM), the backup job run now, and a VM restored from its archive, then
configured and verified again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ailab_deploy.adapters.dumpcheck import list_dumps
from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.adapters.smoke import Targets
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.core.loader import LoadedPlan
from ailab_deploy.errors import AilabError
from ailab_deploy.pipeline.configure import ConfigureOutcome, configure
from ailab_deploy.pipeline.provision import ApplyOptions, Provisioner, RestoreResult
from ailab_deploy.pipeline.verify import VerifyOutcome, verify


@dataclass(frozen=True)
class BackupItem:
    vm: str
    kind: str  # "archive" (vzdump, on the node) or "dump" (pg_dump, on the VM)
    name: str  # the archive's volume id, or the dump's file name
    size: int
    age_hours: float
    notes: str = ""


@dataclass
class BackupListing:
    items: list[BackupItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read
    ran: list[str] = field(default_factory=list)  # the backup job's tasks run now, a UPID per node

    def to_dict(self) -> dict[str, Any]:
        return {
            "backups": [item.__dict__ for item in self.items],
            "problems": self.problems,
            "ran": self.ran,
        }


def _provisioner(loaded: LoadedPlan, progress: Callable[[str], None]) -> Provisioner:
    client = ProxmoxClient.from_plan(loaded)
    state = state_dir_for(loaded.path)
    return Provisioner(loaded, client, Ledger(state, secrets=client.secrets), state, progress=progress)


def list_backups(
    loaded: LoadedPlan,
    *,
    run_now: bool = False,
    options: ApplyOptions | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BackupListing:
    """Each planned VM's archives, and the database VM's dumps; ``run_now``: the job runs first."""
    provisioner = _provisioner(loaded, progress)
    listing = BackupListing()
    try:
        if run_now:
            listing.ran = provisioner.back_up_now(options or ApplyOptions())
        names = {vm.vmid: vm.name for vm in loaded.plan.vms}
        now = time.time()
        for archive in provisioner.backup_archives():
            vmid = int(archive.get("vmid", 0))
            if vmid not in names:
                continue  # another guest's archive on the same storage
            listing.items.append(
                BackupItem(
                    names[vmid],
                    "archive",
                    str(archive["volid"]),
                    int(archive.get("size", 0)),
                    (now - int(archive.get("ctime", now))) / 3600,
                    str(archive.get("notes", "")),
                )
            )
    finally:
        provisioner.ledger.close()
    try:
        for vm_name, dumps in list_dumps(Targets(loaded, state_dir_for(loaded.path))).items():
            listing.items += [BackupItem(vm_name, "dump", d.name, d.size, d.age_hours) for d in dumps]
    except AilabError as error:  # the database VM may be the one that is down
        listing.problems.append(f"dumps: {error}")
    listing.items.sort(key=lambda item: (item.vm, item.kind, item.age_hours))
    return listing


@dataclass(frozen=True)
class RestoreOutcome:
    restored: RestoreResult
    configured: ConfigureOutcome
    verified: VerifyOutcome | None


def restore_vm(
    loaded: LoadedPlan,
    name: str,
    archive: str | None = None,
    *,
    options: ApplyOptions | None = None,
    run_verify: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> RestoreOutcome:
    """Restore ``name`` from its newest (or the given) archive and start it; then configure that
    VM (its roles converge on what the archive held) and verify the lab."""
    provisioner = _provisioner(loaded, progress)
    try:
        restored = provisioner.restore(name, archive, options or ApplyOptions())
        progress(f"{name}: configure")
        configured = configure(loaded, limit=name, ledger=provisioner.ledger)
        if not configured.playbook.succeeded:
            failures = "; ".join(configured.playbook.failures) or configured.playbook.status
            raise AilabError(
                f"{name} was restored, but configure failed (run {configured.run_id}): {failures}"
            )
        verified = None
        if run_verify:
            progress("verify")
            verified = verify(loaded, ledger=provisioner.ledger)
        return RestoreOutcome(restored, configured, verified)
    finally:
        provisioner.ledger.close()
