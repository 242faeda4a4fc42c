"""The native manager: replikit's own commands move the primary, and nothing else does.

It builds nodes with the same scripts everywhere (through the driver), starts the primary
before its replicas, and leaves a fenced former primary stopped until ``rejoin`` makes it a
replica: no agent will ever promote or restart anything behind the user's back. Failover,
switchover and rejoin are :mod:`replication.managers.native.roles`.
"""

from __future__ import annotations

from typing import Any

from replication.drivers.base import StopMode
from replication.errors import ClusterTimeoutError, ReplikitError
from replication.managers.base import ClusterManager
from replication.managers.native import roles
from replication.ports import require_free_ports


class NativeManager(ClusterManager):
    archives_wal = True
    serves_tls = True

    def build(self) -> None:
        driver, state = self.driver, self.state
        driver.init_primary(state.primary_node)
        driver.start(state.primary_node)
        self.primary_started()
        for node in state.replicas:
            driver.bootstrap_replica(node, state.primary_node)
            driver.start(node)

    def start_all(self) -> list[str]:
        """Start what is not running: the primary first, then each replica. Fenced former
        primaries are left stopped (they must be rejoined); their names are returned."""
        driver, state = self.driver, self.state
        primary = state.primary_node
        fenced = [n for n in state.nodes if n.name in state.fenced]
        stopped = [
            node for node in state.nodes if node not in fenced and not driver.is_running(node)
        ]
        require_free_ports(node.port for node in stopped)
        if primary in stopped:
            driver.start(primary)
        for node in state.replicas:
            if node in fenced:
                continue
            if not driver.has_data(node):
                driver.bootstrap_replica(node, primary)
            if node in stopped:
                driver.start(node)
        return [node.name for node in fenced if not driver.is_running(node)]

    def stop_all(self, mode: StopMode = StopMode.FAST) -> None:
        # The primary first: a fast shutdown sends every replica the WAL it has not yet
        # received, so replicas stopped afterwards hold everything the primary committed.
        nodes = [self.state.primary_node, *self.state.replicas]
        errors: list[str] = []
        for node in nodes:
            try:
                self.driver.stop(node, mode)
            except ReplikitError as error:
                errors.append(str(error))
        if errors:
            raise ClusterTimeoutError(" ".join(errors))

    def failover(self, *, to: str | None = None, force: bool = False) -> dict[str, Any]:
        result = roles.failover(self, to=to, force=force)
        return {**result, **self.primary_changed()}

    def switchover(self, *, to: str | None = None) -> dict[str, Any]:
        result = roles.switchover(self, to=to)
        return {**result, **self.primary_changed()}

    def rejoin(self, name: str) -> dict[str, Any]:
        return roles.rejoin(self, name)
