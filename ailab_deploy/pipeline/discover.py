"""Discover a node: its API, then over SSH its DIMMs, NUMA layout and (optionally) bandwidth.

Returns what was found (:class:`HostDiscovery`) for the CLI to write into a plan; each step
says what it does through ``progress`` so a long probe is never silent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ailab_deploy.adapters.node_facts import NodeShell, measure_bandwidth, read_api, read_over_ssh
from ailab_deploy.adapters.nodeprep import NodeTarget
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.core.discovery import (
    DiscoveryError,
    Fact,
    HostDiscovery,
    memory_layout,
    parse_dmidecode_memory,
    parse_numa,
)
from ailab_deploy.errors import InputError


@dataclass(frozen=True)
class DiscoverOptions:
    node_name: str | None = None  # None: the only node the API lists
    ssh: NodeTarget | None = None  # None: the API only
    bandwidth: bool = False
    bandwidth_workers: int | None = None  # None: the physical cores of each NUMA node
    bandwidth_buffer_bytes: int = 256 << 20


def discover(
    client: ProxmoxClient,
    options: DiscoverOptions,
    progress: Callable[[str], None] = lambda message: None,
) -> HostDiscovery:
    progress(f"discover: reading {client.base} (nodes, status, storage, network)")
    found = HostDiscovery(api=read_api(client, options.node_name))
    if options.ssh is None:
        found.notes.append("no SSH to the node (--no-ssh): DDR channels, speed and NUMA not read")
        return found
    progress(f"discover: dmidecode -t memory and the NUMA layout over SSH on {options.ssh.host}")
    shell = NodeShell(options.ssh)
    try:
        answers = read_over_ssh(shell)
        found.notes.extend(answers.notes)
        try:
            if answers.dmidecode is not None:
                dimms = parse_dmidecode_memory(answers.dmidecode)
                found.memory = memory_layout(dimms, int(found.api.sockets.value))
            if answers.numa is not None:
                found.numa = parse_numa(answers.numa)
        except DiscoveryError as error:
            raise InputError(f"{options.ssh.host}: {error}") from None
        if options.bandwidth:
            if not found.numa:
                raise InputError(f"{options.ssh.host}: no NUMA layout, so no per-socket bandwidth probe")
            threads = int(found.api.threads_per_core.value)
            rates = {}
            for node in found.numa:
                workers = options.bandwidth_workers or max(1, len(node.cpus) // threads)
                rates.update(
                    measure_bandwidth(shell, [node], workers, options.bandwidth_buffer_bytes, progress)
                )
            listed = ", ".join(f"node{index} {gbs:.1f}" for index, gbs in sorted(rates.items()))
            found.bandwidth_gbs = Fact(
                round(min(rates.values()), 1),
                f"copy probe over SSH, per NUMA node (GB/s: {listed}); the slowest",
            )
    finally:
        shell.close()
    return found
