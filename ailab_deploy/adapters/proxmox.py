"""The Proxmox VE API client: proxmoxer over HTTPS with an API token.

What it adds to proxmoxer:

* TLS: CA validation on (the system CA store or ``proxmox.ca_file``), or, with
  ``proxmox.fingerprint``, a pinned SHA-256 of the node's certificate checked during the
  handshake, before the token header is sent. Verification is never simply switched off.
* Retries with exponential backoff for transient failures (5xx such as
  ``can't lock file ... got timeout``, connection errors on reads). Writes are only
  retried when PVE refused them before doing anything (a 5xx answer).
* Bounded task waits: every UPID is polled until it stops or a deadline passes.
* One error hierarchy (:class:`ailab_deploy.errors.ProxmoxError` and subclasses).
* Request logging (INFO: method, path, status, time; DEBUG: bodies) with secrets masked,
  and a count of read and write calls, so "a re-apply makes zero writes" can be checked.
* Form values as PVE wants them: booleans as 0/1 (proxmoxer would send ``True``, #208).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from proxmoxer import ProxmoxAPI, ResourceException
from requests.adapters import HTTPAdapter

from ailab_deploy.adapters import retry as waits
from ailab_deploy.adapters.retry import Backoff, Clock, Sleep
from ailab_deploy.adapters.secrets import mask_secrets
from ailab_deploy.core.diff import ActualVM
from ailab_deploy.core.loader import LoadedPlan
from ailab_deploy.core.privileges import denied_hint
from ailab_deploy.core.pveformat import normalise_tags
from ailab_deploy.errors import ConfigError, ProxmoxError

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504, 595, 596, 599})
# 5xx texts that are final: retrying cannot change the answer.
PERMANENT_500 = re.compile(
    r"already exists|does not exist|unable to find configuration|not running|already running|"
    r"shrinking|validation error|protection|not allowed|you can't|no such|checksum mismatch|"
    r"no options specified|is a template|not supported|permission|only root can",
    re.IGNORECASE,
)
LOCK_TIMEOUT = re.compile(r"can't lock file .* got timeout|got timeout", re.IGNORECASE)
_FINGERPRINT = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$")


class ProxmoxApiError(ProxmoxError):
    """PVE answered a request with an error status."""

    def __init__(self, method: str, path: str, status: int, reason: str, errors: object = None) -> None:
        self.method, self.path, self.status, self.reason, self.errors = method, path, status, reason, errors
        detail = f" {errors}" if errors else ""
        super().__init__(f"{method} /{path}: {status} {reason.strip()}{detail}")

    @property
    def lock_timeout(self) -> bool:
        return bool(LOCK_TIMEOUT.search(self.reason))

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUS and not PERMANENT_500.search(self.reason)


class PermissionDenied(ProxmoxApiError):
    """A 403: the token lacks a privilege. The message names it, the path and the pveum fix."""

    def __init__(self, method: str, path: str, reason: str, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(method, path, 403, reason)
        self.args = (denied_hint(method, path, reason, params),)

    def __str__(self) -> str:
        return str(self.args[0])


class Unreachable(ProxmoxError):
    """A read could not reach PVE (connection refused, reset, timed out); retrying is safe."""


def _transient(error: Exception) -> bool:
    """Errors a retry can cure: PVE's transient 5xx answers, and reads that did not get through."""
    return isinstance(error, Unreachable) or (isinstance(error, ProxmoxApiError) and error.transient)


class TaskFailed(ProxmoxError):
    """A PVE task (UPID) stopped with an error."""

    def __init__(self, what: str, upid: str, exitstatus: str) -> None:
        self.upid, self.exitstatus = upid, exitstatus
        super().__init__(f"{what} failed: {exitstatus} (task {upid})")

    @property
    def lock_timeout(self) -> bool:
        return bool(LOCK_TIMEOUT.search(self.exitstatus))


class TaskTimeout(ProxmoxError):
    """A task was still running at the deadline. It goes on on the node; a re-run resumes."""

    def __init__(self, what: str, upid: str, seconds: float) -> None:
        self.upid = upid
        super().__init__(
            f"{what} was still running after {seconds:g} s (task {upid}); it continues on the node. "
            "Re-run the command to resume once it has finished, or raise --task-timeout"
        )


# ---------------------------------------------------------------------------------------- secrets


def token_secret(loaded: LoadedPlan, environ: Mapping[str, str] | None = None) -> str:
    """The API token secret: the environment variable, else the 0600 file, else a ConfigError
    pointing at the plan line."""
    settings = loaded.plan.proxmox
    return secret_from_env_or_file(
        settings.token_secret_env,
        loaded.resolve(settings.token_secret_file) if settings.token_secret_file else None,
        where_env=loaded.where(["proxmox", "token_secret_env"]),
        where_file=loaded.where(["proxmox", "token_secret_file"]),
        file_hint="set proxmox.token_secret_file to a 0600 file",
        environ=environ,
    )


def secret_from_env_or_file(
    env_name: str,
    path: Path | None,
    *,
    where_env: str,
    where_file: str,
    file_hint: str,
    environ: Mapping[str, str] | None = None,
) -> str:
    """A secret from the environment variable, else from a 0600 file, else a ConfigError."""
    env = os.environ if environ is None else environ
    value = env.get(env_name, "").strip()
    if value:
        return value
    if path is not None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            raise ConfigError(f"{where_file}: {path} does not exist (and {env_name} is not set)") from None
        if mode & 0o077:
            raise ConfigError(
                f"{where_file}: {path} has mode {mode:04o}; it must be 0600 (run `chmod 600 {path}`)"
            )
        secret = path.read_text(encoding="utf-8").strip()
        if not secret:
            raise ConfigError(f"{where_file}: {path} is empty")
        return secret
    raise ConfigError(f"{where_env}: environment variable {env_name} is not set (or {file_hint})")


# ------------------------------------------------------------------------------------------- TLS


def normalise_fingerprint(text: str) -> str:
    """``AA:bb:...`` -> ``aabb...`` (urllib3 compares lower-case hex without colons)."""
    if not _FINGERPRINT.match(text.strip()):
        raise ConfigError(f"{text!r} is not a SHA-256 fingerprint (32 hex pairs separated by ':')")
    return text.strip().replace(":", "").lower()


class FingerprintAdapter(HTTPAdapter):
    """Trust exactly the certificate whose SHA-256 is pinned, instead of a CA.

    urllib3 checks ``assert_fingerprint`` right after the TLS handshake, before the request
    (and its token header) is written; a mismatch raises ``SSLError``. CA validation is off
    for this adapter only, because the pin is stronger than it.
    """

    def __init__(self, fingerprint: str, **kwargs: Any) -> None:
        self._fingerprint = normalise_fingerprint(fingerprint)
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["verify"] = False  # the pin replaces CA validation; assert_fingerprint always runs
        return super().send(request, **kwargs)


# ----------------------------------------------------------------------------------------- stats


@dataclass
class CallStats:
    """HTTP requests made, counted by the session hook (task polls and retries included)."""

    reads: int = 0
    writes: int = 0
    write_calls: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, method: str, path: str) -> None:
        kind = f"{method} {_path_shape(path)}"
        with self._lock:
            self.by_kind[kind] += 1
            if method in WRITE_METHODS:
                self.writes += 1
                self.write_calls.append(f"{method} {path}")
            else:
                self.reads += 1

    def reset(self) -> None:
        with self._lock:
            self.reads = self.writes = 0
            self.write_calls.clear()
            self.by_kind.clear()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"reads": self.reads, "writes": self.writes, "by_kind": dict(self.by_kind)}


def task_node(upid: str) -> str | None:
    """The node a task runs on: ``UPID:<node>:<pid>:...``; its status is only known there."""
    parts = upid.split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "UPID" and parts[1] else None


def _path_shape(path: str) -> str:
    """``nodes/pve/qemu/101/config`` -> ``nodes/{node}/qemu/{vmid}/config`` for counting."""
    path = re.sub(r"UPID:[^/]+", "{upid}", path)
    path = re.sub(r"^nodes/[^/]+", "nodes/{node}", path)
    return re.sub(r"/\d+(?=/|$)", "/{vmid}", path)


def _form(params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None; booleans as 0/1 (PVE rejects proxmoxer's ``True``)."""
    return {k: (int(v) if isinstance(v, bool) else v) for k, v in params.items() if v is not None}


# ---------------------------------------------------------------------------------------- client


class ProxmoxClient:
    """One node of one PVE server, reached with an API token."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        node: str,
        token_id: str,
        secret: str,
        fingerprint: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
        retry: Backoff | None = None,
        pool_size: int = 16,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        user, _, token_name = token_id.partition("!")
        self.node = node  # where calls not about one VM go
        self.located: dict[int, str] = {}  # vmid -> the node that holds it, from /cluster/resources
        self.base = f"https://{host}:{port}"
        self.retry = retry or Backoff()
        self.stats = CallStats()
        self._secret = secret
        self.sleep = sleep  # every wait of the client, and of the engine driving it
        self.clock = clock
        verify: bool | str = str(ca_file) if ca_file else True
        self.api = ProxmoxAPI(
            host,
            port=port,
            user=user,
            token_name=token_name,
            token_value=secret,
            verify_ssl=verify,
            timeout=timeout,
            backend="https",
        )
        session: requests.Session = self.api._store["session"]
        session.trust_env = False  # no proxies or CA bundles from the environment
        adapter: HTTPAdapter = (
            FingerprintAdapter(fingerprint, pool_connections=1, pool_maxsize=pool_size)
            if fingerprint
            else HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        )
        session.mount(self.base + "/", adapter)
        session.hooks["response"].append(self._on_response)

    @classmethod
    def from_plan(cls, loaded: LoadedPlan, *, timeout: float = 30.0, pool_size: int = 16) -> ProxmoxClient:
        settings = loaded.plan.proxmox
        if not settings.verify_tls and not settings.fingerprint:
            raise ConfigError(
                f"{loaded.where(['proxmox', 'verify_tls'])}: TLS verification cannot be switched off; "
                "pin the node's certificate with proxmox.fingerprint (`pvenode cert info` shows it) "
                "or give its CA in proxmox.ca_file"
            )
        ca_file = None
        if settings.ca_file:
            ca_file = loaded.resolve(settings.ca_file)
            if not ca_file.is_file():
                raise ConfigError(f"{loaded.where(['proxmox', 'ca_file'])}: {ca_file} does not exist")
        return cls(
            host=settings.host,
            port=settings.port,
            node=loaded.plan.nodes[0].name,
            token_id=settings.token_id,
            secret=token_secret(loaded),
            fingerprint=settings.fingerprint,
            ca_file=ca_file,
            timeout=timeout,
            pool_size=pool_size,
        )

    # ---- logging and counting

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to mask wherever this client's errors end up (the ledger, logs)."""
        return (self._secret,)

    def mask(self, text: str) -> str:
        return mask_secrets(text, [self._secret])

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = response.request
        path = urlsplit(request.url or "").path.removeprefix("/api2/json/")
        method = request.method or "?"
        self.stats.record(method, path)
        log.info(
            "%s /%s -> %s %s (%.0f ms)",
            method,
            path,
            response.status_code,
            response.reason,
            response.elapsed.total_seconds() * 1000,
        )
        if log.isEnabledFor(logging.DEBUG):
            body = (
                request.body
                if isinstance(request.body, str)
                else (request.body or b"").decode(errors="replace")
            )
            log.debug("request %s %s body=%s", method, self.mask(request.url or ""), self.mask(body))
            log.debug("response %s", self.mask(response.text[:4000]))

    # ---- calls

    def call(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, *, retry: bool = True
    ) -> Any:
        """One API call with retries for transient failures; ``path`` is below /api2/json."""
        form = _form(params or {})
        return waits.retry(
            lambda _: self._call_reaching(method, path, form),
            delays=self.retry.delays() if retry else (),
            retryable=_transient,
            sleep=self.sleep,
            on_retry=lambda error, delay: log.warning("%s; retrying in %.1f s", self.mask(str(error)), delay),
        )

    def _call_reaching(self, method: str, path: str, form: dict[str, Any]) -> Any:
        """One request; a lost connection becomes an error that says whether a retry is safe."""
        try:
            return self._call_once(method, path, form)
        except (requests.ConnectionError, requests.Timeout) as error:
            if isinstance(error, requests.exceptions.SSLError):
                raise ProxmoxError(f"TLS check of {self.base} failed: {self.mask(str(error))}") from None
            if method in WRITE_METHODS:
                # The request may have reached PVE; only a fresh read can tell what happened.
                raise ProxmoxError(
                    f"{method} /{path}: connection lost ({type(error).__name__}); "
                    "re-run the command to resume"
                ) from None
            raise Unreachable(f"{method} /{path}: cannot reach {self.base}: {type(error).__name__}") from None

    def _call_once(self, method: str, path: str, form: dict[str, Any]) -> Any:
        resource = self.api(path)
        try:
            if method == "GET":
                return resource.get(**form)
            if method == "POST":
                return resource.post(**form)
            if method == "PUT":
                return resource.put(**form)
            if method == "DELETE":
                return resource.delete(**form)
        except ResourceException as error:
            if int(error.status_code) == 403:
                raise PermissionDenied(method, path, self.mask(str(error.content or "")), form) from None
            raise ProxmoxApiError(
                method,
                path,
                int(error.status_code),
                self.mask(str(error.content or "")),
                error.errors or None,
            ) from None
        raise ValueError(f"unknown method {method}")

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params)

    # ---- tasks

    def wait_task(self, upid: str | None, what: str, timeout: float) -> None:
        """Poll until the task stops; raise TaskFailed or TaskTimeout. ``None`` means it ran synchronously."""
        if not upid:
            return

        def stopped() -> bool | None:
            status = self.get(f"nodes/{task_node(upid) or self.node}/tasks/{upid}/status")
            if status.get("status") != "stopped":
                return None
            exit_status = str(status.get("exitstatus", ""))
            if exit_status == "OK" or exit_status.startswith("WARNINGS"):
                return True
            raise TaskFailed(what, upid, exit_status or "no exit status")

        waits.poll(
            stopped,
            timeout=timeout,
            interval=lambda previous: min(previous * 1.5, 1.0) if previous else 0.05,
            on_timeout=lambda: TaskTimeout(what, upid, timeout),
            clock=self.clock,
            sleep=self.sleep,
        )

    def run_task(self, method: str, path: str, params: Mapping[str, Any], what: str, timeout: float) -> None:
        self.wait_task(self.call(method, path, params), what, timeout)

    # ---- reading state

    def cluster_vms(self) -> dict[int, ActualVM]:
        """Every guest in the cluster, from one /cluster/resources call."""
        resources = self.get("cluster/resources", type="vm")
        vms: dict[int, ActualVM] = {}
        for item in resources:
            if item.get("type") not in ("qemu", "lxc"):
                continue
            vmid = int(item["vmid"])
            vms[vmid] = ActualVM(
                vmid=vmid,
                name=str(item.get("name", "")),
                node=str(item.get("node", "")),
                type=str(item["type"]),
                status=str(item.get("status", "")),
                template=bool(int(item.get("template") or 0)),
                tags=normalise_tags(str(item.get("tags", ""))),
                lock=item.get("lock") or None,
            )
        self.located = {vmid: vm.node for vmid, vm in vms.items() if vm.node}
        return vms

    def release(self) -> str:
        """The PVE release, "9.1" or "8.4" (GET /version; every user may read it)."""
        version = str(self.get("version").get("version", ""))
        return ".".join(version.split(".")[:2])

    def node_of(self, vmid: int) -> str:
        """The node that holds the VM (as last read from /cluster/resources), else the home node."""
        return self.located.get(vmid, self.node)

    def vm_config(self, vmid: int) -> dict[str, Any]:
        return dict(self.get(self.qemu_path(vmid, "config")))

    def vm_configs(self, vmids: Iterable[int], workers: int = 8) -> dict[int, dict[str, Any]]:
        """Configs of several VMs, read concurrently by a small pool."""
        ids = sorted(set(vmids))
        if not ids:
            return {}
        with ThreadPoolExecutor(max_workers=min(workers, len(ids)), thread_name_prefix="pve-read") as pool:
            return dict(zip(ids, pool.map(self.vm_config, ids), strict=True))

    def vm_status(self, vmid: int) -> dict[str, Any]:
        return dict(self.get(self.qemu_path(vmid, "status/current")))

    def agent_ipv4(self, vmid: int) -> list[str]:
        """IPv4 addresses the guest agent reports (raises ProxmoxApiError while it is not up)."""
        answer = self.call("GET", self.qemu_path(vmid, "agent/network-get-interfaces"), retry=False)
        addresses = []
        for interface in (answer or {}).get("result", []):
            if interface.get("name") == "lo":
                continue
            for address in interface.get("ip-addresses", []) or []:
                if address.get("ip-address-type") == "ipv4":
                    addresses.append(str(address.get("ip-address")))
        return addresses

    def snapshots(self, vmid: int) -> list[dict[str, Any]]:
        return [s for s in self.get(self.qemu_path(vmid, "snapshot")) if s.get("name") != "current"]

    def storages(self, content: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        return list(self.get(f"nodes/{node or self.node}/storage", content=content))

    def storage_config(self, storage: str) -> dict[str, Any]:
        """The storage's cluster-wide config (type, content, ``path`` of directory storages)."""
        return dict(self.get(f"storage/{storage}"))

    def qemu_path(self, vmid: int, rest: str = "") -> str:
        return f"nodes/{self.node_of(vmid)}/qemu/{vmid}" + (f"/{rest}" if rest else "")
