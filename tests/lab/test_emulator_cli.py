"""`lab up --api-only`, `lab status --json`, `lab down`: a background emulator, idempotent."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .conftest import free_port

pytestmark = pytest.mark.lab


def lab(*args: str, cwd, env=None) -> subprocess.CompletedProcess[str]:
    code = "from ailab_deploy.cli.lab import lab_app; lab_app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_up_status_down_are_idempotent(tmp_path):
    lab_dir = tmp_path / "lab"
    port = free_port()
    env = {**os.environ, "AILAB_LAB_DIR": str(lab_dir)}
    try:
        first = lab("up", "--api-only", "--port", str(port), cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr
        second = lab("up", "--api-only", "--port", str(port), cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr
        shown = lab("status", "--json", cwd=tmp_path, env=env)
        assert shown.returncode == 0, shown.stderr
        info = json.loads(shown.stdout)
        assert info["running"] is True
        assert info["endpoint"] == f"https://127.0.0.1:{port}/api2/json"
        assert info["node"] == "pve" and info["token_id"] == "root@pam!ailab"
        assert info["lab_plan"] == str(lab_dir / "vms.lab.yaml")
        secret_path = lab_dir / "secrets" / "api-token"
        assert info["token_secret_path"] == str(secret_path)
        assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
        assert len(info["fingerprint"].split(":")) == 32
        headers = {"Authorization": f"PVEAPIToken={info['token_id']}={secret_path.read_text().strip()}"}
        answer = requests.get(
            info["endpoint"] + "/nodes/pve/qemu/9000/config",
            headers=headers,
            verify=info["ca_path"],
            timeout=10,
        )
        config = answer.json()["data"]
        assert config["name"] == "debian-13-cloud" and config["template"] == 1
        assert config["scsi0"].startswith("local-lvm:") and config["ide2"].endswith("media=cdrom")
        pid = info["pid"]
        assert json.loads(lab("status", "--json", cwd=tmp_path, env=env).stdout)["pid"] == pid
    finally:
        down = lab("down", cwd=tmp_path, env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    again = lab("down", cwd=tmp_path, env=env)
    assert again.returncode == 0 and "not running" in again.stdout
    assert json.loads(lab("status", "--json", cwd=tmp_path, env=env).stdout)["running"] is False
    stat_file = Path(f"/proc/{pid}/stat")
    assert not stat_file.exists() or stat_file.read_text().split()[2] == "Z"


def test_lab_dir_option_and_reset(tmp_path):
    lab_dir = tmp_path / "other"
    port = free_port()
    try:
        assert (
            lab("up", "--api-only", "--port", str(port), "--lab-dir", str(lab_dir), cwd=tmp_path).returncode
            == 0
        )
        info = json.loads(lab("status", "--json", "--lab-dir", str(lab_dir), cwd=tmp_path).stdout)
        secret = (lab_dir / "secrets" / "api-token").read_text().strip()
        headers = {"Authorization": f"PVEAPIToken=root@pam!ailab={secret}"}
        answer = requests.post(
            info["endpoint"] + "/nodes/pve/qemu/9000/clone",
            data={"newid": 101},
            headers=headers,
            verify=info["ca_path"],
            timeout=10,
        )
        assert answer.status_code == 200
        reset = lab("reset", "--lab-dir", str(lab_dir), cwd=tmp_path)
        assert reset.returncode == 0, reset.stderr
        listed = requests.get(
            info["endpoint"] + "/nodes/pve/qemu", headers=headers, verify=info["ca_path"], timeout=10
        ).json()["data"]
        assert [vm["vmid"] for vm in listed] == [9000]
    finally:
        lab("down", "--lab-dir", str(lab_dir), cwd=tmp_path)
    assert not (tmp_path / ".ailab").exists()  # nothing written to the default lab dir


def _auth(info: dict) -> dict:
    secret = Path(info["token_secret_path"]).read_text().strip()
    return {"Authorization": f"PVEAPIToken={info['token_id']}={secret}"}


def _version(info: dict) -> dict:
    answer = requests.get(
        info["endpoint"] + "/version",
        headers=_auth(info),
        verify=info["ca_path"],
        timeout=10,
    )
    return answer.json()["data"]


def test_pve_version_is_chosen_at_up(tmp_path):
    lab_dir = tmp_path / "lab"
    port = str(free_port())
    env = {**os.environ, "AILAB_LAB_DIR": str(lab_dir)}
    try:
        assert lab("up", "--api-only", "--port", port, cwd=tmp_path, env=env).returncode == 0
        info = json.loads(lab("status", "--json", cwd=tmp_path, env=env).stdout)
        assert (info["pve_version"], _version(info)["release"]) == ("9.1.3", "9.1")
        older = lab("up", "--api-only", "--port", port, "--pve-version", "8.4", cwd=tmp_path, env=env)
        assert older.returncode == 0, older.stderr
        info = json.loads(lab("status", "--json", cwd=tmp_path, env=env).stdout)
        assert (info["pve_version"], _version(info)["version"]) == ("8.4.1", "8.4.1")
        assert json.loads((lab_dir / "settings.json").read_text())["version"] == "8.4.1"
        bad = lab("up", "--api-only", "--pve-version", "9.0", cwd=tmp_path, env=env)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert "--pve-version: '9.0' is not one of 9.1, 8.4" in bad.stderr + bad.stdout
    finally:
        lab("down", cwd=tmp_path, env=env)


def test_debian_release_is_chosen_when_the_lab_is_made_and_kept(tmp_path):
    lab_dir = tmp_path / "lab"
    port = str(free_port())
    env = {**os.environ, "AILAB_LAB_DIR": str(lab_dir)}
    try:
        bad = lab("up", "--api-only", "--port", port, "--debian-release", "11", cwd=tmp_path, env=env)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert bad.stderr.strip() == "--debian-release: 11 is not one of 13, 12"
        made = lab("up", "--api-only", "--port", port, "--debian-release", "12", cwd=tmp_path, env=env)
        assert made.returncode == 0, made.stderr
        info = json.loads(lab("status", "--json", cwd=tmp_path, env=env).stdout)
        assert info["debian_release"] == 12
        template = requests.get(
            f"{info['endpoint']}/nodes/{info['node']}/qemu/9000/config",
            headers=_auth(info),
            verify=info["ca_path"],
            timeout=10,
        ).json()["data"]
        assert template["name"] == "debian-12-cloud"
        plan = Path(info["lab_plan"]).read_text()
        assert "  release: 12  #" in plan and "  name: debian-12-cloud  #" in plan
        again = lab("up", "--api-only", "--port", port, cwd=tmp_path, env=env)  # keeps its release
        assert again.returncode == 0, again.stderr
        other = lab("up", "--api-only", "--debian-release", "13", cwd=tmp_path, env=env)
        assert other.returncode == 2 and "Traceback" not in other.stderr
        assert len(other.stderr.strip().splitlines()) == 1
        assert "serves Debian 12; a lab keeps its release" in other.stderr
    finally:
        lab("down", cwd=tmp_path, env=env)
