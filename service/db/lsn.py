"""The WAL position a client needs to read its own writes back from a replica."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def current_wal_lsn(session: AsyncSession) -> str:
    """Primary's WAL position, read after a commit: at or past that commit's record."""
    lsn = await session.scalar(text("SELECT pg_current_wal_lsn()::text"))
    # Commit, not rollback: a rollback would expire the objects the caller still returns.
    await session.commit()
    return str(lsn)
