"""common: base packages, SSH hardening, the admin user, the firewall and what it lets through."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.probes import connects_from, controller_source_address, in_sources

BASE_PACKAGES = ("ca-certificates", "curl", "nftables", "openssh-server", "sudo", "python3-venv")


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


def test_firewall_opens_each_service_only_to_its_sources(host: Any, hostvars: dict[str, Any]) -> None:
    ruleset = host.check_output("nft list ruleset")
    for service in hostvars.get("common_firewall_services", []):
        assert f"dport {service['port']} accept" in ruleset, service["name"]
        for source in service["sources"]:
            assert source.split("/")[0] in ruleset, f"{service['name']}: {source} missing"


def test_service_ports_answer_exactly_the_declared_hosts(
    host: Any, hostvars: dict[str, Any], peers: dict[str, tuple[str, Any]]
) -> None:
    """From every other inventory host: allowed sources connect, everyone else is dropped."""
    me = hostvars["inventory_hostname"]
    address = peers[me][0]
    checked = 0
    for service in hostvars.get("common_firewall_services", []):
        for name, (peer_address, peer) in peers.items():
            if name == me:
                continue
            allowed = in_sources(peer_address, service["sources"])
            reached = connects_from(peer, address, service["port"])
            assert reached == allowed, f"{name} -> {me}:{service['port']} ({service['name']})"
            checked += 1
    if hostvars.get("common_firewall_services") and len(peers) > 1:
        assert checked > 0


def test_the_controller_reaches_only_what_its_address_may(host: Any, hostvars: dict[str, Any]) -> None:
    import socket

    address = str(hostvars.get("ailab_private_address") or hostvars["ansible_host"])
    mine = controller_source_address(address)
    for service in hostvars.get("common_firewall_services", []):
        try:
            with socket.create_connection((address, service["port"]), timeout=3):
                reached = True
        except OSError:
            reached = False
        assert reached == in_sources(mine, service["sources"]), f"{mine} -> {address}:{service['port']}"


def test_tcp_listeners_are_only_sshd_loopback_or_declared(host: Any, hostvars: dict[str, Any]) -> None:
    """Nothing listens on a public wildcard except sshd; services bind the private address."""
    private = str(hostvars.get("ailab_private_address") or hostvars["ansible_host"])
    declared = {service["port"] for service in hostvars.get("common_firewall_services", [])}
    for listener in host.socket.get_listening_sockets():
        if not listener.startswith("tcp://"):
            continue
        address, _, port_text = listener[len("tcp://") :].rpartition(":")
        address, port = address.strip("[]"), int(port_text)
        if address.startswith("127.") or address == "::1" or port == 22:
            continue
        assert port in declared and address == private, f"unexpected listener {listener}"


def test_apt_and_pip_use_the_proxy_when_one_is_set(host: Any, hostvars: dict[str, Any]) -> None:
    proxy = hostvars.get("common_http_proxy", "")
    if not proxy:
        pytest.skip("no proxy in the plan")
    assert proxy in host.file("/etc/apt/apt.conf.d/80ailab-proxy").content_string
    assert proxy in host.file("/etc/pip.conf").content_string
