"""Patroni agents in the compose HA variant's containers (deploy/compose/ha.yml).

The agents run as their containers' main process and elect, promote and rewind by
themselves; their REST API is not published to this machine. replikit therefore only
observes them (status, over SQL: the node that answers writable is recorded as the primary),
crashes a node's container (``kill``: SIGQUIT to Patroni's PostgreSQL through PID 1, and
Patroni replaces the node) and lags replicas. Everything that would act behind the agents'
back (a promotion, a restart, a stop) is refused in one sentence naming what to do instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from replication.drivers.base import StopMode
from replication.errors import BadInputError
from replication.managers.base import ClusterManager
from replication.probe import NodeStatus, Readings, choose_primary
from replication.topology import save_state

HA_STACK_INSTEAD = {
    "Starting nodes": "use 'replikit compose up --variant ha'.",
    "Stopping the stack": "use 'replikit compose down --variant ha'.",
    "Failover": "crash the leader with 'replikit cluster kill primary' and Patroni promotes "
    "its synchronous standby.",
    "Switchover": "run 'patronictl switchover' in a node container (docs/operations.md, "
    '"Compose HA variant").',
    "Rejoining a node": "start its container again ('docker start'); its agent rewinds it.",
}


def _refuse(action: str) -> NoReturn:
    raise BadInputError(
        f"{action} is left to Patroni on this compose HA stack, whose agents elect and "
        f"promote by themselves; {HA_STACK_INSTEAD[action]}"
    )


class ContainerPatroniManager(ClusterManager):
    """The compose HA stack's agents: observed and crashed, never overruled."""

    promotes_by_itself = True
    experiment_refusal = (
        "The failover experiment does not drive the compose HA stack (its agents are out of "
        "replikit's reach); measure it with 'python -m loadtests.benchmarks.failover --target "
        "compose-ha' "
        "(docs/benchmarks.md)."
    )

    def follow_primary(self) -> None:
        """Record the writable node as the state file's primary: Patroni changes it without
        telling replikit, and ``kill primary`` and the service's URLs read it from there."""
        self._record_primary(choose_primary(Readings.take(self.state).by_name))

    def status(self) -> list[NodeStatus]:
        rows = self.node_rows()
        # The status read itself names the writable node: record it without a second look.
        self._record_primary(next((row.name for row in rows if row.state == "writable"), None))
        return rows

    def _record_primary(self, writable: str | None) -> None:
        if writable is not None and writable != self.state.primary:
            self.state.primary = writable
            save_state(self.data_dir, self.state)

    def build(self) -> None:
        _refuse("Starting nodes")

    def start_all(self) -> list[str]:
        _refuse("Starting nodes")

    def stop_all(self, mode: StopMode = StopMode.FAST) -> None:
        _refuse("Stopping the stack")

    def failover(self, *, to: str | None = None, force: bool = False) -> dict[str, Any]:
        _refuse("Failover")

    def switchover(self, *, to: str | None = None) -> dict[str, Any]:
        _refuse("Switchover")

    def rejoin(self, name: str) -> dict[str, Any]:
        _refuse("Rejoining a node")
