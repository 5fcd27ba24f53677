"""`ailab-deploy lab ...`: the local rehearsal lab (thin: prints what control.py returns)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ailab_deploy.errors import AilabError
from ailab_deploy.lab import assemble, control, scratch_vms
from ailab_deploy.lab.emulator.settings import DEFAULT_PVE_RELEASE

lab_app = typer.Typer(help="The local lab: a Proxmox VE API emulator whose VMs are booting containers.")
vm_app = typer.Typer(help="Scratch VMs on the running lab, one per name (Molecule's create/destroy).")
lab_app.add_typer(vm_app, name="vm")
node_app = typer.Typer(help="A cluster lab's nodes: power one off (fail) or bring it back (recover).")
lab_app.add_typer(node_app, name="node")

LabDir = typer.Option(None, "--lab-dir", help="lab directory (default: $AILAB_LAB_DIR or .ailab/lab)")


def _fail(error: AilabError) -> typer.Exit:
    typer.echo(str(error), err=True)
    return typer.Exit(error.exit_code)


def _print_status(info: dict[str, object], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    state = "running" if info["running"] else "stopped"
    typer.echo(f"lab emulator: {state}")
    for key in (
        "endpoint",
        "pve_version",
        "debian_release",
        "node",
        "nodes",
        "token_id",
        "token_secret_path",
        "deploy_token_id",
        "deploy_token_secret_path",
        "fingerprint",
        "ca_path",
        "lab_plan",
    ):
        typer.echo(f"  {key}: {_nodes_text(info) if key == 'nodes' else info[key]}")


def _nodes_text(info: dict[str, object]) -> str:
    """``pve1 (online), pve2 (offline)`` when the running lab told, else the names."""
    names = info["nodes"]
    states = info.get("node_states")
    assert isinstance(names, list)
    if not isinstance(states, dict):
        return ", ".join(str(n) for n in names)
    return ", ".join(f"{n} ({states.get(n, 'unknown')})" for n in names)


@lab_app.command()
def up(
    api_only: bool = typer.Option(False, "--api-only", help="only the API emulator (null backend)"),
    port: int | None = typer.Option(None, "--port", help="HTTPS port (default 8006)"),
    pve_version: str = typer.Option(
        DEFAULT_PVE_RELEASE, "--pve-version", help="the Proxmox VE release to emulate: 9.1 or 8.4"
    ),
    nodes: int | None = typer.Option(
        None, "--nodes", help="a cluster of N nodes pve1..pveN (default: as before, one node 'pve')"
    ),
    debian_release: int | None = typer.Option(
        None,
        "--debian-release",
        help="Debian release of the template and VMs, 13 or 12 (a new lab: 13; else the lab's own)",
    ),
    lab_dir: Path | None = LabDir,
    as_json: bool = typer.Option(False, "--json", help="print the status as JSON"),
) -> None:
    """Start the lab (idempotent): bridge, proxy, template image, node(s), emulator, lab plan."""
    try:
        info = assemble.up(
            control.resolve_lab_dir(lab_dir),
            api_only=api_only,
            port=port,
            pve_version=pve_version,
            nodes=nodes,
            debian_release=debian_release,
        )
    except AilabError as err:
        raise _fail(err) from err
    _print_status(info, as_json)


@lab_app.command()
def status(
    lab_dir: Path | None = LabDir,
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Show the lab's endpoint, token, certificate fingerprint and plan path."""
    try:
        resolved = control.resolve_lab_dir(lab_dir)
        info = control.status(resolved)
        if info["running"] and len(info["nodes"]) > 1:
            info["node_states"] = control.cluster_state(resolved)
    except (AilabError, ValueError) as err:
        raise _fail(AilabError(str(err))) from err
    _print_status(info, as_json)


@lab_app.command()
def down(
    purge: bool = typer.Option(
        False, "--purge", help="also throw every VM away (as `lab reset`), and their disks"
    ),
    lab_dir: Path | None = LabDir,
) -> None:
    """Stop the lab as a node powers off (idempotent): guests shut down, every container process,
    namespace, mount and the bridge go; VMs, their disks and configs stay for the next `lab up`."""
    try:
        stopped = assemble.down(control.resolve_lab_dir(lab_dir), purge=purge)
    except AilabError as err:
        raise _fail(err) from err
    kept = "VMs and their disks were removed" if purge else "VMs and their disks are kept"
    stopped_text = "lab stopped" if stopped else "lab emulator was not running; lab infrastructure removed"
    typer.echo(f"{stopped_text}; {kept}")


@lab_app.command()
def reset(lab_dir: Path | None = LabDir) -> None:
    """Destroy every lab VM except the template, and forget them on the controller (host keys, ledger)."""
    try:
        removed = assemble.reset(control.resolve_lab_dir(lab_dir))
    except AilabError as err:
        raise _fail(err) from err
    typer.echo(f"removed {len(removed)} VM(s); the template is kept")


VmName = typer.Option(..., "--name", help="the scratch VM's name (its hostname)")


def _progress(message: str) -> None:
    typer.echo(message, err=True)


@vm_app.command("create")
def vm_create(
    name: str = VmName,
    lab_dir: Path | None = LabDir,
    as_json: bool = typer.Option(False, "--json", help="print how to reach it as one JSON object"),
) -> None:
    """Create a booted VM of the lab's Debian release (idempotent: an existing one is reused)."""
    try:
        vm = scratch_vms.create(control.resolve_lab_dir(lab_dir), name, progress=_progress)
    except AilabError as err:
        raise _fail(err) from err
    if as_json:
        typer.echo(json.dumps(vm.as_dict()))
        return
    typer.echo(f"{vm.name}: ssh -i {vm.identity_file} -p {vm.port} {vm.user}@{vm.address}")


@vm_app.command("destroy")
def vm_destroy(name: str = VmName, lab_dir: Path | None = LabDir) -> None:
    """Stop and delete a scratch VM made by `lab vm create`, and forget it."""
    try:
        done = scratch_vms.destroy(control.resolve_lab_dir(lab_dir), name, progress=_progress)
    except AilabError as err:
        raise _fail(err) from err
    typer.echo(done)


NodeName = typer.Argument(..., help="the node's name, e.g. pve2")


@node_app.command("fail")
def node_fail(name: str = NodeName, lab_dir: Path | None = LabDir) -> None:
    """The node loses power: it stops answering, its VMs stop; HA recovers its HA VMs elsewhere
    after the fence delay."""
    try:
        result = assemble.node_fail(control.resolve_lab_dir(lab_dir), name)
    except AilabError as err:
        raise _fail(err) from err
    stopped = ", ".join(str(v) for v in result.get("stopped", [])) or "none"
    typer.echo(f"node {name} failed; VMs stopped with it: {stopped}")


@node_app.command("recover")
def node_recover(name: str = NodeName, lab_dir: Path | None = LabDir) -> None:
    """The node boots and rejoins the cluster; HA VMs with failback return to it."""
    try:
        assemble.node_recover(control.resolve_lab_dir(lab_dir), name)
    except AilabError as err:
        raise _fail(err) from err
    typer.echo(f"node {name} recovered")


if __name__ == "__main__":
    lab_app()
