"""Keep a container running across reboots from inside the guest.

systemd-nspawn exits with status 133 when the guest reboots (systemd-nspawn@.service restarts
it). This process does the same for the lab: it runs the given nspawn command again while it
exits 133. SIGTERM/SIGINT are passed to nspawn (a clean poweroff) and end the loop; SIGUSR1
only ends the loop (used before a hard stop).

    python -m ailab_deploy.lab.containers.supervise systemd-nspawn ...
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType

EXIT_REBOOT = 133


def supervise(argv: list[str]) -> int:
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and signum != signal.SIGUSR1:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, forward)
    while not stopping:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        status = child.wait()
        if status != EXIT_REBOOT:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1:]))
