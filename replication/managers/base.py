"""Who moves the primary: the one interface every manager implements.

A cluster is a driver (where its nodes run: :mod:`replication.drivers`) and a manager (who
decides which node is the primary). Every ``replikit cluster`` command asks the cluster's
manager, and nothing outside ``replication/managers/`` asks which manager it is: a manager
either does what a command asks or refuses in one sentence that says what to do instead.

What is the same for every manager lives here, over SQL (:mod:`replication.probe`,
:mod:`replication.lag`) and the driver's process control: status rows, killing a node, replay
lag, the service's environment, and waiting until every replica streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from replication.backup.base import BackupTool
from replication.drivers.base import NodeDriver, StopMode
from replication.errors import BadInputError, ClusterTimeoutError, ReplikitError
from replication.lag import LagChange, set_lag
from replication.probe import NodeStatus, cluster_status
from replication.serving.urls import env_lines
from replication.steps import StepClock
from replication.tls.provision import check_cluster, server_expiry
from replication.topology import ClusterState, NodeSpec, SyncMode

STREAMING_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class ConsensusView:
    """What a manager's consensus store holds at one instant: who holds the leader key (None
    once its lease expired or was released) and the state each agent last published for its
    member (``running``, ``crashed``, ``starting``, ...). Only managers with agents have one."""

    leader: str | None
    member_states: dict[str, str]


class ClusterManager(ABC):
    """The commands of one cluster, as its manager carries them out."""

    #: True when the manager's own agents replace a lost primary with no command.
    promotes_by_itself: ClassVar[bool] = False
    #: Why the failover experiment cannot drive this manager's clusters (None: it can).
    experiment_refusal: ClassVar[str | None] = None
    #: True when this manager's clusters can archive WAL (``cluster up --archive``).
    archives_wal: ClassVar[bool] = False
    #: True when this manager's local clusters serve TLS (``cluster up --tls on``, its default).
    serves_tls: ClassVar[bool] = False

    def __init__(self, *, data_dir: Path, state: ClusterState, driver: NodeDriver) -> None:
        self.data_dir = data_dir
        self.state = state
        self.driver = driver
        # The backup tool of a cluster that archives WAL, set by the composition root.
        self.archive: BackupTool | None = None

    def backups(self) -> BackupTool:
        """The cluster's backup tool; refuses for a cluster that archives no WAL."""
        if self.archive is None:
            raise BadInputError(
                f"The cluster in {self.data_dir} does not archive WAL, so it has no backups; "
                "build one with 'replikit cluster up --archive'."
            )
        return self.archive

    # building and running ----------------------------------------------------------------
    @classmethod
    def configure_new(cls, state: ClusterState) -> None:
        """Add what this manager needs to a new cluster's state before it is saved."""
        return

    def prepare(self) -> None:
        """Create what every node needs before the first one starts (``cluster up``); a
        missing, expired or mismatched certificate is refused before anything else."""
        check_cluster(self.state, self.data_dir)
        self.driver.prepare()
        if self.archive is not None:
            self.archive.prepare()

    def reload_certificates(self) -> list[str]:
        """Check the certificates now on disk, hand the keys to the server account and make
        every running node read them again (a reload: connections already open keep theirs,
        nothing restarts). Returns the nodes reloaded."""
        check_cluster(self.state, self.data_dir)
        self.driver.prepare()
        reloaded = []
        for node in self.state.nodes:
            if self.driver.is_running(node):
                self.driver.reload(node)
                reloaded.append(node.name)
        return reloaded

    def primary_changed(self) -> dict[str, Any]:
        """Called after a failover or switchover: the archive gets what the new primary holds
        of the old timeline and the archive lacks. The role change has happened whatever
        this finds, so a failure is reported, not raised."""
        if self.archive is None:
            return {}
        try:
            return {"archive_rescued": self.archive.primary_changed(self.state.primary_node)}
        except ReplikitError as error:
            return {"archive_error": str(error)}

    def primary_started(self) -> None:
        """Called by ``build`` once a new cluster's first primary accepts connections."""
        if self.archive is not None:
            self.archive.primary_started(self.state.primary_node)

    @abstractmethod
    def build(self) -> None:
        """Build a new cluster's nodes and start them (the state file is saved already)."""

    @abstractmethod
    def start_all(self) -> list[str]:
        """Start what is not running; returns the nodes deliberately left stopped."""

    @abstractmethod
    def stop_all(self, mode: StopMode = StopMode.FAST) -> None:
        """Stop every node (``cluster down``)."""

    def discard(self) -> None:
        """Stop everything a cluster started, at once, whatever state it is in: a new
        cluster that failed half-way, or the last line of a test's teardown."""
        for node in self.state.nodes:
            with contextlib.suppress(ReplikitError):
                self.driver.stop(node, StopMode.IMMEDIATE)

    def wait_settled(self, timeout: float = STREAMING_TIMEOUT_SECONDS) -> list[NodeStatus]:
        """Poll until every replica streams from the primary (and, in a synchronous mode,
        one of them is synchronous); fail naming the laggards."""
        deadline = time.monotonic() + timeout
        while True:
            rows = asyncio.run(cluster_status(self.state))
            waiting = [row.name for row in rows if not self._settled(row)]
            if not waiting:
                return rows
            lost = [row.name for row in rows if row.name in waiting and row.slot_lost]
            if lost:
                # Its slot reserves nothing any more: waiting longer cannot help.
                which, name = ("it", lost[0]) if len(lost) == 1 else ("each", "NODE")
                raise ReplikitError(
                    f"The primary invalidated the slot of {', '.join(lost)} (it fell more "
                    f"than max_slot_wal_keep_size behind), so it cannot stream again; re-clone "
                    f"{which} with 'replikit cluster rejoin {name}'."
                )
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"Replicas {', '.join(waiting)} were not streaming after {timeout:.0f} s; "
                    f"see their logs in {self.data_dir / 'logs'}."
                )
            time.sleep(0.1)

    def _settled(self, row: NodeStatus) -> bool:
        if row.name == self.state.primary:
            return row.role == "primary"
        if row.name in self.state.fenced:
            return True
        synchronous = self.state.sync is not SyncMode.OFF
        return row.state == "streaming" and (not synchronous or row.sync_state != "async")

    # observing ---------------------------------------------------------------------------
    def status(self) -> list[NodeStatus]:
        """Each node's discovered role and replication state, and its pooler's state where
        one stands in front of it; a node whose server is not running says ``stopped``
        rather than ``unreachable``."""
        self.follow_primary()
        rows = self.node_rows()
        now = datetime.now(UTC)
        for row in rows:
            node = self.state.node(row.name)
            row.add_pooler(self.driver.pooler_stats(node))
            row.add_certificate(server_expiry(self.state, node), now)
        return rows

    def node_rows(self) -> list[NodeStatus]:
        """The status rows as SQL and the driver see them, without asking any agent."""
        rows = asyncio.run(cluster_status(self.state))
        for row in rows:
            if row.role == "down" and not self.driver.is_running(self.state.node(row.name)):
                row.state = "stopped"
        return rows

    def follow_primary(self) -> None:
        """Bring the state file's ``primary`` up to date where something other than replikit
        moves it (agents); the native manager moves it itself, so there is nothing to do."""
        return

    def consensus_view(self) -> ConsensusView | None:
        """The leader key and members' states straight from the consensus store, for the
        failover experiment's watch; None for a manager that has none."""
        return None

    def env_lines(self) -> list[str]:
        """``export`` lines of the service's settings for this cluster."""
        self.follow_primary()
        return env_lines(self.state)

    # faults and role changes -------------------------------------------------------------
    def kill(
        self, name: str, mode: StopMode = StopMode.IMMEDIATE, *, postgres_only: bool = False
    ) -> dict[str, Any]:
        """Crash (immediate: no shutdown checkpoint, like a power cut) or stop (fast) a node;
        ``primary`` names the node that is the primary now."""
        if name == "primary":
            self.follow_primary()
            name = self.state.primary
        node = self.state.node(name)
        was_primary = name == self.state.primary
        if not self.driver.is_running(node):
            raise BadInputError(f"{name} is already down.")
        clock = StepClock("kill")
        self.stop_node(node, mode, postgres_only=postgres_only)
        clock.step("stopped", node=name, mode=mode.value, postgres_only=postgres_only)
        return clock.to_json(
            node=name, mode=mode.value, was_primary=was_primary, postgres_only=postgres_only
        )

    def stop_node(self, node: NodeSpec, mode: StopMode, *, postgres_only: bool = False) -> None:
        """Stop one node as ``kill`` does. Without agents, a node is its PostgreSQL, so
        ``postgres_only`` makes no difference here."""
        self.driver.stop(node, mode)

    @abstractmethod
    def failover(self, *, to: str | None = None, force: bool = False) -> dict[str, Any]:
        """Promote a replica after the primary is lost."""

    @abstractmethod
    def switchover(self, *, to: str | None = None) -> dict[str, Any]:
        """A planned change of primary that loses nothing."""

    @abstractmethod
    def rejoin(self, name: str) -> dict[str, Any]:
        """Make a former primary, or a stopped replica, stream from the primary."""

    def lag(self, name: str, change: LagChange) -> dict[str, Any]:
        """Delay or pause a replica's replay, or show what is set."""
        return set_lag(self.state, name, change)
