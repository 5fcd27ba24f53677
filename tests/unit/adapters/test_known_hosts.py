"""Host keys: the trust rules (first contact, match, created by this run, attack) and a
known_hosts file that OpenSSH's own tools read and edit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from ailab_deploy.adapters.known_hosts import KnownHosts, forget_vm
from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.core.hostkeys import HostKeyAction, HostKeyMismatch, judge_host_keys

KEY_A = ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIKXb5TstYyBC8ZY37UK5ewvvtSTlk7vgrNso1D+ZZdFh")
KEY_B = ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIJ0x3t6yG1m7c0y3m8b2bXcvq6yQ3S1vX5mJvN8T2c7q")
KEY_RSA = ("ssh-rsa", "AAAAB3NzaC1yc2EAAAADAQABAAABAQDMfake0rsa0key0for0tests")

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")


def judge(recorded: set[tuple[str, str]], offered: list[tuple[str, str]], *, created: bool) -> HostKeyAction:
    verdict = judge_host_keys(
        recorded, offered, created_by_this_run=created, vmid=100, host="10.77.0.10", known_hosts="kh"
    )
    return verdict.action


def test_first_contact_is_recorded_whoever_created_the_vm() -> None:
    assert judge(set(), [KEY_A], created=False) is HostKeyAction.RECORD
    assert judge(set(), [KEY_A], created=True) is HostKeyAction.RECORD


def test_same_keys_match() -> None:
    assert judge({KEY_A}, [KEY_A], created=False) is HostKeyAction.MATCH
    assert judge({KEY_A}, [KEY_A], created=True) is HostKeyAction.MATCH


def test_a_vm_this_run_created_gets_its_keys_replaced() -> None:
    verdict = judge_host_keys(
        {KEY_A}, [KEY_B], created_by_this_run=True, vmid=100, host="10.77.0.10", known_hosts="kh"
    )
    assert verdict.action is HostKeyAction.REPLACE and verdict.writes
    assert "this run created VM 100" in verdict.message


def test_a_changed_key_on_a_vm_this_run_did_not_create_is_refused() -> None:
    with pytest.raises(HostKeyMismatch, match=r"VM 100 at 10\.77\.0\.10 presents a different ssh-ed25519"):
        judge({KEY_A}, [KEY_B], created=False)


def test_a_key_of_a_type_not_recorded_is_no_mismatch() -> None:
    assert judge({KEY_A}, [KEY_A, KEY_RSA], created=False) is HostKeyAction.MATCH


def test_replace_and_remove_keep_other_hosts_and_comments(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.path.write_text(f"# the node, compared with its console\n10.77.0.2 {KEY_A[0]} {KEY_A[1]}\n")
    hosts.replace("10.77.0.10", [KEY_A])
    hosts.replace("10.77.0.10", [KEY_B])
    assert hosts.keys_for("10.77.0.10") == {KEY_B}
    assert hosts.remove("10.77.0.10") is True
    assert hosts.remove("10.77.0.10") is False
    text = hosts.path.read_text()
    assert text.splitlines() == ["# the node, compared with its console", f"10.77.0.2 {KEY_A[0]} {KEY_A[1]}"]
    assert oct(hosts.path.stat().st_mode & 0o777) == "0o600"


def test_an_address_is_not_a_prefix_of_another(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.replace("10.77.0.12", [KEY_A])
    hosts.replace("10.77.0.1", [KEY_B])
    assert hosts.keys_for("10.77.0.12") == {KEY_A}
    hosts.remove("10.77.0.1")
    assert hosts.keys_for("10.77.0.12") == {KEY_A}


def test_paramiko_reads_the_file(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.replace("10.77.0.11", [KEY_B])
    parsed = paramiko.HostKeys(str(hosts.path))  # what Ansible's paramiko connection would read
    assert parsed.lookup("10.77.0.11")["ssh-ed25519"].get_base64() == KEY_B[1]


@needs_ssh_keygen
def test_ssh_keygen_finds_and_removes_what_we_record(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.replace("10.77.0.10", [KEY_A])
    hosts.replace("10.77.0.11", [KEY_B])
    found = subprocess.run(
        ["ssh-keygen", "-F", "10.77.0.11", "-f", str(hosts.path)], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0 and KEY_B[1] in found.stdout and KEY_A[1] not in found.stdout
    subprocess.run(["ssh-keygen", "-R", "10.77.0.10", "-f", str(hosts.path)], capture_output=True, check=True)
    assert hosts.keys_for("10.77.0.10") == set()
    assert hosts.keys_for("10.77.0.11") == {KEY_B}


@needs_ssh_keygen
def test_hand_appended_and_hashed_lines_are_understood(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    hosts.replace("10.77.0.10", [KEY_A])
    with hosts.path.open("a") as handle:  # as SETUP.md says: append the node's keyscan line
        handle.write(f"10.77.0.2 {KEY_B[0]} {KEY_B[1]}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(hosts.path)], capture_output=True, check=True)
    assert "10.77.0.2" not in hosts.path.read_text()  # every line is hashed now
    assert hosts.keys_for("10.77.0.2") == {KEY_B}
    assert hosts.keys_for("10.77.0.10") == {KEY_A}
    hosts.replace("10.77.0.10", [KEY_B])
    assert hosts.keys_for("10.77.0.10") == {KEY_B}
    assert hosts.keys_for("10.77.0.2") == {KEY_B}


def test_forgetting_a_vm_keeps_the_node_key_appended_after_it(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path)
    with Ledger(tmp_path) as ledger:
        ledger.record_vm(100, "postgres")
        ledger.bind_address(100, "10.77.0.10")
        hosts.replace("10.77.0.10", [KEY_A])
        with hosts.path.open("a") as handle:
            handle.write(f"10.77.0.2 {KEY_B[0]} {KEY_B[1]}\n")
        forget_vm(ledger, hosts, 100)
        assert ledger.address_of(100) is None and 100 not in ledger.managed_vmids()
    assert hosts.keys_for("10.77.0.10") == set()
    assert hosts.keys_for("10.77.0.2") == {KEY_B}
