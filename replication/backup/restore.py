"""Point-in-time recovery into a NEW cluster, never in place.

The source cluster's tool restores a backup into the new cluster's ``pg0`` and sets it to
recover from the source's archive up to the target, then promote. The new cluster has the
source's names and passwords (so the service only needs new ports), its own ports, and its
own archive: the restored primary gets the new cluster's node and archive settings before it
starts, its recovery settings are cleared once it is promoted, and the replicas are built from
it as ``cluster up`` builds them. The source cluster is only read (and, when its primary runs,
asked to archive its current WAL so that every moment up to now can be reached).

Choosing the backup and refusing a target outside the window is the same for every cluster;
building the new one depends on where the source's nodes run (:data:`NEW_CLUSTER`): local
processes here, a new compose stack in :mod:`.stack_restore`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from replication.admin import execute, fetchval
from replication.backup.base import (
    BackupInfo,
    BackupTool,
    Catalog,
    RecoveryWindow,
    RestoredCluster,
    RestoreRequest,
    RestoreTarget,
    TargetKind,
)
from replication.backup.stack_restore import restore_stack
from replication.backup.tools import TOOLS
from replication.cluster import Cluster, discard_new_cluster
from replication.errors import BadInputError, ClusterTimeoutError, ReplikitError
from replication.ports import find_free_port_range, require_free_ports
from replication.server_user import ServerUser
from replication.steps import StepClock
from replication.tls.provision import copy_to_new_cluster
from replication.topology import ClusterState, NodeSpec, load_state, save_state, validate_shape

PROMOTION_TIMEOUT_SECONDS = 600.0


def _outside(target: RestoreTarget, window: RecoveryWindow) -> str | None:
    """'before' or 'after' the window, or None when the target lies inside it."""
    if target.time is not None:
        if target.time < window.earliest_time:
            return "before"
        return "after" if target.time > window.latest_time else None
    if target.lsn is not None:
        if target.lsn < window.earliest_lsn:
            return "before"
        return "after" if target.lsn > window.latest_lsn else None
    return None


def _catalog_reaching(tool: BackupTool, target: RestoreTarget) -> Catalog:
    """The catalog, once the source's current WAL is archived if the target is the latest or
    lies past the newest archived WAL, and the source's primary still runs."""
    catalog = tool.catalog()
    window = catalog.window
    if window is not None and (
        target.kind is TargetKind.LATEST or _outside(target, window) == "after"
    ):
        with contextlib.suppress(ReplikitError):
            tool.flush()
            catalog = tool.catalog()
    return catalog


def choose_backup(catalog: Catalog, target: RestoreTarget) -> BackupInfo:
    """The newest backup that ends before the target; refuses a target outside the window."""
    window = catalog.window
    if window is None:
        raise BadInputError(
            "The cluster has no backup to restore from; take one with 'replikit backup'."
        )
    if _outside(target, window):
        raise BadInputError(
            f"{target.describe()} is outside the recoverable window, {window.describe()}; "
            f"choose a point inside it ('replikit backup list' shows it) or --latest."
        )
    if target.kind is TargetKind.TIME and target.time is not None:
        stamp = target.time
        return [b for b in catalog.backups if b.stopped_at <= stamp][-1]
    if target.kind is TargetKind.LSN and target.lsn is not None:
        position = target.lsn
        return [b for b in catalog.backups if b.stop_lsn <= position][-1]
    return catalog.backups[-1]


def _new_state(source: ClusterState, new_dir: Path, base_port: int | None) -> ClusterState:
    count = len(source.nodes)
    if base_port is None:
        base_port = find_free_port_range(count, start=source.base_port + count)
    validate_shape(replicas=count - 1, base_port=base_port)
    require_free_ports(range(base_port, base_port + count))
    nodes = [
        NodeSpec(name=node.name, port=base_port + index) for index, node in enumerate(source.nodes)
    ]
    state = source.model_copy(
        deep=True,
        update={
            "created_at": datetime.now(UTC),
            "base_port": base_port,
            "nodes": nodes,
            "primary": nodes[0].name,
            "fenced": [],
            "previous_primary": None,
            "service": None,
        },
    )
    assert source.archive is not None
    state.archive = TOOLS[source.archive.tool].configure_new(state, new_dir)
    return state


def _wait_promoted(cluster: Cluster, primary: NodeSpec, log: Path) -> None:
    deadline = time.monotonic() + PROMOTION_TIMEOUT_SECONDS
    while True:
        if not cluster.driver.is_running(primary):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
            raise ClusterTimeoutError(
                f"The restored primary stopped during recovery (the target may lie past the "
                f"archived WAL: try --latest); its log {log} ends:\n{tail}"
            )
        with contextlib.suppress(OSError, ReplikitError):
            if fetchval(cluster.state, primary, "SELECT pg_is_in_recovery()") is False:
                return
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"The restored primary was still recovering after {PROMOTION_TIMEOUT_SECONDS:.0f}"
                f" s; see {log}."
            )
        time.sleep(0.2)


def restore_cluster(
    *,
    source: Path,
    new_dir: Path,
    target: RestoreTarget,
    base_port: int | None = None,
    project: str | None = None,
) -> RestoredCluster:
    """Build a new cluster in ``new_dir`` from the source's backups, recovered to ``target``,
    of the same kind as the source: local nodes, or a new compose stack (``project``)."""
    clock = StepClock("restore")
    origin = Cluster.open(source)
    tool = origin.manager.backups()
    new_dir = new_dir.absolute()
    if new_dir == origin.data_dir:
        raise BadInputError(
            "A restore builds a new cluster and never overwrites its source; give a new --data-dir."
        )
    if load_state(new_dir) is not None:
        raise BadInputError(
            f"{new_dir} already holds a cluster; a restore builds a new one: give a new --data-dir."
        )
    backup = choose_backup(_catalog_reaching(tool, target), target)
    clock.step("chose_backup", backup=backup.label, target=target.describe())
    request = RestoreRequest(
        source=origin.state,
        backup=backup,
        target=target,
        new_dir=new_dir,
        base_port=base_port,
        project=project,
        clock=clock,
    )
    return NEW_CLUSTER[origin.state.driver](request, tool)


def _restore_local(request: RestoreRequest, tool: BackupTool) -> RestoredCluster:
    """Local nodes: the backup restored into the new pg0, recovered and promoted, then the
    replicas built from it as ``cluster up`` builds them."""
    if request.project is not None:
        raise BadInputError(
            "--project names a new compose stack, and the source is a local cluster; drop it."
        )
    new_dir, target, clock = request.new_dir, request.target, request.clock
    ServerUser.detect().require_reachable(new_dir)
    state = _new_state(request.source, new_dir, request.base_port)
    created = not new_dir.exists()
    cluster = Cluster.assemble(new_dir, state)
    primary = state.primary_node
    try:
        copy_to_new_cluster(state, new_dir)
        cluster.manager.prepare()
        save_state(new_dir, state)
        driver = cluster.driver
        pgdata = new_dir / primary.name
        tool.restore_node(backup=request.backup, target=target, pgdata=pgdata)
        clock.step("restored_files", node=primary.name)
        driver.init_primary(primary)  # the new ports, sockets and archive
        driver.start(primary)
        _wait_promoted(cluster, primary, new_dir / "logs" / f"{primary.name}.log")
        clock.step("recovered_and_promoted", node=primary.name)
        # What recovery needed (and a standby's settings, when the backup came from one)
        # must not reach the new replicas' copies.
        execute(state, primary, "ALTER SYSTEM RESET ALL", "SELECT pg_reload_conf()")
        cluster.manager.primary_started()
        clock.step("archiving")
        for node in state.replicas:
            driver.bootstrap_replica(node, primary)
            driver.start(node)
        cluster.wait_streaming()
        clock.step("replicas_streaming", nodes=[node.name for node in state.replicas])
    except BaseException:
        discard_new_cluster(cluster, remove_dir=created)
        raise
    return RestoredCluster.of(
        request,
        primary_port=primary.port,
        replicas=len(state.replicas),
        next_steps=(
            f'Point the service at it: eval "$(replikit cluster env --data-dir {new_dir})" '
            f"and restart 'replikit serve'; take its first backup with 'replikit backup "
            f"--data-dir {new_dir}'."
        ),
    )


# A restore builds a new cluster where the source's nodes run (the state file's ``driver``).
NEW_CLUSTER: dict[str, Callable[[RestoreRequest, BackupTool], RestoredCluster]] = {
    "local": _restore_local,
    "compose": restore_stack,
}
