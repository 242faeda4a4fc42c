"""Upload rate limit per client address, shared by every stateless instance.

The counter lives in PostgreSQL (table ``upload_rate_limits``, one row per address and
one-minute window) because the primary is the one store all instances already share; an
in-memory counter would multiply the limit by the number of instances. One upsert per upload,
in its own short transaction on the primary, so a rejected or failed upload still counts.
"""

from __future__ import annotations

import ipaddress
import random
from datetime import datetime

from sqlalchemy import delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from service.db.models import UploadRateLimit
from service.errors import InvalidClientAddressError, RateLimitExceededError

WINDOW_SECONDS = 60
PRUNE_PROBABILITY = 0.01


def client_address(request: Request) -> str | None:
    """The address the limit counts: the peer's, or the one a trusted proxy forwarded.

    uvicorn copies a trusted proxy's X-Forwarded-For into ``request.client`` unchecked, so a
    proxy that forwards garbage would otherwise reach the INET column as a 500.
    """
    if request.client is None or not request.client.host:
        return None
    host = request.client.host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise InvalidClientAddressError(
            "The forwarded client address is not an IP address.",
            details={"forwarded_for": host[:64]},
        ) from None


async def count_upload(*, session: AsyncSession, client_ip: str, limit: int) -> None:
    """Count one upload from ``client_ip``; raise 429 once the window's limit is passed."""
    if limit <= 0:
        return
    window = func.date_trunc("minute", func.now())
    statement = (
        insert(UploadRateLimit)
        .values(client_ip=client_ip, window_start=window, count=1)
        .on_conflict_do_update(
            index_elements=[UploadRateLimit.client_ip, UploadRateLimit.window_start],
            set_={"count": UploadRateLimit.count + 1},
        )
        .returning(UploadRateLimit.count, UploadRateLimit.window_start, func.now())
    )
    async with session.begin():
        count, window_start, now = (await session.execute(statement)).one()
        if random.random() < PRUNE_PROBABILITY:
            await session.execute(
                delete(UploadRateLimit).where(
                    UploadRateLimit.window_start < func.now() - text("interval '1 hour'")
                )
            )
    if count > limit:
        retry_after = _seconds_left(window_start, now)
        raise RateLimitExceededError(
            f"More than {limit} uploads a minute from this address; retry in {retry_after} s.",
            details={"limit": limit, "window_seconds": WINDOW_SECONDS},
            headers={"Retry-After": str(retry_after)},
        )


def _seconds_left(window_start: datetime, now: datetime) -> int:
    elapsed = (now - window_start).total_seconds()
    return max(1, int(WINDOW_SECONDS - elapsed + 0.999))
