"""``lab down`` for the container side, and ``leftovers()`` to prove it left nothing."""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path

from ailab_deploy.errors import LabError
from ailab_deploy.lab.containers import cgroup, network, proxy
from ailab_deploy.lab.containers.backend import machines_dir
from ailab_deploy.lab.containers.machine import (
    MOUNT_SOURCE_PREFIX,
    container_leader,
    is_lab_nspawn,
    is_lab_supervisor,
)
from ailab_deploy.lab.containers.proc import is_alive, mounts, processes_matching, run, send_signal, wait_gone

log = logging.getLogger(__name__)

KILL_TIMEOUT = 20.0


def _lab_mount_points() -> list[str]:
    return [
        point
        for source, point, fstype in mounts()
        if fstype == "overlay" and source.startswith(MOUNT_SOURCE_PREFIX)
    ]


def _lab_veths() -> list[str]:
    return [name for name in network.link_names() if name.startswith(network.VETH_PREFIX)]


def _kill_containers() -> None:
    """Stop every lab guest: no more restarts, SIGKILL to each guest's PID 1 (ending its pid
    namespace), then SIGKILL to whatever is still there."""
    supervisors = processes_matching(is_lab_supervisor)
    for pid in supervisors:
        send_signal(pid, signal.SIGUSR1)
    nspawns = processes_matching(is_lab_nspawn)
    for pid in nspawns:
        leader = container_leader(pid)
        if leader is not None:
            send_signal(leader, signal.SIGKILL)
    everything = supervisors + nspawns
    if not wait_gone(everything, timeout=KILL_TIMEOUT):
        for pid in everything:
            if is_alive(pid):
                send_signal(pid, signal.SIGKILL)
        wait_gone(everything, timeout=KILL_TIMEOUT)


def lab_down(lab_dir: Path | None = None, *, purge: bool = False) -> None:
    """Remove every container process, mount, veth, netns, the proxy, firewall and bridge of the lab.

    Idempotent. The machine dirs (the VMs' disks) stay, as disks do when a node powers off;
    with ``purge`` and ``lab_dir`` they go too. The image cache, the lab key and the node's
    storage dir always stay.
    """
    if lab_dir is not None and lab_processes():
        network.check_owner(Path(lab_dir))  # never tear down another lab dir's running lab
    _kill_containers()
    for point in _lab_mount_points():
        run(["umount", point], what=f"unmounting {point}")
    for veth in _lab_veths():
        run(["ip", "link", "delete", veth], what=f"deleting veth {veth}", check=False)
    for netns in network.namespaces():
        run(["ip", "netns", "delete", netns], what=f"deleting network namespace {netns}")
    for machine_cgroup in cgroup.machine_cgroups(network.NETNS_PREFIX):  # a supervisor killed outright
        cgroup.remove_tree(machine_cgroup)
    proxy.proxy_down(lab_dir)
    network.bridge_down()
    network.release()
    if purge and lab_dir is not None:
        for disks in _disk_dirs(Path(lab_dir)):
            if any(point.startswith(str(disks)) for _, point, _ in mounts()):
                raise LabError(f"refusing to delete {disks}: something is mounted there")
            shutil.rmtree(disks)
    log.info("lab containers down")


def lab_processes() -> list[tuple[str, int]]:
    """(kind, pid) of every lab guest, supervisor and proxy: none once a lab is down, or killed."""
    kinds = (
        ("systemd-nspawn", is_lab_nspawn),
        ("supervisor", is_lab_supervisor),
        ("tinyproxy", proxy.is_lab_proxy),
    )
    return [(kind, pid) for kind, matches in kinds for pid in processes_matching(matches)]


def clear_abandoned_lab(lab_dir: Path) -> None:
    """Clear the network of a lab whose processes were all killed without a ``lab down`` (its
    controller killed, say): it still claims the bridge, and nobody else could ever take it down."""
    claimed = network.owner()
    if claimed is None or claimed == Path(lab_dir).resolve() or lab_processes():
        return
    log.warning("the lab in %s was left without its processes: clearing its network", claimed)
    lab_down()


def _disk_dirs(lab_dir: Path) -> list[Path]:
    """Where the lab keeps machine disks: <lab>/machines, and in a cluster lab each node's
    local ones (<lab>/nodes/<node>/machines) and the shared storage's (<lab>/storage/*/machines)."""
    candidates = [
        machines_dir(lab_dir),
        *sorted(lab_dir.glob("nodes/*/machines")),
        *sorted(lab_dir.glob("storage/*/machines")),
    ]
    return [d for d in candidates if d.is_dir()]


def leftovers(lab_dir: Path | None = None) -> list[str]:
    """Everything of the lab that still exists, one description per item ([] when clean).
    With ``lab_dir``, its machine dirs (disks) count too: after ``lab down --purge``."""
    found = [f"process: {kind} pid {pid}" for kind, pid in lab_processes()]
    found += [f"mount: {point}" for point in _lab_mount_points()]
    found += [f"netns: {name}" for name in network.namespaces()]
    found += [f"veth: {name}" for name in _lab_veths()]
    found += [f"cgroup: {path}" for path in cgroup.machine_cgroups(network.NETNS_PREFIX)]
    if network.BRIDGE in network.link_names():
        found.append(f"bridge: {network.BRIDGE}")
    if network.firewall_present():
        found.append(f"nftables: table inet {network.NFT_TABLE}")
    if lab_dir is not None:
        for disks in _disk_dirs(Path(lab_dir)):
            found += [f"machine dir: {path}" for path in sorted(disks.iterdir())]
    return found
