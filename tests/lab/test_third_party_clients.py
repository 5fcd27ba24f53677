"""Widely used clients, unmodified, against the emulator.

- the ``community.proxmox`` dynamic inventory plugin (the collection installed with Ansible;
  1.4.0 when this was written): ``ansible-inventory --list`` shows the lab's VMs in its usual
  groups (node, running, pool, qemu).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
