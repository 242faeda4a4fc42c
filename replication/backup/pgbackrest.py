"""pgBackRest as the backup tool of a local cluster.

Layout under the cluster's data directory::

    backup/pgbackrest.conf   the tool's configuration (0600: it holds the passphrase)
    backup/repo/             the repository: backups and archived WAL, zstd-compressed and
                             encrypted with aes-256-cbc
    backup/lock/, spool/     the tool's lock files and queues (never the system-wide ones:
                             an ordinary user cannot write there)
    backup/sockets/          every node's Unix socket (pgBackRest reaches servers only there)
    logs/replikit-*.log      the tool's own logs

Every node archives with the same command (``archive-push`` naming its own data directory as
the server's working directory), so a replica built by a base backup, rewound or re-cloned
archives correctly the moment it is promoted. The configuration lists every node but a fenced
one: the recorded primary as ``pg1``, then the replicas (the one a backup copies from first,
since pgBackRest's ``backup-standby`` takes the first standby it reaches). It is rewritten
from the state file before each command, so it follows failovers without being told; and
pgBackRest asks each server whether it is in recovery, so it finds the primary among them
whatever the order.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
from pathlib import Path
from typing import Any, Protocol

from replication.admin import fetchval
from replication.backup.base import (
    LOW_PRIORITY,
    ArchivedSegment,
    BackupInfo,
    BackupSource,
    BackupTool,
    BackupType,
    Catalog,
    RestoreTarget,
    TargetKind,
    copied_from,
    segments_to_rescue,
    source_annotations,
    utc_from_epoch,
)
from replication.drivers.local.driver import LocalDriver
from replication.errors import BadInputError
from replication.probe import Readings
from replication.topology import ArchiveSettings, ClusterState, NodeSpec
from service.routing.lsn import format_lsn, parse_lsn

STANZA = "replikit"
# init-primary.sh keeps initdb's default WAL segment size.
WAL_SEGMENT_BYTES = 16 * 1024 * 1024
# What a Unix socket path may hold (sun_path is 108 bytes with its terminating NUL).
MAX_SOCKET_PATH = 107
SEGMENT_FILE = re.compile(r"(?:^|/)([0-9A-F]{24})-[0-9a-f]{40}(?:\.\w+)?$")
BACKUP_TIMEOUT_SECONDS = 3600.0
COMMAND_TIMEOUT_SECONDS = 180.0
# Full backups kept (older ones expire with the WAL only they need, after each backup).
RETENTION_FULL = 2


def _binary() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        raise BadInputError(
            "pgbackrest is not installed; install it (apt-get install pgbackrest, or run "
            "'make setup' as root) or build the cluster without --archive."
        )
    return found


def render_config(
    *,
    settings: ArchiveSettings,
    log_dir: Path,
    superuser: str,
    hosts: list[tuple[Path, int]],
    backup_standby: bool,
) -> str:
    """pgbackrest.conf: the repository in [global], the cluster's servers in the stanza
    (``hosts``: data directory and port of the primary first, then the standby to copy from,
    then the other replicas). A backup logs each file it copies, with its path."""
    directory = Path(settings.directory)
    lines = [
        "# Written by replikit before each pgBackRest command; changes here are overwritten.",
        "[global]",
        f"repo1-path={directory / 'repo'}",
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-cipher-pass={settings.cipher_pass}",
        f"repo1-retention-full={RETENTION_FULL}",
        "compress-type=zst",
        "compress-level=3",
        f"lock-path={directory / 'lock'}",
        f"spool-path={directory / 'spool'}",
        f"log-path={log_dir}",
        "log-level-console=warn",
        "log-level-file=info",
        "start-fast=y",
        "process-max=1",
        "archive-timeout=60",
        "",
        "[global:backup]",
        "log-level-file=detail",
        "",
        f"[{STANZA}]",
    ]
    for index, (pgdata, port) in enumerate(hosts, start=1):
        lines += [
            f"pg{index}-path={pgdata}",
            f"pg{index}-port={port}",
            f"pg{index}-socket-path={settings.socket_dir}",
            f"pg{index}-user={superuser}",
        ]
    if backup_standby:
        lines.append("backup-standby=y")
    return "\n".join(lines) + "\n"


def _lsn(text: str) -> int:
    return parse_lsn(text)


def parse_backups(info: list[dict[str, Any]]) -> list[BackupInfo]:
    """The backups of ``pgbackrest info --output=json``, oldest first."""
    backups = []
    for stanza in info:
        for entry in stanza.get("backup", []):
            backups.append(
                BackupInfo(
                    label=entry["label"],
                    type=BackupType(entry["type"]),
                    started_at=utc_from_epoch(entry["timestamp"]["start"]),
                    stopped_at=utc_from_epoch(entry["timestamp"]["stop"]),
                    start_lsn=_lsn(entry["lsn"]["start"]),
                    stop_lsn=_lsn(entry["lsn"]["stop"]),
                    size_bytes=int(entry["info"]["size"]),
                    repository_bytes=int(entry["info"]["repository"]["delta"]),
                    first_wal=entry["archive"]["start"],
                    copied_from=copied_from(entry.get("annotation")),
                )
            )
    return sorted(backups, key=lambda backup: backup.stopped_at)


def parse_segments(listing: dict[str, dict[str, Any]]) -> list[ArchivedSegment]:
    """The complete WAL segments in a ``repo-ls --recurse --output=json`` of the archive
    (history files, backup labels and ``.partial`` segments are not segments)."""
    segments = []
    for path, entry in listing.items():
        match = SEGMENT_FILE.search(path)
        if match and entry.get("type") == "file":
            segments.append(ArchivedSegment(match.group(1), utc_from_epoch(entry["time"])))
    return sorted(segments, key=lambda segment: segment.name)


class PgBackRestCommand(Protocol):
    """Runs pgBackRest with these arguments where the repository is; returns its output."""

    def __call__(self, *args: str, what: str) -> str: ...


def read_catalog(run: PgBackRestCommand) -> Catalog:
    """The backups (``info``) and archived WAL (``repo-ls`` of the archive) of the stanza."""
    info = json.loads(run(f"--stanza={STANZA}", "--output=json", "info", what="info"))
    listing = json.loads(
        run("--recurse", "--output=json", "repo-ls", f"archive/{STANZA}", what="repo-ls")
    )
    return Catalog(
        backups=parse_backups(info),
        segments=parse_segments(listing),
        segment_bytes=WAL_SEGMENT_BYTES,
    )


class PgBackRest(BackupTool):
    name = "pgbackrest"

    def __init__(self, driver: LocalDriver) -> None:
        if driver.state.archive is None:
            raise BadInputError(
                f"The cluster in {driver.data_dir} was built without WAL archiving; "
                "build one with 'replikit cluster up --archive' to take backups."
            )
        super().__init__(driver.state)
        self.driver = driver
        self.settings: ArchiveSettings = driver.state.archive

    @classmethod
    def configure_new(cls, state: ClusterState, data_dir: Path) -> ArchiveSettings:
        binary = _binary()
        directory = data_dir / "backup"
        socket_dir = directory / "sockets"
        longest = f"{socket_dir}/.s.PGSQL.{state.base_port + len(state.nodes)}"
        if len(longest) > MAX_SOCKET_PATH:
            raise BadInputError(
                f"{data_dir} is too long a path for the nodes' Unix sockets ({longest} passes "
                f"{MAX_SOCKET_PATH} characters); choose a shorter --data-dir."
            )
        command = (
            f"{shlex.quote(binary)} --config={shlex.quote(str(directory / 'pgbackrest.conf'))} "
            f'--stanza={STANZA} --pg1-path="$(pwd)" archive-push %p'
        )
        return ArchiveSettings(
            tool=cls.name,
            directory=str(directory),
            cipher_pass=secrets.token_urlsafe(48),
            archive_command=command,
            socket_dir=str(socket_dir),
        )

    # paths and running -------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return Path(self.settings.directory)

    @property
    def config_file(self) -> Path:
        return self.directory / "pgbackrest.conf"

    def prepare(self) -> None:
        user = self.driver.user
        user.make_dir(self.directory, mode=0o750)
        for name in ("repo", "lock", "spool", "sockets"):
            user.make_dir(self.directory / name, mode=0o750)
        self._write_config()

    def _write_config(self, *, standby: NodeSpec | None = None) -> None:
        """The configuration naming every node but fenced ones, the recorded primary first,
        then ``standby`` (copied from when given, with ``backup-standby``), then the rest."""
        primary = self.state.primary_node
        others = [
            node
            for node in self.state.replicas
            if node.name not in self.state.fenced and node != standby
        ]
        nodes = [primary, *([standby] if standby else []), *others]
        text = render_config(
            settings=self.settings,
            log_dir=self.driver.data_dir / "logs",
            superuser=self.state.superuser,
            hosts=[(self.driver.pgdata(node), node.port) for node in nodes],
            backup_standby=standby is not None,
        )
        tmp = self.config_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        user = self.driver.user
        if user.switch:
            os.chown(tmp, user.uid, user.gid)
        os.replace(tmp, self.config_file)

    def _run(
        self,
        *args: str,
        what: str,
        timeout: float = COMMAND_TIMEOUT_SECONDS,
        low_priority: bool = False,
    ) -> str:
        return self.driver.user.run(
            [
                *(LOW_PRIORITY if low_priority else ()),
                _binary(),
                f"--config={self.config_file}",
                *args,
            ],
            cwd=self.driver.data_dir,
            what=f"pgbackrest {what}",
            timeout=timeout,
        ).stdout

    # BackupTool --------------------------------------------------------------------------
    def primary_started(self, primary: NodeSpec) -> None:
        self._write_config()
        self._run(f"--stanza={STANZA}", "stanza-create", what="stanza-create")
        self._run(f"--stanza={STANZA}", "check", what="check")

    def primary_changed(self, primary: NodeSpec) -> list[str]:
        wal = self.driver.pgdata(primary) / "pg_wal"
        histories = sorted(wal.glob("*.history"))
        if not histories:
            return []
        self._write_config()
        catalog = self.catalog()
        rescued = segments_to_rescue(
            wal_files=[path.name for path in wal.iterdir()],
            history=histories[-1].read_text(),
            archived=catalog.segments,
            segment_bytes=WAL_SEGMENT_BYTES,
            oldest_needed=catalog.backups[0].first_wal if catalog.backups else None,
        )
        for name in rescued:
            self._run(
                f"--stanza={STANZA}",
                f"--pg1-path={self.driver.pgdata(primary)}",
                "archive-push",
                str(wal / name),
                what=f"archive-push of {name} from {primary.name}",
            )
        return rescued

    def _streaming_replicas(self) -> list[NodeSpec]:
        """The replicas that run, are not fenced, and stream from the primary now."""
        readings = Readings.take(self.state)
        streaming = readings.replicas(self.state, exclude={self.state.primary, *self.state.fenced})
        return [
            node
            for node in self.state.replicas
            if (reading := streaming.get(node.name)) is not None
            and reading.receiver_status == "streaming"
        ]

    def _standby(self, source: BackupSource | None) -> NodeSpec | None:
        """The replica to copy a backup from, or None for the primary."""
        if source is BackupSource.PRIMARY:
            return None
        streaming = self._streaming_replicas()
        if streaming:
            return streaming[0]
        if source is BackupSource.REPLICA:
            raise BadInputError(
                "No replica of this cluster is streaming from the primary, so the backup "
                "cannot be copied from one; start or rejoin a replica ('replikit cluster "
                "status' shows them) or run 'replikit backup --from primary'."
            )
        return None

    def _running_primary(self, doing: str) -> NodeSpec:
        primary = self.state.primary_node
        if not self.driver.is_running(primary):
            raise BadInputError(
                f"The primary {primary.name} is not running; start it ('replikit cluster up') "
                f"or fail over ('replikit cluster failover') before {doing}."
            )
        return primary

    def backup(
        self, kind: BackupType, *, source: BackupSource | None = None, low_priority: bool = False
    ) -> tuple[BackupInfo, str]:
        primary = self._running_primary("taking a backup")
        standby = self._standby(source)
        copied = standby or primary
        role = BackupSource.PRIMARY if standby is None else BackupSource.REPLICA
        self._write_config(standby=standby)
        try:
            self._run(
                f"--stanza={STANZA}",
                f"--type={kind.value}",
                *source_annotations(copied, role),
                "backup",
                what=f"{kind.value} backup from {copied.name}",
                timeout=BACKUP_TIMEOUT_SECONDS,
                low_priority=low_priority,
            )
        finally:
            self._write_config()
        newest = self.catalog().backups[-1]
        return newest, copied.name

    def catalog(self) -> Catalog:
        return read_catalog(self._run)

    def flush(self) -> None:
        primary = self._running_primary("archiving its current WAL")
        # A transaction with an id writes a commit record: a restore to any moment before it
        # has a commit after its target to stop at.
        fetchval(self.state, primary, "SELECT txid_current()")
        self._write_config()
        self._run(f"--stanza={STANZA}", "check", what="check")

    def restore_node(self, *, backup: BackupInfo, target: RestoreTarget, pgdata: Path) -> None:
        recovery = {
            TargetKind.LATEST: ["--type=default"],
            TargetKind.TIME: [
                "--type=time",
                f"--target={target.time.isoformat(sep=' ') if target.time else ''}",
                "--target-action=promote",
            ],
            TargetKind.LSN: [
                "--type=lsn",
                f"--target={format_lsn(target.lsn or 0)}",
                "--target-action=promote",
            ],
        }[target.kind]
        self.driver.user.make_dir(pgdata, mode=0o700)
        self._run(
            f"--stanza={STANZA}",
            f"--set={backup.label}",
            f"--pg1-path={pgdata}",
            *recovery,
            "restore",
            what=f"restore of {backup.label}",
            timeout=BACKUP_TIMEOUT_SECONDS,
        )
