"""The soak's fault runner: inject each scheduled fault, undo it, wait until the cluster is
whole, and record the fault's window.

Every fault goes through the commands a user runs (:mod:`replication.cluster`: ``kill``,
``failover``, ``rejoin``, ``lag``), so a native cluster, a Patroni one and a compose stack
take the same faults through their own managers and drivers:

* ``primary_crash``: ``kill primary``; a native manager then runs ``failover``, a manager that
  promotes by itself (Patroni) is only waited for until another node takes writes; then the
  old primary is rejoined (``rejoin``; on the HA compose stack its container is started
  again and its agent rewinds it);
* ``replica_crash``: ``kill`` a replica, ``rejoin`` it after the hold;
* ``replica_lag``: ``lag --apply-delay`` on a replica, ``lag --clear`` after the hold;
* ``app_crash``: SIGKILL a service instance the soak started, start it again after the hold;
* ``leader_partition`` (HA compose only): cut the leader off the peer network, reconnect it.

A fault's window runs from its injection to the moment the cluster is whole again (every
replica streaming: the manager's ``wait_settled``) plus the settle margin; the next fault waits
for the end of the window, so windows never overlap. A fault that fails half-way is recorded
with its error, and the runner still tries to make the cluster whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.experiments.soak_checks import Window
from loadtests.experiments.soak_schedule import FaultKind, PlannedFault
from loadtests.experiments.targets import LocalInstances
from replication import cluster as clusters
from replication.cluster import Cluster
from replication.compose.ha import HaStack, ha_stack
from replication.errors import ClusterTimeoutError, ReplikitError
from replication.lag import LagChange
from replication.probe import Readings
from replication.topology import require_state

ELECTION_TIMEOUT_SECONDS = 90.0
SETTLE_TIMEOUT_SECONDS = 120.0


@dataclass
class FaultRecord:
    planned: PlannedFault
    started: float | None = None  # wall clock, injection
    whole_at: float | None = None  # the cluster was whole again
    ended: float | None = None  # whole_at + settle: the window's end
    target: str | None = None
    steps: dict[str, float] = field(default_factory=dict)  # seconds after ``started``
    error: str | None = None

    def window(self) -> Window | None:
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else time.time()
        return Window(self.started, end, f"{self.planned.kind.value} {self.target or ''}".strip())

    def to_json(self, origin: float) -> dict[str, Any]:
        def rel(moment: float | None) -> float | None:
            return None if moment is None else round(moment - origin, 2)

        return {
            **self.planned.to_json(),
            "kind": self.planned.kind.value,
            "target": self.target,
            "started": rel(self.started),
            "whole_at": rel(self.whole_at),
            "ended": rel(self.ended),
            "steps": {k: round(v, 2) for k, v in self.steps.items()},
            "error": self.error,
        }


def ha_stack_of(cluster: Cluster) -> HaStack | None:
    """The HA compose stack behind an attached compose cluster whose agents promote by
    themselves, else None."""
    state = cluster.state
    if state.driver != "compose" or not cluster.manager.promotes_by_itself:
        return None
    if state.compose_file is None:
        raise ReplikitError("The attached compose cluster records no compose file.")
    root = Path(state.compose_file).parent
    env_file = Path(state.compose_env_file or root / ".env")
    return ha_stack(root, env_file, state.compose_project)


class FaultRunner:
    """Runs a schedule in a thread beside the load; :attr:`records` is what happened."""

    def __init__(
        self,
        *,
        data_dir: Path,
        schedule: list[PlannedFault],
        settle: float,
        instances: LocalInstances | None,
        origin: float,
    ) -> None:
        self.data_dir = data_dir
        self.schedule = schedule
        self.settle = settle
        self.instances = instances
        self.origin = origin
        self.ha = ha_stack_of(Cluster.open(data_dir))
        self.records: list[FaultRecord] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # running -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-faults", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """No new fault from now on; wait (up to ``timeout``) for the current one's repair."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        for planned in self.schedule:
            if self._stop.wait(max(0.0, self.origin + planned.at - time.time())):
                return
            self.inject(planned)

    def inject(self, planned: PlannedFault) -> FaultRecord:
        record = FaultRecord(planned=planned, started=time.time())
        self.records.append(record)
        action: dict[FaultKind, Callable[[FaultRecord], None]] = {
            FaultKind.PRIMARY_CRASH: self._primary_crash,
            FaultKind.REPLICA_CRASH: self._replica_crash,
            FaultKind.REPLICA_LAG: self._replica_lag,
            FaultKind.APP_CRASH: self._app_crash,
            FaultKind.LEADER_PARTITION: self._leader_partition,
        }
        try:
            action[planned.kind](record)
        except Exception as error:
            record.error = f"{type(error).__name__}: {error}"[:500]
        try:
            self._wait_whole()
            record.whole_at = time.time()
        except Exception as error:
            record.error = record.error or f"not whole again: {type(error).__name__}: {error}"
        if record.error is not None:
            # No end: the window stays open until the run ends, and the verdict fails.
            return record
        self._stop.wait(self.settle)
        record.ended = time.time()
        return record

    def _step(self, record: FaultRecord, name: str) -> None:
        assert record.started is not None
        record.steps[name] = time.time() - record.started

    def _hold(self, planned: PlannedFault) -> None:
        """Keep the fault for its hold, whatever happens to the run (it is undone after)."""
        time.sleep(planned.hold)

    # the cluster -------------------------------------------------------------------------
    def _cluster(self) -> Cluster:
        return Cluster.open(self.data_dir)

    def _replica(self, planned: PlannedFault) -> str:
        state = require_state(self.data_dir)
        replicas = [node.name for node in state.replicas if node.name not in state.fenced]
        if not replicas:
            raise ReplikitError("There is no replica to take the fault.")
        return replicas[planned.target % len(replicas)]

    def _wait_whole(self) -> None:
        if self.ha is not None:
            self.ha.wait_settled(SETTLE_TIMEOUT_SECONDS)
            self._cluster().manager.follow_primary()
            return
        self._cluster().manager.wait_settled(SETTLE_TIMEOUT_SECONDS)

    def _wait_new_writer(self, old: str) -> str:
        """A manager that promotes by itself: wait until another node takes writes."""
        deadline = time.monotonic() + ELECTION_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            cluster = self._cluster()
            try:
                cluster.manager.follow_primary()
            except ReplikitError:
                time.sleep(0.5)
                continue
            new = cluster.state.primary
            if new != old and Readings.take(cluster.state).is_writable(new):
                return new
            time.sleep(0.5)
        raise ClusterTimeoutError(
            f"No node replaced {old} as the primary within {ELECTION_TIMEOUT_SECONDS:.0f} s."
        )

    def _crash_node(self, name: str) -> None:
        if self.ha is not None:
            self.ha.crash(name)
        else:
            clusters.kill(self.data_dir, name)

    def _restore_node(self, name: str) -> None:
        if self.ha is not None:
            self.ha.start(name)
            self.ha.wait_rejoined(name, SETTLE_TIMEOUT_SECONDS)
        else:
            clusters.rejoin(self.data_dir, name)

    # the faults --------------------------------------------------------------------------
    def _primary_crash(self, record: FaultRecord) -> None:
        cluster = self._cluster()
        cluster.manager.follow_primary()
        old = record.target = cluster.state.primary
        self._crash_node(old)
        self._step(record, "killed")
        if cluster.manager.promotes_by_itself:
            self._wait_new_writer(old)
            self._step(record, "new_primary")
        else:
            clusters.failover(self.data_dir)
            self._step(record, "failed_over")
        self._restore_node(old)
        self._step(record, "rejoined")

    def _replica_crash(self, record: FaultRecord) -> None:
        name = record.target = self._replica(record.planned)
        self._crash_node(name)
        self._step(record, "killed")
        self._hold(record.planned)
        self._restore_node(name)
        self._step(record, "rejoined")

    def _replica_lag(self, record: FaultRecord) -> None:
        name = record.target = self._replica(record.planned)
        clusters.lag(self.data_dir, name, LagChange(apply_delay=f"{record.planned.delay_ms}ms"))
        self._step(record, "delayed")
        try:
            self._hold(record.planned)
        finally:
            clusters.lag(self.data_dir, name, LagChange(clear=True))
        self._step(record, "cleared")

    def _app_crash(self, record: FaultRecord) -> None:
        if self.instances is None or not self.instances.records:
            raise ReplikitError("app_crash needs service instances the soak started.")
        index = record.planned.target % len(self.instances.records)
        record.target = f"service-{index}"
        self.instances.crash(index)
        self._step(record, "killed")
        self._hold(record.planned)
        self.instances.restart(index)
        self._step(record, "restarted")

    def _leader_partition(self, record: FaultRecord) -> None:
        if self.ha is None:
            raise ReplikitError("leader_partition needs the HA compose variant.")
        writers = self.ha.writers()
        if len(writers) != 1:
            raise ReplikitError(f"Expected one writer before the partition, found {writers}.")
        leader = record.target = writers[0]
        aliases = self.ha.partition(leader)
        self._step(record, "partitioned")
        try:
            self._hold(record.planned)
        finally:
            self.ha.reconnect(leader, aliases)
        self._step(record, "reconnected")
