"""Bounded WAL retention: a stopped replica's slot may hold back at most
``max_slot_wal_keep_size`` of WAL on the primary; past that PostgreSQL invalidates the slot,
the primary keeps running, and ``rejoin`` re-clones the replica."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
import yaml

from replication.cluster import Cluster
from replication.probe import cluster_status
from replication.topology import Manager
from tests.integration.clusters import WalSizes, replikit, running_cluster_async
from tests.integration.conftest import connect, insert_marker, wait_for_marker

# 10-35 s on a shared 2-core machine: a cluster, five CLI calls and a base backup.
pytestmark = [pytest.mark.destructive, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SLOT_LIMIT = "32MB"
SLOT_QUERY = "SELECT wal_status, safe_wal_size FROM pg_replication_slots WHERE slot_name = $1"


async def _write_past_the_limit(primary: asyncpg.Connection, slot: str) -> list[str]:
    """Insert a row, switch to a new WAL segment and checkpoint (where PostgreSQL removes old
    WAL and invalidates slots), eight times: 128 MB of WAL at the default segment size, four
    times the limit. Returns the slot's wal_status after each checkpoint."""
    statuses: list[str] = []
    await primary.execute("CREATE TABLE IF NOT EXISTS filler (payload text)")
    for _ in range(8):
        await primary.execute("INSERT INTO filler VALUES (repeat('x', 1000))")
        await primary.execute("SELECT pg_switch_wal()")
        await primary.execute("CHECKPOINT")
        row = await primary.fetchrow(SLOT_QUERY, slot)
        statuses.append(row["wal_status"] if row else "dropped")
    return statuses


async def _exporter_slot_rows(cluster: Cluster) -> dict[str, asyncpg.Record]:
    """The rows the monitoring profile's exporters turn into pg_slot_retention_* metrics."""
    queries = yaml.safe_load((ROOT / "deploy/postgres-exporter/queries.yaml").read_text())
    primary = await connect(cluster, cluster.state.primary_node, superuser=True)
    try:
        rows = await primary.fetch(queries["pg_slot_retention"]["query"])
    finally:
        await primary.close()
    return {row["slot_name"]: row for row in rows}


async def _status_json(cluster: Cluster) -> dict[str, dict[str, object]]:
    status = await asyncio.to_thread(
        replikit, "cluster", "status", "--json", "--data-dir", str(cluster.data_dir)
    )
    assert status.returncode == 0, status.stderr
    return {row["name"]: row for row in json.loads(status.stdout)["nodes"]}


async def test_replica_past_the_slot_limit_is_invalidated_and_rejoin_reclones_it() -> None:
    sizes = WalSizes(wal_keep_size="16MB", max_slot_wal_keep_size=SLOT_LIMIT)
    async with running_cluster_async(replicas=1, name="retention", wal_sizes=sizes) as cluster:
        state = cluster.state
        pg0, pg1 = state.node("pg0"), state.node("pg1")
        d = ("--data-dir", str(cluster.data_dir))

        # Every node runs with the limit (the replica got it with its base backup).
        for node in (pg0, pg1):
            connection = await connect(cluster, node, superuser=True)
            try:
                assert await connection.fetchval("SHOW max_slot_wal_keep_size") == SLOT_LIMIT
            finally:
                await connection.close()
        before = await _status_json(cluster)
        assert before["pg1"]["slot"] == "pg1"
        assert before["pg1"]["slot_wal_status"] == "reserved"
        # PostgreSQL counts the limit from the end of the slot's oldest segment (16 MB).
        assert 0 < int(str(before["pg1"]["slot_safe_wal_size"])) <= (32 + 16) * 1024 * 1024

        streaming = (await _exporter_slot_rows(cluster))["pg1"]
        assert (streaming["lost"], streaming["active"]) == (0, 1)
        assert 0 <= streaming["retained_bytes"] < 32 * 1024 * 1024

        # The replica stops; the primary writes far past what its slot may hold back.
        await asyncio.to_thread(cluster.driver.stop, pg1)
        primary = await connect(cluster, pg0, superuser=True)
        try:
            statuses = await _write_past_the_limit(primary, "pg1")
            assert statuses[-1] == "lost", statuses
            assert await primary.fetchrow(SLOT_QUERY, "pg1") == ("lost", None)
        finally:
            await primary.close()
        # The primary stays up and writable: the slot gave way, not the primary's disk.
        marker = await insert_marker(cluster)

        lost = await _status_json(cluster)
        assert (lost["pg0"]["role"], lost["pg0"]["state"]) == ("primary", "writable")
        assert lost["pg1"]["state"] == "stopped"
        assert (lost["pg1"]["slot"], lost["pg1"]["slot_wal_status"]) == ("pg1", "lost")
        assert lost["pg1"]["slot_safe_wal_size"] is None
        metrics = (await _exporter_slot_rows(cluster))["pg1"]
        assert (metrics["lost"], metrics["active"], metrics["retained_bytes"]) == (1, 0, 0)
        assert metrics["safe_wal_size_bytes"] is None
        table = await asyncio.to_thread(replikit, "cluster", "status", *d)
        assert table.returncode == 0, table.stderr
        assert "lost" in table.stdout
        assert "replikit cluster rejoin pg1" in " ".join(table.stdout.split())

        # Started again as it is, the replica could never stream: `up` says so at once.
        up = await asyncio.to_thread(replikit, "cluster", "up", *d)
        assert up.returncode != 0
        assert up.stderr.startswith("error: The primary invalidated the slot of pg1"), up.stderr
        assert "replikit cluster rejoin pg1" in up.stderr, up.stderr

        rejoin = await asyncio.to_thread(replikit, "cluster", "rejoin", "pg1", *d)
        assert rejoin.returncode == 0, rejoin.stderr
        message = " ".join(rejoin.stdout.split())
        assert "re-cloned with a base backup" in message, message
        assert "invalidated (wal_status lost)" in message, message
        assert f"max_slot_wal_keep_size ({SLOT_LIMIT})" in message, message

        rows = await cluster_status(state)
        assert [(row.name, row.role, row.state) for row in rows] == [
            ("pg0", "primary", "writable"),
            ("pg1", "replica", "streaming"),
        ]
        assert rows[1].slot_wal_status == "reserved"

        await wait_for_marker(cluster, pg1, marker, within=30)


async def test_under_patroni_a_member_whose_wal_is_gone_is_recloned_on_rejoin() -> None:
    """Patroni recreates a lost slot by itself (empty: the WAL is gone all the same), and the
    member's PostgreSQL then logs that the leader removed the segment it asks for; rejoin
    empties the member and its agent clones it afresh."""
    sizes = WalSizes(wal_keep_size="16MB", max_slot_wal_keep_size=SLOT_LIMIT)
    async with running_cluster_async(
        replicas=1, name="retention-patroni", manager=Manager.PATRONI, wal_sizes=sizes
    ) as cluster:
        d = ("--data-dir", str(cluster.data_dir))
        leader = cluster.state.primary_node
        member = next(node for node in cluster.state.nodes if node != leader)
        connection = await connect(cluster, member, superuser=True)
        try:
            # Patroni's cluster-wide parameters carry the limit to every member.
            assert await connection.fetchval("SHOW max_slot_wal_keep_size") == SLOT_LIMIT
        finally:
            await connection.close()

        kill = await asyncio.to_thread(
            replikit, "cluster", "kill", member.name, "--mode", "fast", *d
        )
        assert kill.returncode == 0, kill.stderr
        primary = await connect(cluster, leader, superuser=True)
        try:
            statuses = await _write_past_the_limit(primary, member.name)
        finally:
            await primary.close()
        assert "lost" in statuses, statuses
        marker = await insert_marker(cluster)

        rejoin = await asyncio.to_thread(replikit, "cluster", "rejoin", member.name, "--json", *d)
        assert rejoin.returncode == 0, rejoin.stderr
        result = json.loads(rejoin.stdout)
        assert result["method"] == "recloned", result
        assert "max_slot_wal_keep_size" in result["reclone_reason"], result
        assert [step["step"] for step in result["steps"]] == [
            "agent_started",
            "wal_gone",
            "agent_restarted_empty",
            "streaming",
        ]
        await wait_for_marker(cluster, member, marker, within=30)
