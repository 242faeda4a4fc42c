"""A cluster is one driver (where its nodes run) and one manager (who moves the primary).

This module is the composition root: the one place that knows every driver and every
manager, and pairs them from the state file (``driver`` and ``manager``). Everything else
asks the cluster's manager (:class:`replication.managers.base.ClusterManager`) and never which
one it is. The functions here are what the CLI, the tests and the experiments call, so a test
cluster is built and driven by exactly the code a user runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replication.backup.containers import ContainerPgBackRest
from replication.backup.tools import DEFAULT_TOOL, TOOLS, backup_tool
from replication.drivers.base import NodeDriver, StopMode
from replication.drivers.compose.driver import ComposeDriver
from replication.drivers.local.driver import LocalDriver
from replication.errors import BadInputError
from replication.lag import LagChange
from replication.managers.base import STREAMING_TIMEOUT_SECONDS, ClusterManager
from replication.managers.native.manager import NativeManager
from replication.managers.patroni.agents import LocalAgents
from replication.managers.patroni.containers import ContainerPatroniManager
from replication.managers.patroni.local import LocalPatroniManager
from replication.pgbin import find_pg_binaries
from replication.ports import require_free_ports
from replication.probe import NodeStatus
from replication.server_user import ServerUser
from replication.tls.authority import DEFAULT_DAYS
from replication.tls.check import check_layout
from replication.tls.provision import (
    adopt_brought_ca,
    cluster_layout,
    copy_layout,
    reissue,
    source_hint,
)
from replication.tls.provision import configure_new as configure_tls
from replication.topology import (
    DEFAULT_MAX_SLOT_WAL_KEEP_SIZE,
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


def _local_driver(data_dir: Path, state: ClusterState, pg_bin: str | None) -> LocalDriver:
    binaries = find_pg_binaries(pg_bin or state.pg_bin)
    if binaries.major_version != state.pg_major:
        raise BadInputError(
            f"The cluster in {data_dir} was made with PostgreSQL {state.pg_major} but "
            f"{binaries.directory} holds PostgreSQL {binaries.major_version}; pass --pg-bin "
            f"pointing at PostgreSQL {state.pg_major} programs."
        )
    return LocalDriver(data_dir=data_dir, state=state, binaries=binaries, user=ServerUser.detect())


def _native_local(data_dir: Path, state: ClusterState, pg_bin: str | None) -> ClusterManager:
    driver = _local_driver(data_dir, state, pg_bin)
    manager = NativeManager(data_dir=data_dir, state=state, driver=driver)
    manager.archive = backup_tool(driver)
    return manager


def _native_compose(data_dir: Path, state: ClusterState, pg_bin: str | None) -> ClusterManager:
    driver = ComposeDriver(state=state)
    manager = NativeManager(data_dir=data_dir, state=state, driver=driver)
    manager.archive = ContainerPgBackRest(driver)
    return manager


def _patroni_local(data_dir: Path, state: ClusterState, pg_bin: str | None) -> ClusterManager:
    agents = LocalAgents(_local_driver(data_dir, state, pg_bin))
    return LocalPatroniManager(data_dir=data_dir, state=state, agents=agents)


def _patroni_compose(data_dir: Path, state: ClusterState, pg_bin: str | None) -> ClusterManager:
    driver = ComposeDriver(state=state)
    manager = ContainerPatroniManager(data_dir=data_dir, state=state, driver=driver)
    manager.archive = ContainerPgBackRest(driver)
    return manager


Assembly = Callable[[Path, ClusterState, str | None], ClusterManager]
# (where nodes run, who moves the primary) -> the manager, holding its driver.
ASSEMBLIES: dict[tuple[str, Manager], tuple[type[ClusterManager], Assembly]] = {
    ("local", Manager.NATIVE): (NativeManager, _native_local),
    ("compose", Manager.NATIVE): (NativeManager, _native_compose),
    ("local", Manager.PATRONI): (LocalPatroniManager, _patroni_local),
    ("compose", Manager.PATRONI): (ContainerPatroniManager, _patroni_compose),
}


def manager_class(manager: Manager, driver: str = "local") -> type[ClusterManager]:
    """The manager a cluster of this kind gets, for questions asked before it exists."""
    return ASSEMBLIES[(driver, manager)][0]


def manager_that_promotes_by_itself() -> Manager:
    """The manager kind whose agents fail over with no command (for ``--mode auto``)."""
    return next(kind for kind in Manager if manager_class(kind).promotes_by_itself)


@dataclass
class Cluster:
    """A cluster's state file, the driver that runs its nodes and the manager that moves
    its primary (which holds the same state and driver)."""

    data_dir: Path
    state: ClusterState
    manager: ClusterManager

    @property
    def driver(self) -> NodeDriver:
        return self.manager.driver

    @classmethod
    def open(cls, data_dir: Path, pg_bin: str | None = None) -> Cluster:
        """An existing cluster; fails with the command to create one if there is none."""
        data_dir = data_dir.absolute()
        return cls.assemble(data_dir, require_state(data_dir), pg_bin)

    @classmethod
    def assemble(cls, data_dir: Path, state: ClusterState, pg_bin: str | None = None) -> Cluster:
        _, assembly = ASSEMBLIES[(state.driver, state.manager)]
        return cls(data_dir, state, assembly(data_dir, state, pg_bin))

    def status(self) -> list[NodeStatus]:
        return self.manager.status()

    def start_all(self) -> list[str]:
        return self.manager.start_all()

    def stop_all(self, mode: StopMode = StopMode.FAST) -> None:
        self.manager.stop_all(mode)

    def wait_streaming(self, timeout: float = STREAMING_TIMEOUT_SECONDS) -> list[NodeStatus]:
        """Poll until every replica streams from the primary; fail naming the laggards."""
        return self.manager.wait_settled(timeout)


def _check_matches(
    state: ClusterState,
    data_dir: Path,
    *,
    replicas: int | None,
    sync: SyncMode | None,
    base_port: int | None,
    manager: Manager | None = None,
    archive: bool = False,
    tls: bool | None = None,
    tls_dir: Path | None = None,
) -> None:
    if tls_dir is not None:
        raise BadInputError(
            f"The cluster in {data_dir} exists already; bring new certificates with "
            f"'replikit certs rotate --data-dir {data_dir} --from {tls_dir}'."
        )
    if tls is not None and tls != (state.tls is not None):
        raise BadInputError(
            f"The cluster in {data_dir} was built with --tls "
            f"{'on' if state.tls is not None else 'off'}; run 'replikit cluster down --purge' "
            f"first to rebuild it with --tls {'on' if tls else 'off'}."
        )
    if archive and state.archive is None:
        raise BadInputError(
            f"The cluster in {data_dir} was built without --archive; run 'replikit cluster "
            f"down --purge' first to rebuild it with WAL archiving."
        )
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
    max_slot_wal_keep_size: str = DEFAULT_MAX_SLOT_WAL_KEEP_SIZE,
    manager: Manager | None = None,
    archive: bool = False,
    tls: bool | None = None,
    tls_dir: Path | None = None,
) -> tuple[Cluster, list[NodeStatus]]:
    """Create, restart or just report the cluster in ``data_dir``; idempotent.

    All checks run before anything is written. A new cluster that fails half-way is stopped
    and removed, so the next ``up`` starts clean. ``tls`` None means the manager's default
    (on where it serves TLS); ``tls_dir`` brings the user's own certificates.
    """
    data_dir = data_dir.absolute()
    state = load_state(data_dir)
    if state is not None:
        _check_matches(
            state,
            data_dir,
            replicas=replicas,
            sync=sync,
            base_port=base_port,
            manager=manager,
            archive=archive,
            tls=tls,
            tls_dir=tls_dir,
        )
        cluster = Cluster.assemble(data_dir, state, pg_bin)
        cluster.manager.prepare()
        cluster.start_all()
        cluster.wait_streaming()
        return cluster, cluster.status()

    replica_count = DEFAULT_REPLICAS if replicas is None else replicas
    first_port = DEFAULT_BASE_PORT if base_port is None else base_port
    validate_shape(replicas=replica_count, base_port=first_port)
    binaries = find_pg_binaries(pg_bin)
    ServerUser.detect().require_reachable(data_dir)
    require_free_ports(range(first_port, first_port + replica_count + 1))
    state = build_state(
        replicas=replica_count,
        sync=sync or SyncMode.OFF,
        base_port=first_port,
        pg_bin=binaries.directory,
        pg_major=binaries.major_version,
        wal_keep_size=wal_keep_size,
        max_slot_wal_keep_size=max_slot_wal_keep_size,
    )
    state.manager = manager or Manager.NATIVE
    if archive:
        if not manager_class(state.manager).archives_wal:
            raise BadInputError(
                f"WAL archiving and backups are built for the native manager so far; drop "
                f"--archive or build the cluster with --manager {Manager.NATIVE.value}."
            )
        state.archive = TOOLS[DEFAULT_TOOL].configure_new(state, data_dir)
    manager_class(state.manager).configure_new(state)
    use_tls = _wants_tls(state.manager, tls=tls, tls_dir=tls_dir)
    created_dir = not data_dir.exists()
    cluster = Cluster.assemble(data_dir, state, str(binaries.directory))
    try:
        if use_tls:
            configure_tls(state, data_dir, tls_dir)
        cluster.manager.prepare()
        save_state(data_dir, state)
        cluster.manager.build()
        return cluster, cluster.wait_streaming()
    except BaseException:
        discard_new_cluster(cluster, remove_dir=created_dir)
        raise


def _wants_tls(manager: Manager, *, tls: bool | None, tls_dir: Path | None) -> bool:
    """Whether a new cluster gets TLS: asked for, or its manager's default."""
    serves = manager_class(manager).serves_tls
    if tls_dir is not None and tls is False:
        raise BadInputError("--tls-dir brings certificates for TLS; drop it or --tls off.")
    if (tls or tls_dir is not None) and not serves:
        raise BadInputError(
            f"TLS is built for the native manager's local clusters so far; drop --tls on "
            f"(and --tls-dir) or build the cluster with --manager {Manager.NATIVE.value}."
        )
    if tls_dir is not None and not tls_dir.is_dir():
        raise BadInputError(
            f"--tls-dir {tls_dir} is not a directory; give the one that holds ca.crt."
        )
    return serves if tls is None else tls


def discard_new_cluster(cluster: Cluster, *, remove_dir: bool) -> None:
    """Stop what a half-built cluster started and remove what it wrote."""
    cluster.manager.discard()
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


# The commands by data directory: open the cluster, ask its manager. --------------------------
def kill(
    data_dir: Path, name: str, mode: StopMode = StopMode.IMMEDIATE, *, postgres_only: bool = False
) -> dict[str, Any]:
    return Cluster.open(data_dir).manager.kill(name, mode, postgres_only=postgres_only)


def failover(data_dir: Path, *, to: str | None = None, force: bool = False) -> dict[str, Any]:
    return Cluster.open(data_dir).manager.failover(to=to, force=force)


def switchover(data_dir: Path, *, to: str | None = None) -> dict[str, Any]:
    return Cluster.open(data_dir).manager.switchover(to=to)


def rejoin(data_dir: Path, name: str) -> dict[str, Any]:
    return Cluster.open(data_dir).manager.rejoin(name)


def lag(data_dir: Path, name: str, change: LagChange) -> dict[str, Any]:
    return Cluster.open(data_dir).manager.lag(name, change)


def rotate_certificates(
    data_dir: Path, *, source: Path | None = None, days: int = DEFAULT_DAYS
) -> list[str]:
    """New certificates for every node and the replication role, picked up by a reload:
    issued by the cluster's kit CA, or copied from ``source`` after checking them there.
    Returns the nodes that were reloaded."""
    cluster = Cluster.open(data_dir)
    state = cluster.state
    if state.tls is None:
        raise BadInputError(
            f"The cluster in {cluster.data_dir} was built with --tls off, so it has no "
            f"certificates to rotate; rebuild it with TLS ('replikit cluster down --purge', then "
            f"'replikit cluster up')."
        )
    if source is None:
        reissue(state, cluster.data_dir, days=days)
    else:
        check_layout(cluster_layout(state, source.absolute()), fix=source_hint(source))
        copy_layout(cluster_layout(state, source.absolute()), cluster_layout(state))
        adopt_brought_ca(state)
        save_state(cluster.data_dir, state)
    return cluster.manager.reload_certificates()


def env_lines(data_dir: Path) -> list[str]:
    return Cluster.open(data_dir).manager.env_lines()
