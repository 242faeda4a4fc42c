"""Discover each node's role, timeline, replication state and lag over SQL.

Nothing here trusts configuration for roles: a node is a primary because it answers
``pg_is_in_recovery() = false``. Lag is measured, per replica, as bytes the replica has not
replayed relative to the primary's current WAL position, and as seconds since the commit it
last replayed, which is reported as 0 once it has replayed everything (so an idle cluster
shows no lag instead of an ever-growing "time since the last commit").
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from replication.admin import CONNECT_TIMEOUT_SECONDS, admin_connect
from replication.durations import format_ms
from replication.poolers import PoolerStats
from replication.topology import ClusterState, NodeSpec
from service.routing.lsn import parse_lsn

NODE_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END
           AS current_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_xact_replay_timestamp() AS replay_timestamp,
       clock_timestamp() AS now,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS current_timeline,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
       (SELECT received_tli FROM pg_stat_wal_receiver) AS received_timeline,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause_state,
       current_setting('primary_slot_name') AS primary_slot_name,
       (SELECT setting::int FROM pg_settings WHERE name = 'recovery_min_apply_delay')
           AS apply_delay_ms
"""

REPLICATION_QUERY = """
SELECT r.application_name, r.state, r.sync_state, s.slot_name
FROM pg_stat_replication r
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
"""

# Each physical slot's retention: wal_status is reserved | extended | unreserved | lost (lost:
# PostgreSQL invalidated it because it fell more than max_slot_wal_keep_size behind);
# safe_wal_size is how much more WAL may be written before it is lost (NULL once lost, or
# with no limit); retained_bytes is the WAL it holds back now (NULL once lost).
SLOTS_QUERY = """
SELECT slot_name, active, wal_status, safe_wal_size,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
FROM pg_replication_slots WHERE slot_type = 'physical'
"""


@dataclass(frozen=True)
class SlotReading:
    """One physical replication slot on the primary, from ``pg_replication_slots``."""

    active: bool
    wal_status: str | None
    safe_wal_size: int | None
    retained_bytes: int | None

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost"


@dataclass
class NodeReading:
    """What one node says about itself (None when it could not be reached)."""

    in_recovery: bool
    current_lsn: int | None
    replay_lsn: int | None
    replay_timestamp: datetime | None
    now: datetime
    timeline: int | None
    receiver_status: str | None
    pause_state: str | None
    primary_slot_name: str
    receive_lsn: int | None = None
    apply_delay_ms: int = 0
    replication: dict[str, dict[str, Any]] = field(default_factory=dict)
    slots: dict[str, SlotReading] = field(default_factory=dict)


@dataclass
class NodeStatus:
    """One row of ``cluster status``; ``to_json`` gives the documented keys."""

    name: str
    port: int
    role: str
    timeline: int | None = None
    state: str | None = None
    sync_state: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    slot: str | None = None
    # The primary's view of this replica's slot (see SLOTS_QUERY).
    slot_wal_status: str | None = None
    slot_safe_wal_size: int | None = None
    slot_retained_bytes: int | None = None
    replay_paused: bool | None = None
    apply_delay: str | None = None
    fenced: bool = False
    error: str | None = None
    # Patroni's view (patroni manager only): the member's role and state in etcd.
    patroni_role: str | None = None
    patroni_state: str | None = None
    # The pooler in front of the node (compose stacks): clients in a transaction / waiting
    # for a server connection, and its server connections to the node.
    pooler_clients: int | None = None
    pooler_waiting: int | None = None
    pooler_servers: int | None = None
    # TLS clusters: when the node's server certificate expires (ISO 8601, UTC) and in how
    # many whole days (negative once expired).
    cert_expires: str | None = None
    cert_days_left: int | None = None

    def add_certificate(self, expires: datetime | None, now: datetime) -> None:
        if expires is not None:
            self.cert_expires = expires.isoformat()
            self.cert_days_left = (expires - now).days

    def add_pooler(self, stats: PoolerStats | None) -> None:
        if stats is not None:
            self.pooler_clients = stats.clients_active
            self.pooler_waiting = stats.clients_waiting
            self.pooler_servers = stats.servers_active + stats.servers_idle

    @property
    def slot_lost(self) -> bool:
        """PostgreSQL invalidated this node's slot: it must be re-cloned to stream again."""
        return self.slot_wal_status == "lost"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _lsn(value: str | None) -> int | None:
    return parse_lsn(value) if value else None


async def read_node(state: ClusterState, node: NodeSpec) -> NodeReading:
    connection = await admin_connect(state, node)
    try:
        row = await connection.fetchrow(NODE_QUERY)
        reading = NodeReading(
            in_recovery=row["in_recovery"],
            current_lsn=_lsn(row["current_lsn"]),
            replay_lsn=_lsn(row["replay_lsn"]),
            replay_timestamp=row["replay_timestamp"],
            now=row["now"],
            timeline=row["current_timeline"]
            or row["received_timeline"]
            or row["checkpoint_timeline"],
            receiver_status=row["receiver_status"],
            pause_state=row["pause_state"],
            primary_slot_name=row["primary_slot_name"],
            receive_lsn=_lsn(row["receive_lsn"]),
            apply_delay_ms=row["apply_delay_ms"] or 0,
        )
        if not reading.in_recovery:
            for rep in await connection.fetch(REPLICATION_QUERY):
                # A base backup's own WAL stream carries the node's name too; the row that
                # holds a slot is the replica itself.
                name = rep["application_name"]
                if name not in reading.replication or rep["slot_name"] is not None:
                    reading.replication[name] = dict(rep)
            for slot in await connection.fetch(SLOTS_QUERY):
                reading.slots[slot["slot_name"]] = SlotReading(
                    active=slot["active"],
                    wal_status=slot["wal_status"],
                    safe_wal_size=slot["safe_wal_size"],
                    retained_bytes=slot["retained_bytes"],
                )
        return reading
    finally:
        await connection.close()


async def read_all(state: ClusterState) -> dict[str, NodeReading | BaseException]:
    results = await asyncio.gather(
        *(asyncio.wait_for(read_node(state, n), CONNECT_TIMEOUT_SECONDS * 2) for n in state.nodes),
        return_exceptions=True,
    )
    return {node.name: result for node, result in zip(state.nodes, results, strict=True)}


def choose_primary(readings: Mapping[str, NodeReading | BaseException]) -> str | None:
    """The reachable node out of recovery on the highest timeline, if any."""
    primaries = [
        (reading.timeline or 0, name)
        for name, reading in readings.items()
        if isinstance(reading, NodeReading) and not reading.in_recovery
    ]
    return max(primaries)[1] if primaries else None


def _replica_status(
    base: NodeStatus, reading: NodeReading, primary: NodeReading | None
) -> NodeStatus:
    base.role = "replica"
    base.timeline = reading.timeline
    base.replay_paused = reading.pause_state not in (None, "not paused")
    base.apply_delay = format_ms(reading.apply_delay_ms) if reading.apply_delay_ms else None
    base.slot = reading.primary_slot_name or None
    sender = primary.replication.get(base.name) if primary else None
    if sender is not None:
        base.state = sender["state"]
        base.sync_state = sender["sync_state"]
        base.slot = sender["slot_name"] or base.slot
    else:
        base.state = reading.receiver_status or "disconnected"
    if primary is not None and primary.current_lsn is not None and reading.replay_lsn is not None:
        base.lag_bytes = max(0, primary.current_lsn - reading.replay_lsn)
        if base.lag_bytes == 0:
            base.lag_seconds = 0.0
        elif reading.replay_timestamp is not None:
            age = (reading.now - reading.replay_timestamp).total_seconds()
            base.lag_seconds = round(max(0.0, age), 3)
    return base


def _add_slot(row: NodeStatus, primary: NodeReading | None) -> None:
    """The retention of the node's slot on the primary (a node's slot is named after it
    unless its primary_slot_name says otherwise); also for a replica that is down, whose
    slot is what keeps (or no longer keeps) the WAL it will need."""
    if primary is None:
        return
    name = row.slot or row.name
    slot = primary.slots.get(name)
    if slot is None:
        return
    row.slot = name
    row.slot_wal_status = slot.wal_status
    row.slot_safe_wal_size = slot.safe_wal_size
    row.slot_retained_bytes = slot.retained_bytes


def summarise(
    state: ClusterState, readings: Mapping[str, NodeReading | BaseException]
) -> list[NodeStatus]:
    primary_name = choose_primary(readings)
    primary = readings.get(primary_name) if primary_name else None
    primary_reading = primary if isinstance(primary, NodeReading) else None
    rows: list[NodeStatus] = []
    for node in state.nodes:
        reading = readings[node.name]
        row = NodeStatus(name=node.name, port=node.port, role="down")
        if not isinstance(reading, NodeReading):
            row.state = "unreachable"
            row.error = str(reading) or type(reading).__name__
        elif reading.in_recovery:
            row = _replica_status(row, reading, primary_reading)
        else:
            row.role = "primary"
            row.timeline = reading.timeline
            row.state = "writable" if node.name == primary_name else "stale primary"
        if node.name != primary_name:
            _add_slot(row, primary_reading)
        row.fenced = node.name in state.fenced
        rows.append(row)
    return rows


async def cluster_status(state: ClusterState) -> list[NodeStatus]:
    return summarise(state, await read_all(state))


@dataclass
class Readings:
    """One look at every node: who answers, who is in recovery, how far each got."""

    by_name: dict[str, NodeReading | BaseException]

    @classmethod
    def take(cls, state: ClusterState) -> Readings:
        return cls(asyncio.run(read_all(state)))

    def alive(self, name: str) -> NodeReading | None:
        reading = self.by_name.get(name)
        return reading if isinstance(reading, NodeReading) else None

    def is_writable(self, name: str) -> bool:
        reading = self.alive(name)
        return reading is not None and not reading.in_recovery

    def replicas(self, state: ClusterState, *, exclude: set[str]) -> dict[str, NodeReading]:
        return {
            node.name: reading
            for node in state.nodes
            if node.name not in exclude
            and (reading := self.alive(node.name)) is not None
            and reading.in_recovery
        }
