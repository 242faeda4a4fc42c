"""Faults and observations on the compose HA variant (Patroni + etcd), for tests and benchmarks.

Nothing here fails over: Patroni does. This module only injects the faults a real cluster
meets (a node's container killed, a node cut off from its peers), undoes them, and reads what
the nodes say about themselves over SQL through their published ports: who is out of
recovery, on which timeline, and where each timeline forked (its .history file).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from replication.admin import admin_connect
from replication.compose.attach import compose_cluster_state
from replication.compose.env import read_env
from replication.compose.stack import ComposeStack, Variant
from replication.errors import BadInputError, ClusterTimeoutError, NodeCommandError
from replication.managers.patroni.config import CONTAINER_AGENT_CONFIG
from replication.probe import NodeReading, read_all
from replication.topology import ClusterState, SyncMode
from service.routing.lsn import parse_lsn

PEER_NETWORK = "peers"
COMPOSE_NETWORK_LABEL = "com.docker.compose.network"
NODE_NAMES = ("pg0", "pg1", "pg2")


@dataclass(frozen=True)
class Fork:
    """One line of a timeline history file: ``timeline`` ended at ``lsn``, where the next
    timeline began."""

    timeline: int
    lsn: int


def parse_history(text: str) -> list[Fork]:
    """The forks in a ``0000000N.history`` file (``parent_tli<TAB>switch_lsn<TAB>reason``)."""
    forks = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            forks.append(Fork(timeline=int(fields[0]), lsn=parse_lsn(fields[1])))
    return forks


def _docker(*args: str, what: str, timeout: float = 60) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise NodeCommandError(f"{what} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


class HaStack:
    """An HA compose stack that is up: its nodes' containers, readings and faults."""

    def __init__(self, stack: ComposeStack) -> None:
        if stack.variant is not Variant.HA:
            raise BadInputError("Faults on Patroni nodes need the HA variant (--variant ha).")
        self.stack = stack
        self.state: ClusterState = compose_cluster_state(
            stack.file, stack.env_file, stack.project_name
        )
        # deploy/compose/ha.yml's default, where docker-compose.yml's is off.
        self.state.sync = SyncMode(read_env(stack.env_file).get("REPLIKIT_SYNC_MODE") or "on")
        self._containers: dict[str, str] = {}

    def container(self, node: str) -> str:
        if node not in self._containers:
            names = [c.name for c in self.stack.containers() if c.service == node]
            if not names:
                raise BadInputError(f"The stack has no {node} container.")
            self._containers[node] = names[0]
        return self._containers[node]

    # observations ------------------------------------------------------------------------
    def readings(self) -> dict[str, NodeReading | BaseException]:
        return asyncio.run(read_all(self.state))

    def writers(self) -> list[str]:
        """The nodes that answer out of recovery now (a healthy cluster has exactly one)."""
        return sorted(
            name
            for name, reading in self.readings().items()
            if isinstance(reading, NodeReading) and not reading.in_recovery
        )

    def settled(self) -> str | None:
        """The leader when the cluster is whole: one writer, both other nodes streaming from
        it, one of them its synchronous standby when sync mode is on; else None."""
        readings = self.readings()
        writers = [
            name for name, r in readings.items() if isinstance(r, NodeReading) and not r.in_recovery
        ]
        if len(writers) != 1:
            return None
        leader = readings[writers[0]]
        assert isinstance(leader, NodeReading)
        others = [name for name in readings if name != writers[0]]
        streaming = [
            name for name in others if leader.replication.get(name, {}).get("state") == "streaming"
        ]
        synchronous = [
            name for name in others if leader.replication.get(name, {}).get("sync_state") == "sync"
        ]
        if len(streaming) != len(others):
            return None
        if self.state.sync.value != "off" and not synchronous:
            return None
        return writers[0]

    def wait_settled(self, timeout: float = 120.0) -> str:
        """Wait until :meth:`settled` names a leader and every container is healthy."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.settled()
            if leader is not None:
                states = self.stack.containers()
                if all(s.ready for s in states if s.service in NODE_NAMES):
                    return leader
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"The HA cluster was not whole within {timeout:.0f} s (writers: "
                    f"{self.writers() or 'none'})."
                )
            time.sleep(0.5)

    def wait_writer(self, *, other_than: str, timeout: float = 90.0) -> str:
        """Wait until a node other than ``other_than`` answers out of recovery."""
        deadline = time.monotonic() + timeout
        while True:
            found = [name for name in self.writers() if name != other_than]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"No node replaced {other_than} as the writer within {timeout:.0f} s."
                )
            time.sleep(0.2)

    def timeline(self, node: str) -> int | None:
        reading = self.readings().get(node)
        return reading.timeline if isinstance(reading, NodeReading) else None

    def history(self, node: str, timeline: int | None) -> list[Fork]:
        """The forks recorded in ``node``'s history file of ``timeline`` (read over SQL)."""
        if timeline is None or timeline < 2:
            return []
        spec = self.state.node(node)

        async def read() -> str:
            connection = await admin_connect(self.state, spec)
            try:
                return str(
                    await connection.fetchval(
                        "SELECT pg_read_file('pg_wal/' || $1 || '.history')", f"{timeline:08X}"
                    )
                )
            finally:
                await connection.close()

        return parse_history(asyncio.run(read()))

    # faults ------------------------------------------------------------------------------
    def crash(self, node: str) -> None:
        """The node's machine is lost: its container (agent and PostgreSQL) gets SIGKILL."""
        _docker("kill", "--signal", "KILL", self.container(node), what=f"killing {node}")

    def start(self, node: str) -> None:
        """Start a stopped node's container again; its agent rejoins it (pg_rewind)."""
        _docker("start", self.container(node), what=f"starting {node}")

    def patronictl(self, node: str, *args: str) -> str:
        """Patroni's own tool in ``node``'s container, on the agent's file (it carries the REST
        API's credentials): what a person runs for a planned switchover on this variant."""
        return _docker(
            "exec", self.container(node), "patronictl", "-c", CONTAINER_AGENT_CONFIG, *args,
            what=f"patronictl {' '.join(args)}",
        )  # fmt: skip

    def _peer_network(self, node: str) -> tuple[str, list[str]]:
        """The peer network's name and this container's aliases on it."""
        inspected = json.loads(_docker("inspect", self.container(node), what=f"inspecting {node}"))[
            0
        ]
        for name, network in (inspected["NetworkSettings"]["Networks"] or {}).items():
            if name.endswith(f"_{PEER_NETWORK}"):
                return name, list(network.get("Aliases") or [])
        raise BadInputError(f"{node} is not on the {PEER_NETWORK} network.")

    def partition(self, node: str) -> list[str]:
        """Cut ``node`` off the peer network (etcd, the other agents, replication); its
        clients still reach it. Returns its aliases there, for :meth:`reconnect`."""
        network, aliases = self._peer_network(node)
        _docker("network", "disconnect", network, self.container(node), what="the partition")
        return aliases

    def reconnect(self, node: str, aliases: list[str]) -> None:
        network = self.peer_network_name()
        flags = [flag for alias in aliases for flag in ("--alias", alias)]
        _docker(
            "network", "connect", *flags, network, self.container(node), what="the reconnection"
        )

    def peer_network_name(self) -> str:
        """The project's peer network (compose names it ``<project>_peers``)."""
        listed = _docker(
            "network", "ls", "--format", "{{.Name}}",
            "--filter", f"label=com.docker.compose.project={self.stack.project_name}",
            "--filter", f"label={COMPOSE_NETWORK_LABEL}={PEER_NETWORK}",
            what="listing networks",
        ).split()  # fmt: skip
        if len(listed) != 1:
            raise BadInputError(f"Expected one {PEER_NETWORK} network, found {listed}.")
        return listed[0]

    def wait_rejoined(self, node: str, timeout: float = 120.0) -> int | None:
        """Wait until ``node`` streams from the leader again; returns its timeline."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.settled()
            reading = self.readings().get(node)
            if leader is not None and leader != node and isinstance(reading, NodeReading):
                return reading.timeline
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(f"{node} did not rejoin within {timeout:.0f} s.")
            time.sleep(0.5)


def ha_stack(root: Path, env_file: Path, project_name: str | None) -> HaStack:
    return HaStack(
        ComposeStack(root=root, env_file=env_file, project_name=project_name, variant=Variant.HA)
    )
