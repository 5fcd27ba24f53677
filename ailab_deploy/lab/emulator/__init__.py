"""Proxmox VE API emulator: a local node that speaks PVE 8's HTTP API (see docs/lab-emulator.md).

settings = load_settings(lab_dir)
running = RunningEmulator(Emulator(settings), port=0).start()
... running.url ...
running.stop()
"""

from __future__ import annotations

from .app import Emulator
from .server import RunningEmulator
from .settings import Settings, load_settings

__all__ = ["Emulator", "RunningEmulator", "Settings", "load_settings"]
