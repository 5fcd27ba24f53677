"""Run the lab's API emulator in the background: start, stop, status, reset.

Everything lives in the lab directory (``.ailab/lab`` by default)::

    settings.json          emulator settings (users and tokens refer to secret files)
    secrets/api-token      the API token secret (0600)
    secrets/root-password  root@pam's password (0600)
    tls/pve-ssl.pem        the self-signed certificate (also the CA file clients pin)
    emulator.pid / .log    the background process
    state/                 the emulator's state (VM configs, tasks, jobs)
    vms.lab.yaml           the lab plan (written by another part of the lab)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ailab_deploy.core.privileges import TOKEN_NAME, USER
from ailab_deploy.errors import InputError, LabError

from .emulator.__main__ import READY_FILE
from .emulator.settings import (
    DEBIAN_RELEASES,
    DEFAULT_DEBIAN_RELEASE,
    DEFAULT_PVE_RELEASE,
    PVE_VERSIONS,
    SETTINGS_FILE,
)
from .emulator.state import write_atomic
from .emulator.tls import CERT_FILE, FINGERPRINT_FILE

LEGACY_DEBIAN_RELEASE = 12  # what labs made before the release was a setting were built with

DEFAULT_LAB_DIR = Path(".ailab/lab")
DEFAULT_PORT = 8006
TOKEN_ID = "root@pam!ailab"  # the lab's housekeeping token
DEPLOY_TOKEN_ID = f"{USER}!{TOKEN_NAME}"  # what the lab plan deploys with
USER_ID = "root@pam"


def resolve_lab_dir(option: Path | None = None) -> Path:
    """``--lab-dir``, else ``$AILAB_LAB_DIR``, else ``.ailab/lab`` under the current directory."""
    if option is not None:
        return option.resolve()
    env = os.environ.get("AILAB_LAB_DIR")
    return Path(env).resolve() if env else (Path.cwd() / DEFAULT_LAB_DIR).resolve()


@dataclass(frozen=True)
class LabPaths:
    lab_dir: Path

    @property
    def settings(self) -> Path:
        return self.lab_dir / SETTINGS_FILE

    @property
    def token_secret(self) -> Path:
        return self.lab_dir / "secrets" / "api-token"

    @property
    def deploy_token_secret(self) -> Path:
        """The least-privilege token the lab plan deploys with (made by `lab up`)."""
        return self.lab_dir / "secrets" / "deploy-token"

    @property
    def root_password(self) -> Path:
        return self.lab_dir / "secrets" / "root-password"

    @property
    def pid_file(self) -> Path:
        return self.lab_dir / "emulator.pid"

    @property
    def log_file(self) -> Path:
        return self.lab_dir / "emulator.log"

    @property
    def ready_file(self) -> Path:
        return self.lab_dir / READY_FILE

    @property
    def cert(self) -> Path:
        return self.lab_dir / "tls" / CERT_FILE

    @property
    def fingerprint(self) -> Path:
        return self.lab_dir / "tls" / FINGERPRINT_FILE

    @property
    def plan(self) -> Path:
        return self.lab_dir / "vms.lab.yaml"


def _write_secret(path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    path.chmod(0o600)


def pve_full_version(release: str) -> str:
    """'9.1' -> the full version the emulator reports; InputError for a release it does not emulate."""
    if release not in PVE_VERSIONS:
        raise InputError(f"--pve-version: '{release}' is not one of {', '.join(PVE_VERSIONS)}")
    return PVE_VERSIONS[release]


MAX_NODES = 7  # the lab network numbers nodes 10.77.0.2-8; its VMs start at .10


def cluster_nodes(count: int) -> list[str]:
    """``--nodes N``: pve1..pveN; one node is the standalone ``pve`` of a single-node lab."""
    if not 1 <= count <= MAX_NODES:
        raise InputError(f"--nodes: {count} is not between 1 and {MAX_NODES}")
    return ["pve"] if count == 1 else [f"pve{i}" for i in range(1, count + 1)]


def _settings_nodes(settings: dict[str, Any]) -> list[str]:
    names = [str(n["name"] if isinstance(n, dict) else n) for n in settings.get("nodes") or []]
    return names or [str(settings.get("node", "pve"))]


def check_debian_release(lab_dir: Path, release: int | None) -> int:
    """The Debian release the lab at ``lab_dir`` serves: ``release`` for a new lab, else the one it
    was set up with (InputError for another one: its template and VMs are of that release)."""
    if release is not None and release not in DEBIAN_RELEASES:
        raise InputError(f"--debian-release: {release} is not one of {', '.join(map(str, DEBIAN_RELEASES))}")
    current = status(lab_dir)
    if release is None:
        return int(current["debian_release"])
    if release != current["debian_release"] and LabPaths(lab_dir).settings.exists():
        raise InputError(
            f"--debian-release: the lab in {lab_dir} serves Debian {current['debian_release']}; a lab "
            f"keeps its release (no in-place upgrade): use another --lab-dir for Debian {release}"
        )
    return release


def ensure_settings(
    lab_dir: Path,
    port: int | None = None,
    backend: str | None = None,
    pve_version: str | None = None,
    nodes: int | None = None,
    debian_release: int | None = None,
) -> dict[str, Any]:
    """Create or complete settings.json: root@pam with a password, the lab's API token."""
    paths = LabPaths(lab_dir)
    lab_dir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {}
    if paths.settings.exists():
        try:
            settings = json.loads(paths.settings.read_text())
        except json.JSONDecodeError as err:
            raise LabError(f"{paths.settings}: {err}") from err
    existing = dict(settings)
    _write_secret(paths.token_secret)
    _write_secret(paths.root_password)

    def rel(path: Path) -> str:
        return str(path.relative_to(lab_dir))

    users = settings.setdefault("users", [])
    if not any(u.get("userid") == USER_ID for u in users):
        users.append({"userid": USER_ID, "password_file": rel(paths.root_password)})
    tokens = settings.setdefault("tokens", [])
    if not any(t.get("tokenid") == TOKEN_ID for t in tokens):
        tokens.append({"tokenid": TOKEN_ID, "secret_file": rel(paths.token_secret)})
    if port is not None:
        settings["port"] = port
    settings.setdefault("port", DEFAULT_PORT)
    settings.setdefault("run_backup_jobs", True)  # a node runs its backup jobs; so does the lab
    if backend is not None:
        settings["backend"] = backend
    if pve_version is not None:
        settings["version"] = pve_full_version(pve_version)
    if nodes is not None:
        names = cluster_nodes(nodes)
        if len(names) > 1:
            settings["nodes"] = names
            settings["node"] = names[0]
        else:
            settings.pop("nodes", None)
            settings["node"] = names[0]
    settings["debian_release"] = debian_release or _debian_release(existing)
    write_atomic(paths.settings, json.dumps(settings, indent=2) + "\n", mode=0o600)
    return settings


def _pid(paths: LabPaths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    # a recycled pid must not be mistaken for (and killed as) our emulator
    if b"ailab_deploy.lab.emulator" not in cmdline or str(paths.lab_dir).encode() not in cmdline:
        return None
    return pid


def _ready(paths: LabPaths) -> dict[str, Any] | None:
    try:
        return dict(json.loads(paths.ready_file.read_text()))
    except (OSError, json.JSONDecodeError):
        return None


def _probe(url: str, paths: LabPaths) -> bool:
    """True if the emulator answers /version to the lab token over TLS with the pinned cert."""
    context = ssl.create_default_context(cafile=str(paths.cert))
    try:
        secret = paths.token_secret.read_text().strip()
        request = urllib.request.Request(
            f"{url}/version", headers={"Authorization": f"PVEAPIToken={TOKEN_ID}={secret}"}
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _debian_release(settings: dict[str, Any]) -> int:
    """A new lab's default, or the release a lab was made with; labs made before the release was
    a setting booted Debian 12's image."""
    return int(settings.get("debian_release", LEGACY_DEBIAN_RELEASE if settings else DEFAULT_DEBIAN_RELEASE))


def status(lab_dir: Path) -> dict[str, Any]:
    paths = LabPaths(lab_dir)
    settings: dict[str, Any] = {}
    if paths.settings.exists():
        settings = json.loads(paths.settings.read_text())
    pid = _pid(paths)
    ready = _ready(paths) if pid is not None else None
    port = ready["port"] if ready else settings.get("port", DEFAULT_PORT)
    host = settings.get("listen", "127.0.0.1")
    fingerprint = paths.fingerprint.read_text().strip() if paths.fingerprint.exists() else None
    return {
        "running": bool(pid is not None and ready and ready.get("pid") == pid),
        "pid": pid,
        "endpoint": f"https://{host}:{port}/api2/json",
        "host": host,
        "port": port,
        "node": settings.get("node", _settings_nodes(settings)[0]),
        "nodes": _settings_nodes(settings),
        "backend": settings.get("backend", "null"),
        "pve_version": settings.get("version", PVE_VERSIONS[DEFAULT_PVE_RELEASE]),
        "debian_release": _debian_release(settings),
        "token_id": TOKEN_ID,
        "token_secret_path": str(paths.token_secret),
        "deploy_token_id": DEPLOY_TOKEN_ID,
        "deploy_token_secret_path": str(paths.deploy_token_secret),
        "user": USER_ID,
        "password_path": str(paths.root_password),
        "fingerprint": fingerprint,
        "ca_path": str(paths.cert),
        "lab_dir": str(lab_dir),
        "lab_plan": str(paths.plan),
        "log": str(paths.log_file),
    }


def up(
    lab_dir: Path,
    port: int | None = None,
    backend: str = "null",
    timeout: float = 30.0,
    pve_version: str | None = None,
    nodes: int | None = None,
    debian_release: int | None = None,
) -> dict[str, Any]:
    """Start the emulator in the background unless it already runs. Idempotent."""
    paths = LabPaths(lab_dir)
    current = status(lab_dir)
    if pve_version is not None and current["pve_version"] != pve_full_version(pve_version):
        down(lab_dir)  # the PVE version is chosen at start
        current = status(lab_dir)
    if nodes is not None and current["nodes"] != cluster_nodes(nodes):
        down(lab_dir)  # so are the cluster's nodes
        current = status(lab_dir)
    if current["running"] and _probe(current["endpoint"], paths):
        if port is not None and port != current["port"]:
            raise LabError(
                f"the lab emulator already runs on port {current['port']}; "
                f"run 'ailab-deploy lab down' before changing the port to {port}"
            )
        return current
    if current["pid"] is not None:
        down(lab_dir)
    ensure_settings(lab_dir, port, backend, pve_version, nodes, debian_release)
    paths.ready_file.unlink(missing_ok=True)
    with paths.log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ailab_deploy.lab.emulator", "--lab-dir", str(lab_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=lab_dir,
        )
    write_atomic(paths.pid_file, f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            paths.pid_file.unlink(missing_ok=True)
            raise LabError(f"the lab emulator exited at start: {_log_tail(paths)}")
        ready = _ready(paths)
        if ready and ready.get("pid") == process.pid and _probe(ready["url"], paths):
            return status(lab_dir)
        time.sleep(0.1)
    process.terminate()
    paths.pid_file.unlink(missing_ok=True)
    raise LabError(f"the lab emulator did not become ready in {timeout:.0f}s: {_log_tail(paths)}")


def down(lab_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the emulator. Returns whether one was running. Idempotent."""
    paths = LabPaths(lab_dir)
    pid = _pid(paths)
    if pid is None:
        paths.pid_file.unlink(missing_ok=True)
        paths.ready_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if _zombie(pid):
            break
        time.sleep(0.05)
    else:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    paths.pid_file.unlink(missing_ok=True)
    paths.ready_file.unlink(missing_ok=True)
    return True


def _request(lab_dir: Path, method: str, path: str, *, admin: bool = False, timeout: float = 30) -> Any:
    """One call to the running emulator with the lab's token; its ``data``."""
    current = status(lab_dir)
    if not current["running"]:
        raise LabError("the lab emulator is not running: run 'ailab-deploy lab up' first")
    paths = LabPaths(lab_dir)
    secret = paths.token_secret.read_text().strip()
    base = current["endpoint"].removesuffix("/api2/json") if admin else current["endpoint"]
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"PVEAPIToken={TOKEN_ID}={secret}"}
    )
    context = ssl.create_default_context(cafile=str(paths.cert))
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as answer:
            return json.loads(answer.read())["data"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
        raise LabError(f"the lab emulator did not answer {method} {path}: {err}") from err


def reset(lab_dir: Path) -> list[int]:
    """Wipe every VM but the template, through the running emulator's admin API."""
    return list(_request(lab_dir, "POST", "/_lab/reset", admin=True)["removed"])


def check_node_name(lab_dir: Path, node: str, action: str) -> None:
    nodes = status(lab_dir)["nodes"]
    if node not in nodes:
        raise InputError(f"lab node {action}: '{node}' is not a node of this lab ({', '.join(nodes)})")
    if len(nodes) < 2:
        raise InputError(f"lab node {action}: the lab has one node; start a cluster with 'lab up --nodes 3'")


def node_power(lab_dir: Path, node: str, action: str) -> dict[str, Any]:
    """``fail`` (the node loses power: it stops answering, its VMs stop) or ``recover`` a node."""
    check_node_name(lab_dir, node, action)
    result = _request(lab_dir, "POST", f"/_lab/nodes/{urllib.parse.quote(node)}/{action}", admin=True)
    return dict(result or {})


def cluster_state(lab_dir: Path) -> dict[str, str]:
    """node -> online/offline, as the running emulator sees them."""
    info = _request(lab_dir, "GET", "/_lab/info", admin=True)
    return dict(info.get("nodes", {}))


def guests_power(lab_dir: Path, action: str, timeout: float = 300.0, only: str | None = None) -> str:
    """``startall`` or ``stopall`` on every node that answers (or on ``only``), as
    pve-guests.service does at boot and shutdown; waits (bounded) for the tasks and returns the
    first failing exit status (or OK)."""
    current = status(lab_dir)
    offline = {n for n, state in cluster_state(lab_dir).items() if state != "online"}
    started = []
    for node in current["nodes"]:
        if node not in offline and only in (None, node):
            started.append((node, str(_request(lab_dir, "POST", f"/nodes/{node}/{action}"))))
    deadline = time.monotonic() + timeout
    result = "OK"
    for node, upid in started:
        path = f"/nodes/{node}/tasks/{urllib.parse.quote(upid, safe='')}/status"
        while True:
            task = _request(lab_dir, "GET", path)
            if task.get("status") == "stopped":
                if result == "OK":
                    result = str(task.get("exitstatus"))
                break
            if time.monotonic() > deadline:
                raise LabError(f"the lab node {node}'s {action} did not finish within {timeout:.0f}s")
            time.sleep(0.5)
    return result


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _log_tail(paths: LabPaths, lines: int = 5) -> str:
    try:
        text = paths.log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
