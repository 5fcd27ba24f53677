"""The whole lab: container infrastructure, the emulator with its VM backend, and the lab plan.

`lab up --api-only` is the emulator alone (VMs exist only as state); `lab up` adds the
bridge, proxy, template image and node container, and boots real VMs.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ailab_deploy.adapters.bandwidth_probe import measure_locally
from ailab_deploy.adapters.known_hosts import KnownHosts, forget_vm
from ailab_deploy.adapters.ledger import LEDGER_FILENAME, Ledger
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.core.loader import load_plan
from ailab_deploy.core.privileges import plan_features, privileges
from ailab_deploy.errors import LabError
from ailab_deploy.lab import control
from ailab_deploy.lab.containers.node import lab_key
from ailab_deploy.lab.deploy_token import ensure_deploy_token
from ailab_deploy.lab.emulator.settings import FIRST_NODE_HOST
from ailab_deploy.lab.labplan import LabPlanInputs, host_facts, local_ca_files, render_lab_plan

REPO_ROOT = Path(__file__).resolve().parents[2]
BANDWIDTH_FILE = "bandwidth.json"


def _measured_bandwidth(lab_dir: Path) -> float:
    """Measured once per lab dir, so the lab plan (and its hash) stays stable across `lab up`s."""
    path = lab_dir / BANDWIDTH_FILE
    if path.exists():
        return float(json.loads(path.read_text())["bandwidth_gbs"])
    gbs = measure_locally()
    path.write_text(json.dumps({"bandwidth_gbs": gbs}) + "\n")
    return gbs


def write_lab_plan(lab_dir: Path, info: dict[str, Any], key: Path, *, node_address: str | None) -> bool:
    """Write vms.lab.yaml when its content changes; True if it was (re)written."""
    cores, memory_gib = host_facts()
    text = render_lab_plan(
        LabPlanInputs(
            api_port=int(info["port"]),
            node=str(info["node"]),
            token_id=str(info["deploy_token_id"]),
            token_secret_file=Path(info["deploy_token_secret_path"]),
            fingerprint=str(info["fingerprint"]),
            ssh_public_key_file=key.with_name(key.name + ".pub"),
            ssh_private_key_file=key,
            repo_root=REPO_ROOT,
            host_cores=cores,
            host_memory_gib=memory_gib,
            measured_bandwidth_gbs=_measured_bandwidth(lab_dir),
            ca_files=local_ca_files(),
            node_ssh_address=node_address,
            cluster=tuple(_cluster_addresses(lab_dir, None) or ()),
            debian_release=int(info["debian_release"]),
        )
    )
    plan = Path(info["lab_plan"])
    if plan.exists() and plan.read_text() == text:
        return False
    plan.write_text(text)
    return True


def ensure_lab_deploy_token(lab_dir: Path, info: dict[str, Any]) -> list[str]:
    """The role, user and privilege-separated token the lab plan deploys with, holding exactly
    the privileges of the plan's features; made with root@pam's housekeeping token."""
    release = ".".join(str(info["pve_version"]).split(".")[:2])
    features = plan_features(load_plan(Path(info["lab_plan"])).plan)
    root = ProxmoxClient(
        host=str(info["host"]),
        port=int(info["port"]),
        node=str(info["node"]),
        token_id=control.TOKEN_ID,
        secret=Path(info["token_secret_path"]).read_text().strip(),
        fingerprint=str(info["fingerprint"]),
    )
    ensure_deploy_token(root, release, features, Path(info["deploy_token_secret_path"]))
    return privileges(release, features)


def up(
    lab_dir: Path,
    *,
    api_only: bool,
    port: int | None = None,
    pve_version: str | None = None,
    nodes: int | None = None,
    debian_release: int | None = None,
) -> dict[str, Any]:
    backend = "null" if api_only else "containers"
    if pve_version is not None:
        control.pve_full_version(pve_version)  # refuse a bad version before building anything
    if nodes is not None:
        control.cluster_nodes(nodes)  # and a bad node count
    release = control.check_debian_release(lab_dir, debian_release)
    current = control.status(lab_dir)
    if current["running"] and current["backend"] != backend:
        control.down(lab_dir)  # the backend is chosen at start
    infra: dict[str, Any] = {}
    node = None
    if not api_only:
        from ailab_deploy.lab.containers import lab_up

        built = lab_up(lab_dir, cluster=_cluster_addresses(lab_dir, nodes), debian_release=release)
        infra = {
            "bridge": built.bridge,
            "gateway": built.gateway,
            "proxy": built.proxy_url,
            "template_rootfs": str(built.template.rootfs),
            "template_build_seconds": round(built.template.seconds, 1),
            "template_cached": built.template.cached,
            "node": built.node.address if built.node else None,
            "nodes": {n.address: str(n.storage_dir) for n in built.cluster},
        }
        node = built.node
    info = control.up(
        lab_dir, port=port, backend=backend, pve_version=pve_version, nodes=nodes, debian_release=release
    )
    if not api_only:  # the node has booted: its onboot VMs start, as pve-guests.service does
        info["startall"] = control.guests_power(lab_dir, "startall")
    key = lab_key(lab_dir)  # the admin key of every lab VM, and the node's root key
    info["lab_plan_written"] = write_lab_plan(lab_dir, info, key, node_address=node.address if node else None)
    info["deploy_privileges"] = ensure_lab_deploy_token(lab_dir, info)
    if node is not None:  # read from the nodes' disks, not over the network: nothing to trust blindly
        lines = [line.split() for line in node.known_hosts.read_text().splitlines() if line.strip()]
        pinned = KnownHosts(state_dir_for(Path(info["lab_plan"])))
        for address in dict.fromkeys(fields[0] for fields in lines):
            pinned.pin_node(address, [(f[1], f[2]) for f in lines if f[0] == address])
    info["infra"] = infra
    return info


def down(lab_dir: Path, *, purge: bool = False) -> bool:
    """Stop the lab as a node shuts down: guests shut down cleanly, their disks and configs stay,
    and the next ``lab up`` starts the onboot ones again. ``purge`` throws every VM away first
    (and what the controller recorded about them), leaving only the template."""
    running = control.status(lab_dir)["running"]
    if purge:
        if running:
            reset(lab_dir)
        else:
            _forget_on_controller(lab_dir, _remove_stopped_vms(lab_dir))
    elif running and control.status(lab_dir)["backend"] != "null":
        # A hung guest must not keep the lab up: lab_down stops whatever is left.
        with contextlib.suppress(LabError):
            control.guests_power(lab_dir, "stopall")
    stopped = control.down(lab_dir)
    from ailab_deploy.lab.containers import lab_down, network

    owner = network.owner()
    if owner is None or owner == lab_dir.resolve():
        lab_down(lab_dir, purge=purge)
    return stopped


def _cluster_addresses(lab_dir: Path, nodes: int | None) -> list[tuple[str, str]] | None:
    """(name, address) of each node of a cluster lab, numbered as the emulator numbers them."""
    names = control.cluster_nodes(nodes) if nodes is not None else control.status(lab_dir)["nodes"]
    if len(names) < 2:
        return None
    return [(name, f"10.77.0.{FIRST_NODE_HOST + index}") for index, name in enumerate(names)]


def node_fail(lab_dir: Path, node: str) -> dict[str, Any]:
    """The node loses power: the emulator stops answering for it and stops its VMs, and in a
    container lab the node's own container goes down too (its SSH stops answering)."""
    result = control.node_power(lab_dir, node, "fail")
    if control.status(lab_dir)["backend"] == "containers":
        from ailab_deploy.lab.containers.node import node_machine

        node_machine(lab_dir, node).stop()
    return result


def node_recover(lab_dir: Path, node: str) -> None:
    """The node boots again (its container, in a container lab), rejoins the cluster and starts its
    onboot VMs, as pve-guests.service does at boot; HA decides about its HA VMs."""
    control.check_node_name(lab_dir, node, "recover")
    if control.status(lab_dir)["backend"] == "containers":
        from ailab_deploy.lab.containers.image import build_template
        from ailab_deploy.lab.containers.infra import cluster_node_up

        address = dict(_cluster_addresses(lab_dir, None) or [])[node]
        cluster_node_up(lab_dir, build_template(None).rootfs, node, address)
    control.node_power(lab_dir, node, "recover")
    control.guests_power(lab_dir, "startall", only=node)  # the node's boot starts its onboot VMs


def reset(lab_dir: Path) -> list[int]:
    """Destroy every VM but the template, and forget them on the controller (host keys, ledger),
    so the next ``up`` on the lab plan starts clean."""
    removed = control.reset(lab_dir)
    _forget_on_controller(lab_dir, removed)
    return removed


def _remove_stopped_vms(lab_dir: Path) -> list[int]:
    """``purge`` of a lab whose emulator is down: its stored VMs go, the template stays."""
    from ailab_deploy.lab.emulator.settings import load_settings
    from ailab_deploy.lab.emulator.state import Store

    if not (lab_dir / "settings.json").exists():
        return []
    settings = load_settings(lab_dir)
    store = Store(settings.state_dir, settings.nodes)
    keep = int((settings.template or {}).get("vmid", 9000))
    removed = [vmid for vmid in sorted(store.vms) if vmid != keep]
    for vmid in removed:
        store.delete_vm(vmid)
    return removed


def _forget_on_controller(lab_dir: Path, vmids: list[int]) -> None:
    state_dir = state_dir_for(control.LabPaths(lab_dir).plan)
    if not vmids or not (state_dir / LEDGER_FILENAME).exists():
        return
    known_hosts = KnownHosts(state_dir)
    with Ledger(state_dir) as ledger:
        for vmid in vmids:
            forget_vm(ledger, known_hosts, vmid)
