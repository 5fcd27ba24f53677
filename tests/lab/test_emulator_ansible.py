"""A third-party client, unmodified: the community.proxmox Ansible collection.

The playbook clones the lab template, updates it (cloud-init, SSH key), starts it,
snapshots it, reads it back with proxmox_vm_info, stops and removes it; TLS is verified
against the lab's certificate (validate_certs with REQUESTS_CA_BUNDLE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
PLAYBOOK = """
- name: Drive the lab emulator with community.proxmox
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/community.proxmox.proxmox:
      api_host: 127.0.0.1
      api_port: "{{ lab_port }}"
      api_user: root@pam
      api_token_id: "{{ lab_token_name }}"
      api_token_secret: "{{ lab_token_secret }}"
      validate_certs: true
  tasks:
    - name: Clone the template
      community.proxmox.proxmox_kvm:
        node: "{{ lab_node }}"
        clone: debian-13-cloud
        newid: 321
        name: ansible-vm
        full: false
        timeout: 60
    - name: Configure cloud-init
      community.proxmox.proxmox_kvm:
        node: "{{ lab_node }}"
        vmid: 321
        update: true
        cores: 4
        memory: 4096
        ciuser: ailab
        sshkeys: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvbvmS/mLpi1rXhO0rIVr6+YYWRo1dMv9+GJPB3bSkM lab@test"
        ipconfig:
          ipconfig0: ip=10.77.0.21/24,gw=10.77.0.1
        tags: [llm, lab]
    - name: Start the VM
      community.proxmox.proxmox_kvm:
        node: "{{ lab_node }}"
        vmid: 321
        state: started
        timeout: 60
    - name: Snapshot the VM
      community.proxmox.proxmox_snap:
        hostname: ansible-vm
        snapname: before-roles
        state: present
        timeout: 60
    - name: Read the VM back
      community.proxmox.proxmox_vm_info:
        node: "{{ lab_node }}"
        vmid: 321
        config: current
      register: info
    - name: Save what was read
      ansible.builtin.copy:
        content: "{{ info.proxmox_vms | to_json }}"
        dest: "{{ lab_out }}"
        mode: "0600"
    - name: Stop the VM
      community.proxmox.proxmox_kvm:
        node: "{{ lab_node }}"
        vmid: 321
        state: stopped
        timeout: 60
    - name: Remove a second clone
      community.proxmox.proxmox_kvm:
        node: "{{ lab_node }}"
        clone: debian-13-cloud
        newid: 322
        name: scratch
        full: false
        timeout: 60
    - name: Remove the scratch VM
      community.proxmox.proxmox_kvm:
        node: "{{ lab_node }}"
        vmid: 322
        state: absent
        timeout: 60
"""


@pytest.mark.skipif(not (BIN / "ansible-playbook").exists(), reason="ansible-playbook not installed")
def test_community_proxmox_collection_drives_the_emulator(emulator, tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "vms.json"
    extra = {
        "lab_port": emulator.port,
        "lab_node": emulator.node,
        "lab_token_name": emulator.token_name,
        "lab_token_secret": emulator.token_secret,
        "lab_out": str(out),
        "ansible_python_interpreter": sys.executable,
    }
    # The token secret goes in a 0600 vars file, never on the command line.
    extra_vars = tmp_path / "lab-vars.json"
    extra_vars.touch(mode=0o600)
    extra_vars.write_text(json.dumps(extra))
    env = {
        **os.environ,
        "REQUESTS_CA_BUNDLE": emulator.ca_path,
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible" / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"@{extra_vars}",
            str(playbook),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    (vm,) = json.loads(out.read_text())
    config = vm["config"]
    assert vm["vmid"] == 321 and vm["name"] == "ansible-vm" and vm["status"] == "running"
    assert config["cores"] == 4 and config["memory"] == "4096"
    assert config["ipconfig0"] == "ip=10.77.0.21/24,gw=10.77.0.1"
    assert config["sshkeys"].startswith("ssh-ed25519%20AAAA")
    assert config["tags"] == "lab;llm"
    assert config["scsi0"].startswith("local-lvm:base-9000-disk-0/vm-321-disk-0")
    api = emulator.api()
    node = api.nodes(emulator.node)
    assert node.qemu(321).status.current.get()["status"] == "stopped"
    assert [s["name"] for s in node.qemu(321).snapshot.get()] == ["before-roles", "current"]
    assert 322 not in {r["vmid"] for r in api.cluster.resources.get(type="vm")}
    shutil.rmtree(tmp_path / "ansible", ignore_errors=True)
