"""`ailab-deploy discover` and `ailab-deploy init`: a plan from the node itself, or the starter plan."""

from __future__ import annotations

import difflib
from pathlib import Path

import typer

from ailab_deploy.adapters.nodeprep import NodeTarget
from ailab_deploy.adapters.proxmox import ProxmoxClient, secret_from_env_or_file
from ailab_deploy.adapters.statedir import known_hosts_path, state_dir_for
from ailab_deploy.cli.output import err, out
from ailab_deploy.core.discovered_plan import Connection, new_plan, updated_plan
from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.errors import InputError, PlanError
from ailab_deploy.pipeline.discover import DiscoverOptions, discover

# The seed layout (PostgreSQL, LLM, apps) is the repository's own commented vms.yaml.
SEED_PLAN = Path(__file__).resolve().parents[2] / "vms.yaml"
DEFAULT_TOKEN_ID = "ailab@pve!deploy"
DEFAULT_SECRET_ENV = "AILAB_PVE_TOKEN_SECRET"


def _seed_text() -> str:
    try:
        return SEED_PLAN.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"the starter plan {SEED_PLAN} cannot be read: {error.strerror}") from None


def init(
    plan: Path = typer.Option(Path("vms.yaml"), "--plan", "-p", help="Where to write the starter plan."),
) -> None:
    """Write a commented starter vms.yaml (PostgreSQL, LLM, apps) to fill in; never overwrites."""
    if plan.exists():
        raise InputError(f"{plan}: already exists; init never overwrites (use another --plan path)")
    plan.write_text(_seed_text(), encoding="utf-8")
    out.print(
        f"wrote {plan}: fill in the proxmox and host blocks (or run `ailab-deploy discover`), "
        f"then `ailab-deploy validate --plan {plan}`",
        markup=False,
    )


def discover_command(
    node: str = typer.Option(..., "--node", help="Address of the node's API (and SSH, unless --ssh-host)."),
    port: int = typer.Option(8006, "--port", min=1, max=65535, help="API port."),
    node_name: str | None = typer.Option(None, "--node-name", help="The node in a cluster to describe."),
    token_id: str = typer.Option(DEFAULT_TOKEN_ID, "--token-id", help="API token id (user@realm!name)."),
    token_secret_env: str = typer.Option(
        DEFAULT_SECRET_ENV, "--token-secret-env", help="Environment variable holding the token secret."
    ),
    token_secret_file: Path | None = typer.Option(
        None, "--token-secret-file", help="Or a 0600 file holding it (never the secret itself)."
    ),
    fingerprint: str | None = typer.Option(
        None, "--fingerprint", help="SHA-256 fingerprint of the API certificate (`pvenode cert info`)."
    ),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="CA bundle of the API certificate."),
    ssh_host: str | None = typer.Option(
        None, "--ssh-host", help="SSH address of the node (default: --node)."
    ),
    ssh_user: str = typer.Option("root", "--ssh-user", help="SSH user on the node."),
    ssh_port: int = typer.Option(22, "--ssh-port", min=1, max=65535, help="SSH port."),
    ssh_key: Path | None = typer.Option(None, "--ssh-key", help="SSH private key (default: agent, ~/.ssh)."),
    no_ssh: bool = typer.Option(False, "--no-ssh", help="The API only: no DIMMs, NUMA or bandwidth."),
    bandwidth: bool = typer.Option(
        False, "--measure-bandwidth", help="Run a short copy probe per NUMA node (measured_bandwidth_gbs)."
    ),
    bandwidth_workers: int | None = typer.Option(
        None, "--bandwidth-workers", min=1, max=1024, help="Probe processes per node (default: its cores)."
    ),
    bandwidth_buffer_mb: int = typer.Option(
        256, "--bandwidth-buffer-mb", min=16, max=65536, help="Buffer per probe process, MiB."
    ),
    plan: Path = typer.Option(
        Path("vms.yaml"),
        "--plan",
        "-p",
        help="A new plan to write, or an existing one to compare with (a diff; nothing is written).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
) -> None:
    """Read the node (API, and over SSH dmidecode, NUMA, bandwidth) into a plan's proxmox and host blocks."""

    def progress(message: str) -> None:
        if not quiet:
            err.print(message, markup=False)

    if fingerprint is None and ca_file is None:
        progress("discover: no --fingerprint or --ca-file: the API certificate must chain to a system CA")
    if ca_file is not None and not ca_file.is_file():
        raise InputError(f"--ca-file: {ca_file} does not exist")
    if ssh_key is not None and not ssh_key.is_file():
        raise InputError(f"--ssh-key: {ssh_key} does not exist")
    secret = secret_from_env_or_file(
        token_secret_env,
        token_secret_file,
        where_env="--token-secret-env",
        where_file="--token-secret-file",
        file_hint="give --token-secret-file, a 0600 file",
    )
    try:
        client = ProxmoxClient(
            host=node,
            port=port,
            node=node_name or "",
            token_id=token_id,
            secret=secret,
            fingerprint=fingerprint,
            ca_file=ca_file,
        )
    except ValueError as error:  # a malformed fingerprint
        raise InputError(f"--fingerprint: {error}") from None
    target = None
    if not no_ssh:
        target = NodeTarget(
            host=ssh_host or node,
            known_hosts=known_hosts_path(state_dir_for(plan)),
            user=ssh_user,
            port=ssh_port,
            private_key=ssh_key.resolve() if ssh_key else None,
        )
    options = DiscoverOptions(
        node_name=node_name,
        ssh=target,
        bandwidth=bandwidth,
        bandwidth_workers=bandwidth_workers,
        bandwidth_buffer_bytes=bandwidth_buffer_mb << 20,
    )
    found = discover(client, options, progress)
    if plan.exists():
        existing = plan.read_text(encoding="utf-8")
        text, notes = updated_plan(existing, found)
        diff = list(
            difflib.unified_diff(
                existing.splitlines(True), text.splitlines(True), str(plan), f"{plan} (node)"
            )
        )
        if diff:
            out.print("".join(diff), markup=False, end="")
        else:
            out.print(f"{plan}: the node's facts match the plan", markup=False)
    else:
        connection = Connection(
            host=node,
            port=port,
            token_id=token_id,
            token_secret_env=token_secret_env,
            token_secret_file=str(token_secret_file.resolve()) if token_secret_file else None,
            fingerprint=fingerprint,
            ca_file=str(ca_file.resolve()) if ca_file else None,
            ssh_host=ssh_host if ssh_host and ssh_host != node else None,
            ssh_user=ssh_user,
            ssh_private_key_file=str(ssh_key.resolve()) if ssh_key else None,
        )
        text, notes = new_plan(_seed_text(), found, connection)
        plan.write_text(text, encoding="utf-8")
        out.print(f"wrote {plan}", markup=False)
    for note in notes:
        err.print(f"note: {note}", markup=False)
    try:
        load_plan_text(text, str(plan), plan.resolve())
    except PlanError as error:
        err.print(f"note: the plan does not validate yet (fit the vms to the node):\n{error}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("discover")(discover_command)
