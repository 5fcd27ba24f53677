"""`discover --no-ssh` against the emulator: a plan that validates, with the lab settings' numbers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ailab_deploy.core.loader import load_plan
from ailab_deploy.core.units import MIB
from ailab_deploy.lab.emulator.settings import load_settings

from .conftest import Lab, ailab_cli

pytestmark = pytest.mark.lab

HARDWARE = {
    "cpu_model": "AMD EPYC 7302 16-Core Processor",
    "sockets": 2,
    "cores_per_socket": 16,
    "threads_per_core": 2,
    "memory": "250G",
}
STORAGES = [
    {"storage": "local", "type": "dir", "content": "iso,vztmpl,backup,snippets", "total": "94GB"},
    {"storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir", "total": "900GB"},
    {"storage": "tank", "type": "zfspool", "content": "images,rootdir", "total": "3.84TB"},
]


def discover(lab: Lab, plan: Path, secret_file: Path, *extra: str) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AILAB_PVE_TOKEN_SECRET"}
    result = ailab_cli(
        "discover", "--node", lab.host, "--port", str(lab.port), "--token-id", lab.token_id,
        "--token-secret-file", str(secret_file), "--fingerprint", lab.fingerprint, "--no-ssh",
        "--plan", str(plan), *extra,
        env=env,
    )  # fmt: skip
    return result.stdout, result.stderr


def test_discover_writes_the_nodes_numbers(make_emulator: Callable[..., Lab], tmp_path: Path) -> None:
    lab = make_emulator(hardware=HARDWARE, storages=STORAGES, node="pve7")
    secret_file = tmp_path / "secret"
    secret_file.write_text(lab.token_secret + "\n")
    secret_file.chmod(0o600)
    plan_path = tmp_path / "vms.yaml"
    out, err = discover(lab, plan_path, secret_file)
    assert f"wrote {plan_path}" in out
    assert lab.token_secret not in out + err + plan_path.read_text()
    plan = load_plan(plan_path).plan  # validates, or raises with every problem
    settings = load_settings(lab.lab_dir)
    hardware = settings.hardware
    assert plan.proxmox.node == settings.node == "pve7"
    assert plan.proxmox.port == lab.port and plan.proxmox.fingerprint == lab.fingerprint
    assert plan.host.cpu_model == hardware["cpu_model"]
    assert plan.host.sockets == int(hardware["sockets"])
    assert plan.host.cores_per_socket == int(hardware["cores_per_socket"])
    assert plan.host.threads_per_core == int(hardware["threads_per_core"])
    assert plan.host.memory == settings.host_memory // MIB
    disks = {s.storage: s.total for s in settings.storages if "images" in s.content.split(",")}
    assert {s.name: s.capacity for s in plan.host.storage} == disks
    assert {vm.storage for vm in plan.vms} == {"tank"}  # the largest
    assert plan.proxmox.snippets_storage == "local"

    # the same node again: nothing to change, nothing written
    before = plan_path.read_text()
    out, _ = discover(lab, plan_path, secret_file)
    assert out.strip() == f"{plan_path}: the node's facts match the plan"
    assert plan_path.read_text() == before
