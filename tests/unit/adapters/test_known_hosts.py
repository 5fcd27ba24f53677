"""known_hosts: trust on first use per vmid+ip, checked afterwards, forgotten by destroy."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from ailab_deploy.adapters.known_hosts import HostKeyMismatch, KnownHosts

KEY_A = ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIKXb5TstYyBC8ZY37UK5ewvvtSTlk7vgrNso1D+ZZdFh")
KEY_B = ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIJ0x3t6yG1m7c0y3m8b2bXcvq6yQ3S1vX5mJvN8T2c7q")


def test_first_contact_records_then_checks(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    assert hosts.record_or_check(100, "10.77.0.10", [KEY_A]).startswith("recorded 1")
    assert hosts.record_or_check(100, "10.77.0.10", [KEY_A]) == "host keys match"
    with pytest.raises(HostKeyMismatch, match=r"VM 100 at 10\.77\.0\.10 presents a different ssh-ed25519"):
        hosts.record_or_check(100, "10.77.0.10", [KEY_B])
    assert oct(hosts.path.stat().st_mode & 0o777) == "0o600"


def test_file_is_openssh_known_hosts(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.record_or_check(100, "10.77.0.10", [KEY_A])
    hosts.record_or_check(101, "10.77.0.11", [KEY_B])
    parsed = paramiko.HostKeys(str(hosts.path))  # what Ansible's ssh/paramiko would read
    assert parsed.lookup("10.77.0.11")["ssh-ed25519"].get_base64() == KEY_B[1]


def test_destroy_forgets_so_a_rebuilt_vm_is_trusted_again(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.record_or_check(100, "10.77.0.10", [KEY_A])
    hosts.forget(100)
    assert not hosts.known(100, "10.77.0.10")
    assert hosts.record_or_check(100, "10.77.0.10", [KEY_B]).startswith("recorded")


def test_lines_added_by_hand_survive_vm_updates(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.path.write_text(f"10.77.0.2 {KEY_A[0]} {KEY_A[1]}\n")  # the node, appended after ssh-keyscan
    hosts.record_or_check(100, "10.77.0.10", [KEY_B])
    hosts.forget(100)
    assert paramiko.HostKeys(str(hosts.path)).lookup("10.77.0.2")["ssh-ed25519"].get_base64() == KEY_A[1]


def test_pin_node_replaces_only_the_nodes_keys(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path / "state")  # created on first write
    hosts.pin_node("10.77.0.2", [KEY_A])
    hosts.record_or_check(100, "10.77.0.10", [KEY_A])
    hosts.pin_node("10.77.0.2", [KEY_B])  # a rebuilt lab node
    parsed = paramiko.HostKeys(str(hosts.path))
    assert parsed.lookup("10.77.0.2")["ssh-ed25519"].get_base64() == KEY_B[1]
    assert hosts.record_or_check(100, "10.77.0.10", [KEY_A]) == "host keys match"
