"""SQLAlchemy engines for one database node, and the connect arguments every pool shares."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.settings import Settings


def address_of(url: str) -> str:
    """``host:port`` of a database URL, the node's name until it reports its own."""
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 5432}"


def plain_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg takes, from a SQLAlchemy ``postgresql+asyncpg`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def discard_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Checkout hook: refuse a pooled connection whose socket the server has closed.

    This replaces ``pool_pre_ping``, which costs three round trips per checkout on asyncpg
    (BEGIN, ``;``, ROLLBACK) and doubled the cost of a metadata read. A restarted or stopped
    node closes its sockets; asyncpg notices the EOF on the idle connection at once and
    ``is_closed()`` says so without a round trip, and the pool then opens a fresh connection
    (it retries the checkout after ``DisconnectionError``). A node that vanishes without
    closing anything (a partition) is caught by the command timeout and the router instead.
    """
    raw = getattr(dbapi_connection, "_connection", None)
    if raw is not None and raw.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def tls_arguments(settings: Settings) -> dict[str, Any]:
    """``ssl``: with ``REPLIKIT_DB_SSL_ROOT_CERT``, a context that checks the node's certificate
    against that CA and the URL's host name or address (``sslmode=verify-full``); asyncpg then
    never falls back to plain TCP. Without it, nothing (asyncpg's own default)."""
    return ssl_argument(settings.db_ssl_root_cert)


def ssl_argument(root_cert: Path | None) -> dict[str, Any]:
    """asyncpg's ``ssl`` argument for verify-full against ``root_cert`` (none: nothing)."""
    if root_cert is None:
        return {}
    return {"ssl": ssl.create_default_context(cafile=str(root_cert))}


def connect_arguments(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments for the service's connections (engines and read pools).

    ``command_timeout`` bounds every command, COMMIT included (a commit waiting for a missing
    synchronous replica is cancelled), so no request waits on the database longer than
    ``REPLIKIT_WRITE_TIMEOUT``.
    """
    return {
        **tls_arguments(settings),
        "timeout": min(settings.db_connect_timeout, settings.write_timeout),
        "command_timeout": settings.write_timeout,
        "server_settings": {
            "application_name": "replikit-service",
            "statement_timeout": str(settings.db_statement_timeout_ms),
        },
    }


def make_engine(url: str, settings: Settings) -> AsyncEngine:
    """A pooled engine for the writes (sessions and autocommit Core connections)."""
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,
        pool_timeout=settings.db_pool_timeout,
        connect_args=connect_arguments(settings),
    )
    event.listen(engine.sync_engine, "checkout", discard_closed_connection)
    return engine
