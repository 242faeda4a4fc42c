"""What every backup tool answers: archive WAL, take backups, list them with the recoverable
window, verify the archive has no gap, and restore one node's data directory to a target.

A cluster that archives records its tool in the state file (:class:`ArchiveSettings`);
:func:`replication.backup.tools.backup_tool` picks the implementation by that name, so no
caller asks which tool it is. Building a whole new cluster from a restored node is the same
for every tool (:mod:`replication.backup.restore`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from replication.steps import StepClock
from replication.topology import ArchiveSettings, ClusterState, NodeSpec
from service.routing.lsn import format_lsn, parse_lsn


class BackupType(StrEnum):
    FULL = "full"
    DIFF = "diff"  # what changed since the last full backup
    INCR = "incr"  # what changed since the last backup of any type


class BackupSource(StrEnum):
    """The node whose data directory a backup's files are copied from."""

    REPLICA = "replica"  # a streaming replica; the primary only starts and stops the backup
    PRIMARY = "primary"


#: A backup taken at low priority runs under these: the lowest CPU share, then the idle I/O
#: class (which only schedulers that honour classes, like BFQ, apply). The compose node image
#: has no ``ionice``, so a compose stack's backup gets the first part alone.
LOW_CPU_PRIORITY = ("nice", "-n", "19")
LOW_PRIORITY = (*LOW_CPU_PRIORITY, "ionice", "-c", "3")


class TargetKind(StrEnum):
    LATEST = "latest"
    TIME = "time"
    LSN = "lsn"


@dataclass(frozen=True)
class RestoreTarget:
    """Where recovery stops: the end of the archive, a moment, or a WAL position. Recovery
    to a time or an LSN includes the transactions committed at or before it."""

    kind: TargetKind
    time: datetime | None = None
    lsn: int | None = None

    def describe(self) -> str:
        if self.time is not None:
            return self.time.isoformat()
        if self.lsn is not None:
            return f"LSN {format_lsn(self.lsn)}"
        return "the end of the archive"


@dataclass(frozen=True)
class BackupInfo:
    """One backup in the repository."""

    label: str
    type: BackupType
    started_at: datetime
    stopped_at: datetime
    start_lsn: int
    stop_lsn: int
    size_bytes: int  # of the database it copied
    repository_bytes: int  # what it takes in the repository (compressed, only changed files)
    first_wal: str  # the first WAL segment a restore of it needs
    #: The node its files were copied from and that node's role then ("pg1 (replica)"), as
    #: recorded in the backup's annotations; None for a backup taken without them.
    copied_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["start_lsn"] = format_lsn(self.start_lsn)
        values["stop_lsn"] = format_lsn(self.stop_lsn)
        return values


@dataclass(frozen=True)
class RecoveryWindow:
    """The points a restore can reach: from the end of the oldest backup (the first
    consistent point) to the newest archived WAL (when it was archived, and where it ends)."""

    earliest_time: datetime
    earliest_lsn: int
    latest_time: datetime
    latest_lsn: int

    def describe(self) -> str:
        return (
            f"{self.earliest_time.isoformat()} to {self.latest_time.isoformat()} "
            f"(LSN {format_lsn(self.earliest_lsn)} to {format_lsn(self.latest_lsn)})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "earliest_time": self.earliest_time.isoformat(),
            "earliest_lsn": format_lsn(self.earliest_lsn),
            "latest_time": self.latest_time.isoformat(),
            "latest_lsn": format_lsn(self.latest_lsn),
        }


@dataclass(frozen=True)
class ArchivedSegment:
    """One WAL file in the archive, as named by PostgreSQL, and when it arrived there."""

    name: str
    archived_at: datetime

    @property
    def timeline(self) -> int:
        return int(self.name[:8], 16)

    def segment_number(self, segment_bytes: int) -> int:
        per_log = 0x1_0000_0000 // segment_bytes
        return int(self.name[8:16], 16) * per_log + int(self.name[16:24], 16)


@dataclass
class Catalog:
    """The repository's backups, oldest first, its archived WAL segments and history files,
    and the window a restore can reach (None while there is no backup)."""

    backups: list[BackupInfo]
    segments: list[ArchivedSegment]
    segment_bytes: int
    window: RecoveryWindow | None = field(init=False)

    def __post_init__(self) -> None:
        self.window = recovery_window(self.backups, self.segments, self.segment_bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "backups": [backup.to_json() for backup in self.backups],
            "window": self.window.to_json() if self.window else None,
            "archived_segments": len(self.segments),
        }


def recovery_window(
    backups: list[BackupInfo], segments: list[ArchivedSegment], segment_bytes: int
) -> RecoveryWindow | None:
    if not backups:
        return None
    oldest = backups[0]
    newest_time, newest_end = oldest.stopped_at, oldest.stop_lsn
    if segments:
        last = max(segments, key=lambda s: (s.segment_number(segment_bytes), s.timeline))
        newest_time = max(newest_time, max(s.archived_at for s in segments))
        newest_end = max(newest_end, (last.segment_number(segment_bytes) + 1) * segment_bytes)
    return RecoveryWindow(
        earliest_time=oldest.stopped_at,
        earliest_lsn=oldest.stop_lsn,
        latest_time=newest_time,
        latest_lsn=newest_end,
    )


def newest_timelines(segments: list[ArchivedSegment], segment_bytes: int) -> dict[int, int]:
    """Segment number -> the newest timeline on which the archive holds it."""
    present: dict[int, int] = {}
    for segment in segments:
        number = segment.segment_number(segment_bytes)
        present[number] = max(present.get(number, 0), segment.timeline)
    return present


def archive_gaps(catalog: Catalog) -> list[str]:
    """The segments missing from the oldest backup's first WAL to the newest archived one:
    each must be in the archive on the backup's timeline or a later one (a failover moves the
    rest of the history onto the new timeline). Names are given on the newest timeline seen."""
    if not catalog.backups or not catalog.segments:
        return []
    size = catalog.segment_bytes
    first = ArchivedSegment(catalog.backups[0].first_wal, catalog.backups[0].started_at)
    present = newest_timelines(catalog.segments, size)
    last = max(present)
    per_log = 0x1_0000_0000 // size
    newest_timeline = max(present.values())
    return [
        f"{newest_timeline:08X}{number // per_log:08X}{number % per_log:08X}"
        for number in range(first.segment_number(size), last + 1)
        if present.get(number, 0) < first.timeline
    ]


WAL_FILE_NAME = re.compile(r"[0-9A-F]{24}")


def segments_to_rescue(
    *,
    wal_files: list[str],
    history: str,
    archived: list[ArchivedSegment],
    segment_bytes: int,
    oldest_needed: str | None = None,
) -> list[str]:
    """The WAL files of a just promoted primary's parent timeline that lie wholly before the
    switch and are missing from the archive, oldest first.

    A primary that crashes right after completing a segment never archives it, and replicas
    archive nothing (``archive_mode = on``); the replica promoted in its place received the
    segment, though, and still holds it. ``history`` is the text of the new timeline's
    ``.history`` file (its last line: parent timeline, switch LSN). Segments past the switch
    are never taken: a standby's pg_wal also holds recycled files named after future ones;
    nor are those before ``oldest_needed`` (the oldest backup's first WAL), which the
    retention expired on purpose.
    """
    lines = [line.split() for line in history.splitlines() if line.strip()]
    entries = [line for line in lines if line and line[0].isdigit() and len(line) >= 2]
    if not entries:
        return []
    parent, switch = int(entries[-1][0]), parse_lsn(entries[-1][1])
    switch_segment = switch // segment_bytes
    present = newest_timelines(archived, segment_bytes)
    first = 0
    if oldest_needed is not None:
        first = ArchivedSegment(oldest_needed, datetime.now(UTC)).segment_number(segment_bytes)
    wanted = []
    for name in sorted(wal_files):
        if not WAL_FILE_NAME.fullmatch(name):
            continue
        candidate = ArchivedSegment(name, datetime.now(UTC))
        number = candidate.segment_number(segment_bytes)
        if (
            candidate.timeline == parent
            and first <= number < switch_segment
            and present.get(number, 0) < parent
        ):
            wanted.append(name)
    return wanted


@dataclass(frozen=True)
class Verification:
    """What ``backup verify`` found: the archive takes WAL now, and no segment is missing
    from the oldest backup on."""

    oldest_backup: str | None
    first_wal: str | None
    last_wal: str | None
    segments: int
    missing: list[str]

    @property
    def ok(self) -> bool:
        return self.oldest_backup is not None and not self.missing

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    @classmethod
    def of(cls, catalog: Catalog) -> Verification:
        oldest = catalog.backups[0] if catalog.backups else None
        return cls(
            oldest_backup=oldest.label if oldest else None,
            first_wal=oldest.first_wal if oldest else None,
            last_wal=catalog.segments[-1].name if catalog.segments else None,
            segments=len(catalog.segments),
            missing=archive_gaps(catalog),
        )


@dataclass(frozen=True)
class RestoreRequest:
    """What a restore builds: the source's state, the backup chosen for the target, and
    where the new cluster goes (a compose stack also gets a project name)."""

    source: ClusterState
    backup: BackupInfo
    target: RestoreTarget
    new_dir: Path
    base_port: int | None
    project: str | None
    clock: StepClock


@dataclass(frozen=True)
class RestoredCluster:
    data_dir: Path
    backup: str
    target: str
    seconds: float
    primary_port: int
    replicas: int
    steps: list[dict[str, Any]]
    #: How to use the new cluster, in one or two sentences.
    next_steps: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "data_dir": str(self.data_dir)}

    @classmethod
    def of(
        cls, request: RestoreRequest, *, primary_port: int, replicas: int, next_steps: str
    ) -> RestoredCluster:
        """What ``request`` built, timed by its clock."""
        return cls(
            data_dir=request.new_dir,
            backup=request.backup.label,
            target=request.target.describe(),
            seconds=round(request.clock.elapsed, 2),
            primary_port=primary_port,
            replicas=replicas,
            steps=request.clock.steps,
            next_steps=next_steps,
        )


def source_annotations(node: NodeSpec, role: BackupSource) -> list[str]:
    """pgBackRest arguments that record in the backup where its files came from."""
    return [f"--annotation=replikit-node={node.name}", f"--annotation=replikit-role={role.value}"]


def copied_from(annotations: dict[str, str] | None) -> str | None:
    """ "pg1 (replica)" from a backup's annotations (see :func:`source_annotations`)."""
    node = (annotations or {}).get("replikit-node")
    role = (annotations or {}).get("replikit-role")
    return None if node is None else f"{node} ({role})"


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


class BackupTool(ABC):
    """One cluster's archive and backups, as one tool keeps them where the cluster's nodes
    run: on this machine as the server account (local clusters, :mod:`.pgbackrest`), or in
    the nodes' containers with the repository in a volume (compose stacks, :mod:`.containers`)."""

    #: The name recorded in the state file's ``archive.tool``.
    name: str

    def __init__(self, state: ClusterState) -> None:
        self.state = state

    @classmethod
    @abstractmethod
    def configure_new(cls, state: ClusterState, data_dir: Path) -> ArchiveSettings:
        """The archive settings of a new cluster in ``data_dir`` (nothing is written yet);
        refuses in one sentence when the tool is missing."""

    @abstractmethod
    def prepare(self) -> None:
        """Create the repository and configuration directories (before any node starts)."""

    @abstractmethod
    def primary_started(self, primary: NodeSpec) -> None:
        """Called once the first primary of a new cluster accepts connections: create the
        repository's record of this cluster and check that a WAL segment reaches it."""

    @abstractmethod
    def primary_changed(self, primary: NodeSpec) -> list[str]:
        """Called once a replica was promoted: archive what it holds of the old timeline and
        the archive lacks (see :func:`segments_to_rescue`); returns those WAL files."""

    @abstractmethod
    def backup(
        self, kind: BackupType, *, source: BackupSource | None = None, low_priority: bool = False
    ) -> tuple[BackupInfo, str]:
        """Take a backup from ``source`` (by default a streaming replica when there is one,
        else the primary; a ``source`` that cannot be honoured is refused in one sentence),
        under ``nice``/``ionice`` when ``low_priority``; returns it and the node it was
        copied from."""

    @abstractmethod
    def catalog(self) -> Catalog:
        """The backups and archived WAL, read from the repository alone (no node need run)."""

    @abstractmethod
    def flush(self) -> None:
        """Make the primary close and archive its current WAL segment, after one more
        commit, so that every moment up to now is inside the window."""

    def verify(self) -> Verification:
        """Archive the primary's current WAL (the archive must take WAL now), then look for
        missing segments from the oldest backup on."""
        self.flush()
        return Verification.of(self.catalog())

    @abstractmethod
    def restore_node(self, *, backup: BackupInfo, target: RestoreTarget, pgdata: Path) -> None:
        """Restore ``backup`` into the empty ``pgdata`` on this machine, set to recover to
        ``target`` from this archive and then be promoted (or refuse in one sentence, saying
        how this kind of cluster is restored instead)."""
