"""The whole lab: container infrastructure, the emulator with its VM backend, and the lab plan.

`lab up --api-only` is the emulator alone (VMs exist only as state); `lab up` adds the
bridge, proxy, template image and node container, and boots real VMs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ailab_deploy.adapters.bandwidth_probe import measure_locally
from ailab_deploy.adapters.known_hosts import KnownHosts
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.lab import control
from ailab_deploy.lab.containers.node import lab_key
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
            token_id=str(info["token_id"]),
            token_secret_file=Path(info["token_secret_path"]),
            fingerprint=str(info["fingerprint"]),
            ssh_public_key_file=key.with_name(key.name + ".pub"),
            ssh_private_key_file=key,
            repo_root=REPO_ROOT,
            host_cores=cores,
            host_memory_gib=memory_gib,
            measured_bandwidth_gbs=_measured_bandwidth(lab_dir),
            ca_files=local_ca_files(),
            node_ssh_address=node_address,
        )
    )
    plan = Path(info["lab_plan"])
    if plan.exists() and plan.read_text() == text:
        return False
    plan.write_text(text)
    return True


def up(lab_dir: Path, *, api_only: bool, port: int | None = None) -> dict[str, Any]:
    backend = "null" if api_only else "containers"
    current = control.status(lab_dir)
    if current["running"] and current["backend"] != backend:
        control.down(lab_dir)  # the backend is chosen at start
    infra: dict[str, Any] = {}
    node = None
    if not api_only:
        from ailab_deploy.lab.containers import lab_up

        built = lab_up(lab_dir)
        infra = {
            "bridge": built.bridge,
            "gateway": built.gateway,
            "proxy": built.proxy_url,
            "template_rootfs": str(built.template.rootfs),
            "template_build_seconds": round(built.template.seconds, 1),
            "template_cached": built.template.cached,
            "node": built.node.address if built.node else None,
        }
        node = built.node
    info = control.up(lab_dir, port=port, backend=backend)
    key = lab_key(lab_dir)  # the admin key of every lab VM, and the node's root key
    info["lab_plan_written"] = write_lab_plan(lab_dir, info, key, node_address=node.address if node else None)
    if node is not None:  # read from the node's disk, not over the network: nothing to trust blindly
        lines = [line.split() for line in node.known_hosts.read_text().splitlines() if line.strip()]
        keys = [(fields[1], fields[2]) for fields in lines]
        KnownHosts(state_dir_for(Path(info["lab_plan"]))).pin_node(node.address, keys)
    info["infra"] = infra
    return info


def down(lab_dir: Path) -> bool:
    """Stop the emulator; tear down the container side if this lab dir brought it up."""
    stopped = control.down(lab_dir)
    from ailab_deploy.lab.containers import lab_down, network

    owner = network.owner()
    if owner is None or owner == lab_dir.resolve():
        lab_down(lab_dir)
    return stopped
