"""A three-node container lab: migration really moves a VM (same disk, same host key, same data)
and HA recovers a VM of a failed node on another node. Needs root; run under the lab lock:

    flock /tmp/ailab-lab.lock .venv/bin/pytest --lab tests/lab/test_cluster_vms.py -s
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import paramiko
import pytest

from ailab_deploy.lab.containers import lab_down, lab_up, leftovers, network
from ailab_deploy.lab.containers.backend import ContainerBackend
from ailab_deploy.lab.containers.node import lab_key, node_machine

from .conftest import Lab
from .vm_fixtures import ssh_client, ssh_run

pytestmark = pytest.mark.vm

NODES = [("pve1", "10.77.0.2"), ("pve2", "10.77.0.3"), ("pve3", "10.77.0.4")]
VMS = {101: "10.77.0.10", 102: "10.77.0.11"}  # 101 on shared storage (HA), 102 on pve1's local disk
BOOT_TIMEOUT = 90.0
FENCE_SECONDS = 3.0


@dataclass
class ClusterLab:
    lab: Lab
    tmp: Path
    user_key: Path
    host_keys: dict[int, list[str]] = field(default_factory=dict)

    @property
    def backend(self) -> ContainerBackend:
        backend = self.lab.emulator.backend
        assert isinstance(backend, ContainerBackend)
        return backend

    def node_of(self, vmid: int) -> str:
        return next(
            str(r["node"]) for r in self.lab.api().cluster.resources.get(type="vm") if r["vmid"] == vmid
        )

    def ssh(self, vmid: int) -> paramiko.SSHClient:
        """SSH as the cloud-init user, trusting only the host keys the VM had at its first boot."""
        network.wait_ssh(VMS[vmid], BOOT_TIMEOUT)
        return ssh_client(VMS[vmid], "ailab", self.user_key, self.host_keys[vmid], self.tmp)

    def wait_running(self, vmid: int, node: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node_of(vmid) == node:
                status = self.lab.api().nodes(node).qemu(vmid).status.current.get()["status"]
                if status == "running":
                    return
            time.sleep(0.2)
        raise AssertionError(f"VM {vmid} is not running on {node} after {timeout:.0f}s")


def _configure(lab: Lab, vmid: int, public_key: str) -> None:
    lab.api("ticket").nodes("pve1").qemu(vmid).config.put(
        name=f"cluster-vm{vmid}",
        ciuser="ailab",
        sshkeys=quote(public_key, safe=""),
        ipconfig0=f"ip={VMS[vmid]}/24,gw={network.GATEWAY}",
        nameserver=network.GATEWAY,
        net0=f"virtio=BC:24:11:00:01:{vmid % 100:02X},bridge=vmbr0",
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterLab]:
    if os.geteuid() != 0:
        pytest.skip("container VMs need root")
    for tool in ("debootstrap", "systemd-nspawn", "tinyproxy", "nft", "ip"):
        assert shutil.which(tool), f"{tool} is not installed (see .ci/apt-packages.txt)"
    tmp = tmp_path_factory.mktemp("clusterlab")
    lab_dir = tmp / "lab"
    user_key = lab_key(tmp / "user")
    public_key = user_key.with_suffix(".pub").read_text().strip()
    lab: Lab | None = None
    try:
        lab_up(lab_dir, cluster=NODES)
        settings = {
            "nodes": [name for name, _ in NODES],
            "backend": "containers",
            "fence_seconds": FENCE_SECONDS,
            "ha_tick_seconds": 0.5,
        }
        lab = Lab(lab_dir, settings)
        api = lab.api()
        lab.wait(api.nodes("pve1").qemu(9000).clone.post(newid=101), timeout=120)
        lab.wait(api.nodes("pve1").qemu(9000).clone.post(newid=102, full=1, storage="local-lvm"), timeout=120)
        result = ClusterLab(lab, tmp, user_key)
        for vmid in VMS:
            _configure(lab, vmid, public_key)
            assert (
                lab.wait(api.nodes("pve1").qemu(vmid).status.start.post(), timeout=120)["exitstatus"] == "OK"
            )
        for vmid in VMS:
            network.wait_ssh(VMS[vmid], BOOT_TIMEOUT)
            result.backend.wait_booted(vmid, BOOT_TIMEOUT)
            result.host_keys[vmid] = result.backend.host_keys(vmid)
            client = result.ssh(vmid)
            rc, _, _ = ssh_run(client, f"echo data-of-{vmid} > ~/marker")
            client.close()
            assert rc == 0
        yield result
    finally:
        if lab is not None:
            for vmid in (*VMS, 9000):
                try:
                    lab.emulator.backend.destroy(vmid)
                except Exception as err:  # cleanup goes on; lab_down removes what is left
                    print(f"destroy {vmid}: {err}")
            lab.stop()
        lab_down(lab_dir, purge=True)
        assert leftovers(lab_dir) == []


def test_each_node_is_a_container_with_its_own_storage(cluster: ClusterLab) -> None:
    for name, address in NODES:
        assert node_machine(cluster.lab.lab_dir, name).is_running()
        network.wait_ssh(address, 10)
    disks = cluster.lab.lab_dir / "nodes" / "pve1" / "machines"
    assert (disks / "102" / "lower").is_file()  # the local disk lives with its node
    assert (cluster.lab.lab_dir / "storage" / "shared" / "machines" / "101" / "lower").is_file()


def test_migration_moves_a_local_disk_and_keeps_host_key_and_data(cluster: ClusterLab) -> None:
    api = cluster.lab.api()
    started = time.monotonic()
    upid = api.nodes("pve1").qemu(102).migrate.post(target="pve2", online=1, **{"with-local-disks": 1})
    assert cluster.lab.wait(upid, timeout=180)["exitstatus"] == "OK"
    cluster.wait_running(102, "pve2")
    client = cluster.ssh(102)  # fails unless the host key is the one of the first boot
    rc, out, _ = ssh_run(client, "cat ~/marker")
    client.close()
    print(f"\nmigration of VM 102 (local disk, running) to pve2: {time.monotonic() - started:.1f} s to SSH")
    assert (rc, out.strip()) == (0, "data-of-102")
    lab_dir = cluster.lab.lab_dir
    assert (lab_dir / "nodes/pve2/machines/102/lower").is_file()
    assert not (lab_dir / "nodes/pve1/machines/102").exists()


def test_ha_recovers_a_vm_of_a_failed_node(cluster: ClusterLab) -> None:
    api = cluster.lab.api()
    api.cluster.ha.resources.post(sid="vm:101")
    api.cluster.ha.rules.post(rule="db", type="node-affinity", resources="vm:101", nodes="pve1:2,pve3:1")
    failed = time.monotonic()
    assert 101 in cluster.lab.admin("POST", "/nodes/pve1/fail")["stopped"]
    node_machine(cluster.lab.lab_dir, "pve1").stop()  # as `lab node fail` does: the node is off
    assert not cluster.backend.machine(101).is_running()
    cluster.wait_running(101, "pve3", timeout=120)
    recovered = time.monotonic()
    client = cluster.ssh(101)
    rc, out, _ = ssh_run(client, "cat ~/marker; hostname")
    client.close()
    answered = time.monotonic()
    print(
        f"\nfailover of VM 101: fail -> running on pve3 {recovered - failed:.1f} s "
        f"(fence delay {FENCE_SECONDS:.0f} s), -> SSH {answered - failed:.1f} s"
    )
    assert (rc, out.split()) == (0, ["data-of-101", "cluster-vm101"])
    assert recovered - failed >= FENCE_SECONDS
