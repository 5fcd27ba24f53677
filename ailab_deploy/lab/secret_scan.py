"""Where secrets may live, and a scan of a whole lab for them anywhere else.

:data:`SECRET_PLACES` is the one list of allowed places: path, which secrets, mode and
owner. :func:`scan_lab` takes every secret ailab-deploy holds for a lab (the API token
secret, each generated database password, the LLM API key) and searches, byte by byte,
every lab VM's whole filesystem as its own processes see it (so /tmp and /run, which
systemd-nspawn mounts as tmpfs, are included), the VM's console log, and the controller
side: the lab directory with the state directory, runner artifacts, reports, inventory
and logs. Journal files are searched raw and decoded (journald compresses long fields),
gzip-rotated logs decompressed. A hit outside the list, or in a listed place with another
mode or owner, is a violation.
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import os
import pwd
import stat
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ailab_deploy.adapters.secrets import SecretStore
from ailab_deploy.adapters.statedir import state_dir_for
from ailab_deploy.lab.containers.backend import machines_dir
from ailab_deploy.lab.containers.machine import Machine
from ailab_deploy.lab.control import LabPaths

API_TOKEN = "api-token"
DATABASE_PASSWORD = "database-password"
LLM_API_KEY = "llm-api-key"
CONTROLLER_USER = "<controller>"  # owner placeholder: the user running ailab-deploy

# Where each place's path is relative to.
ON_VM = "vm"  # an absolute path inside any lab VM
IN_STATE_DIR = "state"  # relative to the plan's state directory (.ailab/)
IN_LAB_DIR = "lab"  # relative to the lab directory


@dataclass(frozen=True)
class SecretPlace:
    scope: str
    pattern: str  # fnmatch pattern
    kinds: frozenset[str]
    mode: int
    owner: str
    why: str


SECRET_PLACES: tuple[SecretPlace, ...] = (
    SecretPlace(
        ON_VM,
        "/etc/ailab/*.env",
        frozenset({DATABASE_PASSWORD, LLM_API_KEY}),
        0o600,
        "root",
        "an app's environment file; systemd reads it (as root) for the app's service",
    ),
    SecretPlace(
        ON_VM,
        "/etc/ailab-llm/api-key",
        frozenset({LLM_API_KEY}),
        0o600,
        "llamacpp",
        "llama-server reads it with --api-key-file",
    ),
    SecretPlace(
        ON_VM,
        "/etc/nginx/ailab-llm-key.conf",
        frozenset({LLM_API_KEY}),
        0o600,
        "root",
        "the key check of the nginx proxy in front of Ollama (nginx reads it as root)",
    ),
    SecretPlace(
        IN_STATE_DIR,
        "secrets/*",
        frozenset({DATABASE_PASSWORD, LLM_API_KEY}),
        0o600,
        CONTROLLER_USER,
        "the controller's secret store and the extra-vars file Ansible reads",
    ),
    SecretPlace(
        IN_LAB_DIR,
        "secrets/api-token",
        frozenset({API_TOKEN}),
        0o600,
        CONTROLLER_USER,
        "the lab's API token secret (on a real node: proxmox.token_secret_file or the environment)",
    ),
)

# Top-level directories of a running guest's root that are kernel views, not files.
_PSEUDO_DIRS = frozenset({"proc", "sys", "dev"})
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Secret:
    label: str  # e.g. "database-password:ailab"
    value: str

    @property
    def kind(self) -> str:
        return self.label.split(":", 1)[0]


@dataclass(frozen=True)
class Hit:
    where: str  # "vm 101", "controller"
    path: str  # as the owner of the place sees it (absolute in the VM, absolute on the controller)
    label: str
    encoding: str  # "plain", "base64" or "decoded journal" ...
    mode: int
    owner: str
    problem: str  # "" when the place is allowed

    def __str__(self) -> str:
        return (
            f"{self.where}: {self.path} ({oct(self.mode)} {self.owner}) holds {self.label} "
            f"[{self.encoding}]{': ' + self.problem if self.problem else ''}"
        )


@dataclass
class Coverage:
    files: int = 0
    bytes: int = 0
    unreadable: list[str] = field(default_factory=list)


@dataclass
class ScanResult:
    coverage: dict[str, Coverage]
    hits: list[Hit]

    @property
    def violations(self) -> list[Hit]:
        return [hit for hit in self.hits if hit.problem]


def _needles(secrets: Iterable[Secret]) -> list[tuple[bytes, str, str]]:
    """(bytes to look for, label, encoding): each value plain and base64-encoded at every alignment."""
    found = []
    for secret in secrets:
        raw = secret.value.encode()
        found.append((raw, secret.label, "plain"))
        for offset in range(3):
            whole = (len(raw) - offset) // 3 * 3
            if whole >= 12:
                found.append((base64.b64encode(raw[offset : offset + whole]), secret.label, "base64"))
    return found


def _search_stream(
    chunks: Iterable[bytes], needles: list[tuple[bytes, str, str]]
) -> tuple[int, set[tuple[str, str]]]:
    """Bytes read and the (label, encoding) pairs found; chunks overlap so no match is split."""
    overlap = max((len(n) for n, _, _ in needles), default=1) - 1
    tail = b""
    total = 0
    found: set[tuple[str, str]] = set()
    for chunk in chunks:
        total += len(chunk)
        window = tail + chunk
        for needle, label, encoding in needles:
            if needle in window:
                found.add((label, encoding))
        tail = window[-overlap:] if overlap else b""
    return total, found


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _gzip_chunks(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _journal_chunks(path: Path) -> Iterator[bytes]:
    """Every field of every entry, decompressed, through the host's journalctl."""
    process = subprocess.Popen(
        ["journalctl", f"--file={path}", "--output=export", "--no-pager"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        while chunk := process.stdout.read(_CHUNK):
            yield chunk
    finally:
        process.stdout.close()
        process.wait()
    if process.returncode != 0:
        raise OSError(f"journalctl --file exited {process.returncode}")


def _walk_files(root: Path, skip_top: frozenset[str]) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(root, followlinks=False):
        if Path(directory) == root:
            subdirs[:] = [name for name in subdirs if name not in skip_top]
        subdirs.sort()
        for name in sorted(files):
            yield Path(directory) / name


def _owner_names(passwd: Path | None) -> dict[int, str]:
    """uid -> name from a guest's /etc/passwd, or the controller's user database."""
    if passwd is None:
        return {entry.pw_uid: entry.pw_name for entry in pwd.getpwall()}
    names: dict[int, str] = {}
    try:
        for line in passwd.read_text(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[2].isdigit():
                names.setdefault(int(parts[2]), parts[0])
    except OSError:
        pass
    return names


def _judge(scope_paths: dict[str, str], kind: str, mode: int, owner: str, controller_user: str) -> str:
    """ "" when some place allows this secret here with this mode and owner, else why not."""
    listed = [
        place
        for place in SECRET_PLACES
        if place.scope in scope_paths and fnmatch.fnmatchcase(scope_paths[place.scope], place.pattern)
    ]
    if not listed:
        return "not an allowed place"
    for place in listed:
        if kind not in place.kinds:
            continue
        wanted_owner = controller_user if place.owner == CONTROLLER_USER else place.owner
        if mode == place.mode and owner == wanted_owner:
            return ""
        return f"allowed place, but wants {oct(place.mode)} {wanted_owner}"
    return f"allowed place, but not for a {kind}"


def _scan_files(
    where: str,
    files: Iterable[Path],
    root: Path,
    shown_as: Path,
    scopes: dict[str, Path],
    needles: list[tuple[bytes, str, str]],
    owners: dict[int, str],
    coverage: Coverage,
) -> list[Hit]:
    """Search each regular file (under ``root``, reported as if ``root`` were ``shown_as``)."""
    controller_user = _owner_names(None).get(os.getuid(), str(os.getuid()))
    hits = []
    for path in files:
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        readers = [("", _file_chunks)]
        if path.suffix == ".gz":
            readers.append(("gunzipped ", _gzip_chunks))
        if path.suffix in (".journal", ".journal~"):
            readers.append(("decoded journal, ", _journal_chunks))
        found: set[tuple[str, str]] = set()
        for prefix, reader in readers:
            try:
                read, matches = _search_stream(reader(path), needles)
            except (OSError, EOFError, gzip.BadGzipFile) as error:
                shown = shown_as / path.relative_to(root)
                coverage.unreadable.append(f"{shown} ({prefix or 'raw'}): {error}")
                continue
            coverage.bytes += read
            found |= {(label, prefix + encoding) for label, encoding in matches}
        coverage.files += 1
        if not found:
            continue
        owner = owners.get(info.st_uid, str(info.st_uid))
        mode = stat.S_IMODE(info.st_mode)
        scope_paths = {
            scope: ("/" if scope == ON_VM else "") + str(path.relative_to(base))
            for scope, base in scopes.items()
            if path.is_relative_to(base)
        }
        for label, encoding in sorted(found):
            problem = _judge(scope_paths, label.split(":", 1)[0], mode, owner, controller_user)
            hits.append(
                Hit(where, str(shown_as / path.relative_to(root)), label, encoding, mode, owner, problem)
            )
    return hits


def _guest_root(machine: Machine) -> Path | None:
    """A running guest's root as its processes see it (tmpfs /tmp and /run included), else its
    disk: the merged root when mounted, else the writable layer (all the guest ever wrote)."""
    leader = machine.leader_pid()
    if leader is not None:
        return Path(f"/proc/{leader}/root")
    for candidate in (machine.rootfs, machine.upper):
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    return None


def held_secrets(lab_dir: Path, plan_path: Path | None = None) -> list[Secret]:
    """Every secret ailab-deploy holds for this lab: the API token and the controller's store."""
    secrets = []
    token_file = LabPaths(lab_dir).token_secret
    if token_file.is_file():
        secrets.append(Secret(API_TOKEN, token_file.read_text().strip()))
    store = SecretStore(state_dir_for(plan_path or LabPaths(lab_dir).plan))
    if store.directory.is_dir():
        for path in sorted(store.directory.iterdir()):
            value = (
                store.get(path.name)
                if path.suffix not in (".yml", ".yaml") and not path.name.startswith(".")
                else None
            )
            if not value:
                continue
            if path.name.startswith("postgresql-"):
                label = (
                    f"{DATABASE_PASSWORD}:{path.name.removeprefix('postgresql-').removesuffix('.password')}"
                )
            elif path.name.startswith("llm-"):
                label = LLM_API_KEY
            else:
                label = path.name
            secrets.append(Secret(label, value))
    return secrets


def scan_lab(lab_dir: Path, secrets: list[Secret], plan_path: Path | None = None) -> ScanResult:
    """Search every lab VM and the controller side of ``lab_dir`` for ``secrets``."""
    needles = _needles(secrets)
    state_dir = state_dir_for(plan_path or LabPaths(lab_dir).plan)
    coverage: dict[str, Coverage] = {}
    hits: list[Hit] = []
    machines = machines_dir(lab_dir)
    controller_owners = _owner_names(None)
    if machines.is_dir():
        for machine_dir in sorted(path for path in machines.iterdir() if path.is_dir()):
            machine = Machine(machine_dir.name, machine_dir)
            root = _guest_root(machine)
            if root is None:
                continue
            where = f"vm {machine.name}"
            seen = coverage.setdefault(where, Coverage())
            owners = _owner_names(root / "etc" / "passwd")
            files = _walk_files(root, _PSEUDO_DIRS)
            hits += _scan_files(where, files, root, Path("/"), {ON_VM: root}, needles, owners, seen)
            console = [machine.console] if machine.console.is_file() else []
            hits += _scan_files(
                where, console, machine.dir, machine.dir, {}, needles, controller_owners, seen
            )
    seen = coverage.setdefault("controller", Coverage())
    scopes = {IN_LAB_DIR: lab_dir, IN_STATE_DIR: state_dir}
    files = _walk_files(lab_dir, frozenset({machines.name}) if machines.parent == lab_dir else frozenset())
    hits += _scan_files("controller", files, lab_dir, lab_dir, scopes, needles, controller_owners, seen)
    if not state_dir.is_relative_to(lab_dir) and state_dir.is_dir():
        files = _walk_files(state_dir, frozenset())
        hits += _scan_files(
            "controller", files, state_dir, state_dir, scopes, needles, controller_owners, seen
        )
    return ScanResult(coverage, hits)
