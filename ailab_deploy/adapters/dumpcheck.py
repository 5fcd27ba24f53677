"""The database VM's dumps: the restore check the backup role installs, run over SSH, and the
list of dumps on that VM.

The check itself (checksums, restore into a scratch database, row counts against the manifest)
is ``ailab-pg-dump-check`` from roles/backup; the weekly timer on the VM runs the same program.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ailab_deploy.adapters.smoke import SmokeError, Targets
from ailab_deploy.core.report import DumpCheck

DUMP_CHECK = "/usr/local/sbin/ailab-pg-dump-check"
BACKUP_DIR = "/var/backups/ailab-postgresql"  # the backup role's backup_dir
CHECK_TIMEOUT = 1800.0


@dataclass(frozen=True)
class DumpFile:
    name: str
    size: int
    age_hours: float


def check_latest_dump(targets: Targets) -> DumpCheck:
    """Restore the newest dump into a scratch database on the VM with the backup role, compare."""
    vm = targets.vm_with_role("backup")
    port = str(targets.loaded.plan.database.port)
    argv = ["sudo", "-n", DUMP_CHECK, "check", BACKUP_DIR, port, "--json"]
    with targets.session(vm) as session:
        result = session.run(argv, timeout=CHECK_TIMEOUT)
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        detail = (result.stderr.strip() or result.stdout.strip() or f"exit {result.rc}").splitlines()[-1]
        raise SmokeError(f"{vm.name}: {DUMP_CHECK} gave no result: {detail[:300]}") from None
    return DumpCheck.from_json(data)


def list_dumps(targets: Targets) -> dict[str, list[DumpFile]]:
    """VM name -> its dumps (newest first), for each VM with the backup role."""
    found: dict[str, list[DumpFile]] = {}
    for vm in targets.loaded.plan.vms_with_role("backup"):
        argv = ["sudo", "-n", "find", BACKUP_DIR, "-maxdepth", "1", "-type", "f", "-name", "*.dump",
                "-printf", "%f\\t%s\\t%T@\\n"]  # fmt: skip
        with targets.ssh(vm) as session:
            output = session.check(argv, timeout=60)
        now = time.time()
        dumps = []
        for line in output.splitlines():
            name, size, mtime = line.split("\t")
            dumps.append(DumpFile(name, int(size), (now - float(mtime)) / 3600))
        found[vm.name] = sorted(dumps, key=lambda dump: dump.age_hours)
    return found
