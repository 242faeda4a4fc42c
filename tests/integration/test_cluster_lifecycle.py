"""Tests that stop nodes, each on a cluster of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest

from replication.cluster import cluster_down, cluster_up
from replication.drivers.local.driver import LocalDriver
from replication.drivers.local.processes import is_zombie
from replication.probe import cluster_status
from replication.topology import SyncMode
from tests.integration.clusters import replikit, running_cluster_async
from tests.integration.conftest import connect, wait_until

pytestmark = pytest.mark.destructive


async def test_down_then_up_keeps_data_and_streams_again() -> None:
    async with running_cluster_async(replicas=1, name="restart") as cluster:
        marker = str(uuid.uuid4())
        primary = await connect(cluster, cluster.state.primary_node, owner=True)
        await primary.execute("CREATE TABLE kept (marker text)")
        await primary.execute("INSERT INTO kept VALUES ($1)", marker)
        await primary.close()

        down = await asyncio.to_thread(
            replikit, "cluster", "down", "--data-dir", str(cluster.data_dir)
        )
        assert down.returncode == 0, down.stderr
        assert not any(cluster.driver.is_running(node) for node in cluster.state.nodes)
        rows = await cluster_status(cluster.state)
        assert [row.role for row in rows] == ["down", "down"]

        await asyncio.to_thread(cluster_up, cluster.data_dir)
        for node in cluster.state.nodes:
            connection = await connect(cluster, node)
            try:
                assert await connection.fetchval("SELECT marker FROM kept") == marker
            finally:
                await connection.close()
        rows = await cluster_status(cluster.state)
        assert [(row.role, row.state) for row in rows] == [
            ("primary", "writable"),
            ("replica", "streaming"),
        ]


async def test_up_right_after_every_postmaster_is_killed_starts_them_all() -> None:
    """SIGKILLed postmasters linger as zombies until init reaps them (seconds, here), and a
    zombie still answers ``kill -0``: ``cluster up`` must see them as stopped and start them,
    not wait for replicas that will never stream."""
    async with running_cluster_async(replicas=2, name="crash-up") as cluster:
        driver = cluster.driver
        assert isinstance(driver, LocalDriver)
        pids = [
            int((driver.pgdata(node) / "postmaster.pid").read_text().split()[0])
            for node in cluster.state.nodes
        ]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

        async def all_dead() -> bool:
            return all(is_zombie(pid) for pid in pids)

        await wait_until(all_dead, within=5, what="every killed postmaster exiting")
        # At once, in-process: the zombies are still there (init reaps them seconds later).
        await asyncio.to_thread(cluster_up, cluster.data_dir)
        rows = await cluster_status(cluster.state)
        assert [(row.role, row.state) for row in rows] == [
            ("primary", "writable"),
            ("replica", "streaming"),
            ("replica", "streaming"),
        ]


async def test_down_purge_deletes_the_data_dir() -> None:
    async with running_cluster_async(replicas=0, name="purge") as cluster:
        await asyncio.to_thread(cluster_down, cluster.data_dir, purge=True)
        assert not cluster.data_dir.exists()


async def test_sync_on_blocks_commits_while_no_sync_replica_is_up() -> None:
    async with running_cluster_async(replicas=2, sync=SyncMode.ON, name="sync") as cluster:
        rows = await cluster_status(cluster.state)
        sync_states = {row.name: row.sync_state for row in rows if row.role == "replica"}
        assert sync_states == {"pg1": "sync", "pg2": "potential"}

        pg1, pg2 = cluster.state.replicas
        primary = await connect(cluster, cluster.state.primary_node, owner=True)
        try:
            await primary.execute("CREATE TABLE sync_probe (n int)")
            # With the sync replica gone, FIRST 1 falls back to the potential one.
            await asyncio.to_thread(cluster.driver.stop, pg1)

            async def pg2_is_sync() -> bool:
                rows = await cluster_status(cluster.state)
                return any(r.name == "pg2" and r.sync_state == "sync" for r in rows)

            await wait_until(pg2_is_sync, within=10, what="pg2 becoming the sync replica")
            await asyncio.wait_for(primary.execute("INSERT INTO sync_probe VALUES (1)"), 5)

            # With no standby left, a commit waits.
            await asyncio.to_thread(cluster.driver.stop, pg2)
            commit = asyncio.ensure_future(primary.execute("INSERT INTO sync_probe VALUES (2)"))
            done, _ = await asyncio.wait({commit}, timeout=2)
            assert not done, "a commit returned with no synchronous replica connected"

            await asyncio.to_thread(cluster.driver.start, pg1)
            await asyncio.wait_for(commit, 30)
        finally:
            await primary.close()
        replica = await connect(cluster, pg1)
        try:
            assert await replica.fetchval("SELECT count(*) FROM sync_probe") == 2
        finally:
            await replica.close()


async def test_sync_quorum_marks_every_replica_quorum() -> None:
    async with running_cluster_async(replicas=2, sync=SyncMode.QUORUM, name="quorum") as cluster:
        # Right after a standby starts streaming, the primary may list it as async for a
        # moment before it counts in the quorum (a fresh-clone CI run caught that instant).
        async def both_in_quorum() -> bool:
            rows = await cluster_status(cluster.state)
            return [row.sync_state for row in rows] == [None, "quorum", "quorum"]

        await wait_until(both_in_quorum, within=10, what="both replicas counted in the quorum")
