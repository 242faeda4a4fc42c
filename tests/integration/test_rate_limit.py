"""The upload rate limit holds across stateless instances sharing the database."""

from __future__ import annotations

import random

from replication.cluster import Cluster
from tests.integration.service_fixtures import (
    image_bytes,
    service_client,
    service_settings,
    upload,
)


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
