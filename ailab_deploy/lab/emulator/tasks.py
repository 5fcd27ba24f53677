"""PVE worker tasks: UPIDs, a thread per task, status and log as PVE reports them."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ailab_deploy.lab.backend import BackendError

from .apierror import ApiError
from .faults import FaultRule, Faults
from .state import write_atomic

log = logging.getLogger(__name__)

UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


class TaskFailed(Exception):
    """Ends the task with ``TASK ERROR: <message>``."""


def _ticks_since_boot() -> int:
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]) * 100)
    except (OSError, ValueError, IndexError):
        return int(time.monotonic() * 100)


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str  # user@realm!token for token tasks, as in the UPID
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    log: list[str] = field(default_factory=list)
    warnings: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def status_dict(self) -> dict[str, Any]:
        user, _, tokenid = self.user.partition("!")
        result: dict[str, Any] = {
            "upid": self.upid,
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.type,
            "id": self.id,
            "user": user,
            "status": self.status,
        }
        if tokenid:
            result["tokenid"] = tokenid
        if self.status == "stopped":
            result["exitstatus"] = self.exitstatus
        return result

    def to_json(self) -> dict[str, Any]:
        data = self.status_dict()
        data["user"] = self.user
        data["log"] = self.log
        data["endtime"] = self.endtime
        return data


class TaskContext:
    """What a worker function gets: logging, simulated duration and injected faults."""

    def __init__(self, task: Task, duration: float, rules: list[FaultRule], stop: threading.Event):
        self.task = task
        self.duration = duration
        self.rules = rules
        self._stop = stop

    def log(self, line: str) -> None:
        self.task.log.append(line)

    def warn(self, line: str) -> None:
        self.task.warnings += 1
        self.task.log.append(f"WARN: {line}")

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def simulate(self, lock_vmid: int | None = None) -> None:
        """The task's working time. Injected failures strike halfway through it."""
        self.sleep(self.duration / 2)
        for rule in self.rules:
            if rule.kind == "task_error":
                raise TaskFailed(rule.message or "injected task failure (lab fault)")
            if rule.kind == "lock_timeout":
                vmid = lock_vmid if lock_vmid is not None else self.task.id
                raise TaskFailed(
                    rule.message or f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
                )
        self.sleep(self.duration / 2)


Worker = Callable[[TaskContext], None]


class TaskManager:
    def __init__(self, node: str, task_dir: Path, faults: Faults, duration: Callable[[str], float]):
        self.node = node
        self.dir = task_dir
        self.faults = faults
        self.duration = duration
        self.tasks: dict[str, Task] = {}
        # which node runs a task started without one (the emulator points it at the request's node)
        self.node_for_request: Callable[[], str] = lambda: self.node
        self.on_worker_start: Callable[[str], None] = lambda _node: None
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self._pid = os.getpid() % 0x400000 + 0x10000
        self._threads: set[threading.Thread] = set()
        self._load()

    def _load(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in self.dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            task = Task(
                upid=data["upid"],
                node=data["node"],
                pid=data["pid"],
                pstart=data["pstart"],
                starttime=data["starttime"],
                type=data["type"],
                id=data["id"],
                user=data["user"],
                status="stopped",
                exitstatus=data.get("exitstatus"),
                endtime=data.get("endtime"),
                log=list(data.get("log", [])),
            )
            if data.get("status") != "stopped":
                # the emulator went away while it ran, as PVE reports a vanished worker
                task.exitstatus = "unexpected status"
            task.done.set()
            self.tasks[task.upid] = task

    def _persist(self, task: Task) -> None:
        name = task.upid.replace(":", "_").replace("!", "_").replace("@", "_")
        write_atomic(self.dir / f"{name}.json", json.dumps(task.to_json()))

    def get(self, upid: str) -> Task | None:
        return self.tasks.get(upid)

    def start(self, task_type: str, task_id: str, user: str, worker: Worker, node: str | None = None) -> Task:
        """Fork a worker on ``node`` (default: the node the API answers on); its UPID names it."""
        node = node or self.node_for_request()
        with self.lock:
            self._pid += 1
            pid = self._pid
        now = int(time.time())
        pstart = _ticks_since_boot()
        upid = f"UPID:{node}:{pid:08X}:{pstart:08X}:{now:08X}:{task_type}:{task_id}:{user}:"
        task = Task(upid, node, pid, pstart, now, task_type, task_id, user)
        rules = self.faults.match_task(task_type, task_id)
        duration = self.duration(task_type)
        for rule in rules:
            if rule.kind == "slow_task":
                duration = rule.seconds if rule.seconds is not None else 60.0
        ctx = TaskContext(task, duration, rules, self.stop_event)
        self.tasks[upid] = task
        self._persist(task)
        thread = threading.Thread(target=self._run, args=(ctx, worker), name=f"task-{task_type}")
        thread.daemon = True
        self._threads.add(thread)
        thread.start()
        return task

    def _run(self, ctx: TaskContext, worker: Worker) -> None:
        task = ctx.task
        try:
            self.on_worker_start(task.node)
            worker(ctx)
        except (TaskFailed, BackendError, ApiError) as err:
            message = err.message if isinstance(err, ApiError) else str(err)
            self._finish(task, message.strip() or "unknown error")
        except Exception as err:  # a bug: keep the task honest and log the traceback
            log.exception("task %s crashed", task.upid)
            self._finish(task, f"internal error: {err}")
        else:
            self._finish(task, None)
        finally:
            self._threads.discard(threading.current_thread())

    def _finish(self, task: Task, error: str | None) -> None:
        if error is not None:
            task.log.append(f"TASK ERROR: {error}")
            task.exitstatus = error.replace("\n", " ")
        elif task.warnings:
            task.log.append(f"TASK WARNINGS: {task.warnings}")
            task.exitstatus = f"WARNINGS: {task.warnings}"
        else:
            task.log.append("TASK OK")
            task.exitstatus = "OK"
        task.endtime = int(time.time())
        task.status = "stopped"
        self._persist(task)
        task.done.set()

    def all(self) -> list[Task]:
        return sorted(self.tasks.values(), key=lambda t: t.starttime, reverse=True)

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
