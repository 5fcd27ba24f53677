"""The `ailab-deploy` command. It parses arguments and prints; the work happens elsewhere."""

from __future__ import annotations

import sys

import typer

from ailab_deploy.cli import (
    backups,
    configure,
    demo,
    discover,
    plan_file,
    privileges,
    provision,
    report,
    runs,
    up,
    verify,
)
from ailab_deploy.cli.lab import lab_app
from ailab_deploy.cli.output import err
from ailab_deploy.errors import AilabError

app = typer.Typer(
    name="ailab-deploy",
    help="From a bare Proxmox VE server to a verified AI lab, from one plan (vms.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; each adds its commands with ``register(app)``.
plan_file.register(app)  # validate, sizing, schema
provision.register(app)  # plan, apply, destroy, rollback
runs.register(app)  # runs, runs show
configure.register(app)  # configure
verify.register(app)  # verify
report.register(app)  # report
up.register(app)  # up
privileges.register(app)  # privileges
backups.register(app)  # backups, restore
demo.register(app)  # demo: the lab, deployed and verified
discover.register(app)  # discover, init: a plan from the node, a starter plan
app.add_typer(lab_app, name="lab", help="The local rehearsal lab (Proxmox emulator and VMs).")


def main() -> None:
    """Entry point: one line per error, exit 2 for bad input, 1 for failures."""
    try:
        code = app(standalone_mode=False)
    except AilabError as error:
        for line in str(error).splitlines() or [type(error).__name__]:
            err.print(f"error: {line}", markup=False)
        sys.exit(error.exit_code)
    except typer.Abort:
        err.print("aborted", markup=False)
        sys.exit(1)
    except typer.TyperException as error:  # usage errors and bad parameters
        context = getattr(error, "ctx", None)
        command = context.command_path if context is not None else "ailab-deploy"
        if error.format_message():  # empty when usage help was already shown
            err.print(f"error: {command}: {error.format_message()}", markup=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
