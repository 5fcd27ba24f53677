"""Small process helpers shared by the lab modules: run a command, poll with a deadline."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ailab_deploy.errors import LabError

log = logging.getLogger(__name__)

T = TypeVar("T")


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    timeout: float = 60.0,
    check: bool = True,
    env: dict[str, str] | None = None,
    stdin_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (no shell); on failure raise LabError naming ``what`` and the last stderr line."""
    argv = [str(arg) for arg in args]
    log.debug("run: %s", argv)
    try:
        result = subprocess.run(
            argv,
            input=stdin_text,
            stdin=None if stdin_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{what}: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what}: {argv[0]} did not finish within {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise LabError(
            f"{what}: {argv[0]} exited {result.returncode}: {last_line(result.stderr or result.stdout)}"
        )
    return result


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``probe`` until it returns something other than None; LabError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def cmdline(pid: int) -> list[str]:
    """A process's argv, or [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def processes_matching(predicate: Callable[[list[str]], bool]) -> list[int]:
    """Pids whose argv satisfies ``predicate``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = cmdline(int(entry.name))
            if argv and predicate(argv):
                pids.append(int(entry.name))
    return sorted(pids)


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def mounts() -> list[tuple[str, str, str]]:
    """(source, mount point, fs type) of every mount in this mount namespace."""
    entries = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        mount_point = fields.split()[4].encode().decode("unicode_escape")
        fstype, source = rest.split()[:2]
        entries.append((source, mount_point, fstype))
    return entries


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(pids: list[int], *, timeout: float) -> bool:
    """Wait until none of ``pids`` is alive (reaping our own children). False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            reap(pid)
        if not any(is_alive(pid) for pid in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def send_signal(pid: int, signum: int) -> bool:
    """Signal ``pid``; False if it already exited (a stop races with the process ending)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True
