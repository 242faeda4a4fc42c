"""SQLAlchemy engines for one database node."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.settings import Settings


def address_of(url: str) -> str:
    """``host:port`` of a database URL, the node's name until it reports its own."""
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 5432}"


def plain_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg takes, from a SQLAlchemy ``postgresql+asyncpg`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, settings: Settings) -> AsyncEngine:
    """A pooled engine. ``command_timeout`` bounds every command, COMMIT included (a commit
    waiting for a missing synchronous replica is cancelled), so no request waits on the
    database longer than ``REPLIKIT_WRITE_TIMEOUT``."""
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "timeout": min(settings.db_connect_timeout, settings.write_timeout),
            "command_timeout": settings.write_timeout,
            "server_settings": {
                "application_name": "replikit-service",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )
