"""Run commands on the VMs over SSH, with host keys checked against the state's known_hosts.

Secrets go to the remote command on stdin, never on its command line (which other users
of the VM can read in the process list) and never into logs.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko

from ailab_deploy.errors import AilabError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str


class SshError(AilabError):
    """SSH to a VM failed, or a remote command did."""


class SshSession:
    """One authenticated connection; unknown or changed host keys are refused."""

    def __init__(
        self,
        host: str,
        user: str,
        *,
        known_hosts: Path,
        key_file: Path | None = None,
        port: int = 22,
        timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.user = user
        self._client = paramiko.SSHClient()
        if not known_hosts.is_file():
            raise SshError(f"{known_hosts}: no known_hosts yet; run `ailab-deploy apply` first")
        self._client.load_host_keys(str(known_hosts))
        self._client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self._client.connect(
                host,
                port=port,
                username=user,
                key_filename=str(key_file) if key_file else None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=key_file is None,
                look_for_keys=key_file is None,
            )
        except paramiko.SSHException as error:
            raise SshError(f"ssh {user}@{host}: {error}") from None
        except OSError as error:
            raise SshError(f"ssh {user}@{host}: {error.strerror or error}") from None

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 300.0) -> CommandResult:
        command = shlex.join(argv)
        log.info("ssh %s@%s: %s", self.user, self.host, command[:200])
        try:
            channel_in, channel_out, channel_err = self._client.exec_command(command, timeout=timeout)
            if stdin is not None:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            stdout = channel_out.read().decode(errors="replace")
            stderr = channel_err.read().decode(errors="replace")
            rc = channel_out.channel.recv_exit_status()
        except (paramiko.SSHException, TimeoutError, OSError) as error:
            raise SshError(f"ssh {self.user}@{self.host}: {argv[0]}: {error}") from None
        return CommandResult(rc, stdout, stderr)

    def check(self, argv: list[str], *, stdin: str | None = None, timeout: float = 300.0) -> str:
        """Run and return stdout; a non-zero exit is an error naming the command and its stderr."""
        result = self.run(argv, stdin=stdin, timeout=timeout)
        if result.rc != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise SshError(f"{self.host}: {argv[0]} exited {result.rc}: {detail[0][:300]}")
        return result.stdout

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SshSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
