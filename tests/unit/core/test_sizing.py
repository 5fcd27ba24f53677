"""Sizing arithmetic against values computed by hand (see llm-and-services.md §3-§6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ailab_deploy.core.loader import load_plan, load_plan_text
from ailab_deploy.core.sizing import (
    known_model,
    kv_bytes_per_token,
    pgtune,
    size_plan,
)

KIB = 1024
GIB = 1024**3
REPO = Path(__file__).resolve().parents[3]


def test_llama31_8b_kv_cache_is_128_kib_per_token_at_f16() -> None:
    shape = known_model("llama3.1:8b")
    assert shape is not None
    assert kv_bytes_per_token(shape, "f16") == 128 * KIB  # 2 x 32 x 8 x 128 x 2 B


def test_kv_cache_4096_context_is_512_mib_and_q8_is_about_half() -> None:
    shape = known_model("llama3.1:8b")
    assert shape is not None
    assert kv_bytes_per_token(shape, "f16") * 4096 == 512 * 1024**2
    assert kv_bytes_per_token(shape, "q8_0") / kv_bytes_per_token(shape, "f16") == pytest.approx(0.53125)


def test_reference_plan_llm_sizing() -> None:
    sizing = size_plan(load_plan(REPO / "vms.yaml").plan)
    llm = sizing.llm
    assert llm is not None
    # weights 4.92e9 + KV 128 KiB x 8192 ctx x 1 = 1 GiB, + 1 GiB runtime + 1 GiB guest OS
    assert llm.min_memory_bytes == 4_920_000_000 + 3 * GIB
    # one socket of the reference host: 4 channels x 2133 MT/s x 8 B
    assert llm.theoretical_bandwidth == 68_256_000_000
    assert llm.effective_bandwidth == pytest.approx(68_256_000_000 * 0.45)
    # per token: weights + KV of half the context (4096 tokens x 128 KiB)
    assert llm.bytes_per_token == 4_920_000_000 + 4096 * 131072
    assert llm.expected_tokens_per_second == pytest.approx(30_715_200_000 / 5_456_870_912)
    assert 4.0 <= llm.expected_tokens_per_second <= 8.0  # the range one socket gives for Q4_K_M
    assert llm.threads == 18  # physical cores of one socket
    assert llm.numa.affinity == "0-17,36-49"  # 18 cores plus 14 HT siblings on socket 0
    assert any("15-25 tokens/s would need 81.85 GB/s" in step for step in llm.throughput_steps)


def test_reference_plan_warns_about_numa_and_idle_ram() -> None:
    loaded = load_plan(REPO / "vms.yaml")
    assert any("exceed the 18 physical cores" in w for w in loaded.warnings)
    assert any("most of its RAM would idle" in w for w in loaded.warnings)


def _plan_with_llm_vm(cores: int, memory: str) -> str:
    text = (REPO / "tests" / "plans" / "valid-minimal.yaml").read_text()
    text = text.replace("cores_per_socket: 4", "cores_per_socket: 18")
    text = text.replace("memory: 32G", "memory: 128G")
    return text.replace("    cores: 4\n    memory: 12G", f"    cores: {cores}\n    memory: {memory}")


def test_too_small_llm_vm_is_warned() -> None:
    loaded = load_plan_text(_plan_with_llm_vm(4, "4G"))
    assert any("the model needs at least" in w for w in loaded.warnings)


def test_llm_vm_spanning_both_sockets_is_warned() -> None:
    loaded = load_plan_text(_plan_with_llm_vm(40, "12G"))
    assert any("exceed one socket (36 threads)" in w for w in loaded.warnings)


def test_measured_bandwidth_replaces_the_estimate() -> None:
    text = _plan_with_llm_vm(8, "12G").replace(
        "memory_mts: 2400", "memory_mts: 2400\n  measured_bandwidth_gbs: 30"
    )
    llm = size_plan(load_plan_text(text).plan).llm
    assert llm is not None
    assert llm.bandwidth_source == "measured"
    assert llm.effective_bandwidth == 30e9


# pgtune: §6.2 of the reference, 8 GB / 4 CPUs / HDD / web / PG 16, computed with its formulas
PGTUNE_8G_4CPU_HDD_WEB = {
    "max_connections": "200",
    "shared_buffers": "2GB",
    "effective_cache_size": "6GB",
    "maintenance_work_mem": "512MB",
    "checkpoint_completion_target": "0.9",
    "wal_buffers": "16MB",
    "default_statistics_target": "100",
    "random_page_cost": "4",
    "effective_io_concurrency": "2",
    "work_mem": "10280kB",
    "huge_pages": "try",
    "min_wal_size": "1GB",
    "max_wal_size": "4GB",
    "max_worker_processes": "4",
    "max_parallel_workers_per_gather": "2",
    "max_parallel_workers": "4",
    "max_parallel_maintenance_workers": "2",
    "jit": "off",
    "wal_compression": "lz4",
}


def test_pgtune_matches_reference_output() -> None:
    assert pgtune(8 * 1024 * 1024, 4, "hdd", "web", 200, 16) == PGTUNE_8G_4CPU_HDD_WEB


@pytest.mark.parametrize(
    ("memory_gb", "workload", "connections", "work_mem"),
    [
        (8, "mixed", 100, "10082kB"),  # (8 GiB - 2 GiB) / ((100 + 4) x 3) / 2
        (8, "web", 50, "38836kB"),  # (8 GiB - 2 GiB) / ((50 + 4) x 3)
        (256, "web", 20, "2796202kB"),  # pgtune's own unit test
    ],
)
def test_pgtune_work_mem(memory_gb: int, workload: str, connections: int, work_mem: str) -> None:
    assert pgtune(memory_gb * 1024 * 1024, 4, "hdd", workload, connections, 16)["work_mem"] == work_mem


def test_pgtune_ssd_and_small_machine() -> None:
    settings = pgtune(2 * 1024 * 1024, 2, "ssd", "web", 50, 15)
    assert settings["random_page_cost"] == "1.1"
    assert settings["effective_io_concurrency"] == "200"
    assert settings["huge_pages"] == "off"  # shared_buffers 512MB < 2GB
    assert "max_worker_processes" not in settings  # parallel settings only from 4 CPUs
    assert settings["shared_buffers"] == "512MB"
    # (2 GiB - 512 MiB) / ((50 + 8 default workers) x 3) = 9039 kB
    assert settings["work_mem"] == "9039kB"


def test_reference_plan_postgres_sizing_uses_vm_and_storage() -> None:
    pg = size_plan(load_plan(REPO / "vms.yaml").plan).postgres
    assert pg is not None
    assert (pg.cpus, pg.storage_kind, pg.version) == (4, "hdd", 17)  # Debian 13 ships 17
    assert pg.settings["shared_buffers"] == "2GB"
    assert pg.settings["work_mem"] == "20164kB"  # 6 GiB / ((100 + 4) x 3)


def test_pgtune_differs_by_major_only_where_postgresql_does() -> None:
    """PostgreSQL 17 (Debian 13) and 15 (Debian 12) take the same settings on Linux; before 15
    there is no lz4 WAL compression, before 12 no JIT to turn off."""
    machine = (8 * 1024 * 1024, 4, "hdd", "web", 100)
    seventeen, fifteen = pgtune(*machine, 17), pgtune(*machine, 15)
    assert seventeen == fifteen and seventeen["wal_compression"] == "lz4"
    assert pgtune(*machine, 14)["wal_compression"] == "on"
    assert "jit" not in pgtune(*machine, 11) and seventeen["jit"] == "off"
