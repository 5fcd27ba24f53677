"""Scratch lab VMs for Molecule: ``ailab-deploy lab vm create/destroy --name NAME``.

A scratch VM is provisioned exactly like the lab's own VMs, by the same
:class:`~ailab_deploy.pipeline.provision.Provisioner`, from a one-VM plan derived from the
running lab's plan (``<lab-dir>/vms.lab.yaml``). Each has its own state directory, so its
ledger manages only it and the lab plan's VMs never see it (nor it them)::

    <lab-dir>/scratch-vms/registry.json       name -> vmid and address (idempotent create)
    <lab-dir>/scratch-vms/registry.lock       held while the registry is read and changed
    <lab-dir>/scratch-vms/<name>/vms.yaml     the one-VM plan
    <lab-dir>/scratch-vms/<name>/.ailab/      its state: ledger, known_hosts (host keys)

The derived plan has ``prepare_node: false`` (the lab plan's apply already put the vendor
snippet on the node; the container VMs get the host's CAs at boot) and no vzdump job, so it
cannot rewrite the lab plan's backup job to list only itself.
"""

from __future__ import annotations

import fcntl
import io
import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ailab_deploy.adapters.known_hosts import KnownHosts
from ailab_deploy.adapters.ledger import Ledger
from ailab_deploy.adapters.proxmox import ProxmoxClient
from ailab_deploy.adapters.statedir import STATE_DIRNAME
from ailab_deploy.core.loader import LoadedPlan, load_plan, resolve_plan_path
from ailab_deploy.core.plan import Plan
from ailab_deploy.errors import InputError, LabError
from ailab_deploy.lab import control
from ailab_deploy.lab.emulator.state import write_atomic
from ailab_deploy.lab.network_constants import LAB_GATEWAY, LAB_NODE_ADDRESS
from ailab_deploy.pipeline.provision import ApplyOptions, Provisioner

SCRATCH_DIRNAME = "scratch-vms"
REGISTRY_FILENAME = "registry.json"
PLAN_FILENAME = "vms.yaml"
VMIDS = range(200, 1000)  # above the lab plan's 100-102, below the template's 9000
FIRST_ADDRESS = IPv4Address("10.77.0.20")
LAST_ADDRESS = IPv4Address("10.77.0.99")
SSH_PORT = 22
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Plan keys that hold paths; made absolute because the derived plan lives in another folder.
_PATH_KEYS = {
    "proxmox": ("token_secret_file", "ca_file", "ssh_private_key_file"),
    "template": ("ssh_private_key_file",),
}
_PATH_LIST_KEYS = {"network": ("extra_ca_certificates",), "template": ("ssh_public_key_files",)}


@dataclass(frozen=True)
class Allocation:
    """What the registry records for one scratch VM."""

    vmid: int
    ip: str


@dataclass(frozen=True)
class ScratchVM:
    """How to reach a scratch VM: what `lab vm create --json` prints."""

    name: str
    address: str
    user: str
    port: int
    identity_file: str
    host_key: str  # "ssh-ed25519 AAAA...", as recorded on first contact

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ pure parts


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InputError(
            f"lab VM name {name!r} is not a valid hostname label "
            "(lower-case letters, digits and '-', at most 63 characters)"
        )


def allocate(
    name: str, registry: Mapping[str, Allocation], used_vmids: Iterable[int], used_ips: Iterable[str]
) -> Allocation:
    """The registry's entry for ``name``, else the lowest free vmid and address."""
    if name in registry:
        return registry[name]
    vmids = set(used_vmids) | {entry.vmid for entry in registry.values()}
    ips = set(used_ips) | {entry.ip for entry in registry.values()}
    vmid = next((v for v in VMIDS if v not in vmids), None)
    candidates = (str(IPv4Address(n)) for n in range(int(FIRST_ADDRESS), int(LAST_ADDRESS) + 1))
    ip = next((a for a in candidates if a not in ips), None)
    if vmid is None or ip is None:
        what = (
            f"vmid in {VMIDS.start}-{VMIDS.stop - 1}"
            if vmid is None
            else f"address in {FIRST_ADDRESS}-{LAST_ADDRESS}"
        )
        raise LabError(f"no free {what} for lab VM {name!r}; destroy scratch VMs you no longer need")
    return Allocation(vmid, ip)


def parse_registry(text: str) -> dict[str, Allocation]:
    data = json.loads(text) if text.strip() else {}
    return {name: Allocation(int(entry["vmid"]), str(entry["ip"])) for name, entry in data.items()}


def format_registry(registry: Mapping[str, Allocation]) -> str:
    return json.dumps({name: asdict(registry[name]) for name in sorted(registry)}, indent=2) + "\n"


def ip_of(config: Mapping[str, Any]) -> str | None:
    """The static address in a VM config's ``ipconfig0`` (``ip=10.77.0.10/24,gw=...``)."""
    for part in str(config.get("ipconfig0", "")).split(","):
        key, _, value = part.partition("=")
        if key.strip() == "ip" and value not in ("", "dhcp"):
            return value.split("/")[0]
    return None


def _absolute(tree: CommentedMap, plan_dir: Path) -> None:
    for section, keys in _PATH_KEYS.items():
        for key in keys:
            value = tree.get(section, {}).get(key)
            if isinstance(value, str):
                tree[section][key] = str(resolve_plan_path(value, plan_dir))
    for section, keys in _PATH_LIST_KEYS.items():
        for key in keys:
            values = tree.get(section, {}).get(key)
            if isinstance(values, list):
                for index, value in enumerate(values):
                    values[index] = str(resolve_plan_path(str(value), plan_dir))


def _set(
    mapping: CommentedMap, key: str, value: Any, comment: str, *, indent: int, after: str | None = None
) -> None:
    """Set ``key`` with an end-of-line comment one space after the value (``after``: insert there)."""
    if after is not None and key not in mapping:
        mapping.insert(list(mapping).index(after) + 1, key, value)
    else:
        mapping[key] = value
    shown = "" if isinstance(value, dict) else f" {_flow(value)}"
    mapping.yaml_add_eol_comment(comment, key, column=indent + len(key) + 1 + len(shown) + 2)


def _flow(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def render_scratch_plan(
    lab_plan_text: str, lab_plan_dir: Path, plan: Plan, name: str, where: Allocation
) -> str:
    """The lab plan with one VM: ``name`` at ``where``, shaped like the lab plan's roomiest VM.

    Everything else (API endpoint, token, network, template, keys) is the lab plan's; the
    database, LLM and app sections go, since no role is planned for them here.
    """
    yaml = YAML(typ="rt")
    yaml.width = 4096  # never fold a long value (the fingerprint) onto a second line
    yaml.indent(mapping=2, sequence=4, offset=2)
    tree = yaml.load(lab_plan_text)
    _absolute(tree, lab_plan_dir)
    roomiest = max(plan.vms, key=lambda vm: (vm.memory, vm.cores, vm.disk))
    model = tree["vms"][plan.vms.index(roomiest)]
    proxmox = tree["proxmox"]
    _set(proxmox, "prepare_node", False, "the lab plan's apply prepared the node", indent=2)
    vzdump = CommentedMap()
    _set(vzdump, "enabled", False, "the lab plan's backup job is left alone", indent=4)
    _set(proxmox, "vzdump", vzdump, "no backup job for a scratch VM", indent=2, after="prepare_node")
    for section in ("llm", "database", "apps"):
        tree.pop(section, None)
    vm = CommentedMap()
    rows: list[tuple[str, Any, str]] = [
        ("vmid", where.vmid, f"allocated by `lab vm create` ({SCRATCH_DIRNAME}/{REGISTRY_FILENAME})"),
        ("name", name, "VM name and hostname"),
        *((key, model[key], f"as the lab plan's {roomiest.name}") for key in ("cores", "memory", "disk")),
        ("storage", model["storage"], "disk storage"),
        ("ip", where.ip, "allocated with the vmid"),
        ("roles", CommentedSeq(["common"]), "every VM's; Molecule converges whatever it tests"),
        ("onboot", False, "a scratch VM does not start with the node"),
        ("description", "scratch VM (ailab-deploy lab vm create)", "Proxmox notes"),
    ]
    for key, value, comment in rows:
        _set(vm, key, value, comment, indent=4)
    vm["roles"].fa.set_flow_style()
    tree["vms"] = CommentedSeq([vm])
    tree.yaml_add_eol_comment("one scratch VM", "vms", column=len("vms:") + 2)
    buffer = io.StringIO()
    yaml.dump(tree, buffer)
    # A blank line before each top-level section, as in the lab plan (dropped sections took theirs).
    text = re.sub(r"(?m)(?<=[^\n]\n)(?=[a-z_]+:)", "\n", buffer.getvalue())
    return (
        f"# A scratch lab VM by `ailab-deploy lab vm create`: the lab plan in {lab_plan_dir}, one VM.\n{text}"
    )


# ------------------------------------------------------------------------------ the lab dir


@dataclass(frozen=True)
class ScratchPaths:
    lab_dir: Path

    @property
    def root(self) -> Path:
        return self.lab_dir / SCRATCH_DIRNAME

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FILENAME

    def vm_dir(self, name: str) -> Path:
        return self.root / name

    def plan(self, name: str) -> Path:
        return self.vm_dir(name) / PLAN_FILENAME

    def state_dir(self, name: str) -> Path:
        return self.vm_dir(name) / STATE_DIRNAME


@contextmanager
def registry_lock(paths: ScratchPaths) -> Iterator[dict[str, Allocation]]:
    """The registry, under an exclusive lock; written back (atomically) if the caller changed it."""
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(paths.root / "registry.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = paths.registry.read_text(encoding="utf-8") if paths.registry.exists() else ""
        registry = parse_registry(before)
        yield registry
        after = format_registry(registry)
        if after != before:
            write_atomic(paths.registry, after, mode=0o600)


def read_registry(lab_dir: Path) -> dict[str, Allocation]:
    path = ScratchPaths(lab_dir).registry
    return parse_registry(path.read_text(encoding="utf-8")) if path.exists() else {}


def running_lab_plan(lab_dir: Path) -> Path:
    """The plan of the lab at ``lab_dir``, which must be running with booting VMs."""
    info = control.status(lab_dir)
    if not info["running"]:
        raise InputError(
            f"the lab at {lab_dir} is not running; start it with `ailab-deploy lab up --lab-dir {lab_dir}`"
        )
    if info["backend"] != "containers":
        raise InputError(
            f"the lab at {lab_dir} runs the API emulator only (lab up --api-only); "
            "lab VMs need `ailab-deploy lab up`"
        )
    plan = Path(info["lab_plan"])
    if not plan.is_file():
        raise InputError(
            f"the lab at {lab_dir} has no plan at {plan}; run `ailab-deploy lab up --lab-dir {lab_dir}`"
        )
    return plan


def _in_use(client: ProxmoxClient, plan: Plan) -> tuple[set[int], set[str]]:
    """VMIDs and addresses taken on the node, by the lab plan, and by the lab's own hosts."""
    guests = client.cluster_vms()
    configs = client.vm_configs(vmid for vmid, vm in guests.items() if vm.type == "qemu" and not vm.template)
    vmids = set(guests) | {vm.vmid for vm in plan.vms} | {plan.template.vmid}
    ips = {LAB_GATEWAY, LAB_NODE_ADDRESS, str(plan.network.gateway)} | {str(vm.ip) for vm in plan.vms}
    ips |= {ip for config in configs.values() if (ip := ip_of(config)) is not None}
    return vmids, ips


def _scratch_plan(paths: ScratchPaths, lab_plan: LoadedPlan, name: str, where: Allocation) -> LoadedPlan:
    text = render_scratch_plan(
        lab_plan.path.read_text(encoding="utf-8"), lab_plan.path.absolute().parent, lab_plan.plan, name, where
    )
    path = paths.plan(name)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, text, mode=0o600)
    return load_plan(path)


def _host_key(state_dir: Path, vmid: int, address: str) -> str:
    keys = dict(KnownHosts(state_dir).keys_for(address))
    if not keys:
        raise LabError(f"no host key was recorded for VM {vmid} at {address} in {state_dir}")
    key_type = "ssh-ed25519" if "ssh-ed25519" in keys else sorted(keys)[0]
    return f"{key_type} {keys[key_type]}"


def create(lab_dir: Path, name: str, *, progress: Callable[[str], None] | None = None) -> ScratchVM:
    """Make (or find) the scratch VM ``name``: booted, SSH up, its host key recorded."""
    check_name(name)
    lab_plan = load_plan(running_lab_plan(lab_dir))
    paths = ScratchPaths(lab_dir)
    client = ProxmoxClient.from_plan(lab_plan)
    with registry_lock(paths) as registry:
        if name not in registry:
            vmids, ips = _in_use(client, lab_plan.plan)
            registry[name] = allocate(name, registry, vmids, ips)
        where = registry[name]
    loaded = _scratch_plan(paths, lab_plan, name, where)
    state_dir = paths.state_dir(name)
    with Ledger(state_dir, secrets=client.secrets) as ledger:
        provisioner = Provisioner(loaded, client, ledger, state_dir, progress=progress)
        if provisioner.read_vm(where.vmid) is None:
            # Gone behind our back (lab reset, a lost lab dir): a new clone gets new host keys.
            provisioner.forget_vm(where.vmid)
        provisioner.apply(ApplyOptions(parallel=1, ssh_port=SSH_PORT))
    template = loaded.plan.template
    assert template.ssh_private_key_file is not None  # the lab plan always names the lab key
    return ScratchVM(
        name=name,
        address=where.ip,
        user=template.admin_user,
        port=SSH_PORT,
        identity_file=str(loaded.resolve(template.ssh_private_key_file)),
        host_key=_host_key(state_dir, where.vmid, where.ip),
    )


def destroy(lab_dir: Path, name: str, *, progress: Callable[[str], None] | None = None) -> str:
    """Stop and delete the scratch VM ``name`` and forget it; what was done, in a few words."""
    lab_plan_path = running_lab_plan(lab_dir)
    paths = ScratchPaths(lab_dir)
    registry = read_registry(lab_dir)
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise InputError(f"no lab VM is named {name!r} (lab VMs: {known})")
    where = registry[name]
    lab_plan = load_plan(lab_plan_path)
    loaded = _scratch_plan(paths, lab_plan, name, where)
    client = ProxmoxClient.from_plan(loaded)
    state_dir = paths.state_dir(name)
    with Ledger(state_dir, secrets=client.secrets) as ledger:
        provisioner = Provisioner(loaded, client, ledger, state_dir, progress=progress)
        targets = [vm for vm in provisioner.destroy_targets(None) if vm.vmid == where.vmid]
        if targets:
            provisioner.destroy(targets, ApplyOptions(parallel=1))
        elif provisioner.read_vm(where.vmid) is not None:
            raise LabError(
                f"VM {where.vmid} exists but {state_dir} does not record it as {name}'s; "
                "check it in the lab and delete it by hand, then run destroy again"
            )
    shutil.rmtree(paths.vm_dir(name))
    with registry_lock(paths) as current:
        current.pop(name, None)
    return (
        f"{name} (VM {where.vmid}) destroyed"
        if targets
        else f"{name} (VM {where.vmid}) did not exist; forgotten"
    )
