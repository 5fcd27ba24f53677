"""A plan written from what a node reported: it validates, holds the node's numbers, says where
each came from, and a second look at the same node changes nothing."""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path

import pytest

from ailab_deploy.core.discovered_plan import (
    Connection,
    PlanText,
    capacity_text,
    memory_text,
    new_plan,
    updated_plan,
    yaml_scalar,
)
from ailab_deploy.core.discovery import (
    Fact,
    HostDiscovery,
    api_facts,
    memory_layout,
    parse_dmidecode_memory,
    parse_numa,
)
from ailab_deploy.core.loader import load_plan_text
from ailab_deploy.core.units import GIB, parse_size

SEED = Path(__file__).resolve().parents[3] / "vms.yaml"
DMIDECODE = Path(__file__).parent / "dmidecode"
FINGERPRINT = ":".join(["AB"] * 32)
CONNECTION = Connection(
    host="10.0.0.5",
    port=8006,
    token_id="ailab@pve!deploy",
    token_secret_env="AILAB_PVE_TOKEN_SECRET",
    token_secret_file=None,
    fingerprint=FINGERPRINT,
    ca_file=None,
    ssh_host=None,
    ssh_user="root",
    ssh_private_key_file=None,
)


def discovery(total_lvm: int = 500_000_000_000, mts_sample: str = "supermicro-2s-4ch") -> HostDiscovery:
    api = api_facts(
        "pve7",
        {
            "cpuinfo": {"model": "AMD EPYC 7302 16-Core Processor", "sockets": 2, "cores": 32, "cpus": 64},
            "memory": {"total": 256 * GIB},
        },
        [
            {"storage": "local", "type": "dir", "content": "iso,snippets,backup", "total": 98_831_335_424},
            {"storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir", "total": total_lvm},
            {"storage": "tank", "type": "zfspool", "content": "images", "total": 3_840_000_000_000},
        ],
        [{"iface": "vmbr0", "type": "bridge"}, {"iface": "vmbr9", "type": "bridge"}],
    )
    found = HostDiscovery(api=api)
    found.memory = memory_layout(parse_dmidecode_memory((DMIDECODE / f"{mts_sample}.txt").read_text()), 2)
    found.numa = parse_numa("node0 cpus 0-15,32-47 kb 134000000\nnode1 cpus 16-31,48-63 kb 134000000\n")
    found.bandwidth_gbs = Fact(41.3, "copy probe over SSH (test)")
    return found


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (8006, "8006"),
        (41.3, "41.3"),
        ("vmbr0", "vmbr0"),
        ("ailab@pve!deploy", "ailab@pve!deploy"),
        ("10.0.0.5", '"10.0.0.5"'),
        ("yes", '"yes"'),
        ("Intel(R) Xeon(R) CPU @ 2.30GHz", '"Intel(R) Xeon(R) CPU @ 2.30GHz"'),
        ("a # b", '"a # b"'),
    ],
)
def test_yaml_scalars(value: object, text: str) -> None:
    assert yaml_scalar(value) == text


@pytest.mark.parametrize(
    "size", [237_000_000_000, 2_180_000_000_000, 98_831_335_424, 3 * GIB, 123_456_789_012]
)
def test_capacity_text_reads_back_to_the_bytes_or_just_below(size: int) -> None:
    parsed = parse_size(capacity_text(size), default_unit="G", what="capacity")
    assert size - 10**6 < parsed <= size


@pytest.mark.parametrize(("size", "text"), [(126 * GIB, "126G"), (126 * GIB + 5 * 2**20, "129029M")])
def test_memory_text(size: int, text: str) -> None:
    assert memory_text(size) == text


def test_new_plan_validates_and_holds_the_nodes_numbers() -> None:
    text, notes = new_plan(SEED.read_text(), discovery(), CONNECTION)
    plan = load_plan_text(text, "discovered.yaml").plan
    host = plan.host
    assert (host.sockets, host.cores_per_socket, host.threads_per_core) == (2, 16, 2)
    assert host.memory == 256 * 1024  # MiB
    assert (host.memory_channels_per_socket, host.memory_mts) == (3, 1866)
    assert host.measured_bandwidth_gbs == pytest.approx(41.3)
    assert host.cpu_model == "AMD EPYC 7302 16-Core Processor"
    assert {s.name: s.capacity for s in host.storage} == {
        "local-lvm": 500_000_000_000,
        "tank": 3_840_000_000_000,
    }
    assert plan.proxmox.node == "pve7" and plan.proxmox.fingerprint == FINGERPRINT
    assert str(plan.proxmox.host) == "10.0.0.5" and plan.network.bridge == "vmbr0"
    assert {vm.storage for vm in plan.vms} == {"tank"} and plan.template.storage == "local-lvm"
    assert any("tank: set its kind" in note for note in notes)
    # every discovered value carries where it came from
    for key in ("cpu_model", "sockets", "cores_per_socket", "threads_per_core", "memory"):
        (line,) = [line for line in text.splitlines() if line.startswith(f"  {key}:")]
        assert "GET /nodes/pve7/status" in line.partition("  # ")[2], line
    for key in ("memory_channels_per_socket", "memory_mts"):
        (line,) = [line for line in text.splitlines() if line.startswith(f"  {key}:")]
        assert "dmidecode -t memory" in line.partition("  # ")[2], line


def test_new_plan_without_ssh_marks_the_starters_values() -> None:
    found = discovery()
    found.memory, found.numa, found.bandwidth_gbs = None, [], None
    text, notes = new_plan(SEED.read_text(), found, CONNECTION)
    load_plan_text(text, "discovered.yaml")
    (line,) = [line for line in text.splitlines() if line.startswith("  memory_mts:")]
    assert "NOT READ" in line
    assert any("memory_mts" in note for note in notes)


def test_the_same_node_again_changes_nothing_and_a_change_is_one_line() -> None:
    text, _ = new_plan(SEED.read_text(), discovery(), CONNECTION)
    again, _ = updated_plan(text, discovery())
    assert again == text
    grown, _ = updated_plan(text, discovery(total_lvm=1_000_000_000_000))
    changed = [
        line
        for line in difflib.unified_diff(text.splitlines(), grown.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert len(changed) == 2 and changed[1][1:].strip().startswith("capacity: 1TB"), changed


def test_an_existing_plan_keeps_its_own_comments_and_vms() -> None:
    seed = SEED.read_text()
    text, notes = updated_plan(seed, discovery())
    original_vms = seed[seed.index("\nvms:") :]
    assert original_vms in text  # the VMs block is untouched
    assert "# Proxmox VMID" in text
    assert any("HDDStorage: not a disk storage on node pve7" in note for note in notes)


def test_plan_text_removes_and_adds_list_items() -> None:
    plan = PlanText(
        "a:\n  items:\n    - name: x  # one\n      size: 1\n    - name: y\n      size: 2\n\nb: 1\n"
    )
    plan.remove_item(["a", "items"], 0)
    plan.append_item(["a", "items"], [("name", "z", "new"), ("size", 3, "three")])
    assert (
        plan.text == "a:\n  items:\n    - name: z  # new\n      size: 3  # three\n"
        "    - name: y\n      size: 2\n\nb: 1\n"
    )
    plan.set(["a", "extra"], replace(Fact(1, "x")).value, "added")
    assert plan.get(["a", "extra"]) == 1
