"""Print pgbench TPS on the database VM with the plan's tuned PostgreSQL settings and with
PostgreSQL's defaults for the same settings: same VM, same run, alternating, and the ratio.

Run as root against a lab plan whose VMs are converged (after ``ailab-deploy up``, or
``benchmarks/up_phases.py --keep``)::

    .venv/bin/python benchmarks/pgbench_tuning.py --plan /path/to/vms.lab.yaml [--rounds 2]

"Defaults" means: every setting the role wrote (its conf.d files) in the resource, WAL and
query-tuning categories is set back to PostgreSQL's built-in value with ALTER SYSTEM, and the
server restarted; connection, authentication and TLS settings stay as deployed, so pgbench still
runs over the network from the apps VM exactly as verify runs it. The settings are reset and the
server restarted again afterwards, also on failure. pgbench's scale, clients and duration are the
plan's (verify section).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from machine_load import print_load  # beside this script

from ailab_deploy.adapters.smoke import Targets, measure_pgbench
from ailab_deploy.adapters.ssh import SshSession
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.core.loader import load_plan

# The settings pgtune-style tuning is about, by pg_settings category.
TUNING_CATEGORIES = ("Resource Usage%", "Write-Ahead Log%", "Query Tuning%")
TUNED_BY_THE_ROLE = (
    "SELECT name, boot_val, setting, coalesce(unit, '') FROM pg_settings"
    " WHERE sourcefile LIKE '%/conf.d/%ailab%' AND ("
    + " OR ".join(f"category LIKE '{category}'" for category in TUNING_CATEGORIES)
    + ") ORDER BY name"
)


def psql(session: SshSession, sql: str) -> str:
    return session.check(["sudo", "-n", "-u", "postgres", "psql", "-X", "-At", "-F", "\t", "-c", sql])


def restart(session: SshSession) -> None:
    session.check(["sudo", "-n", "systemctl", "restart", "postgresql"], timeout=300)
    session.check(["sh", "-c", "for i in $(seq 60); do pg_isready -q && exit 0; sleep 1; done; exit 1"])


def tuned_settings(session: SshSession) -> dict[str, tuple[str, str, str]]:
    """name -> (PostgreSQL's built-in value, deployed value, unit) for each tuning setting the
    role's files set; values in the setting's base unit, as ALTER SYSTEM takes them."""
    rows = [line.split("\t") for line in psql(session, TUNED_BY_THE_ROLE).splitlines() if line]
    return {name: (boot, deployed, unit) for name, boot, deployed, unit in rows}


def use_defaults(session: SshSession, settings: dict[str, tuple[str, str, str]]) -> None:
    for name, (boot, _, _) in settings.items():
        psql(session, f"ALTER SYSTEM SET {name} = '{boot}'")
    restart(session)


def use_tuned(session: SshSession, settings: dict[str, tuple[str, str, str]]) -> None:
    for name in settings:
        psql(session, f"ALTER SYSTEM RESET {name}")
    restart(session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print_load("at the start")
    loaded = load_plan(args.plan)
    targets = Targets(loaded, state_dir_for(loaded.path))
    verify = loaded.plan.verify
    print(
        f"pgbench: scale {verify.pgbench_scale}, {verify.pgbench_clients} clients, "
        f"{verify.pgbench_seconds} s per run, {args.rounds} round(s)"
    )
    with targets.ssh(targets.vm_with_role("postgresql")) as session:
        settings = tuned_settings(session)
        if not settings:
            raise SystemExit("no tuning setting from the role's conf.d files: is the database VM converged?")
        print("tuned settings (deployed -> PostgreSQL default):")
        for name, (boot, deployed, unit) in settings.items():
            print(f"  {name}: {deployed} -> {boot} {unit}".rstrip())
        tps: dict[str, list[float]] = {"tuned": [], "default": []}
        try:
            for round_number in range(1, args.rounds + 1):
                for label in ("tuned", "default"):
                    if label == "default":
                        use_defaults(session, settings)
                    result = measure_pgbench(targets)
                    tps[label].append(result.tps)
                    print(f"round {round_number} {label}: {result.tps:.1f} tps, {result.latency_ms:.2f} ms")
                    if label == "default":
                        use_tuned(session, settings)
        finally:
            use_tuned(session, settings)
            targets.close()
    print_load("at the end")
    tuned, default = statistics.median(tps["tuned"]), statistics.median(tps["default"])
    print(
        f"median tuned {tuned:.1f} tps (spread {min(tps['tuned']):.1f}-{max(tps['tuned']):.1f}), "
        f"default {default:.1f} tps (spread {min(tps['default']):.1f}-{max(tps['default']):.1f}): "
        f"tuned / default = {tuned / default:.2f}"
    )


if __name__ == "__main__":
    main()
