"""Migrations run down to base and up to head again on a scratch database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from replication.cluster import Cluster
from service import migrate
from tests.integration.clusters import replikit
from tests.integration.conftest import connect

TABLES = {"images", "image_blobs", "upload_rate_limits"}


@pytest.fixture
async def scratch_database(cluster: Cluster) -> AsyncIterator[str]:
    name = f"migration_{uuid.uuid4().hex[:8]}"
    admin = await connect(cluster, cluster.state.primary_node, superuser=True)
    try:
        owner = cluster.state.owner_user
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        # As init-primary.sh does for the real database: the owner's schema, PUBLIC kept out.
        scratch = await asyncpg.connect(
            host=cluster.state.host,
            port=cluster.state.primary_node.port,
            user=cluster.state.superuser,
            password=cluster.state.passwords.superuser,
            database=name,
            timeout=5,
        )
        try:
            await scratch.execute(
                f'ALTER SCHEMA public OWNER TO "{owner}"; REVOKE ALL ON SCHEMA public FROM PUBLIC'
            )
        finally:
            await scratch.close()
        yield cluster.state.owner_url(cluster.state.primary_node).rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def tables(cluster: Cluster, url: str) -> set[str]:
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
    assert await blob_storage(scratch_database) == "e"  # EXTERNAL: no compression attempt
    await asyncio.to_thread(migrate.downgrade, scratch_database, "0002")
    assert await blob_storage(scratch_database) == "x"  # EXTENDED, PostgreSQL's default
    await asyncio.to_thread(migrate.upgrade, scratch_database, "head")


async def blob_storage(url: str) -> str:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        storage: str = await connection.fetchval(
            "SELECT attstorage::text FROM pg_attribute "
            "WHERE attrelid = 'image_blobs'::regclass AND attname = 'data'"
        )
    finally:
        await connection.close()
    return storage


def test_migrate_finds_the_primary_among_the_configured_urls(cluster: Cluster) -> None:
    """Roles move on failover: the URL named primary may be a replica now."""
    state = cluster.state
    replica_urls = [state.app_url(node) for node in state.nodes if node.name != state.primary]
    primary_url = state.app_url(state.primary_node)
    owner, owner_password = state.migration_credentials
    swapped = {
        "REPLIKIT_PRIMARY_URL": replica_urls[0],
        "REPLIKIT_REPLICA_URLS": ",".join([primary_url, *replica_urls[1:]]),
        "REPLIKIT_MIGRATION_USER": owner,
        "REPLIKIT_MIGRATION_PASSWORD": owner_password,
    }
    result = replikit("migrate", env=swapped)
    assert result.returncode == 0, result.stderr
    assert f"upgraded to head (as {owner})" in result.stdout

    only_replicas = {
        "REPLIKIT_PRIMARY_URL": replica_urls[0],
        "REPLIKIT_REPLICA_URLS": ",".join(replica_urls[1:]),
    }
    refused = replikit("migrate", "--wait-for-primary", "1", env=only_replicas)
    assert refused.returncode != 0
    assert "No single node answered as the primary" in refused.stderr


async def rate_limit_columns(url: str) -> list[str]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        rows = await connection.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'upload_rate_limits' ORDER BY ordinal_position"
        )
    finally:
        await connection.close()
    return [row["column_name"] for row in rows]


async def test_the_sliding_rate_limit_migration_goes_down_to_fixed_windows_and_back(
    scratch_database: str,
) -> None:
    await asyncio.to_thread(migrate.upgrade, scratch_database)
    assert await rate_limit_columns(scratch_database) == ["client_ip", "stamps"]
    await asyncio.to_thread(migrate.downgrade, scratch_database, "0001")
    assert await rate_limit_columns(scratch_database) == ["client_ip", "window_start", "count"]
    await asyncio.to_thread(migrate.upgrade, scratch_database, "head")
    assert await rate_limit_columns(scratch_database) == ["client_ip", "stamps"]
