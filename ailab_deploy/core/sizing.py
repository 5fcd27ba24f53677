"""What the hardware can deliver: LLM memory, threads, NUMA and tokens/s; pgtune settings.

CPU token generation is bound by memory bandwidth: every generated token reads
all weights plus the KV cache written so far. So expected tokens/s is the
effective bandwidth of the socket the model runs on divided by the bytes read
per token. Every step is kept as text so the user sees the arithmetic.
See ../shared/reference/llm-and-services.md §3-§6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ailab_deploy.core.cluster import NodeUse, hardware_of, node_use, placements
from ailab_deploy.core.energy import IdleCost, TokenCost, idle_month_cost, token_cost
from ailab_deploy.core.placement import Placement
from ailab_deploy.core.plan import VM, Host, Plan
from ailab_deploy.core.problems import Problem
from ailab_deploy.core.units import GIB, KIB, MIB, format_bytes

# Llama 3.1 8B: 32 layers, 8 KV heads (GQA), head_dim 128; GGUF sizes in bytes.
_LLAMA31_8B_WEIGHTS = {
    "Q4_0": 4_660_000_000,
    "Q4_K_M": 4_920_000_000,
    "Q5_K_M": 5_730_000_000,
    "Q8_0": 8_540_000_000,
    "F16": 16_100_000_000,
}
# Bytes per cached K or V element: f16 is 2; q8_0 and q4_0 pack 32 values with an f16 scale.
KV_BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
RUNTIME_OVERHEAD = 1 * GIB  # compute buffers, runtime, tokenizer
GUEST_OS_RESERVE = 1 * GIB  # the VM's own OS, page tables, sshd, journald
IDLE_FACTOR = 4  # a VM with more than 4x what the model needs mostly idles
REPORTED_ESTIMATE_TPS = (15.0, 25.0)  # the original notes' expectation, for comparison


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    kv_heads: int
    head_dim: int
    weights: dict[str, int]


_MODELS = {
    "llama3.1:8b": ModelShape("Llama 3.1 8B", 32, 8, 128, _LLAMA31_8B_WEIGHTS),
}


def known_model(name: str) -> ModelShape | None:
    return _MODELS.get(name.removesuffix(":latest"))


def model_shape(plan: Plan) -> ModelShape:
    llm = plan.llm
    arch = llm.architecture
    if arch is not None:
        return ModelShape(
            llm.model, arch.layers, arch.kv_heads, arch.head_dim, {llm.quantization: arch.weights}
        )
    shape = known_model(llm.model)
    if shape is None:
        raise ValueError(f"model {llm.model!r} needs llm.architecture")
    return shape


def kv_bytes_per_token(shape: ModelShape, kv_cache_type: str) -> float:
    """2 (K and V) x layers x KV heads x head dim x bytes per element."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * KV_BYTES_PER_ELEMENT[kv_cache_type]


@dataclass(frozen=True)
class NumaAdvice:
    cpu_type: str
    sockets: int
    cores: int
    numa: bool
    affinity: str
    numa0: str


@dataclass(frozen=True)
class LlmSizing:
    vm_name: str
    vm_memory_bytes: int
    weights_bytes: int
    kv_bytes_per_token: float
    kv_cache_bytes: float
    min_memory_bytes: float
    threads: int
    numa: NumaAdvice
    theoretical_bandwidth: float  # bytes/s of one socket
    effective_bandwidth: float
    bandwidth_source: str
    bytes_per_token: float
    expected_tokens_per_second: float
    ceiling_tokens_per_second: float
    memory_steps: tuple[str, ...]
    throughput_steps: tuple[str, ...]
    cost: TokenCost  # electricity per token at the expected speed
    warnings: tuple[str, ...] = field(default=())


def _gb(size: float) -> str:
    return f"{size / 1e9:.2f} GB"


def _socket_cpu_list(host: Host, vcpus: int) -> str:
    """Host CPUs of socket 0 as Linux numbers them: cores first, then their HT siblings."""
    per_socket_cores = host.cores_per_socket
    if vcpus <= per_socket_cores:
        return f"0-{vcpus - 1}"
    sibling_start = host.sockets * per_socket_cores
    extra = min(vcpus - per_socket_cores, per_socket_cores * (host.threads_per_core - 1))
    return f"0-{per_socket_cores - 1},{sibling_start}-{sibling_start + extra - 1}"


def size_llm(plan: Plan, vm: VM) -> LlmSizing:
    llm = plan.llm
    host = hardware_of(plan, vm)
    shape = model_shape(plan)
    weights = shape.weights.get(llm.quantization)
    if weights is None:
        raise ValueError(f"no size for {llm.model} {llm.quantization}")
    per_token = kv_bytes_per_token(shape, llm.kv_cache_type)
    cached_tokens = llm.context_length * llm.parallel
    kv_cache = per_token * cached_tokens
    min_memory = weights + kv_cache + RUNTIME_OVERHEAD + GUEST_OS_RESERVE
    vm_memory = vm.memory * MIB
    memory_steps = (
        f"weights: {shape.name} {llm.quantization} = {_gb(weights)} ({format_bytes(weights)})",
        f"KV cache per token = 2 x {shape.layers} layers x {shape.kv_heads} KV heads x "
        f"{shape.head_dim} head dim x {KV_BYTES_PER_ELEMENT[llm.kv_cache_type]:g} B ({llm.kv_cache_type}) "
        f"= {format_bytes(per_token)}",
        f"KV cache = {format_bytes(per_token)} x {llm.context_length} context x {llm.parallel} parallel "
        f"= {format_bytes(kv_cache)}",
        f"minimum RAM = weights {format_bytes(weights)} + KV {format_bytes(kv_cache)} + runtime "
        f"{format_bytes(RUNTIME_OVERHEAD)} + guest OS {format_bytes(GUEST_OS_RESERVE)} "
        f"= {format_bytes(min_memory)}",
    )
    threads = min(vm.vcpus, host.cores_per_socket)
    socket_threads = host.cores_per_socket * host.threads_per_core
    vcpus_on_socket = min(vm.vcpus, socket_threads)
    numa = NumaAdvice(
        cpu_type="host",
        sockets=1,
        cores=vcpus_on_socket,
        numa=True,
        affinity=_socket_cpu_list(host, vcpus_on_socket),
        numa0=f"cpus=0-{vcpus_on_socket - 1},hostnodes=0,memory={vm.memory},policy=bind",
    )
    theoretical = host.memory_channels_per_socket * host.memory_mts * 1e6 * 8
    if host.measured_bandwidth_gbs is not None:
        effective = host.measured_bandwidth_gbs * 1e9
        source = "measured"
        bandwidth_step = (
            f"effective bandwidth = {host.measured_bandwidth_gbs:g} GB/s (measured, from the plan)"
        )
    else:
        effective = theoretical * host.memory_efficiency
        source = "computed"
        bandwidth_step = (
            f"effective bandwidth = {_gb(theoretical)}/s x {host.memory_efficiency:g} efficiency "
            f"= {_gb(effective)}/s"
        )
    average_context = llm.context_length / 2
    bytes_per_token = weights + per_token * average_context
    expected = effective / bytes_per_token
    ceiling = theoretical / bytes_per_token
    low, high = REPORTED_ESTIMATE_TPS
    throughput_steps = (
        f"bandwidth of one socket = {host.memory_channels_per_socket} channels x {host.memory_mts} MT/s "
        f"x 8 B = {_gb(theoretical)}/s (theoretical)",
        bandwidth_step,
        f"bytes read per token = weights {_gb(weights)} + KV {format_bytes(per_token)}/token x "
        f"{average_context:.0f} tokens (half the context, on average) = {_gb(bytes_per_token)}",
        f"expected = {_gb(effective)}/s / {_gb(bytes_per_token)} = {expected:.1f} tokens/s",
        f"ceiling at theoretical bandwidth = {_gb(theoretical)}/s / {_gb(bytes_per_token)} "
        f"= {ceiling:.1f} tokens/s",
        f"{low:g}-{high:g} tokens/s would need {_gb(low * bytes_per_token)}/s-"
        f"{_gb(high * bytes_per_token)}/s "
        f"of effective bandwidth, {'more' if low * bytes_per_token > theoretical else 'less'} than "
        f"one socket's theoretical {_gb(theoretical)}/s",
    )
    warnings: list[str] = []
    if vm_memory < min_memory:
        warnings.append(
            f"{vm.name} has {format_bytes(vm_memory)} but the model needs at least {format_bytes(min_memory)}"
        )
    elif vm_memory > IDLE_FACTOR * min_memory:
        warnings.append(
            f"{vm.name} has {format_bytes(vm_memory)}, over {IDLE_FACTOR}x the {format_bytes(min_memory)} "
            f"the model needs: most of its RAM would idle"
        )
    if vm.vcpus > socket_threads:
        warnings.append(
            f"{vm.name}'s {vm.vcpus} vCPUs exceed one socket ({socket_threads} threads): cross-NUMA "
            f"memory traffic slows generation; keep it to {socket_threads} vCPUs or fewer"
        )
    elif vm.vcpus > host.cores_per_socket:
        warnings.append(
            f"{vm.name}'s {vm.vcpus} vCPUs exceed the {host.cores_per_socket} physical cores of one "
            f"socket: generation uses {threads} threads; pin the VM to socket 0 (affinity "
            f"{numa.affinity}) so no vCPU runs on the other NUMA node"
        )
    if vm.sockets > 1:
        warnings.append(
            f"{vm.name} has {vm.sockets} virtual sockets: present 1 socket x {vm.vcpus} cores so the "
            f"runtime counts physical cores correctly"
        )
    return LlmSizing(
        vm_name=vm.name,
        vm_memory_bytes=vm_memory,
        weights_bytes=weights,
        kv_bytes_per_token=per_token,
        kv_cache_bytes=kv_cache,
        min_memory_bytes=min_memory,
        threads=threads,
        numa=numa,
        theoretical_bandwidth=theoretical,
        effective_bandwidth=effective,
        bandwidth_source=source,
        bytes_per_token=bytes_per_token,
        expected_tokens_per_second=expected,
        ceiling_tokens_per_second=ceiling,
        memory_steps=memory_steps,
        throughput_steps=throughput_steps,
        cost=token_cost(host, expected, "predicted"),
        warnings=tuple(warnings),
    )


# ---- PostgreSQL: pgtune's formulas (le0pard/pgtune), in kB as pgtune computes them.

_KB_PER_MB = 1024
_KB_PER_GB = 1024 * 1024
_WAL_SIZES_MB = {
    "web": (1024, 4096),
    "oltp": (2048, 8192),
    "dw": (4096, 16384),
    "desktop": (100, 2048),
    "mixed": (1024, 4096),
}
_DEFAULT_CONNECTIONS = {"web": 200, "oltp": 300, "dw": 40, "desktop": 20, "mixed": 100}
_IO_CONCURRENCY = {"hdd": 2, "ssd": 200, "nvme": 1000}
POSTGRES_DEFAULT_WORKER_PROCESSES = 8


def format_kb(value_kb: int) -> str:
    """pgtune's rendering: whole GB, else whole MB, else kB."""
    if value_kb % _KB_PER_GB == 0:
        return f"{value_kb // _KB_PER_GB}GB"
    if value_kb % _KB_PER_MB == 0:
        return f"{value_kb // _KB_PER_MB}MB"
    return f"{value_kb}kB"


@dataclass(frozen=True)
class PostgresSizing:
    vm_name: str
    version: int
    memory_kb: int
    cpus: int
    storage_kind: str
    workload: str
    settings: dict[str, str]


def pgtune(
    memory_kb: int,
    cpus: int,
    storage_kind: str,
    workload: str,
    connections: int | None,
    version: int,
) -> dict[str, str]:
    """postgresql.conf settings for the given machine, as pgtune computes them."""
    max_connections = connections or _DEFAULT_CONNECTIONS[workload]
    shared_buffers = memory_kb // 16 if workload == "desktop" else memory_kb // 4
    cache = memory_kb // 4 if workload == "desktop" else memory_kb * 3 // 4
    maintenance = memory_kb // 8 if workload == "dw" else memory_kb // 16
    maintenance = min(maintenance, 8 * _KB_PER_GB)
    wal_buffers = 3 * shared_buffers // 100
    if wal_buffers > 14 * _KB_PER_MB:  # pgtune caps at 16MB and rounds 14-16MB up to it
        wal_buffers = 16 * _KB_PER_MB
    wal_buffers = max(wal_buffers, 32)
    min_wal, max_wal = _WAL_SIZES_MB[workload]
    settings: dict[str, str] = {
        "max_connections": str(max_connections),
        "shared_buffers": format_kb(shared_buffers),
        "effective_cache_size": format_kb(cache),
        "maintenance_work_mem": format_kb(maintenance),
        "checkpoint_completion_target": "0.9",
        "wal_buffers": format_kb(wal_buffers),
        "default_statistics_target": "500" if workload == "dw" else "100",
        "random_page_cost": "4" if storage_kind == "hdd" else "1.1",
        "effective_io_concurrency": str(_IO_CONCURRENCY[storage_kind]),
    }
    # Parallel settings only from 4 CPUs; below that PostgreSQL's default of 8 workers stands.
    worker_processes = cpus if cpus >= 4 else POSTGRES_DEFAULT_WORKER_PROCESSES
    work_mem = (memory_kb - shared_buffers) // ((max_connections + worker_processes) * 3)
    if workload in ("dw", "mixed"):
        work_mem //= 2
    elif workload == "desktop":
        work_mem //= 6
    settings["work_mem"] = format_kb(max(work_mem, 4 * _KB_PER_MB))
    settings["huge_pages"] = "try" if shared_buffers >= 2 * _KB_PER_GB else "off"
    settings["min_wal_size"] = format_kb(min_wal * _KB_PER_MB)
    settings["max_wal_size"] = format_kb(max_wal * _KB_PER_MB)
    if cpus >= 4:
        half = math.ceil(cpus / 2)
        settings["max_worker_processes"] = str(cpus)
        settings["max_parallel_workers_per_gather"] = str(half if workload == "dw" else min(half, 4))
        settings["max_parallel_workers"] = str(cpus)
        settings["max_parallel_maintenance_workers"] = str(min(4, half))
    if workload in ("web", "oltp", "mixed") and version >= 12:
        settings["jit"] = "off"
    if version >= 15:
        settings["wal_compression"] = "lz4"
    elif version >= 10:
        settings["wal_compression"] = "on"
    return settings


def size_postgres(plan: Plan, vm: VM) -> PostgresSizing:
    db = plan.database
    pool = plan.storage(vm.storage)
    kind = pool.kind if pool is not None else "ssd"
    version = plan.postgresql_major
    memory_kb = vm.memory * MIB // KIB
    return PostgresSizing(
        vm_name=vm.name,
        version=version,
        memory_kb=memory_kb,
        cpus=vm.vcpus,
        storage_kind=kind,
        workload=db.workload,
        settings=pgtune(memory_kb, vm.vcpus, kind, db.workload, db.max_connections, version),
    )


@dataclass(frozen=True)
class Sizing:
    llm: LlmSizing | None
    postgres: PostgresSizing | None
    idle: IdleCost
    placements: tuple[Placement, ...] = ()
    nodes: tuple[NodeUse, ...] = ()


def size_plan(plan: Plan) -> Sizing:
    llm_vms = plan.vms_with_role("llm")
    pg_vms = plan.vms_with_role("postgresql")
    chosen, _ = placements(plan)
    return Sizing(
        llm=size_llm(plan, llm_vms[0]) if llm_vms else None,
        postgres=size_postgres(plan, pg_vms[0]) if pg_vms else None,
        idle=idle_month_cost(*(node.hardware for node in plan.nodes)),
        placements=tuple(chosen),
        nodes=tuple(node_use(plan, chosen)),
    )


def sizing_findings(plan: Plan) -> list[Problem]:
    """Sizing warnings as plan problems, pointing at the LLM VM (for a plan without errors)."""
    findings: list[Problem] = []
    for index, vm in enumerate(plan.vms):
        if "llm" in vm.roles:
            for warning in size_llm(plan, vm).warnings:
                findings.append(Problem(("vms", index), warning, "warning"))
    return findings
