"""The machine's load, printed by each benchmark before and after it measures."""

from __future__ import annotations

import os


def print_load(when: str) -> None:
    """Other work on a shared host disturbs every timing a benchmark prints: say how busy it was."""
    one, five, fifteen = os.getloadavg()
    print(f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs")
