"""Timeline-stamped writes straight to the primary: the database's own view of the failover.

Every 50 ms a row goes into ``experiment_heartbeat`` stamped with the writer's timeline and
``clock_timestamp()``. After the failover, the gap between the last row of the old timeline
and the first of the new one is the write-unavailability window as the database saw it (the
method CloudNativePG uses), free of any client or HTTP effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

from replication.admin import app_connect
from replication.topology import require_state

TIMELINE_SQL = "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"


class Heartbeat:
    def __init__(self, data_dir: Path, interval: float = 0.05) -> None:
        self.data_dir = data_dir
        self.interval = interval
        self.acknowledged = 0
        self.acked_at: list[float] = []  # Unix time each acknowledged write returned
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="heartbeat", daemon=True
        )

    async def _connect(self) -> asyncpg.Connection:
        """A connection to the node out of recovery: the recorded primary first (re-read: a
        manual failover records the new one), then the others, since under Patroni the
        state file learns the new leader only when a command asks."""
        state = require_state(self.data_dir)
        primary = state.primary_node
        for node in [primary, *(n for n in state.nodes if n is not primary)]:
            try:
                connection = await app_connect(state, node, connect_timeout=1)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                continue
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                if not await connection.fetchval("SELECT pg_is_in_recovery()", timeout=1):
                    return connection
            connection.terminate()
        raise ConnectionRefusedError("no node is out of recovery")

    async def _run(self) -> None:
        connection: asyncpg.Connection | None = None
        while not self._stop.is_set():
            try:
                if connection is None or connection.is_closed():
                    connection = await self._connect()
                await connection.execute(
                    f"INSERT INTO experiment_heartbeat (timeline) SELECT {TIMELINE_SQL}", timeout=2
                )
                self.acknowledged += 1
                self.acked_at.append(time.time())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if connection is not None:
                    connection.terminate()
                connection = None
            await asyncio.sleep(self.interval)
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


async def prepare(connection: asyncpg.Connection) -> None:
    """Create (and empty) the heartbeat table; needs the owner's connection, since the app
    role the heartbeat writes as may not create or truncate tables."""
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS experiment_heartbeat ("
        " id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(),"
        " timeline int NOT NULL)"
    )
    await connection.execute("TRUNCATE experiment_heartbeat")


async def database_window(connection: asyncpg.Connection) -> dict[str, Any]:
    """Last heartbeat on each timeline but the newest, first on the newest: the gap."""
    rows = await connection.fetch(
        "SELECT timeline, min(at) AS first, max(at) AS last, count(*) AS rows "
        "FROM experiment_heartbeat GROUP BY timeline ORDER BY timeline"
    )
    if len(rows) < 2:
        return {
            "seconds": None,
            "timelines": [
                dict(r) | {"first": str(r["first"]), "last": str(r["last"])} for r in rows
            ],
        }
    old, new = rows[-2], rows[-1]
    return {
        "seconds": round((new["first"] - old["last"]).total_seconds(), 3),
        "old_timeline": old["timeline"],
        "new_timeline": new["timeline"],
        "last_on_old": old["last"].isoformat(),
        "first_on_new": new["first"].isoformat(),
        "rows": {str(r["timeline"]): r["rows"] for r in rows},
    }


async def database_gap(connection: asyncpg.Connection, fault_at: float) -> dict[str, Any]:
    """Last heartbeat row stamped before ``fault_at`` (Unix time) to the first after it: the
    window as the database saw it, whether or not the timeline changed (a PostgreSQL that
    its agent restarts in place keeps its timeline)."""
    row = await connection.fetchrow(
        "SELECT (SELECT max(at) FROM experiment_heartbeat WHERE at <= to_timestamp($1)) AS last,"
        " (SELECT min(at) FROM experiment_heartbeat WHERE at > to_timestamp($1)) AS first",
        fault_at,
    )
    last, first = (row["last"], row["first"]) if row is not None else (None, None)
    return {
        "seconds": round((first - last).total_seconds(), 3) if last and first else None,
        "last_before": last.isoformat() if last else None,
        "first_after": first.isoformat() if first else None,
    }
