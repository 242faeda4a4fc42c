"""A configured database node: its engine, and what the monitor last learned about it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.routing.lsn import format_lsn


class Role(StrEnum):
    UNKNOWN = "unknown"  # not probed yet
    PRIMARY = "primary"  # the writer
    REPLICA = "replica"
    STALE_PRIMARY = "stale_primary"  # out of recovery but not the writer: never used
    # In recovery but has not streamed what it replays (a fenced former primary started by
    # hand, a node following a primary that no longer exists, a crashed former primary that
    # Patroni starts following the new leader before rewinding it): never used, since what it
    # replays may be stale or even a history the cluster has left (Probe.has_streamed).
    DETACHED = "detached"
    DOWN = "down"


@dataclass
class Probe:
    """One answer of a node to the monitor's query."""

    in_recovery: bool
    timeline: int | None
    current_lsn: int | None
    replay_lsn: int | None
    replay_paused: bool
    cluster_name: str
    # pg_last_wal_receive_lsn(): None for a node that never asked an upstream for WAL. Kept
    # while the server runs, so a replica whose upstream just died still counts as streaming.
    receive_lsn: int | None = None
    # The node's WAL segment size (wal_segment_size, 16 MB unless initdb chose otherwise).
    wal_segment_size: int = 16 * 1024 * 1024

    @property
    def has_streamed(self) -> bool:
        """Whether this node in recovery has received WAL from an upstream since it started,
        up to what it replayed.

        The receive position is *not* proof of that on its own: PostgreSQL sets it to the
        start of the WAL segment it asks for as soon as the startup process requests streaming
        (``RequestXLogStreaming``), before any byte arrives and whether or not the upstream
        agrees. A former primary that Patroni starts in recovery after a crash, following the
        new leader before rewinding it, replays its own WAL to its end (past the fork, on a
        timeline the cluster left), asks the new leader for the next segment and is refused;
        its receive position stays at that segment's start, *below* its replay position. A
        node that streams replays only what it received, so its replay position never passes
        its receive position; one that replayed more than it received replayed WAL of its own
        (or from an archive) since it asked: what it shows may be a history the cluster has
        left, and its positions cannot be compared with the writer's.

        One exception, up to the end of the received segment: replaying a segment switch
        (``pg_switch_wal``, ``archive_timeout``) moves the replay position to the next
        segment's start, and when the upstream dies before it sends the rest of that segment
        (a primary that PANICs because it cannot create the next one on a full disk) the
        receive position stays at the switch record's end. Such a replica holds everything
        it replayed from its upstream; a diverged node's receive position is the start of the
        segment it asked for, so its own WAL past that start still shows.
        """
        if self.receive_lsn is None:
            return False
        if self.replay_lsn is None:
            return True
        segment = self.wal_segment_size
        received_segment_end = -(-self.receive_lsn // segment) * segment
        return self.replay_lsn <= received_segment_end


@dataclass(eq=False)
class Node:
    url: str
    address: str
    configured_role: str
    weight: int
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]  # transactional writes (the delete)
    # Plain asyncpg connections in autocommit (service/db/driver_pools.py), opened by the
    # router's start(): reads and the upload's statements, one round trip each, no SQLAlchemy.
    driver_pool: Any = None
    role: Role = Role.UNKNOWN
    probe: Probe | None = None
    last_error: str | None = None
    suspect: bool = False  # a request just failed on it; cleared by the next good probe
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    # The highest replay position a monotonic read on this replica measured since its last
    # role change: fresher than the probe between two probes.
    observed_replay_lsn: int | None = None
    # Until when (time.monotonic()) uploads to this writer are refused at once: a write just
    # found its disk full (service/routing/router.py).
    full_until: float = 0.0
    full_where: str = "database"  # or "blob_directory"
    # When the certificate the node presented to the monitor expires (Unix time); None
    # without a verified TLS connection (REPLIKIT_DB_SSL_ROOT_CERT unset).
    certificate_expires: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The server's cluster_name once known (pg0, pg1, ...), else host:port."""
        return self.probe.cluster_name if self.probe and self.probe.cluster_name else self.address

    @property
    def usable(self) -> bool:
        return self.probe is not None and self.last_error is None and not self.suspect

    @property
    def replay_lsn(self) -> int | None:
        return self.probe.replay_lsn if self.probe else None

    @property
    def known_replayed(self) -> int | None:
        """What this replica is known to have replayed: the probe, or a later read's measure."""
        probed, observed = self.replay_lsn, self.observed_replay_lsn
        if probed is None or observed is None:
            return probed if observed is None else observed
        return max(probed, observed)

    def note_replayed(self, position: int) -> None:
        if self.observed_replay_lsn is None or position > self.observed_replay_lsn:
            self.observed_replay_lsn = position

    def describe(self, *, in_rotation: bool, why_not: str | None) -> dict[str, Any]:
        probe = self.probe
        return {
            "name": self.name,
            "address": self.address,
            "configured_role": self.configured_role,
            "role": self.role.value,
            "timeline": probe.timeline if probe else None,
            "healthy": self.usable,
            "replay_lsn": format_lsn(probe.replay_lsn) if probe and probe.replay_lsn else None,
            "current_lsn": format_lsn(probe.current_lsn) if probe and probe.current_lsn else None,
            "replay_paused": probe.replay_paused if probe else None,
            "lag_bytes": self.lag_bytes,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "weight": self.weight,
            "in_rotation": in_rotation,
            "why_not": why_not,
            "error": self.last_error,
            "storage_full": self.full_until > time.monotonic(),
        }
