"""The upload rate limit holds across stateless instances sharing the database, over any
60 s interval (not per calendar minute), under concurrency."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from replication.cluster import Cluster
from service import ratelimit
from service.ratelimit import WINDOW_SECONDS
from tests.integration.conftest import connect
from tests.integration.service_fixtures import (
    image_bytes,
    service_client,
    service_settings,
    upload,
)


def fresh_address() -> str:
    """A documentation-range (TEST-NET-2) address unique enough to have no stamps yet."""
    return f"198.18.{random.randrange(0, 256)}.{random.randrange(1, 255)}"


async def age_stamps(cluster: Cluster, address: str, seconds: float, *, newest: int = 0) -> None:
    """Move ``address``'s stamps ``seconds`` into the past, all but the ``newest`` ones: the
    clock going forward for this address, without sleeping. Done as the owner, as an operator
    would; the service itself only ever appends ``now()``."""
    owner = await connect(cluster, cluster.state.primary_node, owner=True)
    try:
        status = await owner.execute(
            "UPDATE upload_rate_limits SET stamps = ARRAY("
            "  SELECT CASE WHEN rank > $3 THEN s - make_interval(secs => $2) ELSE s END"
            "  FROM (SELECT s, row_number() OVER (ORDER BY s DESC) AS rank"
            "        FROM unnest(stamps) AS s) AS ranked ORDER BY s)"
            " WHERE client_ip = $1::inet",
            address,
            seconds,
            newest,
        )
        assert status == "UPDATE 1"
    finally:
        await owner.close()


async def statuses(client: httpx.AsyncClient, count: int) -> list[int]:
    data = image_bytes("PNG", (8, 8))
    return [(await upload(client, data)).status_code for _ in range(count)]


async def test_limit_is_shared_by_two_instances(migrated: Cluster) -> None:
    settings = service_settings(migrated, upload_rate_limit=3)
    # A documentation-range address unique to this run: only a label in the counter table.
    address = f"198.51.100.{random.randrange(1, 255)}"
    other = f"203.0.113.{random.randrange(1, 255)}"
    data = image_bytes("PNG", (8, 8))
    async with (
        service_client(settings, client_ip=address) as first,
        service_client(settings, client_ip=address) as second,
        service_client(settings, client_ip=other) as third,
    ):
        statuses = [
            (await upload(first, data)).status_code,
            (await upload(second, data)).status_code,
            (await upload(first, data)).status_code,
        ]
        assert statuses == [201, 201, 201]
        limited = await upload(second, data)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert (await upload(first, data)).status_code == 429
        # Another address has its own budget.
        assert (await upload(third, data)).status_code == 201


async def test_zero_turns_the_limit_off(migrated: Cluster) -> None:
    settings = service_settings(migrated, upload_rate_limit=0)
    async with service_client(settings, client_ip="192.0.2.77") as client:
        for _ in range(5):
            assert (await upload(client, image_bytes("PNG", (8, 8)))).status_code == 201


async def test_a_forwarded_address_that_is_not_an_ip_is_a_400_and_stores_nothing(
    migrated: Cluster,
) -> None:
    """uvicorn copies a trusted proxy's X-Forwarded-For into the client address unchecked."""
    settings = service_settings(migrated, upload_rate_limit=3)
    async with service_client(settings, client_ip="<script>") as client:
        before = (await client.get("/api/v1/images?limit=100")).json()["items"]
        response = await upload(client, image_bytes("PNG", (8, 8)))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "INVALID_CLIENT_ADDRESS"
        after = (await client.get("/api/v1/images?limit=100")).json()["items"]
        assert after == before


async def test_no_burst_across_a_minute_boundary(migrated: Cluster) -> None:
    """5 uploads at :55, then nothing at :01 of the next minute: a fixed per-minute window
    would have admitted 5 more there (10 in 6 s)."""
    settings = service_settings(migrated, upload_rate_limit=5)
    address = fresh_address()
    async with service_client(settings, client_ip=address) as client:
        assert await statuses(client, 5) == [201] * 5
        await age_stamps(migrated, address, 6)  # now it is 6 s later
        refused = await upload(client, image_bytes("PNG", (8, 8)))
        assert refused.status_code == 429
        # The oldest of the five leaves the window 60 - 6 = 54 s from now.
        assert WINDOW_SECONDS - 6 - 1 <= int(refused.headers["Retry-After"]) <= WINDOW_SECONDS - 6
        assert refused.json()["error"]["details"] == {"limit": 5, "window_seconds": 60}


async def test_slots_come_back_one_stamp_at_a_time(migrated: Cluster) -> None:
    """Sliding: when 3 of the 5 stamps are older than the window, exactly 3 uploads fit."""
    settings = service_settings(migrated, upload_rate_limit=5)
    address = fresh_address()
    async with service_client(settings, client_ip=address) as client:
        assert await statuses(client, 5) == [201] * 5
        await age_stamps(migrated, address, 30)
        assert await statuses(client, 1) == [429]
        await age_stamps(migrated, address, WINDOW_SECONDS - 30 + 0.5, newest=2)
        assert await statuses(client, 4) == [201, 201, 201, 429]
        # Retry-After names when the next slot frees: the two stamps 30 s old, ~30 s from now.
        refused = await upload(client, image_bytes("PNG", (8, 8)))
        assert 29 <= int(refused.headers["Retry-After"]) <= 31


async def test_a_refused_attempt_does_not_spend_a_slot(migrated: Cluster) -> None:
    settings = service_settings(migrated, upload_rate_limit=2)
    address = fresh_address()
    async with service_client(settings, client_ip=address) as client:
        assert await statuses(client, 2) == [201, 201]
        await age_stamps(migrated, address, WINDOW_SECONDS - 1)
        # Hammering while limited stores nothing: once the two stamps expire, two fit again.
        assert await statuses(client, 10) == [429] * 10
        await age_stamps(migrated, address, 1.5)
        assert await statuses(client, 3) == [201, 201, 429]


async def test_concurrent_uploads_from_one_address_never_exceed_the_limit(
    migrated: Cluster,
) -> None:
    """2N uploads at once through two instances (two connection pools): exactly N admitted."""
    limit = 6
    settings = service_settings(migrated, upload_rate_limit=limit)
    address = fresh_address()
    data = image_bytes("PNG", (8, 8))
    async with (
        service_client(settings, client_ip=address) as first,
        service_client(settings, client_ip=address) as second,
    ):
        responses = await asyncio.gather(
            *(upload(first if i % 2 else second, data) for i in range(2 * limit))
        )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * limit + [429] * limit


async def test_idle_addresses_are_pruned_and_the_active_one_kept(
    migrated: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address whose stamps are all older than the window is pruned by some later upload
    (forced here); the uploading address keeps its row."""
    settings = service_settings(migrated, upload_rate_limit=3)
    idle, active = fresh_address(), fresh_address()
    async with service_client(settings, client_ip=idle) as client:
        assert await statuses(client, 1) == [201]
    await age_stamps(migrated, idle, WINDOW_SECONDS + 1)
    monkeypatch.setattr(ratelimit, "PRUNE_PROBABILITY", 1.0)
    async with service_client(settings, client_ip=active) as client:
        assert await statuses(client, 1) == [201]
    owner = await connect(migrated, migrated.state.primary_node, owner=True)
    try:
        rows = await owner.fetch(
            "SELECT host(client_ip) AS ip FROM upload_rate_limits "
            "WHERE client_ip = ANY($1::inet[])",
            [idle, active],
        )
    finally:
        await owner.close()
    assert [r["ip"] for r in rows] == [active]
