"""The WAL position a client needs to read its own writes back from a replica."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.driver_pools import DriverConnection

CURRENT_WAL_LSN = "SELECT pg_current_wal_lsn()::text"


async def wal_lsn_on(connection: DriverConnection) -> str:
    """The primary's WAL position, read on an autocommit ``connection`` after its write's
    statement returned (so at or past that write's commit record)."""
    return str(await connection.fetchval(CURRENT_WAL_LSN))


async def current_wal_lsn(session: AsyncSession) -> str:
    """Primary's WAL position, read after a commit: at or past that commit's record.

    Call it once the write's transaction has committed. It runs on an autocommit connection:
    one round trip, where a transaction of its own would add a BEGIN and a COMMIT.
    """
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return str(await connection.scalar(text(CURRENT_WAL_LSN)))
