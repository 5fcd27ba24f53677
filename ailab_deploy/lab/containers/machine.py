"""One container machine: an overlayfs copy of the template, its own network namespace with a
veth on the lab bridge, and systemd-nspawn booting the guest's systemd.

Layout under the machine's state dir: ``lower`` (the read-only layers, one path per line),
``upper/`` and ``work/`` (the overlay's writable layer), ``rootfs/`` (the merged mount),
``supervisor.pid`` (the process that runs nspawn, again after a guest reboot) and
``console.log``. Everything is found again from disk, so a new process
(an emulator restart) can still stop, query and destroy a machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ailab_deploy.errors import LabError
from ailab_deploy.lab.containers import network
from ailab_deploy.lab.containers.proc import (
    children,
    cmdline,
    is_alive,
    last_line,
    mounts,
    read_pid,
    run,
    send_signal,
    wait_for,
    wait_gone,
)

log = logging.getLogger(__name__)

MOUNT_SOURCE_PREFIX = "ailab-"  # overlay mounts are named so leftovers() can find them
BOOTED_STATES = ("running", "degraded")
NSPAWN_MARKER = f"--network-namespace-path={network.NETNS_DIR}/{network.NETNS_PREFIX}"
SUPERVISOR_MODULE = "ailab_deploy.lab.containers.supervise"
SPAWN_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0


def is_lab_nspawn(argv: list[str]) -> bool:
    return (
        bool(argv)
        and Path(argv[0]).name == "systemd-nspawn"
        and any(arg.startswith(NSPAWN_MARKER) for arg in argv)
    )


def is_lab_supervisor(argv: list[str]) -> bool:
    return SUPERVISOR_MODULE in argv and any(arg.startswith(NSPAWN_MARKER) for arg in argv)


def container_leader(nspawn_pid: int) -> int | None:
    """The guest's PID 1 as seen from the host: a descendant of nspawn that is pid 1 in its ns."""
    parents: dict[int, int] = {}
    leaders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        pid = int(entry.name)
        parents[pid] = int(fields.get("PPid", "0"))
        nspid = fields.get("NSpid", "").split()
        if len(nspid) > 1 and nspid[-1] == "1":
            leaders.append(pid)
    for pid in leaders:
        ancestor = parents.get(pid, 0)
        while ancestor > 1:
            if ancestor == nspawn_pid:
                return pid
            ancestor = parents.get(ancestor, 0)
    return None


def _pid_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _guest_pids(leader: int) -> set[int]:
    """Every process in the guest's pid namespace (the leader's)."""
    namespace = _pid_namespace(leader)
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pid_namespace(entry.name) == namespace:
            found.add(int(entry.name))
    return found


@contextmanager
def frozen(machine: Machine) -> Iterator[None]:
    """The running guest's processes stopped (SIGSTOP) and its writes synced while the body
    reads its disk: the lab's stand-in for the guest agent's fs-freeze. A stopped guest: as is."""
    leader = machine.leader_pid()
    stopped: set[int] = set()
    try:
        if leader is not None:
            for _ in range(3):  # a process forked while the others were being stopped
                for pid in _guest_pids(leader) - stopped:
                    send_signal(pid, signal.SIGSTOP)
                    stopped.add(pid)
            os.sync()
        yield
    finally:
        for pid in stopped:
            send_signal(pid, signal.SIGCONT)


class Machine:
    def __init__(self, name: str, state_dir: Path) -> None:
        network.veth_name(name)  # validates the name early
        self.name = name
        self.dir = state_dir
        self.upper = state_dir / "upper"
        self.work = state_dir / "work"
        self.rootfs = state_dir / "rootfs"
        self.pidfile = state_dir / "supervisor.pid"
        self.console = state_dir / "console.log"
        self.netns = network.netns_name(name)

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, {str(self.dir)!r})"

    # -- disk -------------------------------------------------------------------------------

    @property
    def lower(self) -> list[Path]:
        try:
            return [Path(p) for p in json.loads((self.dir / "lower").read_text())]
        except (OSError, ValueError):
            return []

    def exists(self) -> bool:
        return bool(self.lower)

    def create(self, lower: list[Path], copy_of: Machine | None = None) -> None:
        """Create the writable layer over ``lower``; a clone of a VM copies that VM's layer."""
        if self.exists():
            raise LabError(f"machine {self.name} already exists in {self.dir}")
        for layer in lower:
            if not (layer / "etc/os-release").exists():
                raise LabError(f"{layer} is not a root filesystem")
            if {",", ":"} & set(str(layer)):
                raise LabError(f"{layer}: overlay layers cannot contain ',' or ':'")
        self.dir.mkdir(parents=True, exist_ok=True)
        if copy_of is not None:
            run(["cp", "-a", copy_of.upper, self.upper], what=f"copying disk of {copy_of.name}")
        self.upper.mkdir(exist_ok=True)
        self.work.mkdir(exist_ok=True)
        self.rootfs.mkdir(exist_ok=True)
        (self.dir / "lower").write_text(json.dumps([str(p) for p in lower]))

    def is_mounted(self) -> bool:
        return any(point == str(self.rootfs) for _, point, _ in mounts())

    def mount(self) -> Path:
        """Mount the overlay (fresh) and return the merged rootfs."""
        if not self.exists():
            raise LabError(f"machine {self.name} has no disk")
        self.unmount()
        options = f"lowerdir={':'.join(str(p) for p in self.lower)},upperdir={self.upper},workdir={self.work}"
        run(
            ["mount", "-t", "overlay", f"{MOUNT_SOURCE_PREFIX}{self.name}", "-o", options, self.rootfs],
            what=f"mounting the disk of {self.name}",
        )
        return self.rootfs

    def unmount(self) -> None:
        if self.is_mounted():
            run(["umount", self.rootfs], what=f"unmounting the disk of {self.name}")

    def destroy(self) -> None:
        """Stop, unmount and delete everything the machine owns."""
        self.stop()
        if self.is_mounted():
            raise LabError(f"refusing to delete {self.dir}: {self.rootfs} is still mounted")
        if self.dir.exists():
            shutil.rmtree(self.dir)

    # -- processes --------------------------------------------------------------------------

    def supervisor_pid(self) -> int | None:
        """The process that runs nspawn (again after a guest reboot); its pid is in the pidfile."""
        pid = read_pid(self.pidfile)
        if pid is None or not is_alive(pid) or not is_lab_supervisor(cmdline(pid)):
            return None
        return pid

    def nspawn_pid(self) -> int | None:
        supervisor = self.supervisor_pid()
        if supervisor is None:
            return None
        nspawns = [pid for pid in children(supervisor) if is_lab_nspawn(cmdline(pid))]
        return nspawns[0] if nspawns else None

    def is_running(self) -> bool:
        return self.supervisor_pid() is not None

    def leader_pid(self) -> int | None:
        nspawn = self.nspawn_pid()
        return container_leader(nspawn) if nspawn is not None else None

    def boot(self, *, mac: str | None, binds: dict[Path, str] | None = None) -> None:
        """Create the netns + veth and start systemd-nspawn on the mounted rootfs."""
        if self.is_running():
            raise LabError(f"machine {self.name} is already running")
        if not self.is_mounted():
            raise LabError(f"machine {self.name}: mount its disk before booting")
        network.attach(self.name, mac)
        argv = [
            "systemd-nspawn",
            f"--directory={self.rootfs}",
            "--boot",
            f"--machine={self.netns}",
            "--register=no",
            "--keep-unit",  # no host systemd here: do not ask its bus for a scope
            "--capability=CAP_NET_ADMIN",  # systemd-networkd refuses to start without it
            f"--network-namespace-path={network.NETNS_DIR}/{self.netns}",
            "--resolv-conf=off",  # DNS comes from cloud-init's nameserver, as on a VM
            "--link-journal=no",
            "--console=read-only",
        ]
        argv += [f"--bind={host}:{guest}" for host, guest in (binds or {}).items()]
        argv += ["--", "--show-status=no"]  # for the guest's systemd: a plain console log
        with self.console.open("ab") as console:
            process = subprocess.Popen(
                [sys.executable, "-m", SUPERVISOR_MODULE, *argv],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C on the caller must not kill the guest
            )
        self.pidfile.write_text(f"{process.pid}\n")

        def spawned() -> int | None:
            if process.poll() is not None:
                raise LabError(
                    f"machine {self.name}: systemd-nspawn exited {process.returncode}: {self.console_tail()}"
                )
            return self.leader_pid()

        wait_for(spawned, timeout=SPAWN_TIMEOUT, what=f"{self.name}'s init to start")
        log.info("machine %s started (supervisor pid %d)", self.name, process.pid)

    def console_tail(self) -> str:
        try:
            return last_line(self.console.read_text(errors="replace"))
        except OSError:
            return "(no console log)"

    def guest_exec(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the guest's namespaces (as root, without login)."""
        leader = self.leader_pid()
        if leader is None:
            raise LabError(f"machine {self.name} is not running")
        namespaces = ["--mount", "--uts", "--ipc", "--net", "--pid"]
        return run(
            ["nsenter", f"--target={leader}", *namespaces, "--", *args],
            what=f"running {args[0]} in {self.name}",
            timeout=timeout,
            check=False,
        )

    def system_state(self) -> str | None:
        """``systemctl is-system-running`` in the guest, or None when it is not running."""
        if self.leader_pid() is None:
            return None
        return self.guest_exec("systemctl", "is-system-running").stdout.strip() or None

    def is_booted(self) -> bool:
        return self.system_state() in BOOTED_STATES

    def wait_booted(self, timeout: float = 60.0) -> str:
        def booted() -> str | None:
            if not self.is_running():
                raise LabError(f"machine {self.name} stopped while booting: {self.console_tail()}")
            state = self.system_state()
            return state if state in BOOTED_STATES else None

        return wait_for(booted, timeout=timeout, what=f"{self.name} to boot", interval=0.2)

    def stop(self) -> None:
        """Hard stop: kill the guest's PID 1 (which ends its pid namespace), then tear down."""
        supervisor = self.supervisor_pid()
        if supervisor is not None:
            send_signal(supervisor, signal.SIGUSR1)  # no restart after this exit
            deadline = time.monotonic() + STOP_TIMEOUT
            while not wait_gone([supervisor], timeout=0.1):
                leader = self.leader_pid()
                if leader is not None:
                    send_signal(leader, signal.SIGKILL)
                if time.monotonic() >= deadline:
                    raise LabError(f"machine {self.name}: systemd-nspawn did not exit")
        self._teardown()

    def shutdown(self, timeout: float) -> None:
        """Clean poweroff (nspawn turns SIGTERM into SIGRTMIN+3 for systemd); forced after timeout."""
        supervisor = self.supervisor_pid()
        if supervisor is not None:
            send_signal(supervisor, signal.SIGTERM)
            if not wait_gone([supervisor], timeout=timeout):
                log.warning("machine %s did not shut down in %.0f s; stopping it", self.name, timeout)
        self.stop()

    def _teardown(self) -> None:
        network.detach(self.name)
        self.unmount()
        self.pidfile.unlink(missing_ok=True)
