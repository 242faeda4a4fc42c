"""Migrations run down to base and up to head again on a scratch database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from replication.cluster import Cluster
from service import migrate
from tests.integration.conftest import connect

TABLES = {"images", "image_blobs", "upload_rate_limits"}


@pytest.fixture
async def scratch_database(cluster: Cluster) -> AsyncIterator[str]:
    name = f"migration_{uuid.uuid4().hex[:8]}"
    admin = await connect(cluster, cluster.state.primary_node, superuser=True)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" OWNER app')
        yield cluster.state.app_url(cluster.state.primary_node).rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def tables(cluster: Cluster, url: str) -> set[str]:
    import asyncpg

    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_downgrade_to_base_then_upgrade_to_head(
    cluster: Cluster, scratch_database: str
) -> None:
    await asyncio.to_thread(migrate.upgrade, scratch_database)
    assert await tables(cluster, scratch_database) >= TABLES
    await asyncio.to_thread(migrate.downgrade, scratch_database, "base")
    assert await tables(cluster, scratch_database) == {"alembic_version"}
    await asyncio.to_thread(migrate.upgrade, scratch_database, "head")
    assert await tables(cluster, scratch_database) >= TABLES
