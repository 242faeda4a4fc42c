"""The background monitor: probe every node, decide roles, measure lag.

Every ``REPLIKIT_HEALTH_INTERVAL`` each node is asked (over a connection of its own, outside
the request pools) whether it is in recovery, its timeline and WAL positions. The writer is
the reachable node out of recovery on the highest timeline, so an old primary that comes back
un-rewound on a lower timeline is a *stale primary* and gets nothing. When a node's role
changes its pool is disposed, so no pooled connection keeps talking to a demoted primary.
A failed request wakes the monitor at once instead of waiting for the next tick.

A probe that is refused, reset or told the server is shutting down marks the node down at once.
A probe that times out does only when this process's event loop ran on time meanwhile
(service/routing/loop_lag.py): when the loop itself was late, the answer may simply not have
been read yet, and marking a healthy node down on such a round is how overload turns into
false failovers of reads (service/routing/failures.py). Such a round leaves what the node was
known to be unchanged and counts ``replikit_probe_inconclusive_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from service.db.engines import plain_dsn
from service.routing.failures import Verdict, classify
from service.routing.lag import LsnHistory
from service.routing.loop_lag import LoopLag
from service.routing.lsn import parse_lsn
from service.routing.metrics import ServiceMetrics
from service.routing.nodes import Node, Probe, Role

logger = logging.getLogger("replikit.router")

# A node's name is its replikit.node_name setting when it has one (Patroni forces every
# member's cluster_name to the cluster's scope, so its nodes declare their name there), else
# its cluster_name (the native nodes: pg0, pg1, ...). The replay position is read before the
# receive position (a target list is evaluated in order): on a node that streams, replay never
# passes what was received, so a replay above the receive position read after it is never a
# race, only WAL that did not come from an upstream (Probe.has_streamed, which also explains
# the one exception: the unsent rest of a switched segment).
PROBE_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END
           AS current_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
           AS wal_segment_size,
       CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS paused,
       COALESCE(NULLIF(current_setting('replikit.node_name', true), ''),
                current_setting('cluster_name')) AS cluster_name
"""


async def _drop_pooled_connections(node: Node) -> None:
    """After a role change no pooled connection may keep talking to the node in its old role
    (reads on a demoted primary, writes to a replica): close the idle ones now, and the busy
    ones when they come back."""
    await node.engine.dispose()
    if node.driver_pool is not None:
        await node.driver_pool.expire_connections()


def certificate_expiry(connection: asyncpg.Connection) -> float | None:
    """When the certificate the server presented on ``connection`` expires (Unix time); None
    for a plain connection or one that did not verify it (then ``getpeercert`` is empty)."""
    transport = getattr(connection, "_transport", None)
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    certificate = tls.getpeercert() if tls is not None else None
    if not certificate or "notAfter" not in certificate:
        return None
    return float(ssl.cert_time_to_seconds(str(certificate["notAfter"])))


class NodeMonitor:
    def __init__(
        self,
        nodes: Sequence[Node],
        *,
        interval: float,
        metrics: ServiceMetrics,
        loop_lag: LoopLag | None = None,
        tls: dict[str, Any] | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self.tls = tls or {}  # asyncpg's ssl argument (engines.tls_arguments)
        self.loop_lag = loop_lag or LoopLag()
        self.interval = interval
        self.metrics = metrics
        self.history = LsnHistory()
        self.writer: Node | None = None
        self._connections: dict[int, asyncpg.Connection] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._disposals: set[asyncio.Task[None]] = set()
        self.rounds = 0

    # lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.probe_all()
        self._task = asyncio.create_task(self._run(), name="replikit-node-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for connection in self._connections.values():
            with contextlib.suppress(Exception):
                await connection.close(timeout=1)
        self._connections.clear()
        if self._disposals:
            await asyncio.gather(*self._disposals, return_exceptions=True)

    def wake(self) -> None:
        """Probe again now (a request just failed on a node)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.probe_all()
            except Exception:  # the monitor must outlive any single bad round
                logger.exception("event=monitor_round_failed")

    # probing ------------------------------------------------------------------------------
    async def _probe(self, node: Node) -> Probe:
        key = id(node)
        connection = self._connections.get(key)
        if connection is None or connection.is_closed():
            connection = await asyncpg.connect(
                plain_dsn(node.url),
                timeout=self.interval * 2,
                server_settings={"application_name": "replikit-monitor"},
                **self.tls,
            )
            self._connections[key] = connection
            node.certificate_expires = certificate_expiry(connection)
        try:
            row = await connection.fetchrow(PROBE_QUERY, timeout=self.interval * 2)
        except BaseException:
            self._connections.pop(key, None)
            with contextlib.suppress(Exception):
                connection.terminate()
            raise
        assert row is not None
        return Probe(
            in_recovery=row["in_recovery"],
            timeline=row["timeline"],
            current_lsn=parse_lsn(row["current_lsn"]) if row["current_lsn"] else None,
            replay_lsn=parse_lsn(row["replay_lsn"]) if row["replay_lsn"] else None,
            replay_paused=bool(row["paused"]),
            receive_lsn=parse_lsn(row["receive_lsn"]) if row["receive_lsn"] else None,
            wal_segment_size=int(row["wal_segment_size"]),
            cluster_name=row["cluster_name"] or "",
        )

    async def probe_all(self) -> None:
        started = self.loop_lag.clock()
        results = await asyncio.gather(
            *(asyncio.wait_for(self._probe(node), self.interval * 3) for node in self.nodes),
            return_exceptions=True,
        )
        now = time.monotonic()
        late = self.loop_lag.saturated_since(started)
        for node, result in zip(self.nodes, results, strict=True):
            if isinstance(result, BaseException) and late and classify(result) is Verdict.BUSY:
                self.metrics.probe_inconclusive.labels(node=node.name).inc()
                logger.info("event=probe_inconclusive node=%s reason=loop_late", node.name)
                continue
            if isinstance(result, BaseException):
                node.last_error = f"{type(result).__name__}: {result}".strip(": ")[:200]
            else:
                node.probe = result
                node.last_error = None
                node.suspect = False
                if node.certificate_expires is not None:
                    expiry = self.metrics.certificate_expiry.labels(node=node.name)
                    expiry.set(node.certificate_expires)
        self._assign_roles(now)
        self.rounds += 1

    # roles and lag --------------------------------------------------------------------------
    def _assign_roles(self, now: float) -> None:
        writable = [
            node
            for node in self.nodes
            if node.last_error is None and node.probe is not None and not node.probe.in_recovery
        ]
        writer = (
            max(writable, key=lambda n: (n.probe.timeline or 0 if n.probe else 0, n is self.writer))
            if writable
            else None
        )
        if writer is not self.writer:
            logger.info(
                "event=writer_change old=%s new=%s timeline=%s",
                self.writer.name if self.writer else None,
                writer.name if writer else None,
                writer.probe.timeline if writer and writer.probe else None,
            )
            # Positions of a different primary are not a history of this one.
            self.history.reset()
            self.writer = writer
        if writer is not None and writer.probe and writer.probe.current_lsn is not None:
            self.history.record(writer.probe.current_lsn, now)
        for node in self.nodes:
            if node.last_error is not None or node.probe is None:
                role = Role.DOWN
            elif node is writer:
                role = Role.PRIMARY
            elif node.probe.in_recovery:
                role = Role.REPLICA if node.probe.has_streamed else Role.DETACHED
            else:
                role = Role.STALE_PRIMARY
            self._set_role(node, role)
            self._measure_lag(node, now)

    def _set_role(self, node: Node, role: Role) -> None:
        previous = node.role
        if role is previous:
            return
        node.role = role
        # Positions measured in another role (or before the node went down and came back,
        # perhaps rebuilt) say nothing about what it holds now.
        node.observed_replay_lsn = None
        self.metrics.role_changes.labels(node=node.name, role=role.value).inc()
        self.metrics.writer.labels(node=node.name).set(1 if role is Role.PRIMARY else 0)
        if previous is not Role.UNKNOWN:
            logger.warning(
                "event=role_change node=%s old=%s new=%s", node.name, previous.value, role.value
            )
            task = asyncio.create_task(_drop_pooled_connections(node))
            self._disposals.add(task)
            task.add_done_callback(self._disposals.discard)

    def _measure_lag(self, node: Node, now: float) -> None:
        latest = self.history.latest
        replay = node.replay_lsn
        if node.role is not Role.REPLICA or latest is None or replay is None:
            node.lag_bytes = None
            node.lag_seconds = None
            return
        node.lag_bytes = max(0, latest - replay)
        node.lag_seconds = self.history.lag_seconds(replay, now)
        self.metrics.lag_bytes.labels(node=node.name).set(node.lag_bytes)
        if node.lag_seconds is not None:
            self.metrics.lag_seconds.labels(node=node.name).set(node.lag_seconds)

    def note_write(self, lsn: int) -> None:
        """A commit on the writer reached ``lsn`` just now: an exact history sample."""
        self.history.record(lsn, time.monotonic())
