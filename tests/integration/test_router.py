"""The session router against the real cluster: policies, bounded staleness, read-your-writes,
per-request consistency, visibility. Tests that pause or delay replicas undo it afterwards."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from replication.cluster import Cluster
from replication.topology import NodeSpec
from service.routing.lsn import parse_lsn
from tests.integration.conftest import connect, wait_until
from tests.integration.service_fixtures import (
    count_socket_writes,
    image_bytes,
    service_client,
    service_settings,
    upload,
)

INTERVAL = 0.2


async def superuser_sql(cluster: Cluster, node: NodeSpec, *statements: str) -> None:
    connection = await connect(cluster, node, superuser=True)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def replay_paused(cluster: Cluster, node: NodeSpec) -> AsyncIterator[None]:
    await superuser_sql(cluster, node, "SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        await superuser_sql(cluster, node, "SELECT pg_wal_replay_resume()")


@asynccontextmanager
async def apply_delay(cluster: Cluster, delay: str) -> AsyncIterator[None]:
    for node in cluster.state.replicas:
        await superuser_sql(
            cluster,
            node,
            f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'",
            "SELECT pg_reload_conf()",
        )
    try:
        yield
    finally:
        for node in cluster.state.replicas:
            await superuser_sql(
                cluster,
                node,
                "ALTER SYSTEM RESET recovery_min_apply_delay",
                "SELECT pg_reload_conf()",
            )


async def cluster_view(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    view = (await client.get("/cluster")).json()
    return {node["name"]: node for node in view["nodes"]}


async def served_by(
    client: httpx.AsyncClient, path: str, count: int, headers: dict[str, str] | None = None
) -> Counter[str]:
    nodes: Counter[str] = Counter()
    for _ in range(count):
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        nodes[response.headers["X-Replikit-Node"]] += 1
    return nodes


async def test_round_robin_spreads_reads_evenly(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated, replicas=True)) as client:
        image = (await upload(client, image_bytes("PNG"))).json()
        await asyncio.sleep(0.5)
        picks = await served_by(client, f"/api/v1/images/{image['id']}", 200)
    assert picks == {"pg1": 100, "pg2": 100}


async def test_least_lag_prefers_the_replica_that_is_not_paused(migrated: Cluster) -> None:
    settings = service_settings(
        migrated, replicas=True, read_policy="least_lag", health_interval=INTERVAL
    )
    pg1 = migrated.state.node("pg1")
    async with service_client(settings) as client:
        image = (await upload(client, image_bytes("PNG"))).json()
        async with replay_paused(migrated, pg1):
            await upload(client, image_bytes("PNG"))  # WAL that pg1 will not replay

            async def pg1_lags() -> bool:
                return bool((await cluster_view(client))["pg1"]["lag_bytes"])

            await wait_until(pg1_lags, within=3, what="pg1 showing lag")
            picks = await served_by(client, f"/api/v1/images/{image['id']}", 50)
    assert picks == {"pg2": 50}


async def test_paused_replica_leaves_bounded_rotation_and_comes_back(migrated: Cluster) -> None:
    settings = service_settings(
        migrated,
        replicas=True,
        read_consistency="bounded",
        health_interval=INTERVAL,
        max_lag_seconds=0.3,
    )
    pg1 = migrated.state.node("pg1")
    async with service_client(settings) as client:
        async with replay_paused(migrated, pg1):
            await upload(client, image_bytes("PNG"))
            written = time.monotonic()

            async def pg1_out() -> bool:
                return not (await cluster_view(client))["pg1"]["in_rotation"]

            await wait_until(pg1_out, within=3, what="pg1 leaving the rotation")
            # Lag must first exceed 0.3 s, then the next probe sees it: two intervals at most.
            assert time.monotonic() - written <= 0.3 + 2 * INTERVAL + 0.15
            view = await cluster_view(client)
            assert view["pg1"]["replay_paused"] is True
            assert view["pg1"]["why_not"].startswith("lag over the limit")
            listing = await served_by(client, "/api/v1/images?limit=1", 20)
            assert "pg1" not in listing
        resumed = time.monotonic()

        async def pg1_back() -> bool:
            return bool((await cluster_view(client))["pg1"]["in_rotation"])

        await wait_until(pg1_back, within=3, what="pg1 returning to the rotation")
        assert time.monotonic() - resumed <= 2 * INTERVAL + 0.15


async def _pairs(
    client: httpx.AsyncClient, consistency: str, pairs: int
) -> tuple[int, Counter[str]]:
    """Upload then immediately read back, ``pairs`` times, 20 at once; count stale reads."""
    stale = 0
    nodes: Counter[str] = Counter()
    semaphore = asyncio.Semaphore(20)
    data = image_bytes("PNG", (16, 16))

    async def pair() -> None:
        nonlocal stale
        async with semaphore:
            created = await client.post(
                "/api/v1/images/upload",
                files={"file": ("p.png", data, "image/png")},
                headers={"X-Replikit-Consistency": consistency},
            )
            assert created.status_code == 201, created.text
            headers = {
                "X-Replikit-Consistency": consistency,
                "X-Replikit-LSN": created.headers["X-Replikit-LSN"],
            }
            read = await client.get(f"/api/v1/images/{created.json()['id']}", headers=headers)
            assert read.status_code in (200, 404), read.text
            nodes[read.headers["X-Replikit-Node"]] += 1
            if read.status_code == 404:
                stale += 1

    await asyncio.gather(*(pair() for _ in range(pairs)))
    return stale, nodes


async def test_read_your_writes_never_reads_stale_under_a_one_second_apply_delay(
    migrated: Cluster,
) -> None:
    settings = service_settings(migrated, replicas=True, health_interval=INTERVAL)
    async with apply_delay(migrated, "1s"), service_client(settings) as client:
        client.cookies.clear()
        stale_ryw, ryw_nodes = await _pairs(client, "read_your_writes", 200)
        client.cookies.clear()
        stale_eventual, eventual_nodes = await _pairs(client, "eventual", 200)
        metrics = (await client.get("/metrics")).text
    assert stale_ryw == 0, f"read-your-writes served {stale_ryw} stale reads: {ryw_nodes}"
    # The same workload without the token's guarantee does read stale data: the test can fail.
    assert stale_eventual > 0, f"eventual reads were never stale: {eventual_nodes}"
    # A replica 1 s behind cannot replay a fresh token within REPLIKIT_RYW_WAIT (0.2 s): the
    # router knows its lag and sends such reads to the primary without waiting.
    assert 'replikit_ryw_waits_total{outcome="skipped"}' in metrics
    assert 'replikit_read_fallbacks_total{reason="ryw_lagging"}' in metrics


async def test_cookie_alone_carries_the_token(migrated: Cluster) -> None:
    settings = service_settings(migrated, replicas=True, read_consistency="read_your_writes")
    async with apply_delay(migrated, "1s"), service_client(settings) as client:
        for _ in range(10):
            created = await upload(client, image_bytes("PNG", (8, 8)))
            assert "replikit_lsn" in created.headers["set-cookie"]
            read = await client.get(f"/api/v1/images/{created.json()['id']}")
            assert read.status_code == 200


async def test_both_dependencies_honour_the_consistency_header(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated, replicas=True)) as client:
        image = (await upload(client, image_bytes("PNG"))).json()
        await asyncio.sleep(0.3)
        strong = await served_by(
            client,
            f"/api/v1/images/{image['id']}",
            10,
            headers={"X-Replikit-Consistency": "strong"},
        )
        assert strong == {"pg0": 10}
        for request in (
            client.get(
                f"/api/v1/images/{image['id']}", headers={"X-Replikit-Consistency": "sometimes"}
            ),
            client.post(
                "/api/v1/images/upload",
                files={"file": ("a.png", image_bytes("PNG"), "image/png")},
                headers={"X-Replikit-Consistency": "sometimes"},
            ),
        ):
            response = await request
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "INVALID_CONSISTENCY"
        strong_write = await client.post(
            "/api/v1/images/upload",
            files={"file": ("a.png", image_bytes("PNG"), "image/png")},
            headers={"X-Replikit-Consistency": "strong"},
        )
        assert strong_write.headers["X-Replikit-Node"] == "pg0"


async def test_primary_policy_and_fallback_error(migrated: Cluster, unused_tcp_port: int) -> None:
    async with service_client(
        service_settings(migrated, replicas=True, read_policy="primary")
    ) as client:
        assert await served_by(client, "/api/v1/images?limit=1", 5) == {"pg0": 5}
    state = migrated.state
    dead_replica = state.app_url(state.replicas[0]).replace(
        f":{state.replicas[0].port}/", f":{unused_tcp_port}/"
    )
    settings = service_settings(migrated, replica_urls=[dead_replica], read_fallback="error")
    async with service_client(settings) as client:
        response = await client.get("/api/v1/images?limit=1")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "NO_READER_AVAILABLE"
    settings = service_settings(migrated, replica_urls=[dead_replica])
    async with service_client(settings) as client:
        assert await served_by(client, "/api/v1/images?limit=1", 3) == {"pg0": 3}
        assert 'reason="no_healthy_replica"' in (await client.get("/metrics")).text


async def test_cluster_view_and_metrics(migrated: Cluster) -> None:
    async with service_client(service_settings(migrated, replicas=True)) as client:
        await upload(client, image_bytes("PNG"))
        await client.get("/api/v1/images?limit=1")
        view = (await client.get("/cluster")).json()
        metrics = (await client.get("/metrics")).text
    assert view["writer"] == "pg0"
    assert (view["policy"], view["consistency"]) == ("round_robin", "eventual")
    roles = {
        node["name"]: (node["role"], node["timeline"], node["healthy"]) for node in view["nodes"]
    }
    assert roles == {
        "pg0": ("primary", 1, True),
        "pg1": ("replica", 1, True),
        "pg2": ("replica", 1, True),
    }
    for name in (
        "replikit_routed_total",
        "replikit_replica_lag_seconds",
        "replikit_replica_lag_bytes",
        "replikit_role_changes_total",
        "replikit_node_is_writer",
        "replikit_http_requests_total",
    ):
        assert name in metrics
    assert 'replikit_routed_total{kind="write",node="pg0"}' in metrics


async def test_an_eventual_bounded_or_monotonic_read_or_a_file_is_one_statement_on_the_replica(
    migrated: Cluster,
) -> None:
    """No pre-ping, no BEGIN, no ROLLBACK: the read's SELECT is all its connection sends."""
    settings = service_settings(migrated, replicas=True, health_interval=INTERVAL)
    async with service_client(settings) as client:
        created = await upload(client, image_bytes("PNG"))
        created_lsn = created.headers["X-Replikit-LSN"]
        path = f"/api/v1/images/{created.json()['id']}"
        client.cookies.clear()
        router = client._transport.app.state.router  # type: ignore[attr-defined]
        sent = count_socket_writes(router.nodes[1:])

        async def read(consistency: str) -> httpx.Response:
            sent.clear()
            response = await client.get(path, headers={"X-Replikit-Consistency": consistency})
            assert response.status_code == 200, response.text
            return response

        async def on_replica() -> bool:
            return (await read("eventual")).headers["X-Replikit-Node"] != "pg0"

        await wait_until(on_replica, within=10, what="a read served by a replica")
        # Each pooled connection prepares a statement once (a Parse message of its own); after
        # that, a read is one write: Bind, Execute, Sync.
        for _ in range(20):
            await read("bounded")
        for consistency in ("eventual", "bounded", "eventual"):
            response = await read(consistency)
            assert response.headers["X-Replikit-Node"] != "pg0"
            # One write: Bind + Execute + Sync of the read's prepared SELECT. A BEGIN, a
            # pre-ping or a ROLLBACK would each be a write of its own (a Query message).
            assert len(sent) == 1, sent
            assert sent[0][:1] == b"B", sent

        # A monotonic read with a token both replicas are known to have replayed: its
        # position is a column of the same statement, still one write.
        token = (await client.get(path)).headers.get("X-Replikit-LSN")
        written = parse_lsn(created_lsn)

        async def replicas_have_it() -> bool:
            view = await cluster_view(client)
            return all(parse_lsn(view[n]["replay_lsn"]) >= written for n in ("pg1", "pg2"))

        await wait_until(replicas_have_it, within=5, what="both replicas replaying the upload")
        assert token is None  # an eventual read hands back no token
        monotonic = {"X-Replikit-Consistency": "monotonic", "X-Replikit-LSN": created_lsn}
        for attempt in range(23):
            client.cookies.clear()
            sent.clear()
            response = await client.get(path, headers=monotonic)
            assert response.status_code == 200, response.text
            assert parse_lsn(response.headers["X-Replikit-LSN"]) >= written
            if attempt >= 20:  # after each pooled connection prepared the statement once
                assert response.headers["X-Replikit-Node"] != "pg0"
                assert len(sent) == 1, sent
                assert sent[0][:1] == b"B", sent

        # A file: its columns and bytes in one statement. Conditional (and HEAD) requests read
        # the columns first, and a matching ETag reads no bytes at all: one statement too.
        file_path = f"{path}/file"
        client.cookies.clear()
        for _ in range(20):
            await client.get(file_path)
            await client.get(file_path, headers={"If-None-Match": '"x"'})
        for conditional in (None, created.json()["sha256"]):
            sent.clear()
            headers = {"If-None-Match": f'"{conditional}"'} if conditional else {}
            response = await client.get(file_path, headers=headers)
            assert response.status_code == (304 if conditional else 200), response.text
            assert len(response.content) == (0 if conditional else created.json()["file_size"])
            assert response.headers["X-Replikit-Node"] != "pg0"
            assert len(sent) == 1, sent
            assert sent[0][:1] == b"B", sent
