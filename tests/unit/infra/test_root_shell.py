"""The infra suite's root-shell backend: its command loop run here as a local process (the same
loop ssh starts on a host), and the backend's choice between it and testinfra's own path."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import testinfra
from testinfra.backend import get_backend_class

from tests.infra.root_shell import COMMAND_LOOP, SCHEME, RootShell, RootShellBackend, RootShellError, register

LOCAL_LOOP = f"{shlex.quote(sys.executable)} -c {shlex.quote(COMMAND_LOOP)}"


@pytest.fixture
def shell() -> Iterator[RootShell]:
    local = RootShell(LOCAL_LOOP)
    yield local
    local.close()


def test_status_stdout_and_stderr_come_back_apart(shell: RootShell) -> None:
    assert shell.run(b"printf 'out\\n'; printf 'err' >&2; exit 3") == (3, b"out\n", b"err")
    assert shell.run(b"true") == (0, b"", b"")


def test_output_is_byte_exact_and_may_be_large(shell: RootShell) -> None:
    status, out, err = shell.run(b"head -c 3000000 /dev/zero; printf '\\n\\377\\000end'")
    assert (status, len(out), err) == (0, 3000000 + 6, b"")
    assert out.endswith(b"\n\xff\x00end")
    # The next command is not disturbed by the large answer before it.
    assert shell.run(b"echo next") == (0, b"next\n", b"")


def test_stdin_is_empty_and_each_command_has_its_own_shell(shell: RootShell) -> None:
    assert shell.run(b"cat; echo $?") == (0, b"0\n", b"")
    assert shell.run(b"cd /; X=1; pwd")[1] == b"/\n"
    assert shell.run(b"echo ${X:-unset}; pwd")[1] == f"unset\n{os.getcwd()}\n".encode()


def test_a_killed_command_reports_128_plus_the_signal(shell: RootShell) -> None:
    status, _, _ = shell.run(b"exec sh -c 'kill -KILL $$'")
    assert status == 128 + signal.SIGKILL


def test_a_loop_that_cannot_start_is_an_error_with_its_message() -> None:
    broken = RootShell("echo 'sudo: a password is required' >&2; exit 1")
    try:
        with pytest.raises(RootShellError, match="the root shell ended: sudo: a password is required"):
            broken.run(b"true")
    finally:
        broken.close()


class _Backend(RootShellBackend):
    """The backend with the local loop standing in for the host's."""

    def __init__(self, shell: RootShell | None, **kwargs: Any) -> None:
        super().__init__("vm1", **kwargs)
        self.local = shell

    def root_shell(self) -> RootShell | None:
        return self.local

    def get_variables(self) -> dict[str, Any]:
        return {}


def test_root_commands_go_to_the_shell_quoted_as_testinfra_quotes_them(shell: RootShell) -> None:
    backend = _Backend(shell, sudo=True)
    ran = backend.run("printf '%%s|' %s %s", "two words", "it's")
    assert (ran.rc, ran.stdout, ran.stderr) == (0, "two words|it's|", "")
    assert ran.command == b"printf '%s|' 'two words' 'it'\"'\"'s'"


def test_commands_as_another_user_or_without_sudo_take_testinfras_path(
    shell: RootShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock: list[tuple[bool, str | None, str]] = []

    def stock_run(self: Any, command: str, *args: str, **kwargs: Any) -> Any:
        stock.append((self.sudo, self.sudo_user, command))
        return self.result(0, b"", b"stock", b"")

    monkeypatch.setattr(testinfra.backend.ansible.AnsibleBackend, "run", stock_run)
    without_sudo = _Backend(shell)
    assert without_sudo.run("id -u").stdout == "stock"
    as_user = _Backend(shell, sudo=True, sudo_user="postgres")
    assert as_user.run("id -u").stdout == "stock"
    assert _Backend(shell, sudo=True, sudo_user="root").run("echo root").stdout == "root\n"
    assert _Backend(None, sudo=True).run("id -u").stdout == "stock"  # not an SSH host
    assert stock == [(False, None, "id -u"), (True, "postgres", "id -u"), (True, None, "id -u")]


def test_the_scheme_names_the_backend() -> None:
    register()
    assert get_backend_class(SCHEME) is RootShellBackend
