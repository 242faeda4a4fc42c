"""The session router: which node serves a request's write or read session.

Design choice: explicit writer and reader sessions, chosen per request by two FastAPI
dependencies, rather than one ``RoutingSession`` whose ``get_bind()`` picks an engine per
statement. The decision needs the request (consistency header, LSN token, whether this request
already wrote) and may have to *wait* (read-your-writes polls a replica's replay position);
``get_bind()`` is synchronous and sees neither. Explicit sessions also make the node that
served a request a plain fact we can report in ``X-Replikit-Node``.

Reads: ``strong``, a request that already wrote, and policy ``primary`` go to the writer.
Otherwise the eligible replicas (probed healthy, role replica, not just failed, and under
``bounded`` within both lag limits) are ordered by the read policy. ``read_your_writes`` and
``monotonic`` with a token prefer replicas known to have replayed it, else wait up to
``REPLIKIT_RYW_WAIT`` on the chosen one, polling ``pg_last_wal_replay_lsn()`` on the very
connection the read will use, then fall back to the primary; when every replica's measured lag
is longer than that wait, they go to the primary at once instead of waiting in vain. What a
replica is known to have replayed is the higher of the monitor's last probe and the positions
``monotonic`` reads on it measured since (service/db/snapshot.py): those are fresher than the
probe, so fewer reads need the poll. A replica that refuses the connection is skipped for the
next one. With no eligible replica, reads fall back to the primary or fail (``READ_FALLBACK``).

Writes go to the monitor's writer; a connection error or a read-only error (the node was
demoted) marks it, wakes the monitor and answers 503 ``PRIMARY_UNAVAILABLE``. A write that
found the disk full (``53100``, or ``ENOSPC`` from the blob directory) leaves the node alone: it
answers 503 ``STORAGE_FULL``, and for ``REPLIKIT_STORAGE_FULL_HOLD`` seconds uploads are refused
before their body is read, so a full primary is not fed failed inserts (each one still writes
WAL, and a primary that cannot add a WAL segment stops); the first upload after the hold tries
again, so writes resume by themselves once space is freed.

Timeouts are not failures (service/routing/failures.py has the rule): a read whose connection,
pool checkout or statement timed out is answered 503 ``DATABASE_BUSY`` with ``Retry-After``
where it stands, without marking the node or moving to another one, since under overload
moving on only carries the overload to the next node and finally to the primary. A write that
timed out is ``DATABASE_BUSY`` too when this process's event loop ran late meanwhile (its own
saturation explains it), else ``PRIMARY_UNAVAILABLE`` (a commit stuck on a missing synchronous
replica); either way the node is left to the monitor's next probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.driver_pools import (
    DriverConnection,
    DriverPoolExhaustedError,
    acquire,
    open_driver_pool,
)
from service.db.engines import address_of, make_engine, tls_arguments
from service.errors import (
    DatabaseBusyError,
    NoReaderAvailableError,
    PrimaryUnavailableError,
    StorageFullError,
)
from service.routing.consistency import Consistency, RequestRouting
from service.routing.failures import Verdict, classify, files_are_full, is_node_failure
from service.routing.loop_lag import LoopLag
from service.routing.lsn import parse_lsn
from service.routing.metrics import ServiceMetrics
from service.routing.monitor import NodeMonitor
from service.routing.nodes import Node, Role
from service.routing.policies import make_chooser
from service.settings import ReadFallback, ReadPolicy, Settings

logger = logging.getLogger("replikit.router")

RYW_POLL_SECONDS = 0.01
REPLAY_POSITION = "SELECT pg_last_wal_replay_lsn()::text"
# Re-exported: the API's error handlers and the tests ask the router.
__all__ = ["Router", "is_node_failure"]


@asynccontextmanager
async def _closing(resource: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Close the session afterwards without raising: the response may already be on its way
    when the node dies, and a failed reset only invalidates that connection."""
    try:
        yield resource
    finally:
        try:
            await resource.close()
        except Exception as error:
            logger.debug("event=session_close_failed error=%s", type(error).__name__)


def _retry_after(settings: Settings) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(settings.health_interval * 2)))}


class Router:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.nodes = [self._node(settings.primary_url, "primary", 1)] + [
            self._node(url, "replica", settings.weight_of(index))
            for index, url in enumerate(settings.replica_urls)
        ]
        self.loop_lag = LoopLag()
        self.monitor = NodeMonitor(
            self.nodes,
            interval=settings.health_interval,
            metrics=metrics,
            loop_lag=self.loop_lag,
            tls=tls_arguments(settings),
        )
        self.chooser = make_chooser(settings.read_policy)

    def _node(self, url: str, configured_role: str, weight: int) -> Node:
        engine = make_engine(url, self.settings)
        return Node(
            url=url,
            address=address_of(url),
            configured_role=configured_role,
            weight=weight,
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
        )

    async def start(self) -> None:
        for node in self.nodes:
            node.driver_pool = await open_driver_pool(node.url, self.settings)
        self.loop_lag.start()
        await self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()
        await self.loop_lag.stop()
        for node in self.nodes:
            await node.engine.dispose()
            if node.driver_pool is not None:
                await node.driver_pool.close()

    # the writer -----------------------------------------------------------------------------
    @property
    def writer(self) -> Node | None:
        writer = self.monitor.writer
        return writer if writer is not None and not writer.suspect else None

    def require_writer(self) -> Node:
        """The current writer, or a 503 at once: used before work that would be wasted."""
        writer = self.writer
        if writer is None:
            raise self._primary_unavailable("no_writer", "No primary is accepting writes.")
        return writer

    def require_writer_with_room(self) -> Node:
        """The current writer, or a 503 at once: also ``STORAGE_FULL`` while a write that
        found its disk full is recent (``REPLIKIT_STORAGE_FULL_HOLD``)."""
        writer = self.require_writer()
        left = writer.full_until - time.monotonic()
        if left > 0:
            self.metrics.unavailable.labels(reason="storage_full").inc()
            raise self._storage_full_error(writer, left, writer.full_where)
        return writer

    def _storage_full_error(
        self, node: Node, retry_after: float, where: str = "database"
    ) -> StorageFullError:
        place = "The blob directory" if where == "blob_directory" else f"The primary {node.name}"
        return StorageFullError(
            f"{place} has no disk space left; nothing was stored. Retry once space is freed.",
            details={"node": node.name, "reason": "disk_full", "where": where},
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )

    def _storage_full(self, node: Node, error: BaseException) -> StorageFullError:
        """A write found the disk full (``node``'s, or the blob directory's): not a failure
        of the node, which still serves reads; refuse uploads at once for the hold, then let
        one try again."""
        where = "blob_directory" if files_are_full(error) else "database"
        now = time.monotonic()
        if node.full_until <= now:
            logger.warning("event=storage_full node=%s where=%s", node.name, where)
        hold = self.settings.storage_full_hold
        node.full_until = now + hold
        node.full_where = where
        self.metrics.unavailable.labels(reason="storage_full").inc()
        return self._storage_full_error(node, hold, where)

    def writer_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions on the current writer, for work outside a request (blob cleanup)."""
        return self.require_writer().sessions

    def _primary_unavailable(self, reason: str, message: str) -> PrimaryUnavailableError:
        self.metrics.unavailable.labels(reason=reason).inc()
        return PrimaryUnavailableError(
            message, details={"reason": reason}, headers=_retry_after(self.settings)
        )

    def _busy(self, node: Node, reason: str = "pool_exhausted") -> DatabaseBusyError:
        """Capacity, not failure: every pooled connection to ``node`` stayed in use for the
        pool timeout (``pool_exhausted``), or a connect or statement timed out (``timeout``)."""
        self.metrics.unavailable.labels(reason=reason).inc()
        message = (
            f"Every connection to {node.name} is busy; retry shortly."
            if reason == "pool_exhausted"
            else f"{node.name} did not answer in time while this instance is busy; retry shortly."
        )
        return DatabaseBusyError(
            message, details={"node": node.name, "reason": reason}, headers={"Retry-After": "1"}
        )

    def suspect(self, node: Node, error: BaseException) -> None:
        if not node.suspect:
            logger.warning("event=node_suspect node=%s error=%s", node.name, type(error).__name__)
        node.suspect = True
        self.monitor.wake()

    def note_write_lsn(self, lsn_text: str) -> None:
        with contextlib.suppress(ValueError):
            self.monitor.note_write(parse_lsn(lsn_text))

    @asynccontextmanager
    async def _on_writer(self, routing: RequestRouting) -> AsyncIterator[Node]:
        """The writer for this request's write, with its failures turned into answers: a full
        pool is a 503 ``DATABASE_BUSY``; a full disk a 503 ``STORAGE_FULL`` (the node is left
        alone); a node failure marks the writer suspect, wakes the monitor and is a 503
        ``PRIMARY_UNAVAILABLE``."""
        node = self.require_writer()
        started = self.loop_lag.clock()
        try:
            routing.wrote = True
            routing.served_by = node.name
            self.metrics.routed.labels(node=node.name, kind="write").inc()
            yield node
        except (PoolTimeoutError, DriverPoolExhaustedError) as error:
            raise self._busy(node) from error
        except Exception as error:
            verdict = classify(error)
            if verdict is Verdict.REQUEST:
                raise
            if verdict is Verdict.FULL:
                raise self._storage_full(node, error) from error
            if verdict is Verdict.BUSY:
                self.monitor.wake()
                if self.loop_lag.saturated_since(started):
                    raise self._busy(node, "timeout") from error
                raise self._primary_unavailable(
                    "write_timeout", f"The primary {node.name} did not complete the write in time."
                ) from error
            self.suspect(node, error)
            raise self._primary_unavailable(
                "write_failed", f"The primary {node.name} failed the write; retry shortly."
            ) from error

    @asynccontextmanager
    async def write_session(self, routing: RequestRouting) -> AsyncIterator[AsyncSession]:
        """A transactional session on the writer (the delete: lock, check, delete)."""
        async with self._on_writer(routing) as node, _closing(node.sessions()) as session:
            # No connection is checked out until the route's first statement: a route
            # that must refuse early (the upload reads its body first) holds nothing.
            yield session

    @asynccontextmanager
    async def write_connection(self, routing: RequestRouting) -> AsyncIterator[DriverConnection]:
        """A plain asyncpg connection (autocommit) on the writer, for work that is one
        statement at a time (the upload's rate limit, its insert of row and bytes, the WAL
        position after it): no BEGIN, no COMMIT, no SQLAlchemy."""
        async with self._on_writer(routing) as node:
            connection = await self._open(node)
            try:
                yield connection
            finally:
                await self._release(node, connection)

    # readers --------------------------------------------------------------------------------
    def eligible_replicas(self, consistency: Consistency) -> tuple[list[Node], str]:
        """Replicas that may serve a read now, or none and the reason."""
        replicas = [n for n in self.nodes if n.role is Role.REPLICA and n.usable]
        if not replicas:
            return [], "no_healthy_replica"
        if consistency is Consistency.BOUNDED:
            replicas = [n for n in replicas if self._fresh_enough(n)]
            if not replicas:
                return [], "replicas_too_stale"
        return replicas, ""

    def _fresh_enough(self, node: Node) -> bool:
        return (
            node.lag_seconds is not None
            and node.lag_bytes is not None
            and node.lag_seconds <= self.settings.max_lag_seconds
            and node.lag_bytes <= self.settings.max_lag_bytes
        )

    def needs_writer(self, routing: RequestRouting) -> bool:
        """Strong reads, reads after a write in the same request, and policy ``primary``."""
        return (
            routing.consistency is Consistency.STRONG
            or routing.wrote
            or self.settings.read_policy is ReadPolicy.PRIMARY
        )

    def choose_reader(self, routing: RequestRouting, exclude: set[int]) -> tuple[Node | None, str]:
        """The replica for a read, or None and the reason to fall back to the primary."""
        candidates, reason = self.eligible_replicas(routing.consistency)
        candidates = [n for n in candidates if id(n) not in exclude]
        if not candidates:
            return None, reason or "replicas_failed"
        token = routing.token
        if routing.consistency.honours_token and token is not None:
            caught_up = [n for n in candidates if (n.known_replayed or 0) >= token]
            if caught_up:
                candidates = caught_up
            else:
                # Waiting only helps on a replica that replays within the wait: one whose
                # measured lag is already longer (an apply delay, a paused replay) would make
                # the read wait the full REPLIKIT_RYW_WAIT and then go to the primary anyway.
                hopeful = [
                    n
                    for n in candidates
                    if n.lag_seconds is None or n.lag_seconds <= self.settings.ryw_wait
                ]
                if not hopeful:
                    self.metrics.ryw_waits.labels(outcome="skipped").inc()
                    return None, "ryw_lagging"
                candidates = hopeful
        return self.chooser.choose(candidates), ""

    async def _replayed(self, node: Node, connection: DriverConnection, token: int) -> bool:
        """Wait until this replica has replayed ``token``, at most REPLIKIT_RYW_WAIT."""
        started = time.monotonic()
        deadline = started + self.settings.ryw_wait
        while True:
            replayed = await connection.fetchval(REPLAY_POSITION)
            position = parse_lsn(str(replayed)) if replayed is not None else None
            if position is not None:
                node.note_replayed(position)
            if position is not None and position >= token:
                waited = time.monotonic() - started
                self.metrics.ryw_wait_seconds.observe(waited)
                self.metrics.ryw_waits.labels(outcome="waited").inc()
                return True
            if time.monotonic() >= deadline:
                self.metrics.ryw_wait_seconds.observe(time.monotonic() - started)
                self.metrics.ryw_waits.labels(outcome="timeout").inc()
                return False
            await asyncio.sleep(RYW_POLL_SECONDS)

    async def _open(self, node: Node) -> DriverConnection:
        """A read connection, acquired now (so a refused connection moves the read to
        another node before the route runs). Acquiring a pooled one costs no round trip."""
        return await acquire(node.driver_pool, self.settings.db_pool_timeout)

    async def _release(self, node: Node, connection: DriverConnection) -> None:
        """Back to its pool, without raising: the response may already be on its way when
        the node dies, and a failed release only discards that connection."""
        try:
            await node.driver_pool.release(connection)
        except Exception as error:
            logger.debug("event=read_release_failed error=%s", type(error).__name__)

    async def _open_reader(self, routing: RequestRouting) -> tuple[Node, DriverConnection]:
        if self.needs_writer(routing):
            writer = self.writer
            return writer, await self._open_writer_for_read(writer)  # type: ignore[return-value]
        tried: set[int] = set()
        exhausted: Node | None = None
        while True:
            node, reason = self.choose_reader(routing, tried)
            if node is None and exhausted is not None and reason == "replicas_failed":
                # Every replica left was full, not down: the primary keeps its room for writes.
                raise self._busy(exhausted)
            if node is None:
                node = self._fallback(reason)
            if node.role is not Role.REPLICA:
                return node, await self._open_writer_for_read(node)
            try:
                connection = await self._open(node)
            except DriverPoolExhaustedError:
                # Busy, not broken: another replica may have room.
                self.metrics.fallbacks.labels(reason="pool_exhausted").inc()
                tried.add(id(node))
                exhausted = node
                continue
            except Exception as error:
                verdict = classify(error)
                if verdict is Verdict.BUSY:
                    raise self._busy(node, "timeout") from error
                if verdict is Verdict.REQUEST:
                    raise
                self.suspect(node, error)
                tried.add(id(node))
                continue
            token = routing.token
            if routing.consistency.honours_token and token is not None:
                if (node.known_replayed or 0) >= token:
                    self.metrics.ryw_waits.labels(outcome="immediate").inc()
                else:
                    try:
                        replayed = await self._replayed(node, connection, token)
                    except BaseException:
                        await self._release(node, connection)
                        raise
                    if not replayed:
                        await self._release(node, connection)
                        writer = self._fallback("ryw_timeout")
                        return writer, await self._open_writer_for_read(writer)
            return node, connection

    def _fallback(self, reason: str) -> Node:
        writer = self.writer
        if self.settings.read_fallback is ReadFallback.ERROR or writer is None:
            self.metrics.unavailable.labels(reason=f"no_reader_{reason}").inc()
            raise NoReaderAvailableError(
                f"No node can serve this read now ({reason.replace('_', ' ')}).",
                details={"reason": reason},
                headers=_retry_after(self.settings),
            )
        self.metrics.fallbacks.labels(reason=reason).inc()
        return writer

    async def _open_writer_for_read(self, node: Node | None) -> DriverConnection:
        if node is None:
            raise self._primary_unavailable("no_writer", "No primary is available for this read.")
        try:
            return await self._open(node)
        except DriverPoolExhaustedError as error:
            raise self._busy(node) from error
        except Exception as error:
            verdict = classify(error)
            if verdict is Verdict.BUSY:
                raise self._busy(node, "timeout") from error
            if verdict is Verdict.REQUEST:
                raise
            self.suspect(node, error)
            raise self._primary_unavailable(
                "read_failed", f"The primary {node.name} is not reachable."
            ) from error

    @asynccontextmanager
    async def read_connection(self, routing: RequestRouting) -> AsyncIterator[DriverConnection]:
        """A plain asyncpg connection (autocommit) on the node chosen for this read."""
        node, connection = await self._open_reader(routing)
        routing.served_by = node.name
        self.metrics.routed.labels(node=node.name, kind="read").inc()
        try:
            yield connection
        except Exception as error:
            verdict = classify(error)
            if verdict is Verdict.BUSY:
                raise self._busy(node, "timeout") from error
            if verdict is Verdict.DOWN:
                self.suspect(node, error)
            raise
        finally:
            await self._release(node, connection)
            # A 404 raises through here, and what it saw counts as much as a row.
            if routing.seen is not None and node.role is Role.REPLICA:
                node.note_replayed(routing.seen)

    # visibility -----------------------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        eligible, _ = self.eligible_replicas(self.settings.read_consistency)
        nodes = []
        for node in self.nodes:
            why_not = None
            if node.role is Role.REPLICA and node not in eligible:
                why_not = (
                    "unhealthy"
                    if not node.usable
                    else f"lag over the limit ({self.settings.max_lag_seconds} s / "
                    f"{self.settings.max_lag_bytes} bytes)"
                )
            elif node.role is not Role.REPLICA:
                why_not = {
                    Role.PRIMARY: "writer",
                    Role.STALE_PRIMARY: "stale primary (lower timeline): never used",
                    Role.DETACHED: "in recovery but replays WAL it did not stream: never used",
                }.get(node.role, node.last_error or node.role.value)
            nodes.append(node.describe(in_rotation=node in eligible, why_not=why_not))
        writer = self.writer
        return {
            "writer": writer.name if writer else None,
            "policy": self.settings.read_policy.value,
            "consistency": self.settings.read_consistency.value,
            "fallback": self.settings.read_fallback.value,
            "max_lag_seconds": self.settings.max_lag_seconds,
            "max_lag_bytes": self.settings.max_lag_bytes,
            "health_interval": self.settings.health_interval,
            "monitor_rounds": self.monitor.rounds,
            "nodes": nodes,
        }
