"""pgBackRest as the backup tool of a compose stack (the default one or the HA variant).

The repository is the stack's volume ``backup-repo``, mounted on the same path in every node
container, and every pgBackRest setting is in the nodes' environment (``PGBACKREST_*`` in
docker-compose.yml): the nodes archive with ``pgbackrest archive-push %p`` from the moment
they are primary, and a new primary's ``init-primary.sh`` created the stanza. So replikit
only runs pgBackRest in a node's container, through the compose driver: backups, ``check``
and the WAL rescue after a failover in the primary's, the catalog in any node's (a one-off
container of ``pg0`` when none runs).

Backups are copied from the primary: pgBackRest copies from a standby only when it also
reaches the primary's files and server from where it runs, which across containers takes
its own SSH or TLS protocol (docs/backup.md, "Compose stacks").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from replication.admin import fetchval
from replication.backup.base import (
    LOW_CPU_PRIORITY,
    BackupInfo,
    BackupSource,
    BackupTool,
    BackupType,
    Catalog,
    RestoreTarget,
    segments_to_rescue,
    source_annotations,
)
from replication.backup.pgbackrest import (
    BACKUP_TIMEOUT_SECONDS,
    COMMAND_TIMEOUT_SECONDS,
    WAL_SEGMENT_BYTES,
    read_catalog,
)
from replication.drivers.compose.driver import ComposeDriver
from replication.errors import BadInputError
from replication.probe import choose_primary, read_all
from replication.topology import ArchiveSettings, ClusterState, NodeSpec

HISTORY_MARK = "--- history"


class ContainerPgBackRest(BackupTool):
    name = "pgbackrest"

    def __init__(self, driver: ComposeDriver) -> None:
        super().__init__(driver.state)
        self.driver = driver

    @classmethod
    def configure_new(cls, state: ClusterState, data_dir: Path) -> ArchiveSettings:
        raise BadInputError(
            "A compose stack archives by the settings of its compose file; "
            "start it with 'replikit compose up'."
        )

    def prepare(self) -> None:
        return None  # the repository is a volume compose creates

    def primary_started(self, primary: NodeSpec) -> None:
        return None  # the new primary's init-primary.sh created the stanza

    # running pgBackRest ------------------------------------------------------------------
    def _run(
        self, node: NodeSpec, *args: str, what: str, timeout: float = COMMAND_TIMEOUT_SECONDS
    ) -> str:
        return self.driver.run_in(
            node, ["pgbackrest", *args], what=f"pgbackrest {what} in {node.name}", timeout=timeout
        )

    def _primary(self, doing: str) -> NodeSpec:
        """The node that answers as the primary now (asked over SQL: after a Patroni
        failover the state file may not know yet)."""
        name = choose_primary(asyncio.run(read_all(self.state)))
        if name is None:
            raise BadInputError(
                f"No node of the stack answers as the primary; fail over ('replikit cluster "
                f"failover') or start the stack ('replikit compose up') before {doing}."
            )
        return self.state.node(name)

    def _any_node(self) -> NodeSpec:
        for node in self.state.nodes:
            if self.driver.is_running(node):
                return node
        return self.state.nodes[0]

    # BackupTool --------------------------------------------------------------------------
    def backup(
        self, kind: BackupType, *, source: BackupSource | None = None, low_priority: bool = False
    ) -> tuple[BackupInfo, str]:
        if source is BackupSource.REPLICA:
            raise BadInputError(
                "A compose stack's backups are copied from its primary only (its containers "
                "share the repository, not each other's files); run 'replikit backup' without "
                "--from, or with --from primary."
            )
        primary = self._primary("taking a backup")
        self.driver.run_in(
            primary,
            [
                *(LOW_CPU_PRIORITY if low_priority else ()),
                "pgbackrest",
                f"--type={kind.value}",
                *source_annotations(primary, BackupSource.PRIMARY),
                "backup",
            ],
            what=f"pgbackrest {kind.value} backup in {primary.name}",
            timeout=BACKUP_TIMEOUT_SECONDS,
        )
        return self.catalog().backups[-1], primary.name

    def catalog(self) -> Catalog:
        node = self._any_node()
        return read_catalog(lambda *args, what: self._run(node, *args, what=what))

    def flush(self) -> None:
        primary = self._primary("archiving its current WAL")
        # A transaction with an id writes a commit record: a restore to any moment before it
        # has a commit after its target to stop at.
        fetchval(self.state, primary, "SELECT txid_current()")
        self._run(primary, "check", what="check")

    def primary_changed(self, primary: NodeSpec) -> list[str]:
        listing = self.driver.run_in(
            primary,
            [
                "sh",
                "-c",
                f'ls "$PGDATA/pg_wal"; echo "{HISTORY_MARK}"; '
                'last=$(ls "$PGDATA"/pg_wal/*.history 2>/dev/null | tail -n 1); '
                '[ -z "$last" ] || cat "$last"',
            ],
            what=f"listing the WAL of {primary.name}",
        )
        names, _, history = listing.partition(HISTORY_MARK)
        if not history.strip():
            return []
        catalog = self.catalog()
        rescued = segments_to_rescue(
            wal_files=names.split(),
            history=history,
            archived=catalog.segments,
            segment_bytes=WAL_SEGMENT_BYTES,
            oldest_needed=catalog.backups[0].first_wal if catalog.backups else None,
        )
        for name in rescued:
            self.driver.run_in(
                primary,
                ["sh", "-c", f'exec pgbackrest archive-push "$PGDATA/pg_wal/{name}"'],
                what=f"archive-push of {name} from {primary.name}",
            )
        return rescued

    def restore_node(self, *, backup: BackupInfo, target: RestoreTarget, pgdata: Path) -> None:
        raise BadInputError(
            "A compose stack's backups are restored into a new stack: run 'replikit restore' "
            "with --from naming the stack's data directory."
        )
