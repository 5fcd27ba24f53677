"""Secrets on the controller: generated once, kept 0600 under ``.ailab/secrets/``, never printed.

Database passwords marked ``generated`` in the plan, and the LLM API key, are created here with
``secrets.token_urlsafe`` on first use and read back on every later run, so
re-running never rotates a password behind PostgreSQL's back. ``vault:<var>``
passwords never touch this store: the inventory refers to ``{{ vault_<var> }}``
and Ansible Vault supplies the value.

:func:`mask_secrets` is the one place that hides secret-looking text (known
values plus token, password and URL-credential patterns) before anything is
logged or recorded.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from ailab_deploy.errors import ConfigError

SECRETS_DIRNAME = "secrets"
MASK = "***"
GENERATED_PASSWORD_BYTES = 24  # 32 URL-safe characters
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_GROUP_OR_OTHER = stat.S_IRWXG | stat.S_IRWXO

# Shapes of secrets in API answers, URLs and config text. Each pattern keeps its
# first group (the label) and masks the rest.
_SECRET_PATTERNS = (
    # PVE API token header: PVEAPIToken=user@realm!name=SECRET (or a space before the secret)
    re.compile(r"(PVEAPIToken[= ]\S+?!\S+?[= ])[^\s'\",;]+"),
    re.compile(r"(PVEAuthCookie=)[^\s'\",;]+"),
    # HTTP bearer tokens (the LLM API key)
    re.compile(r"(Bearer\s+)[^\s'\",;]+"),
    re.compile(r"(CSRFPreventionToken[\"']?\s*[:=]\s*[\"']?)[^\s'\",;]+", re.IGNORECASE),
    # user:password@ in URLs (postgresql://, http://)
    re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(?=@)", re.IGNORECASE),
    # key=value, key: value, "key": "value" for password-ish keys
    re.compile(
        r"((?<![A-Za-z0-9])(?:password|passwd|pwd|secret|token_secret|api_token|api_key|token)[\"']?\s*[:=]\s*[\"']?)"
        r"(?!\{\{)[^\s'\",;&}]+",
        re.IGNORECASE,
    ),
    # PVE token secrets are UUIDs; mask any bare UUID-shaped value
    re.compile(r"()\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE),
)


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and every secret-looking token replaced by ``***``."""
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + MASK, text)
    return text


class SecretStore:
    """Named secrets, one 0600 file each, in a 0700 directory under the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / SECRETS_DIRNAME

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"secret name {name!r}: use a-z, 0-9, '_', '.', '-'")
        return self.directory / name

    def ensure_directory(self) -> Path:
        """Create the directory 0700 (and tighten it if someone loosened it)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.directory.stat().st_mode) & _GROUP_OR_OTHER:
            self.directory.chmod(0o700)
        return self.directory

    def get(self, name: str) -> str | None:
        """The stored secret, or None; refuses a file others can read (it may have leaked)."""
        path = self.path(name)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return None
        if stat.S_IMODE(mode) & _GROUP_OR_OTHER:
            raise ConfigError(
                f"{path} is readable by other users; run `chmod 600 {path}` "
                "(and change that secret if it may have been read)"
            )
        return path.read_text(encoding="utf-8").strip()

    def put(self, name: str, value: str) -> Path:
        """Write ``value`` (0600, atomically replacing an older one)."""
        self.ensure_directory()
        path = self.path(name)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        os.replace(temporary, path)
        return path

    def get_or_generate(self, name: str, nbytes: int = GENERATED_PASSWORD_BYTES) -> str:
        """The stored secret; generated and stored on first use (race-free across processes)."""
        existing = self.get(name)
        if existing is not None:
            return existing
        self.ensure_directory()
        value = _random.token_urlsafe(nbytes)
        path = self.path(name)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        try:
            # link() publishes the complete file atomically and fails if another process won,
            # so no reader ever sees a half-written secret.
            os.link(temporary, path)
        except FileExistsError:
            stored = self.get(name)
            if stored is None:  # removed again in between: give up rather than loop
                raise ConfigError(f"{path} vanished while being created") from None
            return stored
        finally:
            temporary.unlink(missing_ok=True)
        return value

    def values(self) -> list[str]:
        """Every stored secret value, for masking (unreadable or loose files are skipped)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.iterdir()):
            if path.is_file() and _NAME.match(path.name) and path.suffix not in (".yml", ".yaml"):
                try:
                    value = self.get(path.name)
                except (ConfigError, OSError):
                    continue
                if value:
                    found.append(value)
        return found


def database_password_secret_name(user: str) -> str:
    """Store name of a generated PostgreSQL password."""
    return f"postgresql-{user}.password"


LLM_API_KEY_SECRET_NAME = "llm-api.key"


def vault_variable(password_spec: str) -> str | None:
    """``vault:ailab_db`` -> ``vault_ailab_db``; None for ``generated``."""
    kind, _, variable = password_spec.partition(":")
    return f"vault_{variable}" if kind == "vault" else None
