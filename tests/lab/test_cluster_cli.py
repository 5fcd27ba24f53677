"""`lab up --api-only --nodes 3`, `lab status`, `lab node fail/recover`: a cluster lab from the CLI."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.core.loader import load_plan

from .conftest import ailab_cli, free_port, housekeeping_client
from .test_emulator_cli import lab

pytestmark = pytest.mark.lab


def test_a_cluster_lab_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "AILAB_LAB_DIR": str(tmp_path / "lab")}
    try:
        up = lab(
            "up", "--api-only", "--nodes", "3", "--port", str(free_port()), "--json", cwd=tmp_path, env=env
        )
        assert up.returncode == 0, up.stderr
        # the lab plan is a cluster plan, and its token may migrate VMs and manage HA
        assert {"VM.Migrate", "Sys.Console", "Sys.Audit"} <= set(json.loads(up.stdout)["deploy_privileges"])
        info = json.loads(lab("status", "--json", cwd=tmp_path, env=env).stdout)
        assert (info["node"], info["nodes"]) == ("pve1", ["pve1", "pve2", "pve3"])
        plan = load_plan(Path(info["lab_plan"])).plan
        assert [node.name for node in plan.nodes] == ["pve1", "pve2", "pve3"]
        assert plan.proxmox.prepare_node is False  # an API-only lab has no node containers
        failed = lab("node", "fail", "pve2", cwd=tmp_path, env=env)
        assert (failed.returncode, failed.stdout.strip()) == (
            0,
            "node pve2 failed; VMs stopped with it: none",
        )
        shown = lab("status", cwd=tmp_path, env=env).stdout
        assert "  nodes: pve1 (online), pve2 (offline), pve3 (online)" in shown.splitlines()
        unknown = lab("node", "fail", "pve7", cwd=tmp_path, env=env)
        assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
        assert unknown.stderr.strip() == "lab node fail: 'pve7' is not a node of this lab (pve1, pve2, pve3)"
        assert lab("node", "recover", "pve2", cwd=tmp_path, env=env).returncode == 0
        shown = lab("status", cwd=tmp_path, env=env).stdout
        assert "  nodes: pve1 (online), pve2 (online), pve3 (online)" in shown.splitlines()
        bad = lab("up", "--api-only", "--nodes", "0", cwd=tmp_path, env=env)
        assert (bad.returncode, bad.stderr.strip()) == (2, "--nodes: 0 is not between 1 and 7")
    finally:
        lab("down", cwd=tmp_path, env=env)


def _planned(plan: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    shown = json.loads(ailab_cli("plan", "--plan", plan, "--json", env=env).stdout)
    return {vm["name"]: vm for vm in shown["vms"]}


def _kinds(shown: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {name: [a["action"] for a in vm["actions"]] for name, vm in shown.items()}


def test_the_cluster_lab_plan_from_apply_through_a_failover_and_a_migration_to_destroy(
    tmp_path: Path,
) -> None:
    """The lab plan of `lab up --api-only --nodes 3` with the CLI: placed apart, the database's
    node fails and HA moves it (plan: nothing to do), a changed node: migrates, destroy leaves no
    VM and no HA resource."""
    env = {**os.environ, "AILAB_LAB_DIR": str(tmp_path / "lab")}
    env.pop("AILAB_LAB_TOKEN_SECRET", None)
    try:
        up = lab(
            "up", "--api-only", "--nodes", "3", "--port", str(free_port()), "--json", cwd=tmp_path, env=env
        )
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        plan = str(info["lab_plan"])
        root = housekeeping_client(info)  # to watch the cluster
        ailab_cli("apply", "--plan", plan, "--no-wait-ssh", env=env)
        shown = _planned(plan, env)
        assert _kinds(shown) == {"postgres": ["no-op"], "ollama": ["no-op"], "devapps": ["no-op"]}
        database = shown["postgres"]["node"]
        assert database != shown["ollama"]["node"]
        assert database != shown["devapps"]["node"]  # the failure below takes only the database down

        failed = lab("node", "fail", database, cwd=tmp_path, env=env)
        assert failed.returncode == 0, failed.stderr
        # while the node is being fenced (10 s in the lab) plan says why it cannot plan that VM
        fenced = ailab_cli("plan", "--plan", plan, "--json", check=False, env=env)
        assert root.cluster_vms()[100].node == database, "recovered before plan ran: no fence window seen"
        assert fenced.returncode == 1, fenced.stderr
        shown = {vm["name"]: vm["actions"] for vm in json.loads(fenced.stdout)["vms"]}
        (error,) = shown["postgres"]
        assert error["action"] == "error"
        assert error["reason"].startswith(f"its node {database} does not answer")
        assert [a["action"] for a in shown["ollama"] + shown["devapps"]] == ["no-op", "no-op"]
        assert "retrying" not in fenced.stderr  # nothing is read from the node that does not answer
        deadline = time.monotonic() + 60
        # until the HA manager fenced the node and restarted the database elsewhere
        while (vm := root.cluster_vms()[100]).node == database or vm.status != "running":
            assert time.monotonic() < deadline, "HA did not recover the database"
            time.sleep(0.5)
        moved = _planned(plan, env)
        assert moved["postgres"]["node"] == vm.node
        assert _kinds(moved) == {"postgres": ["no-op"], "ollama": ["no-op"], "devapps": ["no-op"]}
        assert lab("node", "recover", database, cwd=tmp_path, env=env).returncode == 0
        assert _kinds(_planned(plan, env)) == {
            "postgres": ["no-op"],
            "ollama": ["no-op"],
            "devapps": ["no-op"],
        }

        source = moved["devapps"]["node"]
        target = next(n for n in ("pve1", "pve2", "pve3") if n not in (source, moved["ollama"]["node"]))
        text = Path(plan).read_text()
        pinned, count = re.subn(r"(\n    name: devapps  #[^\n]*\n)", rf"\1    node: {target}\n", text)
        assert count == 1
        Path(plan).write_text(pinned)
        (migrate,) = _planned(plan, env)["devapps"]["actions"]
        assert (migrate["action"], migrate["source"], migrate["target"]) == ("migrate", source, target)
        ailab_cli("apply", "--plan", plan, "--no-wait-ssh", env=env)
        after = _planned(plan, env)
        assert after["devapps"]["node"] == target
        assert _kinds(after) == {"postgres": ["no-op"], "ollama": ["no-op"], "devapps": ["no-op"]}

        ailab_cli("destroy", "--plan", plan, "--yes", env=env)
        assert _kinds(_planned(plan, env)) == {
            "postgres": ["create"],
            "ollama": ["create"],
            "devapps": ["create"],
        }
        assert list(root.cluster_vms()) == [9000]
        assert root.get("cluster/ha/resources") == []
    finally:
        lab("down", cwd=tmp_path, env=env)
