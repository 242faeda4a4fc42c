"""A pool of plain asyncpg connections per node, for work that is one statement at a time.

Reads, and the upload's statements (its rate limit, its insert of row and bytes, the WAL
position after it), are one prepared statement each on a connection in autocommit, and nothing
else: no transaction, no session state. Through SQLAlchemy (an autocommit ``AsyncConnection``,
the pool's checkout and checkin events, the result proxy) a metadata read cost ~0.29 ms of CPU
against ~0.15 ms straight on an asyncpg pool, about half the service's whole read budget, and
each upload statement ~0.08 ms more. So these take connections from these pools and run SQL
text compiled once from the Core statements (service/db/driver_sql.py); transactions (the
delete: lock, check, delete) keep SQLAlchemy sessions.

Two choices keep a statement at one round trip:

* ``reset``: asyncpg resets a connection on release with ``SELECT pg_advisory_unlock_all();
  CLOSE ALL; UNLISTEN *; RESET ALL`` by default, one more round trip per statement for state
  we never leave behind (the filesystem store's advisory lock is a transaction's). Our reset
  does nothing; asyncpg still rolls back a transaction a cancelled statement left open before
  it calls it.
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
DriverConnection = Any


class DriverPoolExhaustedError(Exception):
    """Every connection of the pool stayed in use for the whole pool timeout.

    The node is fine, this process is busy with it: not a node failure.
    """


async def _keep_session(connection: DriverConnection) -> None:
    """Release without a reset query: single statements leave no session state behind."""


async def open_driver_pool(url: str, settings: Settings) -> Any:
    """A pool of up to ``REPLIKIT_DB_POOL_SIZE + REPLIKIT_DB_MAX_OVERFLOW`` connections,
    opened on demand (none at startup: a node that is down must not stop the service)."""
    return await asyncpg.create_pool(
        plain_dsn(url),
        min_size=0,
        max_size=settings.db_pool_size + settings.db_max_overflow,
        reset=_keep_session,
        **connect_arguments(settings),
    )


async def acquire(pool: Any, wait: float) -> DriverConnection:
    """A connection from ``pool`` within ``wait`` seconds.

    asyncpg raises the same ``TimeoutError`` for a pool with no free connection and for a node
    that does not answer a new connection: only the first is :class:`DriverPoolExhaustedError`.
    """
    try:
        return await pool.acquire(timeout=wait)
    except TimeoutError:
        if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
            raise DriverPoolExhaustedError from None
        raise
