"""Superuser SQL on one node, for the cluster tools (status, failover, lag).

Each call opens its own short connection: the tools run rarely, and a fresh connection never
carries state from a node's previous life (a demoted primary, a restarted replica). On a
cluster with TLS every connection checks the node's certificate against the cluster's CA, as
``sslmode=verify-full`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from replication.tls.provision import client_context
from replication.topology import ClusterState, NodeSpec

CONNECT_TIMEOUT_SECONDS = 2.0
T = TypeVar("T")


async def admin_connect(state: ClusterState, node: NodeSpec) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=state.host,
        port=node.port,
        user=state.superuser,
        password=state.passwords.superuser,
        database="postgres",
        ssl=client_context(state),
        timeout=CONNECT_TIMEOUT_SECONDS,
        server_settings={"application_name": "replikit-admin"},
    )


async def app_connect(
    state: ClusterState, node: NodeSpec, connect_timeout: float = CONNECT_TIMEOUT_SECONDS
) -> asyncpg.Connection:
    """A connection as the app role to its database, as the service would open it."""
    return await asyncpg.connect(
        host=state.host,
        port=node.port,
        user=state.app_user,
        password=state.passwords.app,
        database=state.database,
        ssl=client_context(state),
        timeout=connect_timeout,
    )


async def owner_connect(
    state: ClusterState, node: NodeSpec, connect_timeout: float = CONNECT_TIMEOUT_SECONDS
) -> asyncpg.Connection:
    """A connection as the schema's owner (the migrations' role): the one that may create
    tables; the app role may only read and write rows."""
    user, password = state.migration_credentials
    return await asyncpg.connect(
        host=state.host,
        port=node.port,
        user=user,
        password=password,
        database=state.database,
        ssl=client_context(state),
        timeout=connect_timeout,
    )


async def with_admin(
    state: ClusterState, node: NodeSpec, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    connection = await admin_connect(state, node)
    try:
        return await work(connection)
    finally:
        await connection.close()


def fetchval(state: ClusterState, node: NodeSpec, query: str, *args: Any) -> Any:
    """One value from one query, run synchronously (the CLI's tools are synchronous)."""

    async def work(connection: asyncpg.Connection) -> Any:
        return await connection.fetchval(query, *args)

    return asyncio.run(with_admin(state, node, work))


def execute(state: ClusterState, node: NodeSpec, *statements: str) -> None:
    """Run statements in order on one connection (ALTER SYSTEM cannot run in a transaction,
    so each is sent on its own)."""

    async def work(connection: asyncpg.Connection) -> None:
        for statement in statements:
            await connection.execute(statement)

    asyncio.run(with_admin(state, node, work))


def quote_literal(value: str) -> str:
    """A SQL string literal (for ALTER SYSTEM, which takes no bind parameters)."""
    return "'" + value.replace("'", "''") + "'"


ENSURE_SLOT = (
    "SELECT pg_create_physical_replication_slot($1, true) "
    "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)"
)


def ensure_slots(state: ClusterState, node: NodeSpec, slot_names: list[str]) -> None:
    """Physical slots on ``node`` for each name, reserving WAL from now; existing ones stay."""

    async def work(connection: asyncpg.Connection) -> None:
        for name in slot_names:
            await connection.execute(ENSURE_SLOT, name)

    asyncio.run(with_admin(state, node, work))


DROP_SLOT_TIMEOUT_SECONDS = 10.0


def drop_slot(state: ClusterState, node: NodeSpec, slot_name: str) -> None:
    """Drop a physical slot on ``node`` if it exists; a walsender still holding it (a replica
    that was just stopped, or one retrying a stream it can no longer get) is ended first."""

    async def work(connection: asyncpg.Connection) -> None:
        deadline = asyncio.get_running_loop().time() + DROP_SLOT_TIMEOUT_SECONDS
        while True:
            await connection.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = $1 AND active_pid IS NOT NULL",
                slot_name,
            )
            try:
                await connection.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = $1",
                    slot_name,
                )
                return
            except asyncpg.ObjectInUseError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    asyncio.run(with_admin(state, node, work))
