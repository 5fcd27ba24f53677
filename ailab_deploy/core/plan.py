"""The declarative plan: pydantic models of vms.yaml.

Field-level rules live here (types, ranges, units, DNS labels); rules that
relate several fields (subnets, uniqueness, capacity) live in ``validate``.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from ailab_deploy.core.releases import DEFAULT_RELEASE, RELEASES, SUPPORTED, DebianRelease
from ailab_deploy.core.units import disk_gib, memory_mib, parse_size

KNOWN_ROLES = ("common", "postgresql", "llm", "python_app", "backup")
VMID_MIN = 100
VMID_MAX = 999_999_999
MANAGEMENT_TAG = "ailab"

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid DNS label (lower-case letters, digits and '-', "
            "1-63 characters, not starting or ending with '-')"
        )
    return value


def _dns_name(value: str) -> str:
    if not _DNS_NAME.match(value) or len(value) > 253:
        raise ValueError(f"{value!r} is not a valid DNS name")
    return value


def _tag(value: str) -> str:
    if not _TAG.match(value):
        raise ValueError(f"{value!r} is not a valid Proxmox tag (a-z, 0-9, _ - + .)")
    return value


def matching(pattern: str, what: str, *, secret: bool = False) -> AfterValidator:
    """A regex check whose error says what was expected; secrets are never echoed."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            shown = "the value" if secret else repr(value)
            raise ValueError(f"{shown} is not {what}")
        return value

    return AfterValidator(check)


def _memory(value: object) -> int:
    return memory_mib(value)


def _disk(value: object) -> int:
    return disk_gib(value)


def _capacity(value: object) -> int:
    return parse_size(value, default_unit="G", what="capacity")


_SIZE_SCHEMA_TEXT = {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([KMGTkmgt](i?[Bb])?)?$"}

MemoryMiB = Annotated[
    int,
    BeforeValidator(_memory),
    WithJsonSchema(
        {
            "description": "Memory: '8G', '8192M', '8GiB' or a whole number of MiB",
            "anyOf": [_SIZE_SCHEMA_TEXT, {"type": "integer", "minimum": 16}],
        }
    ),
]
DiskGiB = Annotated[
    int,
    BeforeValidator(_disk),
    WithJsonSchema(
        {
            "description": "Disk size: '100G', '1T' or a whole number of GiB",
            "anyOf": [_SIZE_SCHEMA_TEXT, {"type": "integer", "minimum": 1}],
        }
    ),
]
CapacityBytes = Annotated[
    int,
    BeforeValidator(_capacity),
    WithJsonSchema(
        {
            "description": "Capacity: '2.18TB' (decimal, as on the label), '237GB', '2T' (binary)",
            "anyOf": [_SIZE_SCHEMA_TEXT, {"type": "integer", "minimum": 1}],
        }
    ),
]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]


def _debian_release(value: int) -> int:
    if value not in RELEASES:
        raise ValueError(f"Debian {value} is not a release the roles support (supported: {SUPPORTED})")
    return value


DebianMajor = Annotated[
    int,
    AfterValidator(_debian_release),
    WithJsonSchema({"type": "integer", "enum": list(RELEASES), "description": "Debian major release"}),
]
DnsName = Annotated[str, AfterValidator(_dns_name)]
Tag = Annotated[str, AfterValidator(_tag)]
VmId = Annotated[int, Field(ge=VMID_MIN, le=VMID_MAX)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Model(BaseModel):
    """Every plan section rejects unknown keys and is immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Retention(Model):
    """How many archives the job keeps (PVE's prune-backups); unset options keep nothing extra."""

    keep_last: int | None = Field(None, ge=1, description="The newest N archives")
    keep_hourly: int | None = Field(None, ge=1, description="The newest archive of each of the last N hours")
    keep_daily: int | None = Field(None, ge=1, description="The newest archive of each of the last N days")
    keep_weekly: int | None = Field(None, ge=1, description="The newest archive of each of the last N weeks")
    keep_monthly: int | None = Field(
        None, ge=1, description="The newest archive of each of the last N months"
    )
    keep_yearly: int | None = Field(None, ge=1, description="The newest archive of each of the last N years")

    def prune_backups(self) -> str | None:
        """PVE's property string (``keep-daily=7,keep-weekly=4``); None keeps every archive."""
        kept = [(name.replace("_", "-"), value) for name, value in self.model_dump().items() if value]
        return ",".join(f"{name}={value}" for name, value in kept) or None


class VzdumpJob(Model):
    enabled: bool = Field(True, description="Keep a vzdump job that backs up every managed VM")
    schedule: Annotated[
        str, matching(r"^[a-z0-9 :,.*/~-]+$", "a PVE calendar event ('sat 02:00', 'daily')")
    ] = Field("sat 02:00", description="When it runs (PVE calendar event)")
    storage: DnsLabel | None = Field(
        None, description="Storage with the 'backup' content type (default: the first one)"
    )
    retention: Retention = Field(
        default_factory=Retention,
        description="Archives kept after each backup (PVE's prune-backups; none set: all are kept)",
    )


class Proxmox(Model):
    host: DnsName = Field(description="Address or DNS name of the Proxmox API (any node of a cluster)")
    port: Port = Field(8006, description="API port (PVE: 8006)")
    node: DnsLabel | None = Field(
        None, description="Node name as Proxmox shows it (e.g. 'pve'); one node, with the top-level host"
    )
    nodes: list[ClusterNode] = Field(
        [], description="The nodes of a cluster, each with its hardware (instead of node and host)"
    )
    token_id: Annotated[
        str,
        matching(r"^[^\s@!]+@[^\s@!]+![A-Za-z][A-Za-z0-9._-]*$", "an API token id ('user@realm!name')"),
    ] = Field(description="API token id, 'user@realm!tokenname'")
    token_secret_env: Annotated[
        str, matching(r"^[A-Z_][A-Z0-9_]*$", "an environment variable name (A-Z, 0-9, _)")
    ] = Field(
        "AILAB_PVE_TOKEN_SECRET",
        description="Environment variable holding the token secret (never stored in the plan)",
    )
    token_secret_file: str | None = Field(
        None, description="Or a 0600 file holding the secret, read when the variable is unset"
    )
    verify_tls: bool = Field(True, description="Verify the API's TLS certificate")
    fingerprint: (
        Annotated[
            str,
            matching(
                r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$", "a SHA-256 fingerprint (32 hex pairs, AA:BB:...)"
            ),
        ]
        | None
    ) = Field(
        None,
        description="SHA-256 fingerprint to pin a self-signed node certificate",
    )
    ca_file: str | None = Field(None, description="CA bundle that signs the node certificate")
    prepare_node: bool = Field(
        True,
        description="Before cloning: upload cloud-init vendor data (proxy, CAs) over SSH, check storages",
    )
    ssh_host: DnsName | None = Field(None, description="SSH address of the node (default: host)")
    ssh_user: str = Field("root", description="SSH user on the node, for node preparation")
    ssh_port: Port = Field(22, description="SSH port of the node")
    ssh_private_key_file: str | None = Field(
        None, description="Private key for SSH to the node (default: the SSH agent and ~/.ssh keys)"
    )
    snippets_storage: DnsLabel = Field("local", description="Storage with the 'snippets' content type")
    vzdump: VzdumpJob = Field(
        default_factory=VzdumpJob, description="The node's vzdump job for the managed VMs"
    )

    @property
    def node_ssh_host(self) -> str:
        return self.ssh_host or self.host


class Storage(Model):
    name: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9\-_.]*$", description="Proxmox storage id")
    kind: Literal["hdd", "ssd", "nvme"] = Field(description="Medium, for PostgreSQL tuning")
    capacity: CapacityBytes = Field(description="Usable capacity")
    shared: bool = Field(
        False,
        description="Reachable from every node (NFS, Ceph, iSCSI): needed for HA and clones across nodes",
    )


class PowerWatts(Model):
    """Wall power of the whole server. The defaults estimate a dual-socket Xeon E5-2699 v3 box
    (Haswell-EP, 145 W TDP per socket per Intel ARK): measure yours with a plug-in meter."""

    idle: float = Field(
        100.0,
        gt=0,
        le=20000,
        description=(
            "Watts at the wall while idle. Default 100: two-socket Haswell-EP servers idle around "
            "80-120 W with a few disks and 8-16 DIMMs (SPECpower_ssj2008 active-idle results of that "
            "generation are lower, with one disk and few DIMMs)"
        ),
    )
    load: float = Field(
        250.0,
        gt=0,
        le=20000,
        description=(
            "Watts at the wall while the LLM generates. Default 250: idle 100 W plus one socket's "
            "145 W TDP (Intel ARK, E5-2699 v3), since generation runs pinned to one socket"
        ),
    )


class CostComparison(Model):
    name: str = Field(min_length=1, max_length=80, description="What you compare with (e.g. a hosted API)")
    price_per_million_tokens: float = Field(
        ge=0, description="Its price per million generated tokens, in the plan's currency"
    )


class Host(Model):
    cpu_model: str = Field(description="CPU model, for the record")
    sockets: int = Field(ge=1, le=8, description="CPU sockets")
    cores_per_socket: int = Field(ge=1, le=512, description="Physical cores per socket")
    threads_per_core: int = Field(ge=1, le=4, description="Hardware threads per core")
    memory: MemoryMiB = Field(description="Installed RAM")
    memory_channels_per_socket: int = Field(ge=1, le=16, description="DDR channels per socket")
    memory_mts: int = Field(ge=100, le=20000, description="Memory speed in MT/s (DDR4-2133: 2133)")
    memory_efficiency: float = Field(
        0.45,
        gt=0,
        le=1,
        description="Share of theoretical bandwidth that token generation achieves",
    )
    measured_bandwidth_gbs: float | None = Field(
        None, gt=0, description="Measured memory bandwidth of one socket in GB/s (overrides)"
    )
    reserved_memory: MemoryMiB = Field(4096, description="RAM kept free for Proxmox itself")
    cpu_oversubscription_warn: float = Field(
        1.0, gt=0, description="vCPUs per host thread above which to warn"
    )
    cpu_oversubscription_max: float = Field(
        2.0, gt=0, description="vCPUs per host thread above which the plan is refused"
    )
    storage: list[Storage] = Field(min_length=1, description="Storage pools on the node")
    power_watts: PowerWatts = Field(
        default_factory=PowerWatts, description="Wall power of the server, idle and while generating"
    )
    energy_price_per_kwh: float = Field(
        0.29,
        ge=0,
        le=100,
        description=(
            "Electricity price per kWh. Default 0.29 EUR: the EU household average, second half of "
            "2024 (Eurostat, nrg_pc_204), rounded"
        ),
    )
    currency: Annotated[str, matching(r"^[A-Z]{3}$", "a three-letter currency code (EUR, USD)")] = Field(
        "EUR", description="Currency of the prices (ISO 4217 code)"
    )
    cost_comparison: CostComparison | None = Field(
        None, description="A price per million tokens to compare the lab's own cost with"
    )


class ClusterNode(Model):
    name: DnsLabel = Field(description="Node name as Proxmox shows it")
    host: DnsName = Field(description="Address or DNS name of this node (API and SSH)")
    ssh_host: DnsName | None = Field(None, description="SSH address of the node (default: host)")
    hardware: Host = Field(description="The node's CPU, memory and storages")

    @property
    def node_ssh_host(self) -> str:
        return self.ssh_host or self.host


class Network(Model):
    bridge: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$", description="Bridge for VMs")
    subnet: IPv4Network = Field(description="VM subnet in CIDR form")
    gateway: IPv4Address = Field(description="Default gateway of the subnet")
    dns: list[IPv4Address] = Field(min_length=1, description="DNS servers for the VMs")
    search_domain: DnsName = Field(description="DNS search domain for the VMs")
    vlan: int | None = Field(None, ge=1, le=4094, description="VLAN tag on the bridge port")
    admin_sources: list[IPv4Network] = Field(
        min_length=1, description="Networks allowed to reach SSH and the apps"
    )
    http_proxy: str | None = Field(
        None, pattern=r"^https?://", description="Proxy the VMs use for apt and pip"
    )
    extra_ca_certificates: list[str] = Field(
        [], description="CA files on the controller the VMs should trust"
    )


class Template(Model):
    vmid: VmId = Field(description="VMID of the cloud-image template")
    release: DebianMajor = Field(
        DEFAULT_RELEASE, description="Debian release of the template and so of every VM (13 or 12)"
    )
    name: DnsLabel = Field(description="Name of the template VM")
    storage: str = Field(description="Storage holding the template disk")
    image_url: str | None = Field(
        None, description="Cloud image to build the template from when it is missing"
    )
    admin_user: str = Field(
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="Admin user created by cloud-init"
    )
    ssh_public_keys: list[str] = Field([], description="SSH public keys for the admin user")
    ssh_public_key_files: list[str] = Field(
        [], description="Files on the controller holding more public keys"
    )
    ssh_private_key_file: str | None = Field(
        None, description="Controller key Ansible uses for the admin user (default: SSH's own)"
    )


class HighAvailability(Model):
    """A Proxmox HA resource for the VM (its disk must be on shared storage)."""

    state: Literal["started", "stopped", "ignored"] = Field(
        "started", description="Requested HA state (stopped: HA keeps the VM off and apply never starts it)"
    )
    max_restart: int = Field(1, ge=0, le=10, description="Restarts on the same node before relocating")
    max_relocate: int = Field(1, ge=0, le=10, description="Relocations to another node before giving up")
    failback: bool = Field(True, description="Return to the preferred node when it is back")
    nodes: list[DnsLabel] = Field(
        [], description="Nodes it may run on (HA group on 8.x, node-affinity rule on 9.x); empty: any"
    )


class VM(Model):
    vmid: VmId = Field(description="Proxmox VMID (100-999999999)")
    name: DnsLabel = Field(description="VM name and hostname")
    cores: int = Field(ge=1, le=512, description="vCPU cores per socket")
    sockets: int = Field(1, ge=1, le=8, description="Virtual sockets")
    memory: MemoryMiB = Field(description="RAM")
    disk: DiskGiB = Field(description="Boot disk size (grown from the template)")
    storage: str = Field(description="Storage for the disk")
    ip: IPv4Address = Field(description="Static IPv4 address in the network subnet")
    roles: list[str] = Field(min_length=1, description="Ansible roles this VM runs")
    onboot: bool = Field(True, description="Start with the node")
    protection: bool = Field(False, description="Proxmox protection flag (blocks destroy)")
    tags: list[Tag] = Field([], description="Extra Proxmox tags")
    description: str = Field("", max_length=4096, description="Free text for the Proxmox notes")
    node: DnsLabel | None = Field(None, description="Cluster node to run on (default: placed by the plan)")
    spread: DnsLabel | None = Field(None, description="VMs of one spread group are placed on different nodes")
    ha: HighAvailability | None = Field(None, description="Let Proxmox's HA manager keep it running")

    @property
    def vcpus(self) -> int:
        return self.cores * self.sockets


class ModelArchitecture(Model):
    """What sizing needs of a model that is not in the built-in table."""

    layers: int = Field(ge=1, description="Transformer layers")
    kv_heads: int = Field(ge=1, description="Key/value heads (GQA)")
    head_dim: int = Field(ge=1, description="Dimension of one attention head")
    weights: CapacityBytes = Field(description="Size of the quantized weights file")


class OllamaSettings(Model):
    version: str = Field("0.33.0", pattern=r"^\d+\.\d+\.\d+$", description="Pinned release")
    archive_url: str | None = Field(None, description="Release archive URL (default: official)")
    archive_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the archive")
    archive_path: str | None = Field(None, description="Archive on the controller, for offline")
    gguf_path: str | None = Field(None, description="Import this GGUF instead of pulling")


class ModelSource(Model):
    """Where the llama.cpp engine gets its GGUF file."""

    url: str | None = Field(None, description="HTTP(S) URL of the GGUF file")
    path: str | None = Field(None, description="GGUF file on the controller")
    pypi_package: str | None = Field(None, description="PyPI package that assembles the GGUF")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the GGUF file")


class LlamaCppSettings(Model):
    version: str = Field("0.3.36", description="llama-cpp-python sdist whose vendored llama.cpp is built")
    model: ModelSource | None = Field(None, description="The GGUF model to serve")
    build_cache_dir: str | None = Field(
        None,
        pattern=r"^/",
        description="Absolute directory on the controller that caches built llama-server archives "
        "(per version, build flags, CPU and platform); null builds on every new VM",
    )


class LLM(Model):
    engine: Literal["ollama", "llamacpp"] = Field("ollama", description="Inference server")
    model: str = Field("llama3.1:8b", description="Model name (Ollama tag)")
    quantization: Literal["Q4_0", "Q4_K_M", "Q5_K_M", "Q8_0", "F16"] = Field(
        "Q4_K_M", description="Weight quantization"
    )
    architecture: ModelArchitecture | None = Field(
        None, description="Model shape, for models not in the built-in table"
    )
    context_length: int = Field(8192, ge=256, le=131072, description="Context per request")
    parallel: int = Field(1, ge=1, le=64, description="Requests served at once")
    keep_alive: str = Field("24h", pattern=r"^-?\d+[smh]?$", description="How long the model stays loaded")
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="KV cache type")
    flash_attention: bool = Field(True, description="Flash attention (needed for quantized KV)")
    port: Port = Field(11434, description="API port on the LLM VM")
    ollama: OllamaSettings = Field(default_factory=OllamaSettings, description="Ollama engine settings")
    llamacpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings, description="llama.cpp settings")


class DatabaseSpec(Model):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Database name")
    owner: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Owning user")


class DatabaseUser(Model):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Role name")
    password: Annotated[
        str,
        matching(
            r"^(generated|vault:[a-z_][a-z0-9_]*)$",
            "allowed: passwords never live in the plan; use 'generated' or 'vault:<variable>'",
            secret=True,
        ),
    ] = Field(
        "generated",
        description="'generated' (stored 0600 on the controller) or 'vault:<variable>'",
    )


class Database(Model):
    source: Literal["debian", "pgdg"] = Field("debian", description="Package source")
    version: int | None = Field(
        None,
        ge=12,
        le=18,
        description="Major version (default: the release's, 17 on Debian 13, 15 on 12; others need pgdg)",
    )
    port: Port = Field(5432, description="Listen port")
    max_connections: int = Field(100, ge=5, le=10000, description="max_connections")
    workload: Literal["web", "oltp", "dw", "desktop", "mixed"] = Field(
        "web", description="pgtune workload type"
    )
    databases: list[DatabaseSpec] = Field([], description="Databases to create")
    users: list[DatabaseUser] = Field([], description="Login roles to create")


class AppSource(Model):
    kind: Literal["wheel", "path", "git", "pypi"] = Field(description="How to install it")
    path: str | None = Field(None, description="Path on the controller (wheel or path kinds)")
    url: str | None = Field(None, description="Git URL (git kind)")
    ref: str | None = Field(None, description="Pinned git ref (git kind)")
    spec: str | None = Field(None, description="Requirement spec (pypi kind)")


class App(Model):
    name: DnsLabel = Field(description="App and systemd service name")
    kind: Literal["streamlit", "asgi"] = Field(description="Streamlit script or ASGI app")
    source: AppSource = Field(description="Where the app comes from")
    port: Port = Field(description="Port it serves on")
    entrypoint: str = Field(description="Streamlit script path in the package, or ASGI 'module:app'")
    database: str | None = Field(None, description="Database it uses (from database.databases)")
    database_user: str | None = Field(None, description="User it connects as")
    health_path: str = Field("/", pattern=r"^/", description="Path that answers 200 when healthy")


class Apps(Model):
    framework: AppSource | None = Field(None, description="Shared framework package")
    apps: list[App] = Field([], description="Apps to deploy on the apps VMs")
    llm_max_tokens: int = Field(
        128, ge=1, le=8192, description="Longest answer, in tokens, an app asks the LLM for"
    )


class Verify(Model):
    min_tokens_per_second: float = Field(gt=0, description="LLM generation speed gate")
    min_pgbench_tps: float = Field(gt=0, description="pgbench TPS gate")
    max_app_latency_ms: float = Field(gt=0, description="End-to-end app request gate")
    max_backup_age_hours: float = Field(
        26.0, gt=0, description="Gate: the latest database dump is at most this old (nightly: 26)"
    )
    llm_tokens: int = Field(64, ge=8, le=4096, description="Tokens generated by the smoke test")
    pgbench_scale: int = Field(4, ge=1, le=1000, description="pgbench scale factor")
    pgbench_clients: int = Field(4, ge=1, le=256, description="pgbench clients")
    pgbench_seconds: int = Field(15, ge=1, le=600, description="pgbench run time")


class Plan(Model):
    version: Literal[1] = Field(description="Plan format version")
    proxmox: Proxmox
    host: Host | None = Field(None, description="The node's hardware (one node; a cluster: proxmox.nodes)")
    network: Network
    template: Template
    vms: list[VM] = Field(min_length=1)
    llm: LLM = Field(default_factory=LLM)
    database: Database = Field(default_factory=Database)
    apps: Apps = Field(default_factory=Apps)
    verify: Verify

    def vms_with_role(self, role: str) -> list[VM]:
        return [vm for vm in self.vms if role in vm.roles]

    @property
    def nodes(self) -> list[ClusterNode]:
        """Every node, the one-node form included (empty only for a plan that validation refuses)."""
        if self.proxmox.nodes:
            return list(self.proxmox.nodes)
        if self.proxmox.node is None or self.host is None:
            return []
        one = ClusterNode(
            name=self.proxmox.node, host=self.proxmox.host, ssh_host=self.proxmox.ssh_host, hardware=self.host
        )
        return [one]

    def node(self, name: str) -> ClusterNode | None:
        return next((node for node in self.nodes if node.name == name), None)

    def storage(self, name: str) -> Storage | None:
        """The storage of that name on any node (storage ids are cluster-wide in Proxmox)."""
        pools = (pool for node in self.nodes for pool in node.hardware.storage)
        return next((pool for pool in pools if pool.name == name), None)

    @property
    def debian(self) -> DebianRelease:
        """The Debian release every VM runs (the template's)."""
        return RELEASES[self.template.release]

    @property
    def postgresql_major(self) -> int:
        """database.version when given, else the PostgreSQL the release ships."""
        return self.database.version or self.debian.postgresql


def json_schema() -> dict[str, Any]:
    schema = Plan.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ailab-deploy plan (vms.yaml)"
    return schema
