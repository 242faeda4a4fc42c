"""One shared 1+2 cluster for every test that does not break it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import pytest

from replication.cluster import Cluster
from replication.topology import NodeSpec
from tests.integration.clusters import running_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with running_cluster(replicas=2, name="shared") as shared:
        yield shared


async def connect(
    cluster: Cluster, node: NodeSpec, *, superuser: bool = False, owner: bool = False
) -> asyncpg.Connection:
    """The app role on its database by default; the superuser on ``postgres``, or the schema's
    owner (the one role that may create the tables a test needs) on the app's database."""
    state = cluster.state
    if superuser:
        user, password, database = state.superuser, state.passwords.superuser, "postgres"
    elif owner:
        user, password = state.migration_credentials
        database = state.database
    else:
        user, password, database = state.app_user, state.passwords.app, state.database
    return await asyncpg.connect(
        host=state.host, port=node.port, user=user, password=password, database=database, timeout=5
    )


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: str
) -> float:
    """Poll ``condition`` until true; return the seconds it took, fail after ``within`` seconds."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > within:
            pytest.fail(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def insert_marker(cluster: Cluster) -> str:
    """A fresh row in the test table ``replication_markers`` (made by the schema's owner when
    missing), written on the primary."""
    marker = str(uuid.uuid4())
    owner = await connect(cluster, cluster.state.primary_node, owner=True)
    try:
        await owner.execute("CREATE TABLE IF NOT EXISTS replication_markers (marker text)")
        await owner.execute("INSERT INTO replication_markers VALUES ($1)", marker)
    finally:
        await owner.close()
    return marker


async def wait_for_marker(cluster: Cluster, node: NodeSpec, marker: str, *, within: float) -> None:
    """Wait until ``node`` has replayed the row :func:`insert_marker` wrote (a table that has
    not reached it yet counts as not there)."""

    async def replayed() -> bool:
        connection = await connect(cluster, node)
        try:
            found = await connection.fetchval(
                "SELECT count(*) FROM replication_markers WHERE marker = $1", marker
            )
        except asyncpg.UndefinedTableError:
            return False
        finally:
            await connection.close()
        return bool(found)

    await wait_until(replayed, within=within, what=f"{node.name} replaying the marker row")
