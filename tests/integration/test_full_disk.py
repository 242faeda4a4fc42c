"""A node's disk fills (a size-limited tmpfs under its data directory), on real clusters.

What PostgreSQL does, seen here: a primary whose tables cannot grow answers ``53100``
``disk_full`` and stays up; a primary that cannot add a WAL segment PANICs, fails its crash
recovery for the same reason and shuts down; a replica that cannot replay shuts down. The
service's answers to each are in docs/operations.md#a-full-disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import os
import random
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from replication.cluster import Cluster, cluster_up, switchover
from replication.topology import Manager
from service import migrate
from tests.integration.clusters import in_thread, reachable_temp_dir, running_cluster_async
from tests.integration.conftest import connect, wait_until
from tests.integration.full_disk import FILLER, SmallDisk, small_disk, tmpfs
from tests.integration.service_fixtures import (
    blob_files,
    service_client,
    service_settings,
    upload,
)

pytestmark = [
    pytest.mark.destructive,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("mount") is None,
        reason="these tests mount a small tmpfs (under a node's data directory), which needs root",
    ),
]

HOLD = 2.0  # REPLIKIT_STORAGE_FULL_HOLD for these tests (the default)
PREFIX = "rk-diskfull-"


def noisy_png(seed: int) -> bytes:
    """About 200 kB of incompressible pixels: every upload needs new pages."""
    pixels = random.Random(seed).randbytes(256 * 256 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (256, 256), pixels).save(buffer, "PNG")
    return buffer.getvalue()


class Uploads:
    """What the service acknowledged (id → sha256), and checks that it is all still there."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.acknowledged: dict[str, str] = {}
        self.seed = 0

    async def send(self, filename: str = "picture.png") -> httpx.Response:
        self.seed += 1
        response = await upload(self.client, noisy_png(self.seed), filename=filename)
        if response.status_code == 201:
            body = response.json()
            self.acknowledged[body["id"]] = body["sha256"]
        return response

    async def all_readable(self) -> set[str]:
        """Every acknowledged image, byte for byte; return the nodes that served them."""
        served = set()
        for image_id, sha256 in self.acknowledged.items():
            read = await self.client.get(f"/api/v1/images/{image_id}/file")
            assert read.status_code == 200, read.text
            assert hashlib.sha256(read.content).hexdigest() == sha256
            served.add(read.headers["X-Replikit-Node"])
        return served

    async def stored_on(self, cluster: Cluster, node_name: str = "pg0") -> tuple[set[str], ...]:
        """The ids of the rows of ``images`` and of ``image_blobs`` on a node."""
        connection = await connect(cluster, cluster.state.node(node_name), owner=True)
        try:
            images = await connection.fetch("SELECT id::text FROM images")
            blobs = await connection.fetch("SELECT image_id::text FROM image_blobs")
        finally:
            await connection.close()
        return {row[0] for row in images}, {row[0] for row in blobs}


async def view(client: httpx.AsyncClient) -> dict[str, Any]:
    cluster_view: dict[str, Any] = (await client.get("/cluster")).json()
    return cluster_view


def node_view(cluster_view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(node for node in cluster_view["nodes"] if node["name"] == name)


async def superuser_sql(cluster: Cluster, *statements: str, node: str = "pg0") -> None:
    connection = await connect(cluster, cluster.state.node(node), superuser=True)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def make_wal_pusher(cluster: Cluster, *, node: str = "pg0") -> None:
    await superuser_sql(
        cluster, "CREATE TABLE wal_pusher (x int)", "INSERT INTO wal_pusher VALUES (1)", node=node
    )


async def push_wal(cluster: Cluster, *, segments: int, node: str = "pg0") -> None:
    """Write a little and switch to a new WAL segment, ``segments`` times (no table grows):
    on a full disk, the primary PANICs at the first segment it cannot add. The table must
    have been made before the disk filled (creating one needs room)."""
    for _ in range(segments):
        await superuser_sql(
            cluster, "UPDATE wal_pusher SET x = x + 1", "SELECT pg_switch_wal()", node=node
        )


async def fill(disk: SmallDisk) -> None:
    await asyncio.to_thread(disk.fill)
    assert disk.available() < 64 * 1024


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert int(response.headers["Retry-After"]) >= 1


@contextlib.asynccontextmanager
async def service_on_small_disk(
    name: str, *, replicas: int, node: str = "pg0"
) -> AsyncIterator[tuple[Cluster, SmallDisk, Uploads]]:
    """A migrated cluster with ``node`` on a small disk, an in-process service reading from
    the replicas, and three uploads acknowledged and replayed everywhere."""
    async with (
        running_cluster_async(replicas=replicas, name=name, prefix=PREFIX) as cluster,
        in_thread(small_disk(cluster, node)) as disk,
    ):
        await asyncio.to_thread(
            migrate.upgrade, cluster.state.owner_url(cluster.state.primary_node)
        )
        # The upload's rate limit on too: its statement writes to the full disk first.
        settings = service_settings(
            cluster, replicas=True, storage_full_hold=HOLD, upload_rate_limit=10_000
        )
        async with service_client(settings) as client:
            uploads = Uploads(client)
            await replicas_have(cluster, uploads)
            for _ in range(3):
                assert (await uploads.send()).status_code == 201
            await replicas_have(cluster, uploads)
            yield cluster, disk, uploads


async def test_a_full_primary_refuses_uploads_with_storage_full_and_resumes_by_itself() -> None:
    async with service_on_small_disk("primary-full", replicas=1) as (cluster, disk, uploads):
        client = uploads.client
        # A fresh WAL segment: the failed uploads below write a little WAL, and a primary
        # that must add a segment on a full disk stops (the next test).
        await superuser_sql(cluster, "SELECT pg_switch_wal()", "CHECKPOINT")
        await fill(disk)

        refusals = []
        for _ in range(6):
            refusals.append(await uploads.send())
            await asyncio.sleep(HOLD / 2)
        for response in refusals:
            assert_refused(response, "STORAGE_FULL")
        assert {r.json()["error"]["details"]["node"] for r in refusals} == {"pg0"}
        # The primary is full, not down: it stays the writer and reads go on.
        assert_refused(await uploads.send(), "STORAGE_FULL")
        full_view = await view(client)
        assert full_view["writer"] == "pg0"
        assert node_view(full_view, "pg0")["storage_full"] is True
        await uploads.all_readable()
        listed = await client.get("/api/v1/images", params={"limit": 100})
        assert {item["id"] for item in listed.json()["items"]} == set(uploads.acknowledged)
        # Nothing of a refused upload stayed behind: no row, no bytes.
        images, blobs = await uploads.stored_on(cluster)
        assert images == blobs == set(uploads.acknowledged)

        await asyncio.to_thread(disk.free)

        async def accepted() -> bool:
            response = await uploads.send()
            if response.status_code != 201:
                assert_refused(response, "STORAGE_FULL")
            return response.status_code == 201

        resumed_in = await wait_until(accepted, within=10 * HOLD, what="an upload accepted")
        assert resumed_in <= HOLD + 5.0  # the hold, and an upload on a loaded machine
        for _ in range(3):
            assert (await uploads.send()).status_code == 201
        # Reads are eventual and go to the replica: wait for it to replay the new uploads.
        await replicas_have(cluster, uploads)
        await uploads.all_readable()
        images, blobs = await uploads.stored_on(cluster)
        assert images == blobs == set(uploads.acknowledged)


async def test_a_primary_that_cannot_write_wal_stops_and_reads_go_on_from_replicas() -> None:
    """The other way a full disk ends for a primary: PostgreSQL PANICs when it cannot add a
    WAL segment, and its crash recovery fails on the same full disk, so it shuts down. The
    service cannot tell this from any other dead primary: uploads get PRIMARY_UNAVAILABLE
    (never a 500), reads go to the replica, and once the disk has room and the node is
    started again (``cluster up``; Patroni would restart it), writes resume with no restart
    of the service and nothing acknowledged lost."""
    async with service_on_small_disk("primary-wal-full", replicas=1) as (cluster, disk, uploads):
        await make_wal_pusher(cluster)
        await fill(disk)
        # The server PANICs and closes the connection (then refuses new ones).
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await push_wal(cluster, segments=5)
        await wait_until(functools.partial(stopped, cluster, "pg0"), within=30, what="pg0 stopping")
        log = (cluster.data_dir / "logs" / "pg0.log").read_text(errors="replace")
        assert "PANIC:  could not write to file" in log
        assert "shutting down due to startup process failure" in log

        for _ in range(3):
            response = await uploads.send()
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "PRIMARY_UNAVAILABLE"
        assert await uploads.all_readable() == {"pg1"}

        # Room again: the node stays down until it is started; then writes resume.
        await asyncio.to_thread(disk.free)
        await asyncio.to_thread(cluster_up, cluster.data_dir)

        async def accepted() -> bool:
            return (await uploads.send()).status_code == 201

        await wait_until(accepted, within=20, what="an upload accepted")
        await replicas_have(cluster, uploads)
        await uploads.all_readable()
        images, blobs = await uploads.stored_on(cluster)
        assert images == blobs == set(uploads.acknowledged)


async def stopped(cluster: Cluster, name: str) -> bool:
    """True once the node's server has stopped (PostgreSQL shut it down by itself)."""
    running = await asyncio.to_thread(cluster.driver.is_running, cluster.state.node(name))
    return not running


async def replica_has(cluster: Cluster, uploads: Uploads, name: str = "pg1") -> bool:
    try:
        images, _ = await uploads.stored_on(cluster, name)
    except asyncpg.UndefinedTableError:  # the migration is not replayed yet
        return False
    except (OSError, asyncpg.CannotConnectNowError, asyncpg.InterfaceError):
        return False  # (re)starting: under Patroni a rejoining node restarts on its own
    return images == set(uploads.acknowledged)


async def replicas_have(cluster: Cluster, uploads: Uploads) -> None:
    for replica in cluster.state.replicas:
        await wait_until(
            functools.partial(replica_has, cluster, uploads, replica.name),
            within=15,
            what=f"{replica.name} replaying",
        )


async def test_a_full_replica_stops_but_never_the_primary_and_leaves_the_rotation() -> None:
    on_pg1 = service_on_small_disk("replica-full", replicas=2, node="pg1")
    async with on_pg1 as (cluster, disk, uploads):
        client = uploads.client
        assert "pg1" in await uploads.all_readable()
        await fill(disk)

        failed_reads = []

        async def pg1_out_of_rotation() -> bool:
            assert (await uploads.send()).status_code == 201
            for image_id in list(uploads.acknowledged)[:3]:
                read = await client.get(f"/api/v1/images/{image_id}")
                if read.status_code != 200:
                    failed_reads.append(read)
            return not node_view(await view(client), "pg1")["in_rotation"]

        await wait_until(pg1_out_of_rotation, within=60, what="pg1 leaving the rotation")
        # At most the one read in flight on pg1 when it stopped (reads are sequential).
        assert len(failed_reads) <= 1, [read.text for read in failed_reads]
        assert all(read.status_code == 503 for read in failed_reads)
        # PostgreSQL stopped it: the replay could not extend a table on the full disk.
        await wait_until(functools.partial(stopped, cluster, "pg1"), within=30, what="pg1 stopping")
        for _ in range(5):
            assert (await uploads.send()).status_code == 201
            assert "pg1" not in await uploads.all_readable()
        assert (await view(client))["writer"] == "pg0"

        # Room again and `cluster up`: pg1 catches up from its slot and serves again.
        await asyncio.to_thread(disk.free)
        await asyncio.to_thread(cluster_up, cluster.data_dir)
        await wait_until(lambda: replica_has(cluster, uploads), within=30, what="pg1 catching up")

        async def pg1_back() -> bool:
            return node_view(await view(client), "pg1")["in_rotation"] is True

        await wait_until(pg1_back, within=15, what="pg1 back in the rotation")


async def test_a_full_blob_directory_refuses_uploads_and_leaves_no_file_or_row(
    migrated: Cluster,
) -> None:
    """``REPLIKIT_BLOB_BACKEND=filesystem`` on a volume that fills: the file write fails
    with ENOSPC, which is STORAGE_FULL (before, an OSError marked the healthy primary down)."""
    root = reachable_temp_dir(f"{PREFIX}blobs-")
    async with in_thread(tmpfs(root, size_mb=4)) as disk:
        settings = service_settings(
            migrated, blob_backend="filesystem", blob_dir=root, storage_full_hold=HOLD
        )
        async with service_client(settings) as client:
            uploads = Uploads(client)
            assert (await uploads.send()).status_code == 201
            await fill(disk)
            marker = f"refused-{uuid.uuid4().hex}"
            refused = await uploads.send(filename=f"{marker}.png")
            assert_refused(refused, "STORAGE_FULL")
            assert refused.json()["error"]["details"]["where"] == "blob_directory"
            held = await uploads.send(filename=f"{marker}.png")  # within the hold: not even read
            assert_refused(held, "STORAGE_FULL")
            assert (await view(client))["writer"] == "pg0"
            await uploads.all_readable()
            # No row, no file, no temporary file of the refused uploads.
            connection = await connect(migrated, migrated.state.primary_node, owner=True)
            try:
                rows = await connection.fetchval(
                    "SELECT count(*) FROM images WHERE filename LIKE $1", f"{marker}%"
                )
            finally:
                await connection.close()
            assert rows == 0
            files = {path.name for path in blob_files(root)}
            assert files == {FILLER, *uploads.acknowledged.values()}

            await asyncio.to_thread(disk.free)
            await asyncio.sleep(HOLD)
            assert (await uploads.send()).status_code == 201
            await uploads.all_readable()


async def test_under_patroni_a_leader_that_cannot_write_wal_is_replaced_and_rejoins_by_itself() -> (
    None
):
    """Under Patroni the PANIC of the second row ends with no command: the agent fails to
    restart its PostgreSQL on the full disk, gives the leader key up (``primary_start_timeout``),
    a replica is promoted and the service writes there; once space is freed the old leader
    follows the new one by itself."""
    async with running_cluster_async(
        replicas=1, name="patroni-full", prefix=PREFIX, manager=Manager.PATRONI
    ) as cluster:
        await asyncio.to_thread(
            migrate.upgrade, cluster.state.owner_url(cluster.state.primary_node)
        )
        async with in_thread(small_disk(cluster, "pg1")) as disk:
            await asyncio.to_thread(switchover, cluster.data_dir, to="pg1")
            settings = service_settings(cluster, replicas=True, storage_full_hold=HOLD)
            async with service_client(settings) as client:
                uploads = Uploads(client)

                async def writer_is(name: str) -> bool:
                    return bool((await view(client))["writer"] == name)

                await wait_until(functools.partial(writer_is, "pg1"), within=15, what="pg1 leads")
                for _ in range(3):
                    assert (await uploads.send()).status_code == 201
                await make_wal_pusher(cluster, node="pg1")
                await fill(disk)
                with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                    await push_wal(cluster, segments=5, node="pg1")
                log = (cluster.data_dir / "logs" / "patroni-pg1.log").read_text(errors="replace")
                assert "PANIC:  could not write to file" in log

                refusals: list[httpx.Response] = []

                async def acknowledged_again() -> bool:
                    response = await uploads.send()
                    if response.status_code != 201:
                        refusals.append(response)
                    return response.status_code == 201

                took = await wait_until(acknowledged_again, within=40, what="writes resuming")
                codes = {r.json()["error"]["code"] for r in refusals}
                assert codes <= {"PRIMARY_UNAVAILABLE", "STORAGE_FULL"}, [r.text for r in refusals]
                assert await writer_is("pg0"), f"writes resumed after {took:.1f} s, not on pg0"
                assert await uploads.all_readable() == {"pg0"}

                await asyncio.to_thread(disk.free)

                async def pg1_back() -> bool:
                    return bool(node_view(await view(client), "pg1")["in_rotation"])

                await wait_until(pg1_back, within=90, what="pg1 following pg0 by itself")
                await wait_until(
                    functools.partial(replica_has, cluster, uploads, "pg1"),
                    within=30,
                    what="pg1 replaying every acknowledged upload",
                )
                images, blobs = await uploads.stored_on(cluster, "pg0")
                assert images == blobs == set(uploads.acknowledged)
