"""The lab node's dmidecode and numactl stand-ins print the lab settings, readable by discover's parsers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ailab_deploy.core.discovery import memory_layout, parse_dmidecode_memory, parse_numa
from ailab_deploy.lab.containers.node_hardware import (
    dmidecode_memory_text,
    numactl_hardware_text,
    write_node_hardware,
)
from ailab_deploy.lab.emulator.settings import load_settings

GIB = 1 << 30


@pytest.mark.parametrize(
    ("hardware", "sockets", "cores", "threads", "memory_gib", "channels", "mts", "dimm_gib"),
    [
        ({}, 2, 18, 2, 126, 4, 2133, 16),  # the lab's defaults: vms.yaml's E5-2699 v3 box
        (
            {
                "sockets": 1,
                "cores_per_socket": 8,
                "threads_per_core": 1,
                "memory": "64G",
                "memory_channels_per_socket": 2,
                "memory_mts": 3200,
            },
            1,
            8,
            1,
            64,
            2,
            3200,
            32,
        ),
        (
            {
                "sockets": 4,
                "cores_per_socket": 12,
                "threads_per_core": 2,
                "memory": "500G",
                "memory_channels_per_socket": 6,
                "memory_mts": 2666,
            },
            4,
            12,
            2,
            500,
            6,
            2666,
            32,
        ),
    ],
)
def test_stand_ins_print_the_settings(
    tmp_path: Path,
    hardware: dict[str, object],
    sockets: int,
    cores: int,
    threads: int,
    memory_gib: int,
    channels: int,
    mts: int,
    dimm_gib: int,
) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"hardware": hardware}))
    settings = load_settings(tmp_path)
    layout = memory_layout(parse_dmidecode_memory(dmidecode_memory_text(settings)), sockets)
    assert layout.channels_per_socket.value == channels
    assert layout.memory_mts is not None and layout.memory_mts.value == mts
    assert layout.populated == sockets * channels and layout.slots == 2 * sockets * channels
    assert layout.installed_bytes == sockets * channels * dimm_gib * GIB
    assert layout.installed_bytes >= memory_gib * GIB  # the kernel sees less than is installed
    nodes = parse_numa(numactl_hardware_text(settings))
    assert len(nodes) == sockets
    assert all(len(node.cpus) == cores * threads for node in nodes)
    every_cpu = sorted(cpu for node in nodes for cpu in node.cpus)
    assert every_cpu == list(range(sockets * cores * threads))
    assert sum(node.memory_bytes or 0 for node in nodes) == pytest.approx(memory_gib * GIB, rel=1e-3)


def test_stand_ins_are_executable_scripts_in_the_node(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    write_node_hardware(rootfs, load_settings(tmp_path))
    for name in ("dmidecode", "numactl"):
        script = rootfs / "usr/local/sbin" / name
        assert script.stat().st_mode & 0o111 and script.read_text().startswith("#!/bin/sh\n")
        assert "lab stand-in" in script.read_text()
