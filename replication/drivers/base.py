"""What the cluster commands need from whatever runs the nodes.

Drivers own process control and node construction only; everything that can be said in SQL
(roles, lag, replication state) goes through :mod:`replication.probe` for every driver alike.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from replication.poolers import PoolerStats
from replication.topology import NodeSpec


class StopMode(StrEnum):
    FAST = "fast"
    IMMEDIATE = "immediate"


def rejoin_method(*, reclone: bool) -> str:
    """rejoin-node.sh's REPLIKIT_REJOIN_METHOD: ``auto`` (pg_rewind, a base backup when that
    fails) or ``reclone`` (a base backup at once)."""
    return "reclone" if reclone else "auto"


class NodeDriver(Protocol):
    def prepare(self) -> None:
        """Create what every node needs before the first one is built."""

    def has_data(self, node: NodeSpec) -> bool:
        """True when the node's data directory has been initialised."""

    def init_primary(self, node: NodeSpec) -> None:
        """Build an empty node as the first primary (runs init-primary.sh)."""

    def bootstrap_replica(self, node: NodeSpec, primary: NodeSpec) -> None:
        """Build an empty node as a streaming replica (runs bootstrap-replica.sh)."""

    def start(self, node: NodeSpec) -> None:
        """Start the node and return once it accepts connections."""

    def stop(self, node: NodeSpec, mode: StopMode = StopMode.FAST) -> None:
        """Stop the node; a node that is not running is left alone."""

    def is_running(self, node: NodeSpec) -> bool:
        """True while the node's server process runs."""

    def reload(self, node: NodeSpec) -> None:
        """Make the running node read its configuration and certificates again (SIGHUP, as
        ``pg_ctl reload``): no restart, connections stay. Needs no connection to the node, so
        it works while the node serves a certificate its clients no longer trust."""

    def rejoin(self, node: NodeSpec, primary: NodeSpec, *, reclone: bool = False) -> str:
        """Make the stopped node a replica of ``primary`` (runs rejoin-node.sh); ``reclone``
        takes a fresh base backup without trying pg_rewind."""

    def fence(self, node: NodeSpec) -> None:
        """Make the stopped node unable to start writable."""

    def controldata(self, node: NodeSpec) -> dict[str, str]:
        """pg_controldata of the node, as a mapping."""

    def pooler_stats(self, node: NodeSpec) -> PoolerStats | None:
        """The state of the connection pooler in front of the node; None when it has none
        (or it does not answer)."""
