"""Reading a node's answers: dmidecode -t memory, the NUMA listings, the API's status/storage/network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ailab_deploy.core.discovery import (
    DiscoveryError,
    api_facts,
    expand_cpu_list,
    memory_layout,
    node_name,
    parse_dmidecode_memory,
    parse_numa,
)
from ailab_deploy.core.units import GIB, MIB

DMIDECODE = Path(__file__).parent / "dmidecode"


@pytest.mark.parametrize(
    ("sample", "sockets", "channels", "mts", "installed_gib", "populated", "slots", "named"),
    [
        # channels from Bank Locator "Channel<n>"; socket 2 has only three: the fewer counts
        ("supermicro-2s-4ch", 2, 3, 1866, 112, 7, 8, True),
        # "PROC n DIMM m" names no channel: one DIMM per channel is assumed, and said so
        ("hp-proc-dimm-2s", 2, 2, 1333, 32, 4, 5, False),
        # one socket, DIMM_A1 and DIMM_A2 share channel A
        ("desktop-1s-2ch", 1, 2, 4400, 96, 3, 3, True),
        # no configured speed reported: the rated one, marked as rated
        ("rated-only-1s", 1, 1, 1333, 4, 1, 1, True),
    ],
)
def test_memory_layout_from_dmidecode(
    sample: str,
    sockets: int,
    channels: int,
    mts: int,
    installed_gib: int,
    populated: int,
    slots: int,
    named: bool,
) -> None:
    dimms = parse_dmidecode_memory((DMIDECODE / f"{sample}.txt").read_text())
    layout = memory_layout(dimms, sockets)
    assert layout.channels_per_socket.value == channels
    assert layout.memory_mts is not None and layout.memory_mts.value == mts
    assert layout.installed_bytes == installed_gib * GIB
    assert (layout.populated, layout.slots) == (populated, slots)
    assert ("assumed" not in layout.channels_per_socket.source) == named
    assert ("rated" in layout.memory_mts.source) == (sample == "rated-only-1s")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Handle 0x0001, DMI type 16\nPhysical Memory Array\n\tUse: System Memory\n", "no 'Memory Device'"),
        ("Memory Device\n\tSize: No Module Installed\n\tLocator: DIMM_A1\n", "no populated DIMM"),
        ("", "no 'Memory Device'"),
    ],
)
def test_dmidecode_without_dimms_is_an_error(text: str, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        memory_layout(parse_dmidecode_memory(text), 1)


NUMACTL_2 = """available: 2 nodes (0-1)
node 0 cpus: 0 1 2 3 8 9 10 11
node 0 size: 64326 MB
node 0 free: 60000 MB
node 1 cpus: 4 5 6 7 12 13 14 15
node 1 size: 64506 MB
node 1 free: 61000 MB
node distances:
node   0   1
  0:  10  21
  1:  21  10
"""
SYSFS_2 = "node0 cpus 0-3,8-11 kb 65870848\nnode1 cpus 4-7,12-15 kb 66054144\n"


@pytest.mark.parametrize(
    ("text", "cpus", "memory"),
    [
        (NUMACTL_2, [(0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)], [64326 * MIB, 64506 * MIB]),
        (
            SYSFS_2,
            [(0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)],
            [65870848 * 1024, 66054144 * 1024],
        ),
        ("node0 cpus 0-1 kb 24000000\n", [(0, 1)], [24000000 * 1024]),
        ("available: 1 nodes (0)\nnode 0 cpus: 0 1 2 3\n", [(0, 1, 2, 3)], [None]),
    ],
)
def test_numa_layout(text: str, cpus: list[tuple[int, ...]], memory: list[int | None]) -> None:
    nodes = parse_numa(text)
    assert [node.index for node in nodes] == list(range(len(cpus)))
    assert [node.cpus for node in nodes] == cpus
    assert [node.memory_bytes for node in nodes] == memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-3", (0, 1, 2, 3)),
        ("0,2,4", (0, 2, 4)),
        ("0-1,8-9", (0, 1, 8, 9)),
        ("5", (5,)),
        ("0 1 2", (0, 1, 2)),
    ],
)
def test_cpu_lists(text: str, expected: tuple[int, ...]) -> None:
    assert expand_cpu_list(text) == expected


@pytest.mark.parametrize("text", ["", "no numa here\n", "node 0 cpus: a-b\n"])
def test_numa_listing_that_says_nothing_is_an_error(text: str) -> None:
    with pytest.raises(DiscoveryError):
        parse_numa(text)


def _status(sockets: Any = 2, cores: Any = 36, cpus: Any = 72, total: Any = 135291469824) -> dict[str, Any]:
    return {
        "cpuinfo": {
            "model": "Intel(R) Xeon(R) CPU E5-2699 v3 @ 2.30GHz",
            "sockets": sockets,
            "cores": cores,
            "cpus": cpus,
        },
        "memory": {"total": total, "used": 1, "free": 1},
    }


STORAGES = [
    {
        "storage": "local",
        "type": "dir",
        "content": "iso,vztmpl,backup",
        "total": 100_000_000_000,
        "shared": 0,
        "active": 1,
    },
    {
        "storage": "local-lvm",
        "type": "lvmthin",
        "content": "images,rootdir",
        "total": 237_000_000_000,
        "active": 1,
    },
    {"storage": "nfs-off", "type": "nfs", "content": "images", "total": 1, "active": 0},
    {
        "storage": "ceph",
        "type": "rbd",
        "content": "images",
        "total": 4_000_000_000_000,
        "shared": 1,
        "active": 1,
    },
]
NETWORKS = [
    {"iface": "eno1", "type": "eth"},
    {"iface": "vmbr1", "type": "bridge"},
    {"iface": "vmbr0", "type": "bridge"},
    {"iface": "bond0", "type": "bond"},
]


def test_api_facts_divide_pves_totals() -> None:
    facts = api_facts("pve1", _status(), STORAGES, NETWORKS)
    assert (facts.sockets.value, facts.cores_per_socket.value, facts.threads_per_core.value) == (2, 18, 2)
    assert facts.memory_bytes.value == 135291469824
    assert facts.cpu_model.value == "Intel(R) Xeon(R) CPU E5-2699 v3 @ 2.30GHz"
    assert [(s.name, s.type, s.total_bytes, s.shared, s.holds_disks) for s in facts.storages] == [
        ("local", "dir", 100_000_000_000, False, False),
        ("local-lvm", "lvmthin", 237_000_000_000, False, True),
        ("ceph", "rbd", 4_000_000_000_000, True, True),
    ]
    assert facts.bridges == ("vmbr0", "vmbr1")
    assert "cpuinfo.cores 36 / 2 sockets" in facts.cores_per_socket.source


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"memory": {"total": 1}}, "no 'cpuinfo'"),
        (_status(sockets="two"), "'sockets' is not a number"),
        (_status(cores=0), "'cores' must be positive"),
        (_status(sockets=2, cores=35), "do not divide evenly"),
        (_status(cores=36, cpus=70), "do not divide evenly"),
        (_status(total=None), "'total' is not a number"),
    ],
)
def test_api_answers_that_do_not_fit(status: dict[str, Any], message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        api_facts("pve", status, [], [])


@pytest.mark.parametrize(
    ("nodes", "wanted", "expected"),
    [
        ([{"node": "pve"}], None, "pve"),
        ([{"node": "a"}, {"node": "b"}], "b", "b"),
        ([{"node": "a"}, {"node": "b"}], None, DiscoveryError),
        ([{"node": "a"}], "c", DiscoveryError),
        ([], None, DiscoveryError),
    ],
)
def test_node_name(nodes: list[dict[str, str]], wanted: str | None, expected: Any) -> None:
    if expected is DiscoveryError:
        with pytest.raises(DiscoveryError):
            node_name(nodes, wanted)
    else:
        assert node_name(nodes, wanted) == expected
