"""The run ledger: every run, its steps, events and reports, in SQLite under ``.ailab/``.

One file, ``<state>/ledger.sqlite``, in WAL mode so ``ailab-deploy runs`` can read while an
apply writes. The engine runs steps in threads; the ledger serialises them on one
connection behind a lock (writes are tiny, so one writer is not a bottleneck).

Steps are a state machine: pending -> running -> succeeded | failed | skipped (a pending
step may also be skipped). Anything else raises :class:`TransitionError`, a bug in the caller.

Everything recorded as text passes :func:`mask_secrets` first, with the values in the
secret store, so API errors that echo a token or password never reach the file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ailab_deploy.adapters.secrets import SecretStore, mask_secrets
from ailab_deploy.errors import AilabError

LEDGER_FILENAME = "ledger.sqlite"
APPLY_LOCK_FILENAME = "apply.lock"
BUSY_TIMEOUT_MS = 10_000

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "pending", "running", "succeeded", "failed", "skipped"
STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({RUNNING, SKIPPED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, SKIPPED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    SKIPPED: frozenset(),
}
RUN_FINAL_STATUSES = (SUCCEEDED, FAILED)
INTERRUPTED = "interrupted"  # shown for a run still "running" whose process is gone
EVENT_LEVELS = ("debug", "info", "warning", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    vm TEXT NOT NULL,
    phase TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    detail TEXT NOT NULL DEFAULT '',
    error TEXT
);
CREATE INDEX IF NOT EXISTS steps_run ON steps(run_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    at REAL NOT NULL,
    level TEXT NOT NULL,
    vm TEXT,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    attached_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_run ON reports(run_id);
CREATE TABLE IF NOT EXISTS managed_vms (
    vmid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vm_addresses (
    vmid INTEGER PRIMARY KEY,
    address TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
"""


class TransitionError(RuntimeError):
    """A step or run was moved along an edge its state machine lacks (a bug in the caller)."""


def _ensure_state_dir(state_dir: Path) -> None:
    # 0700: the state directory holds secrets/ and the known_hosts the runs trust.
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class StepRecord:
    id: int
    vm: str
    phase: str
    state: str
    started_at: float | None
    finished_at: float | None
    detail: str
    error: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class EventRecord:
    at: float
    level: str
    vm: str | None
    message: str


@dataclass(frozen=True)
class ReportRecord:
    kind: str
    path: str
    attached_at: float


@dataclass(frozen=True)
class RunSummary:
    id: int
    command: str
    plan_hash: str
    started_at: float
    finished_at: float | None
    status: str  # running | succeeded | failed | interrupted
    steps_succeeded: int
    steps_failed: int
    steps_total: int

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def plan_hash_short(self) -> str:
        return self.plan_hash[:12]


@dataclass(frozen=True)
class RunDetail:
    summary: RunSummary
    error: str | None
    steps: tuple[StepRecord, ...]
    events: tuple[EventRecord, ...]
    reports: tuple[ReportRecord, ...]


class Ledger:
    """The run ledger of one state directory (``<state_dir>/ledger.sqlite``)."""

    def __init__(self, state_dir: Path, *, secrets: Iterable[str] = ()) -> None:
        _ensure_state_dir(state_dir)
        self.state_dir = state_dir
        self.path = state_dir / LEDGER_FILENAME
        self._extra_secrets = list(secrets)
        self._secret_store = SecretStore(state_dir)
        self._lock = threading.RLock()
        # One connection shared by the engine's threads; every use holds self._lock.
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        self.path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing

    def add_secret(self, value: str) -> None:
        """Mask this value (e.g. the API token secret) in everything recorded from now on."""
        with self._lock:
            self._extra_secrets.append(value)

    def mask(self, text: str) -> str:
        # The store is re-read each time: a password generated mid-run is masked at once.
        return mask_secrets(text, [*self._extra_secrets, *self._secret_store.values()])

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, parameters)

    def start_run(self, command: str, plan_hash: str) -> Run:
        cursor = self._execute(
            "INSERT INTO runs (command, plan_hash, pid, started_at, status) VALUES (?, ?, ?, ?, ?)",
            (command, plan_hash, os.getpid(), time.time(), RUNNING),
        )
        assert cursor.lastrowid is not None
        return Run(self, cursor.lastrowid)

    def managed_vmids(self) -> set[int]:
        """VMIDs this tool created and still manages."""
        return {int(row["vmid"]) for row in self._execute("SELECT vmid FROM managed_vms").fetchall()}

    def record_vm(self, vmid: int, name: str) -> None:
        self._execute(
            "INSERT INTO managed_vms (vmid, name, recorded_at) VALUES (?, ?, ?) "
            "ON CONFLICT(vmid) DO UPDATE SET name = excluded.name",
            (vmid, name, time.time()),
        )

    def forget_vm(self, vmid: int) -> None:
        self._execute("DELETE FROM managed_vms WHERE vmid = ?", (vmid,))
        self._execute("DELETE FROM vm_addresses WHERE vmid = ?", (vmid,))

    def bind_address(self, vmid: int, address: str) -> None:
        """The address whose host keys in known_hosts belong to ``vmid``."""
        self._execute(
            "INSERT INTO vm_addresses (vmid, address, recorded_at) VALUES (?, ?, ?) "
            "ON CONFLICT(vmid) DO UPDATE SET address = excluded.address, recorded_at = excluded.recorded_at",
            (vmid, address, time.time()),
        )

    def address_of(self, vmid: int) -> str | None:
        row = self._execute("SELECT address FROM vm_addresses WHERE vmid = ?", (vmid,)).fetchone()
        return None if row is None else str(row["address"])

    # ---- reading (for the CLI and verify)

    def runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest ``limit`` runs, newest first."""
        rows = self._execute(
            f"{_SUMMARY_SELECT} GROUP BY runs.id ORDER BY runs.id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_summary(row) for row in rows]

    def run(self, run_id: int) -> RunDetail:
        row = self._execute(f"{_SUMMARY_SELECT} WHERE runs.id = ? GROUP BY runs.id", (run_id,)).fetchone()
        if row is None:
            raise AilabError(f"no run {run_id} in {self.path} (`ailab-deploy runs` lists them)")
        steps = self._execute(
            "SELECT id, vm, phase, state, started_at, finished_at, detail, error FROM steps "
            "WHERE run_id = ? ORDER BY id",
            (run_id,),
        ).fetchall()
        events = self._execute(
            "SELECT at, level, vm, message FROM events WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
        reports = self._execute(
            "SELECT kind, path, attached_at FROM reports WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
        return RunDetail(
            summary=_summary(row),
            error=row["error"],
            steps=tuple(StepRecord(**dict(step)) for step in steps),
            events=tuple(EventRecord(**dict(event)) for event in events),
            reports=tuple(ReportRecord(**dict(report)) for report in reports),
        )

    def reports(self, run_id: int, kind: str | None = None) -> list[Path]:
        """Report files attached to a run (optionally of one kind), in attachment order."""
        if kind is None:
            rows = self._execute("SELECT path FROM reports WHERE run_id = ? ORDER BY id", (run_id,))
        else:
            rows = self._execute(
                "SELECT path FROM reports WHERE run_id = ? AND kind = ? ORDER BY id", (run_id, kind)
            )
        return [Path(row["path"]) for row in rows.fetchall()]


_SUMMARY_SELECT = (
    "SELECT runs.*, "
    f"COALESCE(SUM(steps.state = '{SUCCEEDED}'), 0) AS steps_succeeded, "
    f"COALESCE(SUM(steps.state = '{FAILED}'), 0) AS steps_failed, "
    "COUNT(steps.id) AS steps_total "
    "FROM runs LEFT JOIN steps ON steps.run_id = runs.id"
)


def _summary(row: sqlite3.Row) -> RunSummary:
    status = row["status"]
    if status == RUNNING and not _process_alive(row["pid"]):
        status = INTERRUPTED
    return RunSummary(
        id=row["id"],
        command=row["command"],
        plan_hash=row["plan_hash"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=status,
        steps_succeeded=row["steps_succeeded"],
        steps_failed=row["steps_failed"],
        steps_total=row["steps_total"],
    )


class Run:
    """One run of a command. As a context manager it always ends finished:
    succeeded, or failed if a step failed or an exception escaped (running steps fail with it)."""

    def __init__(self, ledger: Ledger, run_id: int) -> None:
        self._ledger = ledger
        self.id = run_id

    def __repr__(self) -> str:
        return f"Run(id={self.id})"

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.is_finished():
            return
        if exc is None:
            self.finish(FAILED if self._count_steps(FAILED) else SUCCEEDED)
            return
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) or type(exc).__name__
        self._finish(FAILED, error=reason)

    def step(self, vm: str, phase: str) -> Step:
        cursor = self._ledger._execute(
            "INSERT INTO steps (run_id, vm, phase, state, created_at) VALUES (?, ?, ?, ?, ?)",
            (self.id, vm, phase, PENDING, time.time()),
        )
        assert cursor.lastrowid is not None
        return Step(self._ledger, cursor.lastrowid, vm, phase)

    def event(self, message: str, *, level: str = "info", vm: str | None = None) -> None:
        if level not in EVENT_LEVELS:
            raise ValueError(f"event level {level!r}: use one of {', '.join(EVENT_LEVELS)}")
        self._ledger._execute(
            "INSERT INTO events (run_id, at, level, vm, message) VALUES (?, ?, ?, ?, ?)",
            (self.id, time.time(), level, vm, self._ledger.mask(message)),
        )

    def attach_report(self, kind: str, path: Path) -> None:
        self._ledger._execute(
            "INSERT INTO reports (run_id, kind, path, attached_at) VALUES (?, ?, ?, ?)",
            (self.id, kind, str(path.absolute()), time.time()),
        )

    def finish(self, status: str) -> None:
        """End the run as ``succeeded`` or ``failed``.

        Steps still pending are recorded as skipped, steps still running as failed."""
        self._finish(status)

    def is_finished(self) -> bool:
        row = self._ledger._execute("SELECT status FROM runs WHERE id = ?", (self.id,)).fetchone()
        return bool(row["status"] in RUN_FINAL_STATUSES)

    def _finish(self, status: str, error: str | None = None) -> None:
        if status not in RUN_FINAL_STATUSES:
            raise ValueError(f"run status {status!r}: use one of {', '.join(RUN_FINAL_STATUSES)}")
        now = time.time()
        masked_error = None if error is None else self._ledger.mask(error)
        with self._ledger._lock:
            self._ledger._execute(
                "UPDATE steps SET state = ?, finished_at = ?, detail = ? WHERE run_id = ? AND state = ?",
                (SKIPPED, now, "not started: the run ended first", self.id, PENDING),
            )
            self._ledger._execute(
                "UPDATE steps SET state = ?, finished_at = ?, error = ? WHERE run_id = ? AND state = ?",
                (FAILED, now, masked_error or "the run ended while it was running", self.id, RUNNING),
            )
            cursor = self._ledger._execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status = ?",
                (status, now, masked_error, self.id, RUNNING),
            )
        if cursor.rowcount != 1:
            raise TransitionError(f"run {self.id} is already finished")

    def _count_steps(self, state: str) -> int:
        row = self._ledger._execute(
            "SELECT COUNT(*) AS n FROM steps WHERE run_id = ? AND state = ?", (self.id, state)
        ).fetchone()
        return int(row["n"])


class Step:
    """One phase of one VM within a run."""

    def __init__(self, ledger: Ledger, step_id: int, vm: str, phase: str) -> None:
        self._ledger = ledger
        self.id = step_id
        self.vm = vm
        self.phase = phase

    def __repr__(self) -> str:
        return f"Step(id={self.id}, vm={self.vm!r}, phase={self.phase!r})"

    @property
    def state(self) -> str:
        row = self._ledger._execute("SELECT state FROM steps WHERE id = ?", (self.id,)).fetchone()
        return str(row["state"])

    def start(self) -> None:
        self._move(RUNNING, started=True)

    def succeed(self, detail: str = "") -> None:
        self._move(SUCCEEDED, detail=detail)

    def fail(self, error: str) -> None:
        self._move(FAILED, error=error)

    def skip(self, reason: str) -> None:
        self._move(SKIPPED, detail=reason)

    def _move(
        self, target: str, *, started: bool = False, detail: str = "", error: str | None = None
    ) -> None:
        now = time.time()
        with self._ledger._lock:
            current = self.state
            if target not in STEP_TRANSITIONS[current]:
                raise TransitionError(
                    f"step {self.vm}/{self.phase} cannot go from {current} to {target} "
                    f"(allowed: {', '.join(sorted(STEP_TRANSITIONS[current])) or 'none, it is final'})"
                )
            self._ledger._execute(
                "UPDATE steps SET state = ?, "
                "started_at = CASE WHEN ? THEN ? ELSE started_at END, "
                "finished_at = CASE WHEN ? THEN NULL ELSE ? END, "
                "detail = ?, error = ? WHERE id = ?",
                (
                    target,
                    started,
                    now,
                    started,
                    now,
                    self._ledger.mask(detail),
                    None if error is None else self._ledger.mask(error),
                    self.id,
                ),
            )


@contextmanager
def apply_lock(state_dir: Path, plan_hash: str) -> Iterator[None]:
    """Hold ``<state>/apply.lock`` for the duration; a second apply on the same state is refused.

    flock is released by the kernel when the process dies, so a stale file never blocks;
    the pid and start time written into it only serve the message.
    """
    _ensure_state_dir(state_dir)
    path = state_dir / APPLY_LOCK_FILENAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().split()
            pid, since = ([*holder, "?", "?"])[:2]
            raise AilabError(
                f"another apply of this plan is running (pid {pid} since {since.replace('T', ' ')}); "
                f"wait for it or stop that process (its lock on {path} is released when it exits)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {datetime.now().isoformat(timespec='seconds')} {plan_hash}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
