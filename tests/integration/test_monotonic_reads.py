"""Monotonic reads against the real cluster: what a read hands back, across two instances.

The instances probe once at start and then only every 30 s, so their view of the replicas is
frozen at the start: exactly the stale probe the token must not be built from."""

from __future__ import annotations

import httpx

from replication.cluster import Cluster
from service.routing.lsn import format_lsn, parse_lsn
from tests.integration.conftest import connect, wait_until
from tests.integration.service_fixtures import image_bytes, service_client, service_settings, upload
from tests.integration.test_router import cluster_view, replay_paused

MONOTONIC = {"X-Replikit-Consistency": "monotonic"}
FROZEN_PROBES = 30.0


async def replayed(cluster: Cluster, name: str) -> int:
    connection = await connect(cluster, cluster.state.node(name))
    try:
        return parse_lsn(await connection.fetchval("SELECT pg_last_wal_replay_lsn()::text"))
    finally:
        await connection.close()


async def read(client: httpx.AsyncClient, image_id: str, token: str | None) -> httpx.Response:
    headers = {**MONOTONIC, **({"X-Replikit-LSN": token} if token else {})}
    client.cookies.clear()
    return await client.get(f"/api/v1/images/{image_id}", headers=headers)


async def test_a_monotonic_read_hands_back_what_it_saw_not_the_stale_probe(
    migrated: Cluster,
) -> None:
    settings = service_settings(migrated, replicas=True, health_interval=FROZEN_PROBES)
    async with service_client(settings) as first, service_client(settings) as second:
        probed = parse_lsn((await cluster_view(first))["pg1"]["replay_lsn"])
        async with replay_paused(migrated, migrated.state.node("pg2")):
            created = await upload(first, image_bytes("PNG", (8, 8)))
            image_id = created.json()["id"]
            committed = parse_lsn(created.headers["X-Replikit-LSN"])

            async def pg1_has_it() -> bool:
                return await replayed(migrated, "pg1") >= committed

            await wait_until(pg1_has_it, within=5, what="pg1 replaying the upload")
            # A token-less read goes to either replica; take the one pg1 served (pg2 is
            # paused before the upload and answers 404).
            for _ in range(4):
                seen = await read(first, image_id, None)
                if seen.headers["X-Replikit-Node"] == "pg1":
                    break
            assert seen.status_code == 200, seen.text
            token = seen.headers["X-Replikit-LSN"]
            assert f'replikit_lsn="{token}"' in seen.headers["set-cookie"]
            # The router's probe of pg1 predates the upload: as a token it would not cover the
            # row the client has just seen. The read's own measure does.
            assert probed < committed <= parse_lsn(token)

            # Through the other instance (its probes equally stale), the token never meets
            # pg2, which has not replayed the row: every read answers 200.
            for _ in range(6):
                again = await read(second, image_id, token)
                assert again.status_code == 200, (again.headers["X-Replikit-Node"], again.text)
                assert parse_lsn(again.headers["X-Replikit-LSN"]) >= parse_lsn(token)
            # The probe's value as the token lets pg2 serve it, and the image the client just
            # saw is gone: the flaw the read's own measure avoids.
            behind = [
                (await read(second, image_id, format_lsn(probed))).status_code for _ in range(4)
            ]
            assert 404 in behind, behind


async def test_a_monotonic_404_carries_a_token_and_other_modes_carry_none(
    migrated: Cluster,
) -> None:
    settings = service_settings(migrated, replicas=True)
    missing = "00000000-0000-4000-8000-000000000000"
    async with service_client(settings) as client:
        absent = await read(client, missing, None)
        assert absent.status_code == 404
        assert absent.json()["error"]["code"] == "IMAGE_NOT_FOUND"
        assert parse_lsn(absent.headers["X-Replikit-LSN"]) > 0
        client.cookies.clear()
        listing = await client.get("/api/v1/images?limit=2", headers=MONOTONIC)
        assert listing.status_code == 200
        assert len(listing.json()["items"]) <= 2
        assert parse_lsn(listing.headers["X-Replikit-LSN"]) > 0
        # A token no node has reached: no replica catches up within the wait, the primary
        # serves the read, and the token comes back unchanged, never lowered.
        high = format_lsn(parse_lsn(listing.headers["X-Replikit-LSN"]) + (1 << 40))
        ahead = await read(client, missing, high)
        assert (ahead.status_code, ahead.headers["X-Replikit-Node"]) == (404, "pg0")
        assert ahead.headers["X-Replikit-LSN"] == high
        strong_read = await client.get(
            f"/api/v1/images/{missing}",
            headers={"X-Replikit-Consistency": "strong", "X-Replikit-LSN": high},
        )
        assert "X-Replikit-LSN" not in strong_read.headers
        for mode in ("eventual", "bounded", "read_your_writes"):
            client.cookies.clear()
            response = await client.get(
                "/api/v1/images?limit=1", headers={"X-Replikit-Consistency": mode}
            )
            assert response.status_code == 200
            assert "X-Replikit-LSN" not in response.headers, mode
            assert "set-cookie" not in response.headers, mode
