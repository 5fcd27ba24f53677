"""Keep a container running across reboots from inside the guest.

systemd-nspawn exits with status 133 when the guest reboots (systemd-nspawn@.service restarts
it). This process does the same for the lab: it runs the given nspawn command again while it
exits 133. SIGTERM/SIGINT are passed to nspawn (a clean poweroff) and end the loop; SIGUSR1
only ends the loop (used before a hard stop). It runs nspawn in a cgroup of the machine's own
(see cgroup.py), named after nspawn's ``--machine=``, and removes that cgroup at the end.

    python -m ailab_deploy.lab.containers.supervise systemd-nspawn ...
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType

from ailab_deploy.lab.containers import cgroup

EXIT_REBOOT = 133
MACHINE_OPTION = "--machine="


def machine_name(argv: list[str]) -> str | None:
    """nspawn's ``--machine=`` value (options end at ``--``)."""
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith(MACHINE_OPTION):
            return arg.removeprefix(MACHINE_OPTION) or None
    return None


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


def main(argv: list[str]) -> int:
    name = machine_name(argv)
    try:
        cgroups = cgroup.enter_own(name) if name is not None else []
    except OSError as exc:  # the console log's last line, which a failed boot reports
        print(f"cannot give machine {name} a cgroup of its own: {exc}", file=sys.stderr)
        return 1
    try:
        return supervise(argv)
    finally:
        cgroup.leave_and_remove(cgroups)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
