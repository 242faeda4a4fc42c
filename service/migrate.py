"""Run the Alembic migrations in migrations/ programmatically (``replikit migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(primary_url: str) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation treats % specially; URL-quoted passwords may contain it.
    config.set_main_option("sqlalchemy.url", primary_url.replace("%", "%%"))
    return config


def upgrade(primary_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(primary_url), revision)


def downgrade(primary_url: str, revision: str) -> None:
    command.downgrade(alembic_config(primary_url), revision)


def current(primary_url: str) -> None:
    command.current(alembic_config(primary_url))
