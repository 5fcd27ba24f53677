"""Widely used clients, unmodified, against the emulator.

- the ``community.proxmox`` dynamic inventory plugin (the collection installed with Ansible;
  1.4.0 when this was written): ``ansible-inventory --list`` shows the lab's VMs in its usual
  groups (node, running, pool, qemu).
- prometheus-pve-exporter from PyPI (3.10.2 when this was written) with its default
  collectors: a scrape reports ``pve_up`` for the node and the VMs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import free_port

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent


@pytest.mark.skipif(not (BIN / "ansible-inventory").exists(), reason="ansible-inventory not installed")
def test_community_proxmox_inventory_lists_the_lab(make_emulator, tmp_path):
    lab = make_emulator(pools=[{"poolid": "lab"}])
    node = lab.api().nodes(lab.node)
    lab.wait(node.qemu(9000).clone.post(newid=101, name="web", pool="lab"))
    lab.wait(node.qemu(9000).clone.post(newid=102, name="db"))
    node.qemu(101).config.put(ipconfig0="ip=10.77.0.21/24,gw=10.77.0.1")
    lab.wait(node.qemu(101).status.start.post())
    inventory = tmp_path / "lab.proxmox.yml"  # the secret stays in a 0600 file, not in argv
    inventory.touch(mode=0o600)
    inventory.write_text(
        "plugin: community.proxmox.proxmox\n"
        f"url: https://{lab.host}:{lab.port}\n"
        f"user: {lab.user}\n"
        f"token_id: {lab.token_name}\n"
        f"token_secret: {lab.token_secret}\n"
        "validate_certs: true\n"
        "want_facts: true\n"
    )
    env = {
        **os.environ,
        "REQUESTS_CA_BUNDLE": lab.ca_path,
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible" / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_ENABLED": "community.proxmox.proxmox",
    }
    result = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0 and "Failed to parse" not in result.stderr, result.stderr[-3000:]
    listed = json.loads(result.stdout)
    groups = {name: set(group.get("hosts", [])) for name, group in listed.items() if isinstance(group, dict)}
    assert groups["proxmox_all_qemu"] == {"web", "db"}
    assert groups["proxmox_all_running"] == {"web"}
    assert groups["proxmox_pool_lab"] == {"web"}
    assert groups["proxmox_nodes"] == {lab.node}
    web = listed["_meta"]["hostvars"]["web"]
    assert web["proxmox_vmid"] == 101
    assert web["proxmox_status"] == {"__ansible_unsafe": "running"}  # how --list prints strings


@pytest.mark.skipif(not (BIN / "pve_exporter").exists(), reason="prometheus-pve-exporter not installed")
def test_prometheus_pve_exporter_scrapes_the_lab(make_emulator, tmp_path):
    lab = make_emulator(pools=[{"poolid": "lab"}])
    node = lab.api().nodes(lab.node)
    lab.wait(node.qemu(9000).clone.post(newid=101, name="web", pool="lab"))
    lab.wait(node.qemu(101).status.start.post())
    config = tmp_path / "pve.yml"  # the token secret in a 0600 file, not in argv or the environment
    config.touch(mode=0o600)
    config.write_text(
        "default:\n"
        f"  user: {lab.user}\n"
        f"  token_name: {lab.token_name}\n"
        f"  token_value: {lab.token_secret}\n"
        f"  verify_ssl: {lab.ca_path}\n"
        f"  port: {lab.port}\n"
    )
    port = free_port()
    exporter = subprocess.Popen(
        [
            str(BIN / "pve_exporter"),
            "--config.file",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        scrape = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and exporter.poll() is None:
            try:
                scrape = requests.get(
                    f"http://127.0.0.1:{port}/pve",
                    params={"target": lab.host, "cluster": "1", "node": "1"},
                    timeout=30,
                )
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert scrape is not None, exporter.stderr.read() if exporter.stderr else ""
        assert scrape.status_code == 200, scrape.text[-3000:]
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
    up = {
        line.split('id="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape.text.splitlines()
        if line.startswith("pve_up{")
    }
    assert up[f"node/{lab.node}"] == 1.0 and up["qemu/101"] == 1.0 and up["qemu/9000"] == 0.0
    assert "pve_not_backed_up_total" in scrape.text or "pve_not_backed_up_info" in scrape.text
