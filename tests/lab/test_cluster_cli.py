"""`lab up --api-only --nodes 3`, `lab status`, `lab node fail/recover`: a cluster lab from the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ailab_deploy.core.loader import load_plan

from .conftest import free_port
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
