"""What the plan checks find: a problem points at the plan path to blame, so the loader can
name the file line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]
    message: str
    severity: Severity = "error"
