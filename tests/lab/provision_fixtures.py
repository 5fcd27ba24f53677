"""Lab plans and engine helpers for the provisioning tests (used with tests/lab/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.adapters.retry import Backoff
from ailab_deploy.core.loader import load_plan
from ailab_deploy.pipeline.provision import ApplyOptions, Provisioner

SECRET_ENV = "AILAB_TEST_PVE_TOKEN_SECRET"
TEST_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKXb5TstYyBC8ZY37UK5ewvvtSTlk7vgrNso1D+ZZdFh lab@test"  # has / and +
)
# API-only lab (null backend): no SSH to wait for; short waits so failures show fast.
LAB_OPTIONS = ApplyOptions(
    parallel=4, wait_ssh=False, agent_timeout=5, task_timeout=10, clone_timeout=20, lock_backoff=0.2
)


def lab_vm(index: int, **overrides: Any) -> dict[str, Any]:
    names = ["postgres", "llm", "apps"]
    roles = [["common", "postgresql"], ["common", "llm"], ["common", "python_app"]]
    vm = {
        "vmid": 100 + index,
        "name": names[index] if index < 3 else f"vm{index:03d}",
        "cores": 2,
        "memory": "2G",
        "disk": "8G",
        "storage": "local-lvm",
        "ip": f"10.77.0.{10 + index}" if index < 240 else f"10.77.{index // 200}.{index % 200 + 10}",
        "roles": roles[index] if index < 3 else ["common"],
    }
    return {**vm, **overrides}


def _yaml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


HARDWARE = [
    "cpu_model: lab",
    "sockets: 2",
    "cores_per_socket: 18",
    "threads_per_core: 2",
    "memory: 126G",
    "memory_channels_per_socket: 4",
    "memory_mts: 2133",
    "cpu_oversubscription_warn: 100",
    "cpu_oversubscription_max: 100",
    "storage:",
    "  - {name: local-lvm, kind: ssd, capacity: 237GB}",
    "  - {name: HDDStorage, kind: hdd, capacity: 2.18TB}",
]
SHARED_STORAGE = "  - {name: shared, kind: hdd, capacity: 500GB, shared: true}"


def _where(lab: Any, nodes: list[str] | None) -> list[str]:
    """One node (proxmox.node and host) or a cluster (proxmox.nodes, each with the lab's
    hardware and the storage ``shared`` every node reaches)."""
    if not nodes:
        return ["host:", *(f"  {line}" for line in HARDWARE)]
    lines = ["  nodes:"]
    for index, name in enumerate(nodes):
        lines += [f"    - name: {name}", f"      host: 10.77.0.{2 + index}", "      hardware:"]
        lines += [f"        {line}" for line in [*HARDWARE, SHARED_STORAGE]]
    return lines


def write_lab_plan(
    lab: Any,
    directory: Path,
    vms: list[dict[str, Any]],
    *,
    fingerprint: bool = False,
    image_url: str | None = None,
    token_id: str | None = None,
    vzdump: bool = True,
    nodes: list[str] | None = None,
) -> Path:
    """A valid plan for the emulator ``lab`` with these VMs (on the cluster of ``nodes``, whose
    template is on shared storage); the token secret comes from SECRET_ENV."""
    many = len(vms) > 200
    tls = f'  fingerprint: "{lab.fingerprint}"\n' if fingerprint else f'  ca_file: "{lab.ca_path}"\n'
    lines = [
        "version: 1",
        "proxmox:",
        f"  host: {lab.host}",
        f"  port: {lab.port}",
        *([] if nodes else [f"  node: {lab.node}"]),
        f'  token_id: "{token_id or lab.token_id}"',
        f"  token_secret_env: {SECRET_ENV}",
        "  prepare_node: false",
        *([] if vzdump else ["  vzdump: {enabled: false}"]),
        tls.rstrip("\n"),
        *_where(lab, nodes),
        "network:",
        "  bridge: vmbr0",
        f"  subnet: {'10.77.0.0/16' if many else '10.77.0.0/24'}",
        "  gateway: 10.77.0.1",
        "  dns: [10.77.0.1]",
        "  search_domain: lab.test",
        "  admin_sources: [10.77.0.0/24]",
        "template:",
        "  vmid: 9000",
        "  name: debian-13-cloud",
        f"  storage: {'shared' if nodes else 'local-lvm'}",
        "  admin_user: ailab",
        *([f"  image_url: {image_url}"] if image_url else []),
        f'  ssh_public_keys: ["{TEST_KEY}"]',
        "vms:",
    ]
    for vm in vms:
        lines.append("  - " + "\n    ".join(f"{k}: {_yaml_value(v)}" for k, v in vm.items()))
    lines += [
        "llm:",
        "  model: llama3.1:8b",
        "  context_length: 4096",
        "verify:",
        "  min_tokens_per_second: 1",
        "  min_pgbench_tps: 1",
        "  max_app_latency_ms: 1000",
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "vms.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def emulator_client(lab: Any, token: tuple[str, str] | None = None, **options: Any) -> ProxmoxClient:
    """The project's client for the emulator ``lab`` (its root@pam token unless ``token`` gives
    id and secret); ``options``: ``ca_file`` or ``fingerprint``, retry..."""
    token_id, secret = token or (lab.token_id, lab.token_secret)
    return ProxmoxClient(
        host=lab.host, port=lab.port, node=lab.node, token_id=token_id, secret=secret, **options
    )


class Engine:
    """A Provisioner on a lab plan, rebuilt on demand (as each CLI run would be)."""

    def __init__(self, lab: Any, plan_path: Path, token: tuple[str, str] | None = None) -> None:
        self.lab = lab
        self.token = token
        self.plan_path = plan_path
        self.state_dir = plan_path.parent / ".ailab"
        self.events: list[str] = []

    def provisioner(self, **client_kwargs: Any) -> Provisioner:
        loaded = load_plan(self.plan_path)
        client_kwargs.setdefault("retry", Backoff(attempts=6, first_delay=0.05, max_delay=0.2))
        client = emulator_client(self.lab, self.token, ca_file=Path(self.lab.ca_path), **client_kwargs)
        return Provisioner(
            loaded, client, Ledger(self.state_dir), self.state_dir, progress=self.events.append
        )

    def rewrite(self, vms: list[dict[str, Any]]) -> None:
        write_lab_plan(self.lab, self.plan_path.parent, vms, token_id=self.token[0] if self.token else None)


def make_engine(
    lab: Any, tmp_path: Path, vms: list[dict[str, Any]] | None = None, token: tuple[str, str] | None = None
) -> Engine:
    """An engine on a fresh plan for ``lab`` (three VMs unless ``vms`` is given), with the lab's
    root@pam token unless ``token`` (id, secret) names another."""
    vms = vms if vms is not None else [lab_vm(i) for i in range(3)]
    plan = write_lab_plan(lab, tmp_path / "plan", vms, token_id=token[0] if token else None)
    return Engine(lab, plan, token)
