"""The service's role reads and writes rows and nothing more; the owner role migrates.

A compromised instance (or an injected statement) runs as ``app``: it must not be able to
create objects to persist in (tables, schemas, functions, temporary ones included), change or
drop the service's tables, or reach the other databases of the cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from replication.cluster import Cluster
from tests.integration.clusters import replikit
from tests.integration.conftest import connect

SERVICE_TABLES = ("images", "image_blobs", "upload_rate_limits")


@pytest.fixture
async def app(migrated: Cluster) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(migrated, migrated.state.primary_node)
    try:
        assert await connection.fetchval("SELECT current_user") == migrated.state.app_user
        yield connection
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE public.planted (x int)",
        "CREATE TABLE planted (x int)",
        "CREATE TEMPORARY TABLE planted (x int)",
        "CREATE SCHEMA planted",
        "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE FUNCTION pg_temp.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE VIEW planted AS SELECT 1 AS x",
        "CREATE SEQUENCE planted",
        "CREATE TYPE planted AS (x int)",
    ],
)
async def test_app_role_cannot_create_objects(app: asyncpg.Connection, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app.execute(statement)


@pytest.mark.parametrize("table", SERVICE_TABLES)
@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE {table} ADD COLUMN planted int",
        "DROP TABLE {table}",
        "TRUNCATE {table}",
        "CREATE INDEX planted ON {table} ((1))",
        "CREATE TRIGGER planted BEFORE UPDATE ON {table} FOR EACH ROW"
        " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ],
)
async def test_app_role_cannot_change_or_drop_the_service_tables(
    app: asyncpg.Connection, table: str, statement: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app.execute(statement.format(table=table))


@pytest.mark.parametrize("database", ["postgres", "template1"])
async def test_app_role_cannot_connect_to_other_databases(migrated: Cluster, database: str) -> None:
    state = migrated.state
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await asyncpg.connect(
            host=state.host,
            port=state.primary_node.port,
            user=state.app_user,
            password=state.passwords.app,
            database=database,
            timeout=5,
        )


async def test_app_role_reads_and_writes_rows_of_every_service_table(
    app: asyncpg.Connection,
) -> None:
    for table in SERVICE_TABLES:
        granted = await app.fetchval(
            "SELECT array_agg(p ORDER BY p) FILTER (WHERE has_table_privilege($1, p)) "
            "FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', "
            "'REFERENCES', 'TRIGGER']) AS p",
            f"public.{table}",
        )
        assert granted == ["DELETE", "INSERT", "SELECT", "UPDATE"], table
    image_id = uuid.uuid4()
    transaction = app.transaction()
    await transaction.start()
    try:
        await app.execute(
            "INSERT INTO images (id, filename, content_type, file_size, width, height, sha256,"
            " delete_token_hash) VALUES ($1, 'a.png', 'image/png', 3, 1, 1, $2, $2)",
            image_id,
            "0" * 64,
        )
        await app.execute(
            "INSERT INTO image_blobs (image_id, data) VALUES ($1, '\\x010203')", image_id
        )
        await app.execute("UPDATE images SET filename = 'b.png' WHERE id = $1", image_id)
        assert await app.fetchval("SELECT filename FROM images WHERE id = $1", image_id) == "b.png"
        assert (
            await app.fetchval("SELECT length(data) FROM image_blobs WHERE image_id = $1", image_id)
            == 3
        )
        assert await app.execute("DELETE FROM images WHERE id = $1", image_id) == "DELETE 1"
        assert (
            await app.fetchval("SELECT count(*) FROM image_blobs WHERE image_id = $1", image_id)
            == 0
        )
    finally:
        await transaction.rollback()


async def test_tables_of_a_later_migration_are_readable_and_writable_by_the_app(
    migrated: Cluster, app: asyncpg.Connection
) -> None:
    """ALTER DEFAULT PRIVILEGES covers what the owner creates after init: no per-migration GRANT."""
    owner = await connect(migrated, migrated.state.primary_node, owner=True)
    try:
        await owner.execute("DROP TABLE IF EXISTS later_probe")
        await owner.execute("CREATE TABLE later_probe (id bigserial PRIMARY KEY, note text)")
        try:
            await app.execute("INSERT INTO later_probe (note) VALUES ('hello')")
            await app.execute("UPDATE later_probe SET note = 'again'")
            assert await app.fetchval("SELECT note FROM later_probe") == "again"
            assert await app.execute("DELETE FROM later_probe") == "DELETE 1"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute("DROP TABLE later_probe")
        finally:
            await owner.execute("DROP TABLE later_probe")
    finally:
        await owner.close()


async def test_monitoring_roles_and_the_superuser_still_reach_postgres(migrated: Cluster) -> None:
    """CONNECT on postgres was taken from PUBLIC; pg_monitor members (the exporters) keep it."""
    state = migrated.state
    role = f"monitor_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    admin = await connect(migrated, state.primary_node, superuser=True)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor PASSWORD '{password}'")
        monitor = await asyncpg.connect(
            host=state.host,
            port=state.primary_node.port,
            user=role,
            password=password,
            database="postgres",
            timeout=5,
        )
        try:
            assert await monitor.fetchval("SELECT count(*) FROM pg_stat_replication") >= 1
        finally:
            await monitor.close()
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(
                host=state.host,
                port=state.primary_node.port,
                user=role,
                password=password,
                database=state.database,
                timeout=5,
            )
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def test_replikit_migrate_runs_as_the_owner_and_serve_settings_carry_only_the_app(
    migrated: Cluster,
) -> None:
    result = replikit("migrate", "--data-dir", str(migrated.data_dir))
    assert result.returncode == 0, result.stderr
    assert f"upgraded to head (as {migrated.state.owner_user})" in result.stdout
    env = replikit("cluster", "env", "--data-dir", str(migrated.data_dir)).stdout
    assert f"export REPLIKIT_MIGRATION_USER={migrated.state.owner_user}" in env
    assert f"//{migrated.state.app_user}:" in env
    assert f"//{migrated.state.owner_user}:" not in env


def test_migrate_with_a_wrong_owner_password_says_so_at_once(migrated: Cluster) -> None:
    """Not 'no primary answered' after waiting: the credentials are what is wrong."""
    state = migrated.state
    env = {
        "REPLIKIT_PRIMARY_URL": state.app_url(state.primary_node),
        "REPLIKIT_MIGRATION_USER": state.owner_user,
        "REPLIKIT_MIGRATION_PASSWORD": "not-the-password",
    }
    started = time.monotonic()
    refused = replikit("migrate", "--wait-for-primary", "30", env=env)
    assert time.monotonic() - started < 15  # did not wait out the 30 s
    assert refused.returncode != 0
    assert f"refused the role {state.owner_user}" in refused.stderr
    assert "REPLIKIT_MIGRATION_PASSWORD" in refused.stderr
