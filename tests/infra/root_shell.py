"""A testinfra backend that runs a host's root commands in one long-lived root process.

testinfra's ``ansible://`` backend (with ``--sudo``) starts, for every command, a local shell, an
SSH client, a remote login shell and sudo before the command itself; over a suite of about 160
commands per host, that is most of the suite's time. The ``ailab-root-shell://`` backend opens, at
the first root command, one SSH session to the host (the same ssh command line testinfra would use)
running ``sudo -n python3`` with a small loop that runs each command it is sent with ``/bin/sh -c``
and sends back its exit status, stdout and stderr. Commands run one at a time, as root, with the
environment sudo gives, stdin empty: as under ``--sudo``. Everything else (another sudo user, no
sudo, a host that is not reached over SSH) takes testinfra's own path.
"""

from __future__ import annotations

import atexit
import subprocess
import tempfile
import threading
from typing import IO, Any

from testinfra.backend import BACKENDS, base
from testinfra.backend.ansible import AnsibleBackend
from testinfra.backend.ssh import SshBackend

SCHEME = "ailab-root-shell"

# The loop on the host. A request: the command's length in bytes, a newline, the command. An
# answer: "<exit status> <stdout bytes> <stderr bytes>\n", then stdout and stderr.
COMMAND_LOOP = r"""
import subprocess, sys
requests, answers = sys.stdin.buffer, sys.stdout.buffer
while True:
    size = requests.readline()
    if not size:
        break
    done = subprocess.run(requests.read(int(size)), shell=True, stdin=subprocess.DEVNULL, capture_output=True)
    status = done.returncode if done.returncode >= 0 else 128 - done.returncode
    answers.write(b"%d %d %d\n" % (status, len(done.stdout), len(done.stderr)) + done.stdout + done.stderr)
    answers.flush()
"""


class RootShellError(RuntimeError):
    """The root shell could not be started, or it ended while a command was running."""


class RootShell:
    """The command loop, started by ``command_line`` (run by a local shell, as testinfra runs ssh)."""

    def __init__(self, command_line: str) -> None:
        self._errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the shell)
        self._process = subprocess.Popen(
            command_line, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors
        )
        self._lock = threading.Lock()
        atexit.register(self.close)

    def run(self, command: bytes) -> tuple[int, bytes, bytes]:
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        with self._lock:
            try:
                process.stdin.write(b"%d\n" % len(command) + command)
                process.stdin.flush()
                header = process.stdout.readline()
                status, out_size, err_size = (int(field) for field in header.split())
            except (OSError, ValueError):
                raise RootShellError(f"the root shell ended: {self._stderr()}") from None
            return status, process.stdout.read(out_size), process.stdout.read(err_size)

    def _stderr(self) -> str:
        self._errors.seek(0)
        return self._errors.read().decode(errors="replace").strip()[-500:] or "no message"

    def close(self) -> None:
        if self._process.stdin is None or self._process.stdin.closed:
            return
        self._process.stdin.close()  # the loop ends at end of input
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._errors.close()


class RootShellBackend(AnsibleBackend):
    """``ansible://`` with root commands in one :class:`RootShell` per host."""

    NAME = SCHEME

    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(host, *args, **kwargs)
        self._root_shell: RootShell | None = None
        self._root_shell_lock = threading.Lock()

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        shell = self.root_shell() if self.sudo and self.sudo_user in (None, "root") else None
        if shell is None:
            return super().run(command, *args, **kwargs)
        quoted = self.encode(self.quote(command, *args))
        status, stdout, stderr = shell.run(quoted)
        return self.result(status, quoted, stdout, stderr)

    def root_shell(self) -> RootShell | None:
        """The host's root shell, started at first use; None when the host is not reached over SSH."""
        with self._root_shell_lock:
            if self._root_shell is None:
                ssh_host = self.ansible_runner.get_host(
                    self.host, ssh_config=self.ssh_config, ssh_identity_file=self.ssh_identity_file
                )
                if ssh_host is None or not isinstance(ssh_host.backend, SshBackend):
                    return None
                ssh = ssh_host.backend
                remote = ssh.quote("sudo -n python3 -c %s", COMMAND_LOOP)
                command, command_args = ssh._build_ssh_command(remote)
                self._root_shell = RootShell(ssh.quote(" ".join(command), *command_args))
            return self._root_shell

    def close(self) -> None:
        if self._root_shell is not None:
            self._root_shell.close()
            self._root_shell = None


def register() -> None:
    """Make ``ailab-root-shell://<inventory host>`` a testinfra host spec."""
    BACKENDS[SCHEME] = f"{__name__}.{RootShellBackend.__name__}"
