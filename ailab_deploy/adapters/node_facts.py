"""Read a node's hardware: its API answers, and over SSH what only the node itself can tell.

SSH uses node preparation's session (:class:`~ailab_deploy.adapters.nodeprep.NodeSession`):
the host key is checked strictly against the state directory's known_hosts, never trusted
on first use. Each remote command ends with a marker line carrying its exit status, so a
missing tool is told apart from empty output.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from ailab_deploy.adapters.bandwidth_probe import PROBE_SOURCE, parse_probe_output
from ailab_deploy.adapters.nodeprep import NodeSession, NodeTarget
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.core.discovery import DiscoveryError, NodeApiFacts, NumaNode, api_facts, node_name
from ailab_deploy.errors import AilabError, InputError

RC_MARKER = "::ailab-rc "
# numactl's own listing where it is installed; else the kernel's view in sysfs, one line a node
NUMA_COMMAND = (
    "if command -v numactl >/dev/null 2>&1; then numactl --hardware; else "
    "for n in /sys/devices/system/node/node[0-9]*; do "
    "echo \"${n##*/} cpus $(cat $n/cpulist) kb $(awk '/MemTotal/ {print $4}' $n/meminfo)\"; done; fi"
)
DMIDECODE_COMMAND = "dmidecode -t memory"


def read_api(client: ProxmoxClient, wanted_node: str | None = None) -> NodeApiFacts:
    """The node's name, CPU, memory, storages and bridges from its API (reads only)."""
    try:
        name = node_name(client.get("nodes"), wanted_node)
        return api_facts(
            name,
            client.get(f"nodes/{name}/status"),
            client.get(f"nodes/{name}/storage"),
            client.get(f"nodes/{name}/network"),
        )
    except DiscoveryError as error:
        raise InputError(f"the node's API answer: {error}") from None


@dataclass
class SshAnswers:
    dmidecode: str | None  # None: the command failed (the reason is in notes)
    numa: str | None
    notes: list[str]


class NodeShell:
    """Commands on the node over node preparation's SSH session."""

    def __init__(self, target: NodeTarget) -> None:
        self.session = NodeSession(target)
        self.host = target.host

    def run(self, command: str) -> tuple[int, str]:
        from pyinfra.facts.server import Command

        output = self.session.fact(Command, command=f'{{ {command}; }} 2>&1; echo "{RC_MARKER}$?"')
        lines = (output or "").splitlines() if isinstance(output, str) else list(output or [])
        if not lines or not lines[-1].startswith(RC_MARKER):
            raise AilabError(f"{self.host}: no answer from `{command.split()[0]}` over SSH")
        return int(lines[-1].removeprefix(RC_MARKER)), "\n".join(lines[:-1])

    def close(self) -> None:
        self.session.close()


def read_over_ssh(shell: NodeShell) -> SshAnswers:
    notes: list[str] = []
    rc, dmidecode = shell.run(DMIDECODE_COMMAND)
    if rc != 0:
        notes.append(f"`{DMIDECODE_COMMAND}` exited {rc} on the node: {dmidecode.strip()[-200:]}")
    rc_numa, numa = shell.run(NUMA_COMMAND)
    if rc_numa != 0:
        notes.append(f"NUMA listing exited {rc_numa} on the node: {numa.strip()[-200:]}")
    return SshAnswers(dmidecode if rc == 0 else None, numa if rc_numa == 0 else None, notes)


def measure_bandwidth(
    shell: NodeShell,
    nodes: list[NumaNode],
    workers: int,
    buffer_bytes: int,
    progress: Callable[[str], None],
) -> dict[int, float]:
    """GB/s of the copy probe on each NUMA node, bound to it: numactl where installed (CPUs and
    memory), else taskset (CPUs; first-touch puts the buffers on the same node)."""
    results: dict[int, float] = {}
    for node in nodes:
        probe = shlex.join(["python3", "-c", PROBE_SOURCE, str(workers), str(buffer_bytes)])
        cpus = ",".join(str(cpu) for cpu in node.cpus)
        command = (
            f"if command -v numactl >/dev/null 2>&1; then "
            f"numactl --cpunodebind={node.index} --membind={node.index} {probe}; "
            f"else taskset -c {cpus} {probe}; fi"
        )
        progress(f"discover: bandwidth probe on NUMA node {node.index} ({workers} workers)")
        rc, output = shell.run(command)
        if rc != 0:
            raise AilabError(f"{shell.host}: the bandwidth probe exited {rc}: {output.strip()[-200:]}")
        try:
            results[node.index] = parse_probe_output(output)
        except (ValueError, KeyError) as error:
            raise AilabError(f"{shell.host}: the bandwidth probe: {error}") from None
    return results
