"""The lab's system status as one value: database, LLM, schema revision and software versions."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata

from sqlalchemy import text
from sqlalchemy.engine import Engine

from .db import check_database
from .llm import LLMClient, LLMError

OK = "ok"
ERROR = "error"
# Distributions whose versions the status page lists, when installed.
DISTRIBUTIONS = ("ailab-kit", "lab-status", "sqlalchemy", "alembic", "psycopg", "streamlit")


@dataclass(frozen=True)
class Check:
    state: str  # OK or ERROR
    detail: str  # the server's version or models when ok; the error when not


@dataclass(frozen=True)
class SystemStatus:
    database: Check
    llm: Check
    schema_revision: str | None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.database.state == OK and self.llm.state == OK


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None before the first migration."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # no table yet, or no database: the status shows "none"
        return None


def installed_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def system_status(engine: Engine, client: LLMClient) -> SystemStatus:
    try:
        database = Check(OK, check_database(engine))
    except Exception as exc:  # shown to the operator, not raised
        database = Check(ERROR, f"{exc.__class__.__name__}: {exc}")
    try:
        models = client.models()
        llm = Check(OK, ", ".join(models) if models else "no model loaded")
    except LLMError as exc:
        llm = Check(ERROR, str(exc))
    return SystemStatus(database, llm, schema_revision(engine), installed_versions())
