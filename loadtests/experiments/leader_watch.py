"""A fast watcher of an automatic failover: etcd's leader and member keys, and every node's
``pg_is_in_recovery()``, sampled about every 100 ms in a thread of its own.

The manual experiment knows when each step happened because it runs them; under Patroni
nothing is run, so the steps can only be observed. Each sample holds who holds the leader key
(straight from etcd, not through an agent whose view lags a loop), the state each agent last
published, and which nodes answer SQL out of recovery. :mod:`loadtests.experiments.window_split`
turns the samples into the phases of the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from replication.admin import app_connect
from replication.cluster import Cluster
from replication.errors import BadInputError

SAMPLE_INTERVAL_SECONDS = 0.1
PROBE_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class WatchSample:
    """One look at the cluster; ``in_recovery[name]`` is None while the node does not answer."""

    t: float
    leader: str | None
    member_states: dict[str, str]
    in_recovery: dict[str, bool | None]
    dcs_answered: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LeaderWatch:
    """Samples until stopped; ``samples`` grows as it goes (read it once stopped)."""

    def __init__(self, cluster: Cluster, interval: float = SAMPLE_INTERVAL_SECONDS) -> None:
        if not cluster.manager.promotes_by_itself:
            raise BadInputError("Watching an automatic failover needs a Patroni cluster.")
        self.manager = cluster.manager
        self.state = cluster.state
        self.interval = interval
        self.samples: list[WatchSample] = []
        self._connections: dict[str, asyncpg.Connection] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="leader-watch", daemon=True
        )

    async def _in_recovery(self, name: str) -> bool | None:
        """The node's answer over a kept connection (reopened after any failure)."""
        connection = self._connections.get(name)
        try:
            if connection is None or connection.is_closed():
                connection = await app_connect(
                    self.state, self.state.node(name), connect_timeout=PROBE_TIMEOUT_SECONDS
                )
                self._connections[name] = connection
            return bool(
                await connection.fetchval(
                    "SELECT pg_is_in_recovery()", timeout=PROBE_TIMEOUT_SECONDS
                )
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            dropped = self._connections.pop(name, None)
            if dropped is not None:
                dropped.terminate()
            return None

    async def _sample(self) -> WatchSample:
        names = [node.name for node in self.state.nodes]
        reading = asyncio.create_task(asyncio.to_thread(self.manager.consensus_view))
        answers = await asyncio.gather(*(self._in_recovery(n) for n in names))
        view = await reading
        return WatchSample(
            t=time.time(),
            leader=view.leader if view is not None else None,
            member_states=dict(view.member_states) if view is not None else {},
            in_recovery=dict(zip(names, answers, strict=True)),
            dcs_answered=view is not None,
        )

    async def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append(await self._sample())
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        for connection in self._connections.values():
            with contextlib.suppress(Exception):
                await connection.close(timeout=1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
