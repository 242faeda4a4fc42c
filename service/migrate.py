"""Run the Alembic migrations in migrations/ programmatically (``replikit migrate``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from service.db.engines import ssl_argument

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class MigrationLoginError(Exception):
    """A node refused the migrations' role itself (wrong password, no such role, no CONNECT):
    no amount of waiting for a primary will help, so it is reported at once."""


def alembic_config(primary_url: str, ssl_root_cert: Path | None = None) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    # migrations/env.py hands these to asyncpg: verify-full against the CA when one is given.
    config.attributes["connect_args"] = ssl_argument(ssl_root_cert)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation treats % specially; URL-quoted passwords may contain it.
    config.set_main_option("sqlalchemy.url", primary_url.replace("%", "%%"))
    return config


def upgrade(primary_url: str, revision: str = "head", *, ssl_root_cert: Path | None = None) -> None:
    command.upgrade(alembic_config(primary_url, ssl_root_cert), revision)


def downgrade(primary_url: str, revision: str, *, ssl_root_cert: Path | None = None) -> None:
    command.downgrade(alembic_config(primary_url, ssl_root_cert), revision)


def current(primary_url: str) -> None:
    command.current(alembic_config(primary_url))


async def _is_primary(url: str, ssl_root_cert: Path | None) -> bool:
    """True when the node at ``url`` answers and is out of recovery."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(dsn, timeout=3, **ssl_argument(ssl_root_cert))
    except (
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InsufficientPrivilegeError,
    ) as e:
        user = make_url(url).username
        raise MigrationLoginError(
            f"The node at {make_url(url).host}:{make_url(url).port} refused the role {user}: {e}"
        ) from None
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        return bool(await connection.fetchval("SELECT NOT pg_is_in_recovery()"))
    except (OSError, asyncpg.PostgresError):
        return False
    finally:
        await connection.close()


async def _find_primary(
    urls: Sequence[str], wait_seconds: float, ssl_root_cert: Path | None
) -> str | None:
    deadline = time.monotonic() + wait_seconds
    while True:
        answers = await asyncio.gather(*(_is_primary(url, ssl_root_cert) for url in urls))
        primaries = [url for url, primary in zip(urls, answers, strict=True) if primary]
        if len(primaries) == 1:
            return primaries[0]
        # Two nodes out of recovery is a split brain: migrating either would be a guess.
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(1.0)


def find_primary_url(
    urls: Sequence[str], wait_seconds: float = 0.0, *, ssl_root_cert: Path | None = None
) -> str | None:
    """The one URL among ``urls`` whose node is the primary now, waiting up to ``wait_seconds``
    for exactly one to answer as primary; None when none (or more than one) does.

    Roles move on failover, so a migration must not trust which URL was configured as the
    primary: it asks every node, as the router does. Raises :class:`MigrationLoginError` when a
    node rejects the credentials.
    """
    return asyncio.run(_find_primary(list(urls), wait_seconds, ssl_root_cert))
