"""common: base packages, SSH hardening, the admin user, the firewall and what it lets through."""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import Future
from typing import Any

import pytest

from ailab_deploy.core.plan import VM, Plan
from tests.infra.expected import SSH_PORT, accepted_tcp_sources, debian_release, open_ports
from tests.infra.probes import ProbeResults, controller_source_address, in_sources, probe_reachability

BASE_PACKAGES = ("ca-certificates", "curl", "nftables", "openssh-server", "sudo", "python3-venv")


def test_host_runs_the_plans_debian_release(host: Any, plan: Plan) -> None:
    """Sizing and these tests expect the release the plan names: a template of another one shows here."""
    assert int(host.system_info.release.split(".")[0]) == debian_release(plan)


@pytest.mark.parametrize("name", BASE_PACKAGES)
def test_base_package_is_installed(host: Any, name: str) -> None:
    assert host.package(name).is_installed


def test_ssh_takes_keys_only_and_refuses_root(host: Any) -> None:
    effective = set(host.check_output("sshd -T").splitlines())
    assert {"permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no"} <= effective
    assert "pubkeyauthentication yes" in effective


def test_admin_user_has_the_plans_keys(host: Any, hostvars: dict[str, Any]) -> None:
    user = host.user(hostvars["ansible_user"])
    assert user.exists
    authorized = host.file(f"{user.home}/.ssh/authorized_keys")
    assert authorized.mode & 0o077 == 0
    for key in hostvars["common_admin_ssh_keys"]:
        assert key.split()[1] in authorized.content_string


def test_firewall_is_enabled_and_drops_by_default(host: Any) -> None:
    assert host.service("nftables").is_enabled
    ruleset = host.check_output("nft list ruleset")
    assert "type filter hook input priority filter; policy drop;" in ruleset


def test_firewall_opens_each_service_only_to_its_sources(host: Any, plan: Plan, vm: VM) -> None:
    """The ruleset's TCP openings, parsed: exactly the plan's ports, each to exactly its sources."""
    ruleset = json.loads(host.check_output("nft -j list ruleset"))
    assert accepted_tcp_sources(ruleset) == open_ports(plan, vm)


@pytest.fixture(scope="module")
def reached(
    plan: Plan, vm: VM, peers: dict[str, tuple[str, Any]], early_probes: dict[str, Future[ProbeResults]]
) -> ProbeResults:
    """(client, port) -> whether that client connected to this host's port: the probes the
    session started in the background (conftest), else run now."""
    if vm.name in early_probes:
        return early_probes[vm.name].result()
    return probe_reachability(str(vm.ip), open_ports(plan, vm), peers, vm.name)


def test_service_ports_answer_exactly_the_declared_hosts(
    plan: Plan, vm: VM, peers: dict[str, tuple[str, Any]], reached: ProbeResults
) -> None:
    """From every other inventory host: allowed sources connect, everyone else is dropped."""
    me = vm.name
    checked = 0
    for port, sources in open_ports(plan, vm).items():
        for name, (peer_address, _) in peers.items():
            if name == me:
                continue
            allowed = in_sources(peer_address, [str(source) for source in sources])
            assert reached[(name, port)] == allowed, f"{name} -> {me}:{port}"
            checked += 1
    if len(peers) > 1:
        assert checked > 0


def test_the_controller_reaches_only_what_its_address_may(plan: Plan, vm: VM, reached: ProbeResults) -> None:
    address = str(vm.ip)
    mine = controller_source_address(address)
    for port, sources in open_ports(plan, vm).items():
        allowed = in_sources(mine, [str(source) for source in sources])
        assert reached[("controller", port)] == allowed, f"{mine} -> {address}:{port}"


def test_tcp_listeners_are_only_sshd_loopback_or_declared(host: Any, plan: Plan, vm: VM) -> None:
    """Nothing listens on a public wildcard except sshd; services bind the private address."""
    declared = set(open_ports(plan, vm))
    for listener in host.socket.get_listening_sockets():
        if not listener.startswith("tcp://"):
            continue
        address, _, port_text = listener[len("tcp://") :].rpartition(":")
        address, port = address.strip("[]"), int(port_text)
        if address.startswith("127.") or address == "::1" or port == SSH_PORT:
            continue
        assert port in declared and _is_address(address, vm.ip), f"unexpected listener {listener}"


def _is_address(text: str, address: ipaddress.IPv4Address) -> bool:
    try:
        return ipaddress.ip_address(text) == address
    except ValueError:  # "*", a wildcard
        return False


def test_apt_and_pip_use_the_proxy_when_one_is_set(host: Any, hostvars: dict[str, Any]) -> None:
    proxy = hostvars.get("common_http_proxy", "")
    if not proxy:
        pytest.skip("no proxy in the plan")
    assert proxy in host.file("/etc/apt/apt.conf.d/80ailab-proxy").content_string
    assert proxy in host.file("/etc/pip.conf").content_string
