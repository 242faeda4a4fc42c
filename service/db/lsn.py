"""The WAL position a client needs to read its own writes back from a replica."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def current_wal_lsn(session: AsyncSession) -> str:
    """Primary's WAL position, read after a commit: at or past that commit's record.

    Call it once the write's transaction has committed. It runs on an autocommit connection:
    one round trip, where a transaction of its own would add a BEGIN and a COMMIT.
    """
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return str(await connection.scalar(text("SELECT pg_current_wal_lsn()::text")))
