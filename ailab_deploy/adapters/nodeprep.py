"""Node preparation over SSH (pyinfra): what the Proxmox API cannot do.

* Upload the cloud-init vendor-data snippet every VM boots with (apt/pip proxy and extra CA
  certificates from ``plan.network``) to the ``snippets`` directory below the storage's
  ``path``, as the node's storage config states it (``/etc/pve/storage.cfg`` over SSH, else
  the API's ``/storage/{storage}``); never guessed. VMs refer to it as
  ``cicustom: vendor=<volume>``; see :meth:`Snippet.volume`.
* Check storage content types: VM and template disks need ``images``, the snippets storage
  needs ``snippets``. The answer is the exact ``pvesm set`` command that fixes it. The check
  takes rows from the API (``/nodes/{node}/storage``) or the node's ``/etc/pve/storage.cfg``.

SSH to the node checks host keys strictly against ``<state>/known_hosts``: an unknown node
is refused, with how to add its key, never trusted on first use. pyinfra's ``files.put``
compares checksums first, so a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ailab_deploy.adapters.secrets import mask_secrets
from ailab_deploy.adapters.statedir import known_hosts_path
from ailab_deploy.adapters.yaml_dump import dump_yaml
from ailab_deploy.core.desired import VENDOR_SNIPPET_FILENAME
from ailab_deploy.core.loader import LoadedPlan, resolve_plan_path
from ailab_deploy.core.plan import Plan
from ailab_deploy.errors import AilabError, ConfigError

log = logging.getLogger(__name__)

SNIPPETS_STORAGE = "local"
STORAGE_CFG = "/etc/pve/storage.cfg"
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----", re.MULTILINE
)


# ---------------------------------------------------------------------------------- snippets


@dataclass(frozen=True)
class Snippet:
    """A file for PVE's snippets content type, e.g. cloud-init vendor data."""

    filename: str
    content: str
    storage: str = SNIPPETS_STORAGE

    @property
    def volume(self) -> str:
        """The volume id VMs refer to: ``local:snippets/ailab-vendor.yaml``."""
        return f"{self.storage}:snippets/{self.filename}"

    @property
    def holds_credentials(self) -> bool:
        return bool(re.search(r"://[^/\s:@]+:[^/\s@]+@", self.content))


# A proxy that serves one request per connection (tinyproxy, many small ones) drops the rest of
# apt's pipelined requests and resets the connection, which can cut the response being read.
APT_THROUGH_PROXY = 'Acquire::http::Pipeline-Depth "0";\nAcquire::Retries "3";\n'


def render_vendor_data(http_proxy: str | None, ca_certificates: Sequence[str]) -> str:
    """#cloud-config for the first boot, before Ansible: apt and pip through the proxy, extra CAs trusted.

    Deterministic (sorted keys), so an unchanged plan renders byte-identical text.
    """
    config: dict[str, Any] = {}
    if ca_certificates:
        config["ca_certs"] = {"trusted": [pem.strip() + "\n" for pem in ca_certificates]}
    if http_proxy:
        config["apt"] = {"http_proxy": http_proxy, "https_proxy": http_proxy, "conf": APT_THROUGH_PROXY}
        pip = f"[global]\nproxy = {http_proxy}\n"
        if ca_certificates:  # pip's own bundle would not contain the added CAs
            pip += "cert = /etc/ssl/certs/ca-certificates.crt\n"
        config["write_files"] = [{"path": "/etc/pip.conf", "permissions": "0644", "content": pip}]
    body = dump_yaml(config).removeprefix("---\n")
    return "#cloud-config\n# Managed by ailab-deploy (vendor data shared by every VM of the plan).\n" + body


def read_ca_certificates(paths: Iterable[str], base_dir: Path) -> list[str]:
    """PEM certificates from the controller files named in the plan (relative to the plan)."""
    certificates: list[str] = []
    for name in paths:
        path = resolve_plan_path(name, base_dir)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"network.extra_ca_certificates: cannot read {path}: {error}") from None
        found = _PEM_CERTIFICATE.findall(text)
        if not found:
            raise ConfigError(f"network.extra_ca_certificates: {path} holds no PEM certificate")
        certificates.extend(found)
    return certificates


def vendor_snippet(plan: Plan, plan_dir: Path) -> Snippet:
    """The vendor-data snippet of ``plan`` (CA files are read relative to ``plan_dir``)."""
    certificates = read_ca_certificates(plan.network.extra_ca_certificates, plan_dir)
    return Snippet(
        VENDOR_SNIPPET_FILENAME,
        render_vendor_data(plan.network.http_proxy, certificates),
        plan.proxmox.snippets_storage,
    )


# ---------------------------------------------------------------------------------- storages


@dataclass(frozen=True)
class StorageInfo:
    name: str
    type: str
    content: frozenset[str]
    enabled: bool = True
    path: str | None = None  # dir-like storages only, from the storage config

    def snippets_dir(self) -> str | None:
        return None if not self.path else f"{self.path.rstrip('/')}/snippets"


def _content(value: object) -> frozenset[str]:
    return frozenset(part.strip() for part in str(value or "").split(",") if part.strip())


def storages_from_api(
    rows: Iterable[Mapping[str, Any]], configs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, StorageInfo]:
    """``GET /nodes/{node}/storage`` rows -> storages by name; their paths come from ``configs``
    (``GET /storage/{storage}`` answers by name), as the node rows carry none."""
    configs = configs or {}
    return {
        str(row["storage"]): StorageInfo(
            name=str(row["storage"]),
            type=str(row.get("type", "")),
            content=_content(row.get("content")),
            enabled=bool(int(row.get("enabled", 1))),
            path=configs.get(str(row["storage"]), {}).get("path") or row.get("path"),
        )
        for row in rows
    }


def snippets_directory(
    storage: str, node_config: Mapping[str, StorageInfo] | None, api: Mapping[str, StorageInfo] | None
) -> str:
    """Where snippets of ``storage`` live: its path in the node's storage.cfg, else the API's."""
    for source in (node_config, api):
        info = (source or {}).get(storage)
        if info is not None and info.snippets_dir():
            return str(info.snippets_dir())
    kind = next((s[storage].type for s in (node_config, api) if s and storage in s), None)
    raise AilabError(
        f"storage {storage!r} has no directory path for snippets"
        + (f" (type {kind}; use a dir, nfs or cifs storage)" if kind else " in the node's storage config")
    )


def parse_storage_cfg(text: str) -> dict[str, StorageInfo]:
    """``/etc/pve/storage.cfg`` (``<type>: <id>`` then indented ``key value`` lines) -> storages."""
    sections: list[tuple[str, str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        header = re.match(r"^(\w[\w-]*):\s*(\S+)$", line)
        if header and not raw[0].isspace():
            sections.append((header.group(1), header.group(2), {}))
        elif sections and raw[0].isspace():
            key, _, value = line.strip().partition(" ")
            sections[-1][2][key] = value.strip() or "1"  # a bare key is a flag
    return {
        name: StorageInfo(
            name=name,
            type=kind,
            # PVE's default for a dir storage without a content line is images,rootdir.
            content=_content(options.get("content", "images,rootdir")),
            enabled=options.get("disable", "0") in ("0", ""),
            path=options.get("path"),
        )
        for kind, name, options in sections
    }


def _enable_hint(storage: StorageInfo, missing: str) -> str:
    content = ",".join(sorted(storage.content | {missing}))
    return f"`pvesm set {storage.name} --content {content}`"


@dataclass(frozen=True)
class NodeShare:
    """What one cluster node holds: these VMs, and the template or not."""

    name: str
    vms: frozenset[str]
    template: bool


def storage_problems(
    plan: Plan,
    storages: Mapping[str, StorageInfo],
    snippets_storage: str = SNIPPETS_STORAGE,
    *,
    on_node: NodeShare | None = None,
) -> list[str]:
    """Each storage the plan uses that is missing, disabled or lacks a content type, with the fix.

    On a cluster, ``on_node`` says which VMs (and whether the template) this node holds.
    """
    node_name = on_node.name if on_node else plan.nodes[0].name if plan.nodes else "?"
    needs: dict[str, set[str]] = {}
    for vm in plan.vms:
        if on_node is None or vm.name in on_node.vms:
            needs.setdefault(vm.storage, set()).add("images")
    if on_node is None or on_node.template:
        needs.setdefault(plan.template.storage, set()).add("images")
    needs.setdefault(snippets_storage, set()).add("snippets")
    problems = []
    for name in sorted(needs):
        storage = storages.get(name)
        if storage is None:
            problems.append(
                f"storage {name!r} does not exist on node {node_name} "
                f"(it has: {', '.join(sorted(storages)) or 'none'})"
            )
            continue
        if not storage.enabled:
            problems.append(f"storage {name!r} is disabled; enable it with `pvesm set {name} --disable 0`")
        for content in sorted(needs[name] - storage.content):
            used_for = "cloud-init snippets" if content == "snippets" else "VM disks"
            problems.append(
                f"storage {name!r} does not allow {content} (needed for {used_for}); "
                f"enable it with {_enable_hint(storage, content)}"
            )
    return problems


# ---------------------------------------------------------------------------------- SSH (pyinfra)


@dataclass(frozen=True)
class NodeTarget:
    """How to reach the node over SSH, host key checked against ``known_hosts``."""

    host: str
    known_hosts: Path
    user: str = "root"
    port: int = 22
    private_key: Path | None = None
    connect_timeout: int = 10

    @classmethod
    def from_plan(cls, loaded: LoadedPlan, state_dir: Path, node: str | None = None) -> NodeTarget:
        """The plan's node ``node`` (default: the first one)."""
        proxmox = loaded.plan.proxmox
        key = proxmox.ssh_private_key_file
        target = loaded.plan.node(node) if node else loaded.plan.nodes[0]
        if target is None:
            raise ValueError(f"node {node!r} is not in the plan")
        return cls(
            host=target.node_ssh_host,
            known_hosts=known_hosts_path(state_dir),
            user=proxmox.ssh_user,
            port=proxmox.ssh_port,
            private_key=loaded.resolve(key) if key else None,
        )

    def pyinfra_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ssh_user": self.user,
            "ssh_port": self.port,
            "ssh_known_hosts_file": str(self.known_hosts),
            "ssh_strict_host_key_checking": "yes",  # pyinfra's default would be accept-new
            "ssh_paramiko_connect_kwargs": {"timeout": self.connect_timeout},
        }
        if self.private_key is not None:
            # Only the named key: no agent or ~/.ssh keys that could log in as someone else.
            data.update(ssh_key=str(self.private_key), ssh_allow_agent=False, ssh_look_for_keys=False)
        return data

    def unknown_host_hint(self) -> str:
        port = f"-p {self.port} " if self.port != 22 else ""
        return (
            f"the SSH host key of {self.host} is not in {self.known_hosts}; compare "
            f"`ssh-keyscan {port}{self.host}` with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` "
            f"on the node's console, then append the keyscan line to {self.known_hosts}"
        )


@dataclass
class NodePrepResult:
    changed: list[str] = field(default_factory=list)  # remote paths written
    unchanged: list[str] = field(default_factory=list)
    storages: dict[str, StorageInfo] | None = None  # from storage.cfg, None when the node has none
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Messages(logging.Handler):
    """pyinfra logs why a connect or operation failed; keep the text for our one-line error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage()).strip())


@contextmanager
def _captured_pyinfra_messages() -> Iterator[_Messages]:
    handler = _Messages()
    logger = logging.getLogger("pyinfra")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class NodeSession:
    """One SSH connection to the node through pyinfra's public API: read facts, queue
    operations, run them. Node preparation is a small deploy on it that can grow."""

    def __init__(self, target: NodeTarget) -> None:
        from pyinfra.api.config import Config
        from pyinfra.api.connect import connect_all
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.api.inventory import Inventory
        from pyinfra.api.state import State

        if not target.known_hosts.is_file():
            raise ConfigError(target.unknown_host_hint())
        self.target = target
        self.state = State(
            Inventory(([(target.host, target.pyinfra_data())], {})),
            Config(CONNECT_TIMEOUT=target.connect_timeout),
        )
        with _captured_pyinfra_messages() as messages:
            try:
                connect_all(self.state)
            except PyinfraError:
                reason = " ".join(messages.lines) or "connection failed"
                if "known_hosts" in reason or "host key" in reason.lower():
                    raise AilabError(target.unknown_host_hint()) from None
                raise AilabError(
                    f"cannot reach node {target.host} over SSH: {mask_secrets(reason)}"
                ) from None

    def fact(self, fact: type[Any], **arguments: Any) -> Any:
        """One fact of the node, e.g. ``fact(Sha1File, path=...)``."""
        from pyinfra.api.facts import get_facts

        return next(iter(get_facts(self.state, fact, kwargs=arguments).values()))

    def add(self, operation: Any, **arguments: Any) -> None:
        """Queue a pyinfra operation (``files.put`` and the like) for :meth:`run`."""
        from pyinfra.api.operation import add_op

        add_op(self.state, operation, **arguments)

    def run(self) -> None:
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.api.operations import run_ops

        with _captured_pyinfra_messages() as messages:
            try:
                run_ops(self.state)
            except PyinfraError:
                reason = mask_secrets(" ".join(messages.lines) or "an operation failed")
                raise AilabError(f"node preparation on {self.target.host} failed: {reason}") from None

    def close(self) -> None:
        from pyinfra.api.connect import disconnect_all

        disconnect_all(self.state)


def _read_storage_cfg(node: NodeSession) -> dict[str, StorageInfo] | None:
    from pyinfra.facts.files import FileContents

    lines = node.fact(FileContents, path=STORAGE_CFG)
    return None if lines is None else parse_storage_cfg("\n".join(lines))


def prepare_node(
    target: NodeTarget,
    snippets: Sequence[Snippet],
    *,
    plan: Plan | None = None,
    storages: Mapping[str, StorageInfo] | None = None,
    storage_config: Callable[[str], Mapping[str, Any]] | None = None,
    share: NodeShare | None = None,
    dry_run: bool = False,
) -> NodePrepResult:
    """Upload ``snippets`` to the node and, with ``plan``, check its storages' content types.

    Storage facts come from ``storages`` (e.g. :func:`storages_from_api`) or else from the
    node's storage.cfg. A snippets directory comes from the node's storage.cfg, else from
    ``storage_config`` (``GET /storage/{id}``). A problem stops before any upload. ``dry_run``
    reports what would change.
    """
    from pyinfra.facts.files import Sha1File
    from pyinfra.operations import files

    node = NodeSession(target)
    result = NodePrepResult()
    try:
        result.storages = _read_storage_cfg(node)
        known = storages if storages is not None else result.storages
        if plan is not None:
            if known is None:
                raise AilabError(
                    f"{target.host} has no {STORAGE_CFG} and no storage list was given: is it a Proxmox node?"
                )
            result.problems = storage_problems(
                plan, known, snippets[0].storage if snippets else SNIPPETS_STORAGE, on_node=share
            )
            if result.problems:
                return result
        api = dict(storages or {})
        for snippet in snippets:
            on_node = (result.storages or {}).get(snippet.storage)
            listed = api.get(snippet.storage)
            if storage_config and listed and not listed.path and not (on_node and on_node.path):
                api.update(
                    storages_from_api(
                        [
                            {
                                "storage": snippet.storage,
                                "type": listed.type,
                                "content": ",".join(listed.content),
                            }
                        ],
                        {snippet.storage: storage_config(snippet.storage)},
                    )
                )
        uploads = [
            (f"{snippets_directory(snippet.storage, result.storages, api)}/{snippet.filename}", snippet)
            for snippet in snippets
        ]
        for remote, snippet in uploads:
            # Compared before writing, so the result says changed/unchanged even in a dry run.
            current = node.fact(Sha1File, path=remote)
            if current == _sha1(snippet.content):
                result.unchanged.append(remote)
                continue
            result.changed.append(remote)
            if not dry_run:
                node.add(
                    files.put,
                    name=f"Upload snippet {snippet.volume}",
                    src=io.StringIO(snippet.content),
                    dest=remote,
                    user="root",
                    group="root",
                    # a proxy URL with a password must not be world-readable on the node
                    mode="600" if snippet.holds_credentials else "644",
                    create_remote_dir=True,
                )
        if result.changed and not dry_run:
            node.run()
        log.info(
            "node %s: %d snippet(s) written, %d unchanged",
            target.host,
            len(result.changed),
            len(result.unchanged),
        )
        return result
    finally:
        node.close()


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def cicustom_vendor(snippet: Snippet) -> str:
    """The ``cicustom`` value for a VM config that boots with this vendor data."""
    return f"vendor={snippet.volume}"
