"""Cluster operations behind ``replikit cluster``: up, down, status, env.

These functions are what the CLI, the tests and the experiments call, so a test cluster is
built by exactly the code a user runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from replication import patroni
from replication.drivers.base import NodeDriver, StopMode
from replication.drivers.local import LocalDriver
from replication.drivers.patroni import PatroniDriver, ensure_installed
from replication.errors import BadInputError, ClusterTimeoutError, ReplikitError
from replication.pgbin import find_pg_binaries
from replication.ports import require_free_ports
from replication.probe import NodeStatus, cluster_status
from replication.server_user import ServerUser
from replication.topology import (
    ClusterState,
    Manager,
    SyncMode,
    build_state,
    load_state,
    require_state,
    save_state,
    validate_shape,
)

DEFAULT_DATA_DIR = Path(".replikit/cluster")
DEFAULT_REPLICAS = 2
DEFAULT_BASE_PORT = 6432
STREAMING_TIMEOUT_SECONDS = 60.0


@dataclass
class Cluster:
    """A cluster's state file and the driver that runs its nodes."""

    data_dir: Path
    state: ClusterState
    driver: NodeDriver

    @classmethod
    def open(cls, data_dir: Path, pg_bin: str | None = None) -> Cluster:
        """An existing cluster; fails with the command to create one if there is none."""
        data_dir = data_dir.absolute()
        state = require_state(data_dir)
        return cls._with_driver(data_dir, state, pg_bin)

    @classmethod
    def _with_driver(cls, data_dir: Path, state: ClusterState, pg_bin: str | None) -> Cluster:
        if state.driver == "compose":
            from replication.drivers.compose import ComposeDriver

            return cls(data_dir, state, ComposeDriver(state=state))
        binaries = find_pg_binaries(pg_bin or state.pg_bin)
        if binaries.major_version != state.pg_major:
            raise BadInputError(
                f"The cluster in {data_dir} was made with PostgreSQL {state.pg_major} but "
                f"{binaries.directory} holds PostgreSQL {binaries.major_version}; pass --pg-bin "
                f"pointing at PostgreSQL {state.pg_major} programs."
            )
        driver_class = LocalDriver
        if state.manager is Manager.PATRONI:
            driver_class = PatroniDriver
        driver = driver_class(
            data_dir=data_dir, state=state, binaries=binaries, user=ServerUser.detect()
        )
        return cls(data_dir, state, driver)

    @property
    def managed_by_patroni(self) -> bool:
        """Patroni agents that replikit runs and asks itself (``--manager patroni``)."""
        return self.state.manager is Manager.PATRONI and self.state.driver != "compose"

    @property
    def patroni_in_containers(self) -> bool:
        """A compose stack whose node containers are Patroni agents (the HA variant): they
        elect and promote by themselves, out of replikit's reach."""
        return self.state.manager is Manager.PATRONI and self.state.driver == "compose"

    def refuse_under_patroni_containers(self, action: str, instead: str) -> None:
        """Refuse what would fight the HA stack's agents: a promotion, restart or stop made
        behind their back (a second writer, or a node their bootstrap does not expect)."""
        if self.patroni_in_containers:
            raise BadInputError(
                f"{action} is left to Patroni on this compose HA stack, whose agents elect "
                f"and promote by themselves; {instead}"
            )

    def status(self) -> list[NodeStatus]:
        members = {}
        if self.managed_by_patroni:
            found = patroni.driver_of(self).members()
            patroni.follow_leader(self, found)
            members = {member.name: member for member in found}
        rows = asyncio.run(cluster_status(self.state))
        if self.patroni_in_containers:
            self._follow_writable(rows)
        for row in rows:
            if row.role == "down" and not self.driver.is_running(self.state.node(row.name)):
                row.state = "stopped"
            if self.managed_by_patroni:
                member = members.get(row.name)
                row.patroni_role = member.role if member else "absent"
                row.patroni_state = member.state if member else "absent"
        return rows

    def _follow_writable(self, rows: list[NodeStatus]) -> None:
        """Record the writable node as the state file's primary: Patroni changes it without
        telling replikit, and ``kill primary`` and the service's URLs read it from there."""
        writable = next((row.name for row in rows if row.state == "writable"), None)
        if writable is not None and writable != self.state.primary:
            self.state.primary = writable
            save_state(self.data_dir, self.state)

    def start_all(self) -> list[str]:
        """Start what is not running: the primary first, then each replica. Fenced former
        primaries are left stopped (they must be rejoined); their names are returned."""
        self.refuse_under_patroni_containers(
            "Starting nodes", "use 'replikit compose up --variant ha'."
        )
        if self.managed_by_patroni:
            patroni.start_all(self)
            return []
        primary = self.state.primary_node
        fenced = [n for n in self.state.nodes if n.name in self.state.fenced]
        stopped = [
            node
            for node in self.state.nodes
            if node not in fenced and not self.driver.is_running(node)
        ]
        require_free_ports(node.port for node in stopped)
        if primary in stopped:
            self.driver.start(primary)
        for node in self.state.replicas:
            if node in fenced:
                continue
            if not self.driver.has_data(node):
                self.driver.bootstrap_replica(node, primary)
            if node in stopped:
                self.driver.start(node)
        return [node.name for node in fenced if not self.driver.is_running(node)]

    def stop_all(self, mode: StopMode = StopMode.FAST) -> None:
        self.refuse_under_patroni_containers(
            "Stopping the stack", "use 'replikit compose down --variant ha'."
        )
        if self.managed_by_patroni:
            patroni.stop_all(self)
            return
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

    def _settled(self, row: NodeStatus) -> bool:
        if row.name == self.state.primary:
            return row.role == "primary"
        if row.name in self.state.fenced:
            return True
        synchronous = self.state.sync is not SyncMode.OFF
        return row.state == "streaming" and (not synchronous or row.sync_state != "async")

    def wait_streaming(self, timeout: float = STREAMING_TIMEOUT_SECONDS) -> list[NodeStatus]:
        """Poll until every replica streams from the primary; fail naming the laggards."""
        if self.managed_by_patroni:
            patroni.wait_settled(self)
            return self.status()
        deadline = time.monotonic() + timeout
        while True:
            rows = asyncio.run(cluster_status(self.state))
            waiting = [row.name for row in rows if not self._settled(row)]
            if not waiting:
                return rows
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(
                    f"Replicas {', '.join(waiting)} were not streaming after {timeout:.0f} s; "
                    f"see their logs in {self.data_dir / 'logs'}."
                )
            time.sleep(0.1)


def service_urls(state: ClusterState) -> dict[str, str]:
    """The service's database settings for this cluster; the primary is the recorded one."""
    return {
        "REPLIKIT_PRIMARY_URL": state.app_url(state.primary_node),
        "REPLIKIT_REPLICA_URLS": ",".join(state.app_url(node) for node in state.replicas),
    }


def migration_credentials(state: ClusterState) -> dict[str, str]:
    """The role ``replikit migrate`` logs in as: the owner of the schema, never the service's
    role (which may not create or alter tables)."""
    user, password = state.migration_credentials
    return {"REPLIKIT_MIGRATION_USER": user, "REPLIKIT_MIGRATION_PASSWORD": password}


def env_lines(state: ClusterState) -> list[str]:
    """``export`` lines of :func:`service_urls` and :func:`migration_credentials`, for
    ``eval "$(replikit cluster env)"``; ``replikit serve`` ignores the migration ones."""
    values = {**service_urls(state), **migration_credentials(state)}
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def _check_matches(
    state: ClusterState,
    data_dir: Path,
    *,
    replicas: int | None,
    sync: SyncMode | None,
    base_port: int | None,
    manager: Manager | None = None,
) -> None:
    if manager is not None and manager != state.manager:
        raise BadInputError(
            f"The cluster in {data_dir} is managed by {state.manager.value}; "
            f"run 'replikit cluster down --purge' first to change it."
        )
    existing_replicas = len(state.nodes) - 1
    if replicas is not None and replicas != existing_replicas:
        raise BadInputError(
            f"The cluster in {data_dir} has {existing_replicas} replicas, not {replicas}; "
            f"run 'replikit cluster down --purge' first to build a different shape."
        )
    if sync is not None and sync != state.sync:
        raise BadInputError(
            f"The cluster in {data_dir} was built with --sync {state.sync.value}; "
            f"run 'replikit cluster down --purge' first to change it."
        )
    if base_port is not None and base_port != state.base_port:
        raise BadInputError(
            f"The cluster in {data_dir} uses base port {state.base_port}; "
            f"run 'replikit cluster down --purge' first to move it."
        )


def cluster_up(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    replicas: int | None = None,
    sync: SyncMode | None = None,
    base_port: int | None = None,
    pg_bin: str | None = None,
    wal_keep_size: str = "256MB",
    manager: Manager | None = None,
) -> tuple[Cluster, list[NodeStatus]]:
    """Create, restart or just report the cluster in ``data_dir``; idempotent.

    All checks run before anything is written. A new cluster that fails half-way is stopped
    and removed, so the next ``up`` starts clean.
    """
    data_dir = data_dir.absolute()
    state = load_state(data_dir)
    if state is not None:
        _check_matches(
            state, data_dir, replicas=replicas, sync=sync, base_port=base_port, manager=manager
        )
        cluster = Cluster._with_driver(data_dir, state, pg_bin)
        cluster.driver.prepare()
        cluster.start_all()
        cluster.wait_streaming()
        return cluster, cluster.status()

    replica_count = DEFAULT_REPLICAS if replicas is None else replicas
    first_port = DEFAULT_BASE_PORT if base_port is None else base_port
    validate_shape(replicas=replica_count, base_port=first_port)
    binaries = find_pg_binaries(pg_bin)
    user = ServerUser.detect()
    user.require_reachable(data_dir)
    require_free_ports(range(first_port, first_port + replica_count + 1))
    state = build_state(
        replicas=replica_count,
        sync=sync or SyncMode.OFF,
        base_port=first_port,
        pg_bin=binaries.directory,
        pg_major=binaries.major_version,
        wal_keep_size=wal_keep_size,
    )
    created_dir = not data_dir.exists()
    driver: NodeDriver
    if manager is Manager.PATRONI:
        state.manager = Manager.PATRONI
        state.patroni = patroni.new_settings(state, ensure_installed())
        driver = PatroniDriver(data_dir=data_dir, state=state, binaries=binaries, user=user)
    else:
        driver = LocalDriver(data_dir=data_dir, state=state, binaries=binaries, user=user)
    cluster = Cluster(data_dir, state, driver)
    try:
        cluster.driver.prepare()
        save_state(data_dir, state)
        if cluster.managed_by_patroni:
            patroni.build(cluster)
        else:
            _build_nodes(cluster)
        return cluster, cluster.wait_streaming()
    except BaseException:
        _discard_new_cluster(cluster, remove_dir=created_dir)
        raise


def _build_nodes(cluster: Cluster) -> None:
    driver, state = cluster.driver, cluster.state
    driver.init_primary(state.primary_node)
    driver.start(state.primary_node)
    for node in state.replicas:
        driver.bootstrap_replica(node, state.primary_node)
        driver.start(node)


def _discard_new_cluster(cluster: Cluster, *, remove_dir: bool) -> None:
    for node in cluster.state.nodes:
        with contextlib.suppress(ReplikitError):
            cluster.driver.stop(node, StopMode.IMMEDIATE)
    if isinstance(cluster.driver, PatroniDriver):
        cluster.driver.stop_etcd()
    if remove_dir:
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
    else:
        for child in cluster.data_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def cluster_down(data_dir: Path = DEFAULT_DATA_DIR, *, purge: bool = False) -> bool:
    """Stop every node (fast shutdown); with ``purge`` also delete the data dir.

    Returns False when there was no cluster to stop. A directory that holds something other
    than a cluster is never deleted.
    """
    data_dir = data_dir.absolute()
    if load_state(data_dir) is None:
        return False
    cluster = Cluster.open(data_dir)
    cluster.stop_all()
    if purge:
        shutil.rmtree(data_dir)
    return True
