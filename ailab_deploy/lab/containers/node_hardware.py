"""The lab node's stand-ins for ``dmidecode`` and ``numactl``, built from the lab's settings.

The lab node is a container on this machine: it has no SMBIOS table of its own, and its
sysfs NUMA view is this machine's. So that ``ailab-deploy discover`` reads over SSH what the
emulator's API reports (``settings.json`` ``hardware``: sockets, cores, threads, memory,
``memory_channels_per_socket``, ``memory_mts``), the node gets two small scripts in
/usr/local/sbin that print those settings in the real tools' formats:

* ``dmidecode -t memory``: one populated DIMM and one empty slot per channel and socket
  (slot names as Supermicro boards write them), each DIMM the memory split evenly and
  rounded up to a power of two GiB, at ``memory_mts``;
* ``numactl --hardware``: one NUMA node per socket, CPUs numbered as Linux numbers them
  (first threads of all cores, then the siblings), memory split evenly; ``numactl
  --cpunodebind=N --membind=N CMD`` runs CMD unbound (the container has no such nodes).

They are the lab's stand-ins, not measurements: the bandwidth probe that runs through them
measures this machine.
"""

from __future__ import annotations

import math
from pathlib import Path

from ailab_deploy.lab.emulator.settings import Settings

MIB = 1 << 20
GIB = 1 << 30

SHARE_DIR = "usr/local/share/ailab-lab"
SBIN_DIR = "usr/local/sbin"
HEADER = "# lab stand-in: printed from the lab's settings.json (hardware), not read from hardware\n"


def _numbers(settings: Settings) -> tuple[int, int, int, int, int, int]:
    hardware = settings.hardware
    sockets = int(hardware["sockets"])
    cores = int(hardware["cores_per_socket"])
    threads = int(hardware["threads_per_core"])
    total = settings.host_memory
    channels = int(hardware.get("memory_channels_per_socket", 4))
    mts = int(hardware.get("memory_mts", 2133))
    return sockets, cores, threads, total, channels, mts


def dmidecode_memory_text(settings: Settings) -> str:
    sockets, _, _, total, channels, mts = _numbers(settings)
    dimms = sockets * channels
    dimm_gib = 2 ** math.ceil(math.log2(max(1.0, total / dimms / GIB)))
    kind = str(settings.hardware.get("memory_type", "DDR4"))
    blocks = ["# dmidecode 3.4", "Getting SMBIOS from sysfs.", "SMBIOS 3.0.0 present.", ""]
    handle = 0x1100
    for socket in range(sockets):
        for channel in range(channels):
            letter = chr(ord("A") + channel)
            for slot in (1, 2):
                populated = slot == 1
                blocks += [
                    f"Handle 0x{handle:04X}, DMI type 17, 40 bytes",
                    "Memory Device",
                    f"\tSize: {dimm_gib} GB" if populated else "\tSize: No Module Installed",
                    f"\tLocator: P{socket + 1}-DIMM{letter}{slot}",
                    f"\tBank Locator: P{socket}_Node{socket}_Channel{channel}_Dimm{slot - 1}",
                    f"\tType: {kind}" if populated else "\tType: Unknown",
                    "\tSpeed: " + (f"{mts} MT/s" if populated else "Unknown"),
                    "\tConfigured Memory Speed: " + (f"{mts} MT/s" if populated else "Unknown"),
                    "",
                ]
                handle += 1
    return "\n".join(blocks) + "\n"


def numactl_hardware_text(settings: Settings) -> str:
    sockets, cores, threads, total, _, _ = _numbers(settings)
    all_cores = sockets * cores
    lines = [f"available: {sockets} nodes (0-{sockets - 1})"]
    per_node_mib = total // sockets // MIB
    for node in range(sockets):
        cpus = [
            thread * all_cores + node * cores + core for thread in range(threads) for core in range(cores)
        ]
        lines.append(f"node {node} cpus: {' '.join(str(cpu) for cpu in cpus)}")
        lines.append(f"node {node} size: {per_node_mib} MB")
        lines.append(f"node {node} free: {per_node_mib * 9 // 10} MB")
    lines.append("node distances:")
    lines.append("node " + " ".join(f"{n:3d}" for n in range(sockets)))
    for node in range(sockets):
        lines.append(f"  {node}: " + " ".join(f"{10 if n == node else 21:3d}" for n in range(sockets)))
    return "\n".join(lines) + "\n"


DMIDECODE_SCRIPT = f"""#!/bin/sh
{HEADER}# Only `dmidecode -t memory` (also --type memory, -t 17) is answered.
case "$*" in
    "-t memory"|"--type memory"|"-t 17"|"--type 17") exec cat /{SHARE_DIR}/dmidecode-memory.txt ;;
    *) echo "lab stand-in dmidecode: only -t memory" >&2; exit 2 ;;
esac
"""

NUMACTL_SCRIPT = f"""#!/bin/sh
{HEADER}# `numactl --hardware` prints the settings' layout; with --cpunodebind/--membind
# the command runs unbound.
if [ "$*" = "--hardware" ] || [ "$*" = "-H" ]; then exec cat /{SHARE_DIR}/numactl-hardware.txt; fi
while [ $# -gt 0 ]; do
    case "$1" in
        --cpunodebind=*|--membind=*|--physcpubind=*|--localalloc|--interleave=*) shift ;;
        -*) echo "lab stand-in numactl: $1 is not supported" >&2; exit 2 ;;
        *) exec "$@" ;;
    esac
done
echo "lab stand-in numactl: nothing to run" >&2
exit 2
"""


def write_node_hardware(rootfs: Path, settings: Settings) -> None:
    """Put the stand-ins into the node's root file system (rewritten on every ``lab up``)."""
    share = rootfs / SHARE_DIR
    share.mkdir(parents=True, exist_ok=True)
    (share / "dmidecode-memory.txt").write_text(dmidecode_memory_text(settings))
    (share / "numactl-hardware.txt").write_text(numactl_hardware_text(settings))
    sbin = rootfs / SBIN_DIR
    sbin.mkdir(parents=True, exist_ok=True)
    for name, script in (("dmidecode", DMIDECODE_SCRIPT), ("numactl", NUMACTL_SCRIPT)):
        path = sbin / name
        path.write_text(script)
        path.chmod(0o755)
