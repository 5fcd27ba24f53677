"""The lab through its real commands: `lab up`, then plan/apply/re-apply/destroy on the lab plan
against booting container VMs, SSH as the cloud-init user, and `lab down` leaving nothing behind.

Run as root: ``pytest --lab tests/lab/test_lab_cli.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import paramiko
import pytest

from ailab_deploy.lab.containers import leftovers

from .conftest import ailab_cli as cli
from .conftest import free_port

pytestmark = pytest.mark.vm


def api_writes(stdout: str) -> int:
    """The write count of apply's ``API calls: N reads, M writes`` line, as a number."""
    found = re.findall(r"API calls:\s+\d+\s+reads,\s+(\d+)\s+writes", stdout)
    assert len(found) == 1, f"expected one 'API calls' line in:\n{stdout}"
    return int(found[0])


def test_lab_up_apply_reapply_destroy_down(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    port = str(free_port())
    status = json.loads(cli("lab", "up", "--lab-dir", str(lab_dir), "--port", port, "--json").stdout)
    assert status["running"] and status["backend"] == "containers"
    again = json.loads(cli("lab", "up", "--lab-dir", str(lab_dir), "--json").stdout)
    assert again["pid"] == status["pid"]  # idempotent: the same emulator keeps running
    assert again["lab_plan_written"] is False
    plan = status["lab_plan"]
    try:
        planned = json.loads(cli("plan", "--plan", plan, "--json").stdout)
        assert [vm["name"] for vm in planned["vms"]] == ["postgres", "ollama", "devapps"]
        assert {action["action"] for vm in planned["vms"] for action in vm["actions"]} == {"create"}

        applied = cli("apply", "--plan", plan)
        assert api_writes(applied.stdout) > 0
        reapplied = cli("apply", "--plan", plan)
        assert api_writes(reapplied.stdout) == 0

        # SSH as the cloud-init user with the lab key; host keys from apply's known_hosts.
        state = Path(plan).parent / ".ailab"
        client = paramiko.SSHClient()
        client.load_host_keys(str(state / "known_hosts"))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            "10.77.0.12",
            username="ailab",
            key_filename=str(lab_dir / "ssh" / "lab_ed25519"),
            allow_agent=False,
            look_for_keys=False,
            timeout=20,
        )
        _, stdout, _ = client.exec_command("systemctl is-system-running --wait", timeout=120)
        state = stdout.read().decode().strip()
        _, failed, _ = client.exec_command("systemctl --failed --no-legend --plain", timeout=60)
        failed_units = failed.read().decode()
        # Booted, and what this test relies on is up (test_vms.py asserts "running" strictly).
        assert state in ("running", "degraded"), failed_units
        _, active, _ = client.exec_command("systemctl is-active ssh systemd-networkd", timeout=60)
        assert active.read().decode().split() == ["active", "active"], failed_units
        _, cloud, _ = client.exec_command("cloud-init status --wait", timeout=300)
        assert "status: done" in cloud.read().decode(), failed_units
        client.close()

        destroyed = cli("destroy", "--plan", plan, "--yes")
        assert "destroyed" in destroyed.stdout + destroyed.stderr
        after = json.loads(cli("plan", "--plan", plan, "--json").stdout)
        assert {action["action"] for vm in after["vms"] for action in vm["actions"]} == {"create"}
    finally:
        cli("lab", "down", "--purge", "--lab-dir", str(lab_dir), check=False)
    assert leftovers(lab_dir) == []
    cli("lab", "down", "--lab-dir", str(lab_dir))  # idempotent
