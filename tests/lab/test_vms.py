"""Lab VMs: lab infrastructure, three container VMs from the template, SSH as the
cloud-init user, systemd running, apt and pip through the proxy, and no trace after down.

Run as root: ``pytest --lab tests/lab/test_vms.py``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ailab_deploy.errors import LabError
from ailab_deploy.lab.backend import AgentNotRunning, BackendError
from ailab_deploy.lab.containers import ContainerBackend, lab_down, lab_up, leftovers, network
from ailab_deploy.lab.containers.proc import run
from ailab_deploy.lab.containers.proxy import PORT, PROXY_URL
from tests.lab.vm_fixtures import (
    CIUSER,
    TEMPLATE_VMID,
    VMS,
    VMLab,
    running_vm_lab,
    ssh_client,
    ssh_run,
    vm_config,
)

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VMLab]:
    with running_vm_lab(tmp_path_factory.mktemp("vmlab")) as lab:
        yield lab


def test_infrastructure_is_up(vm_lab: VMLab) -> None:
    addresses = json.loads(run(["ip", "-j", "addr", "show", "dev", network.BRIDGE], what="bridge").stdout)
    local = [a["local"] for a in addresses[0]["addr_info"] if a["family"] == "inet"]
    assert local == [network.GATEWAY]
    with socket.create_connection((network.GATEWAY, PORT), timeout=2):
        pass
    assert vm_lab.infra.proxy_url == PROXY_URL
    assert (vm_lab.infra.template.rootfs / "usr/bin/cloud-init").exists()
    assert not list((vm_lab.infra.template.rootfs / "etc/ssh").glob("ssh_host_*"))


def test_a_second_lab_cannot_take_over_or_tear_down_the_network(vm_lab: VMLab) -> None:
    other = vm_lab.tmp / "other-lab"
    other.mkdir()
    with pytest.raises(LabError, match="is in use by the lab in"):
        lab_up(other, with_node=False)
    with pytest.raises(LabError, match="is in use by the lab in"):
        lab_down(other)
    assert network.BRIDGE in network.link_names()


def test_node_is_reachable_like_a_pve_node(vm_lab: VMLab) -> None:
    node = vm_lab.infra.node
    assert node is not None
    assert stat.S_IMODE(node.private_key.stat().st_mode) == 0o600
    snippet = node.storage_dir / "snippets" / "hello.yaml"
    snippet.write_text("#cloud-config\n")
    client = ssh_client(node.address, "root", node.private_key, _known(node.known_hosts), vm_lab.tmp)
    try:
        rc, out, _ = ssh_run(client, "hostname; cat /var/lib/vz/snippets/hello.yaml; id -u")
        assert (rc, out.split()) == (0, ["pve", "#cloud-config", "0"])
        rc, _, _ = ssh_run(client, "echo from-node > /var/lib/vz/snippets/up.yaml")
        assert rc == 0 and (node.storage_dir / "snippets/up.yaml").read_text() == "from-node\n"
    finally:
        client.close()


def _known(path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("vmid", sorted(VMS))
def test_vm_boots_and_applies_cloud_init(vm_lab: VMLab, vmid: int) -> None:
    client = vm_lab.clients[vmid]
    name, address = VMS[vmid]
    rc, out, _ = ssh_run(client, "systemctl is-system-running")
    assert (rc, out.strip()) == (0, "running")
    rc, out, _ = ssh_run(client, "hostname; id -un; sudo -n id -u; ip -4 -o addr show dev eth0")
    hostname, user, root_uid, eth0 = out.splitlines()
    assert (rc, hostname, user, root_uid) == (0, name, CIUSER, "0")
    assert f"inet {address}/24" in eth0
    rc, out, _ = ssh_run(client, "resolvectl dns eth0; resolvectl domain eth0")
    assert rc == 0 and network.GATEWAY in out and "lab.test" in out


def test_agent_reports_the_guests_interfaces(vm_lab: VMLab) -> None:
    interfaces = {i["name"]: i for i in vm_lab.backend.agent_network_interfaces(101)}
    assert set(interfaces) == {"lo", "eth0"}
    eth0 = interfaces["eth0"]
    assert eth0["hardware-address"] == "bc:24:11:00:00:01"
    assert {"ip-address-type": "ipv4", "ip-address": "10.77.0.10", "prefix": 24} in eth0["ip-addresses"]
    assert eth0["statistics"]["rx-packets"] > 0
    # A new backend (an emulator restart) finds the running VM from disk alone.
    fresh = ContainerBackend(vm_lab.lab_dir)
    assert fresh.is_running(101) and fresh.system_state(101) == "running"
    assert fresh.agent_network_interfaces(101)[1]["name"] == "eth0"


def test_agent_is_not_running_on_a_stopped_vm(vm_lab: VMLab) -> None:
    vm_lab.backend.clone(TEMPLATE_VMID, 110, {})
    try:
        with pytest.raises(AgentNotRunning, match="QEMU guest agent is not running"):
            vm_lab.backend.agent_network_interfaces(110)
        assert not vm_lab.backend.is_running(110)
        with pytest.raises(BackendError, match="disk already exists"):
            vm_lab.backend.clone(TEMPLATE_VMID, 110, {})
    finally:
        vm_lab.backend.destroy(110)
    assert not (vm_lab.lab_dir / "machines" / "110").exists()


def test_guests_reach_apt_and_pypi_through_the_proxy_only(vm_lab: VMLab) -> None:
    commands = (
        f"sudo apt-get -q -o Acquire::http::Proxy={PROXY_URL} update"
        f" && sudo DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Acquire::http::Proxy={PROXY_URL}"
        " install --no-install-recommends python3-pip"
        f" && d=$(mktemp -d) && pip download -q --proxy {PROXY_URL} --no-deps -d $d six"
        " && ls $d"
    )

    def converge(vmid: int) -> tuple[int, str, str]:
        return ssh_run(vm_lab.clients[vmid], commands, timeout=600)

    with ThreadPoolExecutor(len(VMS)) as pool:
        results = dict(zip(VMS, pool.map(converge, VMS), strict=True))
    for vmid, (rc, out, err) in results.items():
        assert rc == 0, f"VM {vmid}: {err[-2000:]}"
        assert "six-" in out and out.strip().endswith(".whl")


def test_there_is_no_route_out_of_the_lab(vm_lab: VMLab) -> None:
    # Checked without sending anything: routes in the guest, forwarding and firewall on the host.
    for vmid in VMS:
        rc, out, _ = ssh_run(vm_lab.clients[vmid], "ip -j route show table all")
        assert rc == 0
        for route in json.loads(out):
            gateway = route.get("gateway")
            assert gateway is None or gateway == network.GATEWAY, route
    assert Path(f"/proc/sys/net/ipv4/conf/{network.BRIDGE}/forwarding").read_text().strip() == "0"
    ruleset = run(["nft", "list", "table", "inet", network.NFT_TABLE], what="nft").stdout
    assert f'iifname "{network.BRIDGE}" drop' in ruleset
    assert f'oifname "{network.BRIDGE}" drop' in ruleset


def test_reboot_with_changed_config_reruns_cloud_init(vm_lab: VMLab) -> None:
    node = vm_lab.infra.node
    assert node is not None
    (node.storage_dir / "snippets" / "vendor.yaml").write_text(
        "#cloud-config\nwrite_files:\n  - path: /etc/ailab-vendor\n    content: from-snippet\n"
    )
    backend, public_key = vm_lab.backend, vm_lab.user_key.with_suffix(".pub").read_text().strip()
    rc, before, _ = ssh_run(vm_lab.clients[103], "cat /var/lib/cloud/data/instance-id")
    assert rc == 0
    vm_lab.clients[103].close()
    backend.reboot(103, vm_config(103, public_key, cicustom="vendor=local:snippets/vendor.yaml"))
    network.wait_ssh(VMS[103][1], 60)
    backend.wait_booted(103, 60)
    client = ssh_client(VMS[103][1], CIUSER, vm_lab.user_key, backend.host_keys(103), vm_lab.tmp)
    vm_lab.clients[103] = client
    assert ssh_run(client, "cat /etc/ailab-vendor") == (0, "from-snippet", "")
    rc, after, _ = ssh_run(client, "cat /var/lib/cloud/data/instance-id")
    assert rc == 0 and after.strip() and after != before


def test_a_reboot_inside_the_guest_boots_it_again(vm_lab: VMLab) -> None:
    backend, machine, address = vm_lab.backend, vm_lab.backend.machine(102), VMS[102][1]
    init_before = machine.leader_pid()
    _, stdout, _ = vm_lab.clients[102].exec_command("sudo systemctl reboot")
    # Closing the session at once can end systemctl before it has asked for the reboot (Debian
    # 13's does): wait until it exits, or the guest going down drops the session.
    stdout.channel.status_event.wait(60)
    vm_lab.clients[102].close()
    deadline = time.monotonic() + 120  # a bound on the guest's shutdown and boot, not a speed target
    while machine.leader_pid() in (None, init_before):
        assert backend.is_running(102), "the VM stopped instead of rebooting"
        assert time.monotonic() < deadline, "the guest did not come back after its reboot"
        time.sleep(0.2)
    network.wait_ssh(address, 60)
    backend.wait_booted(102, 60)
    client = ssh_client(address, CIUSER, vm_lab.user_key, backend.host_keys(102), vm_lab.tmp)
    vm_lab.clients[102] = client
    assert ssh_run(client, "systemctl is-system-running") == (0, "running\n", "")


def test_an_archive_of_a_running_vm_restores_its_disk_and_keys(vm_lab: VMLab) -> None:
    """vzdump of a running VM (guest frozen meanwhile), the VM's disk destroyed, the archive
    restored: the guest boots with the files it had, without the ones it had deleted, and with
    its own host keys."""
    backend, public_key = vm_lab.backend, vm_lab.user_key.with_suffix(".pub").read_text().strip()
    config = vm_config(101, public_key)
    client = vm_lab.clients[101]
    assert ssh_run(client, "echo kept > ~/marker && sudo rm /etc/motd && sync")[0] == 0
    keys = backend.host_keys(101)
    archive_path = vm_lab.tmp / "vzdump-qemu-101-2026_11_30-02_00_00.vma.zst"
    backend.backup(101, config, archive_path)
    assert backend.system_state(101) in ("running", "degraded")  # thawed
    assert ssh_run(client, "true")[0] == 0  # thawed: the guest answers again
    client.close()
    backend.destroy(101)
    assert not backend.machine(101).exists()
    started = time.monotonic()
    backend.restore(101, config, archive_path)
    restored = time.monotonic() - started
    backend.start(101, config)
    network.wait_ssh(VMS[101][1], 60)
    backend.wait_booted(101, 60)
    size, booted = archive_path.stat().st_size / 1024**2, time.monotonic() - started
    print(
        f"container VM restore: {restored:.1f} s from a {size:.0f} MiB archive, booted after {booted:.1f} s"
    )
    assert backend.host_keys(101) == keys
    client = ssh_client(VMS[101][1], CIUSER, vm_lab.user_key, keys, vm_lab.tmp)
    vm_lab.clients[101] = client
    assert ssh_run(client, "cat ~/marker") == (0, "kept\n", "")
    assert ssh_run(client, "test -e /etc/motd")[0] == 1  # the deletion (an overlay whiteout) is kept


def test_destroy_and_down_leave_no_trace(vm_lab: VMLab) -> None:
    for client in vm_lab.clients.values():
        client.close()
    for vmid in VMS:
        vm_lab.backend.destroy(vmid)
        assert not vm_lab.backend.machine(vmid).dir.exists()
        assert network.netns_name(str(vmid)) not in network.namespaces()
    lab_down(vm_lab.lab_dir, purge=True)
    assert leftovers(vm_lab.lab_dir) == []
    assert not os.path.exists(f"/sys/class/net/{network.BRIDGE}")
