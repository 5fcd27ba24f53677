"""`ailab-migrate`: apply the Alembic migrations shipped in this package to DATABASE_URL."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def main() -> int:
    # Alembic logs "Running upgrade A -> B" for each applied step; the python_app role reads it.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s [%(name)s] %(message)s")
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("ailab-migrate: DATABASE_URL is not set", file=sys.stderr)
        return 2
    upgrade(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
