"""One error hierarchy for everything a user can cause.

The CLI catches :class:`AilabError`, prints ``str(error)`` on one line and exits
with ``error.exit_code``. Anything else is a bug and may show a traceback.
"""

from __future__ import annotations


class AilabError(Exception):
    """Base of every error a user can cause or act on. Exit status 1."""

    exit_code = 1


class InputError(AilabError):
    """Bad input: a plan, CLI arguments, an environment variable, an API answer. Exit status 2."""

    exit_code = 2


class PlanError(InputError):
    """One or more problems in a plan file, each already formatted as ``file:line: path: msg``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(InputError):
    """A setting outside the plan is missing or wrong (e.g. the token environment variable)."""


class ProxmoxError(AilabError):
    """The Proxmox API failed or refused a request."""


class LabError(AilabError):
    """The local lab (emulator, containers, network) could not do what was asked."""
