"""Upload rate limit per client address, shared by every stateless instance.

At most ``limit`` uploads from one address are admitted in ANY interval of
:data:`WINDOW_SECONDS` (a sliding window): table ``upload_rate_limits`` keeps, per address,
the time stamps of its admitted uploads younger than the window. A fixed per-minute counter
would admit twice the limit across a minute boundary (a burst at :59, another at :00).

The stamps live in PostgreSQL because the primary is the one store all instances already
share; an in-memory counter would multiply the limit by the number of instances. One statement
per upload, in its own short transaction on the primary, before the body is read: an upload
that fails afterwards (bad image, too large) has still spent its slot.
"""

from __future__ import annotations

import ipaddress
import math
import random

from sqlalchemy import text
from starlette.requests import Request

from service.db.driver_pools import DriverConnection
from service.db.driver_sql import for_driver
from service.errors import InvalidClientAddressError, RateLimitExceededError

WINDOW_SECONDS = 60
# Share of admitted uploads whose statement also deletes the rows of idle addresses (every
# stamp older than the window: the same as no row). The deletion rides in the same statement,
# so even those uploads take one round trip.
PRUNE_PROBABILITY = 0.01

# Admit iff fewer than :limit stamps are younger than the window; the row lock that ON CONFLICT
# takes serialises concurrent uploads from one address, on every instance, so the count and the
# append are one atomic step. No row returned = refused, and nothing was written. The prune
# skips rows other transactions hold (never waits) and never touches this address's row.
ADMIT = for_driver(
    text(
        """
WITH pruned AS (
    DELETE FROM upload_rate_limits
    WHERE client_ip IN (
        SELECT idle.client_ip FROM upload_rate_limits AS idle
        WHERE CAST(:prune AS boolean)
          AND idle.client_ip <> CAST(:client_ip AS inet)
          AND (SELECT max(s) FROM unnest(idle.stamps) AS s)
              <= now() - make_interval(secs => :window_seconds)
        FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO upload_rate_limits AS held (client_ip, stamps)
VALUES (CAST(:client_ip AS inet), ARRAY[now()])
ON CONFLICT (client_ip) DO UPDATE
SET stamps = ARRAY(
        SELECT s FROM unnest(held.stamps) AS s
        WHERE s > now() - make_interval(secs => :window_seconds) ORDER BY s
    ) || now()
WHERE (
    SELECT count(*) FROM unnest(held.stamps) AS s
    WHERE s > now() - make_interval(secs => :window_seconds)
) < :limit
RETURNING cardinality(held.stamps)
"""
    )
)

# Only after a refusal: seconds until the limit-th youngest live stamp leaves the window, when
# one upload fits again (the oldest one when exactly ``limit`` are live).
RETRY_AFTER = for_driver(
    text(
        """
SELECT EXTRACT(EPOCH FROM (
    SELECT s FROM unnest(stamps) AS s
    WHERE s > now() - make_interval(secs => :window_seconds)
    ORDER BY s DESC OFFSET :limit - 1 LIMIT 1
) + make_interval(secs => :window_seconds) - now())
FROM upload_rate_limits WHERE client_ip = CAST(:client_ip AS inet)
"""
    )
)


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


async def count_upload(*, connection: DriverConnection, client_ip: str, limit: int) -> None:
    """Spend one of ``client_ip``'s ``limit`` uploads per window, or raise 429.

    A refused attempt does not consume a slot: a client retrying too early is not pushed
    further back, and Retry-After is exact. ``limit`` 0 turns the limit off.
    """
    if limit <= 0:
        return
    parameters = {
        "client_ip": client_ip,
        "limit": limit,
        "window_seconds": float(WINDOW_SECONDS),
        "prune": random.random() < PRUNE_PROBABILITY,
    }
    # One statement on an autocommit connection: admitting is a single atomic upsert.
    admitted = await connection.fetchval(ADMIT.sql, *ADMIT.arguments(parameters))
    if admitted is not None:
        return
    seconds = await connection.fetchval(RETRY_AFTER.sql, *RETRY_AFTER.arguments(parameters))
    retry_after = max(1, math.ceil(seconds)) if seconds is not None else 1
    raise RateLimitExceededError(
        f"More than {limit} uploads a minute from this address; retry in {retry_after} s.",
        details={"limit": limit, "window_seconds": WINDOW_SECONDS},
        headers={"Retry-After": str(retry_after)},
    )
