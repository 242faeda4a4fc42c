"""Router behaviour when nodes die, each test on a cluster of its own."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from replication.drivers.base import StopMode
from replication.topology import SyncMode
from service import migrate
from service.routing.lsn import parse_lsn
from tests.integration.clusters import running_cluster_async
from tests.integration.conftest import connect, wait_until
from tests.integration.service_fixtures import (
    image_bytes,
    service_client,
    service_settings,
    upload,
)

pytestmark = pytest.mark.destructive

INTERVAL = 0.5


async def test_killing_a_replica_only_fails_reads_in_flight_on_it() -> None:
    async with running_cluster_async(replicas=2, name="kill-replica") as cluster:
        await asyncio.to_thread(
            migrate.upgrade, cluster.state.owner_url(cluster.state.primary_node)
        )
        settings = service_settings(cluster, replicas=True, health_interval=INTERVAL)
        async with service_client(settings) as client:
            image = (await upload(client, image_bytes("PNG"))).json()
            await asyncio.sleep(0.3)
            statuses: Counter[int] = Counter()
            nodes: Counter[str] = Counter()
            stop = asyncio.Event()
            concurrency = 4

            async def reader() -> None:
                while not stop.is_set():
                    response = await client.get(f"/api/v1/images/{image['id']}")
                    statuses[response.status_code] += 1
                    nodes[response.headers.get("X-Replikit-Node", "?")] += 1

            readers = [asyncio.create_task(reader()) for _ in range(concurrency)]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(
                cluster.driver.stop, cluster.state.node("pg1"), StopMode.IMMEDIATE
            )
            killed_at = sum(nodes.values())
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*readers)
        failures = sum(count for status, count in statuses.items() if status >= 500)
        assert failures <= concurrency, f"{failures} failed reads: {statuses}"
        assert statuses[200] > killed_at  # reads went on after the kill
        view_nodes = nodes
        assert view_nodes["pg2"] > 0


async def test_pooled_connections_to_a_restarted_replica_are_replaced_without_an_error() -> None:
    """No pre-ping: the pool drops connections the restarted server closed, at checkout."""
    async with running_cluster_async(replicas=1, name="restart-replica") as cluster:
        await asyncio.to_thread(
            migrate.upgrade, cluster.state.owner_url(cluster.state.primary_node)
        )
        # A slow monitor: the requests, not a probe, meet the restarted node first.
        settings = service_settings(cluster, replicas=True, health_interval=30.0)
        async with service_client(settings) as client:
            path = f"/api/v1/images/{(await upload(client, image_bytes('PNG'))).json()['id']}"

            async def served_by_replica() -> bool:
                read = await client.get(path)
                return read.status_code == 200 and read.headers["X-Replikit-Node"] == "pg1"

            await wait_until(served_by_replica, within=10, what="a read on pg1")
            # Several connections in pg1's pool, all of which the restart will close.
            await asyncio.gather(*(client.get(path) for _ in range(4)))
            replica = cluster.state.node("pg1")
            await asyncio.to_thread(cluster.driver.stop, replica, StopMode.FAST)
            await asyncio.to_thread(cluster.driver.start, replica)
            await asyncio.sleep(0.5)  # let the event loop see the closed sockets
            reads = [await client.get(path) for _ in range(6)]
        assert [read.status_code for read in reads] == [200] * 6
        assert {read.headers["X-Replikit-Node"] for read in reads} == {"pg1"}


async def test_writes_follow_a_promoted_replica_and_never_reach_the_old_primary() -> None:
    async with running_cluster_async(replicas=2, name="promote") as cluster:
        state = cluster.state
        await asyncio.to_thread(migrate.upgrade, state.owner_url(state.primary_node))
        settings = service_settings(cluster, replicas=True, health_interval=INTERVAL)
        pg0, pg1 = state.node("pg0"), state.node("pg1")
        async with service_client(settings) as client:
            assert (await upload(client, image_bytes("PNG"))).headers["X-Replikit-Node"] == "pg0"
            await asyncio.to_thread(cluster.driver.stop, pg0, StopMode.IMMEDIATE)
            await asyncio.sleep(0.2)
            failed = await upload(client, image_bytes("PNG"))
            assert failed.status_code == 503
            assert failed.json()["error"]["code"] == "PRIMARY_UNAVAILABLE"

            admin = await connect(cluster, pg1, superuser=True)
            try:
                assert await admin.fetchval("SELECT pg_promote(wait => true)") is True
            finally:
                await admin.close()
            promoted = time.monotonic()
            while True:
                response = await upload(client, image_bytes("PNG"))
                if response.status_code == 201:
                    break
                assert response.status_code == 503, response.text
                assert time.monotonic() - promoted < 5, "writes never reached the new primary"
                await asyncio.sleep(0.02)
            took = time.monotonic() - promoted
            assert response.headers["X-Replikit-Node"] == "pg1"
            assert took <= 2 * INTERVAL + 0.2, f"first write on the new primary after {took:.2f} s"

            # The old primary comes back as it was: out of recovery, on the old timeline.
            await asyncio.to_thread(cluster.driver.start, pg0)

            async def pg0_seen_stale() -> bool:
                view = (await client.get("/cluster")).json()
                return any(
                    n["name"] == "pg0" and n["role"] == "stale_primary" for n in view["nodes"]
                )

            await wait_until(pg0_seen_stale, within=5, what="pg0 seen as a stale primary")
            old = await connect(cluster, pg0)
            before = await old.fetchval("SELECT count(*) FROM images")
            for _ in range(20):
                response = await upload(client, image_bytes("PNG", (8, 8)))
                assert response.status_code == 201
                assert response.headers["X-Replikit-Node"] == "pg1"
                listing = await client.get("/api/v1/images?limit=1")
                assert listing.headers["X-Replikit-Node"] != "pg0"
            assert await old.fetchval("SELECT count(*) FROM images") == before
            await old.close()
            view = (await client.get("/cluster")).json()
            assert view["writer"] == "pg1"
            timelines = {n["name"]: n["timeline"] for n in view["nodes"]}
            assert timelines["pg1"] == 2
            assert timelines["pg0"] == 1


async def test_a_commit_stuck_on_sync_replication_times_out_as_503() -> None:
    async with running_cluster_async(replicas=1, sync=SyncMode.ON, name="stuck") as cluster:
        state = cluster.state
        await asyncio.to_thread(migrate.upgrade, state.owner_url(state.primary_node))
        settings = service_settings(cluster, write_timeout=1.5)
        async with service_client(settings) as client:
            assert (await upload(client, image_bytes("PNG"))).status_code == 201
            await asyncio.to_thread(cluster.driver.stop, state.node("pg1"))
            started = time.monotonic()
            response = await upload(client, image_bytes("PNG"))
            took = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "PRIMARY_UNAVAILABLE"
        assert took < 1.5 + 1.0, f"the write hung for {took:.1f} s"


async def test_a_node_in_recovery_that_follows_no_primary_gets_no_reads() -> None:
    """A fenced former primary started by hand is in recovery, like a replica, but follows no
    one: what it would serve may be a history the cluster has left."""
    async with running_cluster_async(replicas=2, name="detached") as cluster:
        await asyncio.to_thread(
            migrate.upgrade, cluster.state.owner_url(cluster.state.primary_node)
        )
        pg2 = cluster.state.node("pg2")
        admin = await connect(cluster, pg2, superuser=True)
        try:
            conninfo = await admin.fetchval("SHOW primary_conninfo")
            await admin.execute("ALTER SYSTEM SET primary_conninfo = ''")
        finally:
            await admin.close()
        await asyncio.to_thread(cluster.driver.stop, pg2)
        await asyncio.to_thread(cluster.driver.start, pg2)
        settings = service_settings(cluster, replicas=True, health_interval=INTERVAL)
        async with service_client(settings) as client:
            view = {n["name"]: n for n in (await client.get("/cluster")).json()["nodes"]}
            assert view["pg2"]["role"] == "detached"
            assert view["pg2"]["in_rotation"] is False
            assert view["pg1"]["in_rotation"] is True
            served: Counter[str] = Counter()
            for _ in range(20):
                served[(await client.get("/api/v1/images")).headers["X-Replikit-Node"]] += 1
            assert served["pg2"] == 0, served

            admin = await connect(cluster, pg2, superuser=True)
            try:
                quoted = conninfo.replace("'", "''")
                await admin.execute(f"ALTER SYSTEM SET primary_conninfo = '{quoted}'")
            finally:
                await admin.close()
            await asyncio.to_thread(cluster.driver.stop, pg2)
            await asyncio.to_thread(cluster.driver.start, pg2)

            async def back_in_rotation() -> bool:
                nodes = (await client.get("/cluster")).json()["nodes"]
                return any(n["name"] == "pg2" and n["in_rotation"] for n in nodes)

            await wait_until(back_in_rotation, within=20, what="pg2 back in the rotation")


async def test_a_diverged_former_primary_restarted_as_a_standby_gets_no_reads() -> None:
    """What Patroni does with a crashed leader once another node took over: it starts it in
    recovery, following the new leader, before it rewinds it. Its WAL forked from the new
    timeline and runs past it (here: two segment switches, as a clean shutdown with archiving
    makes one), so the new leader refuses to stream to it, yet ``pg_last_wal_receive_lsn()``
    is set as soon as it asks. Its replay position is beyond every token the new leader hands
    out, so it would pass any read-your-writes check while it lacks every later write
    (issue 25: the HA soak's 535 broken read promises)."""
    async with running_cluster_async(replicas=1, name="diverged") as cluster:
        state = cluster.state
        await asyncio.to_thread(migrate.upgrade, state.owner_url(state.primary_node))
        pg0, pg1 = state.node("pg0"), state.node("pg1")
        new_leader = await connect(cluster, pg1, superuser=True)
        old_leader = await connect(cluster, pg0, superuser=True)
        try:
            conninfo = str(await new_leader.fetchval("SHOW primary_conninfo"))
            assert f"port={pg0.port}" in conninfo, conninfo
            assert await new_leader.fetchval("SELECT pg_promote(wait => true)") is True
            for _ in range(2):  # the old leader writes on: its history leaves the new one's
                await old_leader.execute("SELECT pg_logical_emit_message(false, 'rk', 'x')")
                await old_leader.execute("SELECT pg_switch_wal()")
            follow = conninfo.replace(f"port={pg0.port}", f"port={pg1.port}").replace("'", "''")
            await old_leader.execute(f"ALTER SYSTEM SET primary_conninfo = '{follow}'")
        finally:
            await old_leader.close()
            await new_leader.close()
        await asyncio.to_thread(cluster.driver.stop, pg0)
        await asyncio.to_thread(cluster.driver.fence, pg0)  # standby.signal
        await asyncio.to_thread(cluster.driver.start, pg0)

        old_leader = await connect(cluster, pg0, superuser=True)
        try:

            async def asked_to_stream() -> bool:
                return await old_leader.fetchval("SELECT pg_last_wal_receive_lsn()") is not None

            await wait_until(asked_to_stream, within=10, what="pg0 asking pg1 for WAL")
            assert await old_leader.fetchval("SELECT pg_is_in_recovery()") is True
            diverged_at = parse_lsn(
                await old_leader.fetchval("SELECT pg_last_wal_replay_lsn()::text")
            )
        finally:
            await old_leader.close()

        settings = service_settings(cluster, replicas=True, health_interval=INTERVAL)
        async with service_client(settings) as client:
            view = {n["name"]: n for n in (await client.get("/cluster")).json()["nodes"]}
            assert view["pg1"]["role"] == "primary"
            assert view["pg0"]["role"] == "detached", view["pg0"]
            assert view["pg0"]["in_rotation"] is False
            served: Counter[str] = Counter()
            for _ in range(10):
                created = await upload(client, image_bytes("PNG"))
                assert created.status_code == 201, created.text
                token = created.headers["X-Replikit-LSN"]
                assert parse_lsn(token) < diverged_at  # the stale node would pass the check
                read = await client.get(
                    f"/api/v1/images/{created.json()['id']}",
                    headers={"X-Replikit-Consistency": "read_your_writes", "X-Replikit-LSN": token},
                )
                served[read.headers.get("X-Replikit-Node", "?")] += 1
                assert read.status_code == 200, (read.headers.get("X-Replikit-Node"), read.text)
            assert served["pg0"] == 0, served
