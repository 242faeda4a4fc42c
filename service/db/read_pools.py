"""A pool of plain asyncpg connections per node, for the read path.

Reads are one prepared SELECT each, on a connection in autocommit, and nothing else: no
transaction, no session state. Through SQLAlchemy (an autocommit ``AsyncConnection``, the
pool's checkout and checkin events, the result proxy) a metadata read cost ~0.29 ms of CPU
against ~0.15 ms straight on an asyncpg pool, about half the service's whole read budget. So
reads take connections from these pools and run SQL text compiled once from the Core
statements (service/db/driver_sql.py); writes keep SQLAlchemy (sessions, the ORM's delete).

Two choices keep a read at one round trip:

* ``reset``: asyncpg resets a connection on release with ``SELECT pg_advisory_unlock_all();
  CLOSE ALL; UNLISTEN *; RESET ALL`` by default, one more round trip per read for state a read
  never creates. Our reset does nothing; asyncpg still rolls back a transaction a cancelled
  read left open before it calls it.
* no liveness ping: a pooled connection whose server went away (a restarted replica) is
  noticed by asyncpg without a round trip, as an EOF on the idle socket, and the pool opens a
  fresh one when it is next acquired.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from service.db.engines import connect_arguments, plain_dsn
from service.settings import Settings

# The driver's connection as handed out by the pool (asyncpg ships no type information).
ReadConnection = Any


class ReadPoolExhaustedError(Exception):
    """Every connection of the pool stayed in use for the whole pool timeout.

    The node is fine, this process is busy with it: not a node failure.
    """


async def _keep_session(connection: ReadConnection) -> None:
    """Release without a reset query: reads leave no session state behind."""


async def open_read_pool(url: str, settings: Settings) -> Any:
    """A pool of up to ``REPLIKIT_DB_POOL_SIZE + REPLIKIT_DB_MAX_OVERFLOW`` connections,
    opened on demand (none at startup: a node that is down must not stop the service)."""
    return await asyncpg.create_pool(
        plain_dsn(url),
        min_size=0,
        max_size=settings.db_pool_size + settings.db_max_overflow,
        reset=_keep_session,
        **connect_arguments(settings),
    )


async def acquire(pool: Any, wait: float) -> ReadConnection:
    """A connection from ``pool`` within ``wait`` seconds.

    asyncpg raises the same ``TimeoutError`` for a pool with no free connection and for a node
    that does not answer a new connection: only the first is :class:`ReadPoolExhaustedError`.
    """
    try:
        return await pool.acquire(timeout=wait)
    except TimeoutError:
        if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
            raise ReadPoolExhaustedError from None
        raise
