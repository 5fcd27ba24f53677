"""Fault injection: rules that make requests or tasks fail the way a real PVE node can.

A rule is a dict (settings.json ``faults`` or ``POST /_lab/faults``)::

    {"kind": "lock_timeout", "task_type": "qmclone", "count": 2}
    {"kind": "http_500", "method": "GET", "path": "^/cluster/resources$", "probability": 0.3}

kinds and where they strike:

    http_500           request   500 with ``message`` (default ``internal error (lab fault)``)
    lock_timeout       request   500 ``can't lock file '/var/lock/qemu-server/lock-<vmid>.conf'
                                 - got timeout`` (when ``path``/``method`` are given) or, with
                       task      ``task_type``, the task fails with that text halfway
    task_error         task      the task fails halfway with ``message``
    slow_task          task      the task takes ``seconds`` (default 60) instead of the usual time
    ticket_expired     request   a ticket-authenticated request gets ``401 Authentication failed!``
    agent_not_running  request   agent calls answer 500 ``QEMU guest agent is not running``

Matching: ``method`` (exact), ``path`` (regex searched in the path below /api2/json),
``task_type`` (e.g. qmclone, qmstart, qmcreate, download), ``vmid`` (path vmid or task id).
``count`` (default unlimited) is how many times the rule fires before it is removed;
``probability`` (default 1) is the chance it fires on each match.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

REQUEST_KINDS = {"http_500", "lock_timeout", "ticket_expired", "agent_not_running"}
TASK_KINDS = {"task_error", "slow_task", "lock_timeout"}
KINDS = REQUEST_KINDS | TASK_KINDS


@dataclass
class FaultRule:
    id: str
    kind: str
    method: str | None = None
    path: str | None = None
    task_type: str | None = None
    vmid: int | None = None
    count: int | None = None
    probability: float = 1.0
    message: str | None = None
    seconds: float | None = None
    fired: int = 0

    @property
    def at_task(self) -> bool:
        return self.kind in ("task_error", "slow_task") or (
            self.kind == "lock_timeout" and self.task_type is not None
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


_FIELDS = {"id", "kind", "method", "path", "task_type", "vmid", "count", "probability", "message", "seconds"}


class Faults:
    def __init__(self, rules: list[dict[str, Any]] | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._random = random.Random(seed)
        for rule in rules or []:
            self.add(rule)

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Validate and add a rule; ValueError explains what is wrong."""
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(sorted(KINDS))}")
        if spec.get("path") is not None:
            re.compile(str(spec["path"]))
        probability = float(spec.get("probability", 1.0))
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        count = spec.get("count")
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            rule = FaultRule(
                id=str(spec.get("id") or f"f{next(self._ids)}"),
                kind=str(kind),
                method=str(spec["method"]).upper() if spec.get("method") else None,
                path=spec.get("path"),
                task_type=spec.get("task_type"),
                vmid=int(spec["vmid"]) if spec.get("vmid") is not None else None,
                count=int(count) if count is not None else None,
                probability=probability,
                message=spec.get("message"),
                seconds=float(spec["seconds"]) if spec.get("seconds") is not None else None,
            )
            if kind in ("task_error", "slow_task") and rule.task_type is None:
                raise ValueError(f"a {kind} fault needs task_type")
            self._rules = [r for r in self._rules if r.id != rule.id] + [rule]
        return rule

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self._rules]

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def _fire(self, rule: FaultRule) -> bool:
        """Called with the lock held: roll the dice and count the hit."""
        if rule.probability < 1.0 and self._random.random() >= rule.probability:
            return False
        rule.fired += 1
        if rule.count is not None:
            rule.count -= 1
            if rule.count <= 0:
                self._rules.remove(rule)
        return True

    def match_request(self, kinds: set[str], method: str, path: str, vmid: int | None) -> FaultRule | None:
        if not self._rules:
            return None
        with self._lock:
            for rule in list(self._rules):
                if rule.kind not in kinds or rule.at_task:
                    continue
                if rule.method and rule.method != method:
                    continue
                if rule.path and not re.search(rule.path, path):
                    continue
                if rule.vmid is not None and rule.vmid != vmid:
                    continue
                if self._fire(rule):
                    return rule
        return None

    def match_task(self, task_type: str, task_id: str) -> list[FaultRule]:
        if not self._rules:
            return []
        fired = []
        with self._lock:
            for rule in list(self._rules):
                if not rule.at_task or rule.task_type not in (task_type, "*"):
                    continue
                if rule.vmid is not None and str(rule.vmid) != task_id:
                    continue
                if self._fire(rule):
                    fired.append(rule)
        return fired
