"""The backup tool's configuration, and reading its catalog: backups, archived WAL, the
recoverable window, gaps in the archive, and which backup a restore starts from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from replication.backup.base import (
    ArchivedSegment,
    BackupInfo,
    BackupType,
    Catalog,
    RestoreTarget,
    TargetKind,
    archive_gaps,
    segments_to_rescue,
)
from replication.backup.pgbackrest import parse_backups, parse_segments, render_config
from replication.backup.restore import choose_backup
from replication.errors import BadInputError
from replication.topology import ArchiveSettings

MB16 = 16 * 1024 * 1024
T0 = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)


def settings(tmp_path: Path) -> ArchiveSettings:
    return ArchiveSettings(
        tool="pgbackrest",
        directory=str(tmp_path / "backup"),
        cipher_pass="not-a-real-passphrase",
        archive_command="pgbackrest archive-push %p",
        socket_dir=str(tmp_path / "backup" / "sockets"),
    )


def test_the_repository_is_compressed_and_encrypted_and_backups_come_from_the_standby(
    tmp_path: Path,
) -> None:
    text = render_config(
        settings=settings(tmp_path),
        log_dir=tmp_path / "logs",
        superuser="postgres",
        hosts=[(tmp_path / "pg1", 6433), (tmp_path / "pg0", 6432)],
        backup_standby=True,
    )
    lines = text.splitlines()
    assert "repo1-cipher-type=aes-256-cbc" in lines
    assert "repo1-cipher-pass=not-a-real-passphrase" in lines
    assert "compress-type=zst" in lines
    assert f"repo1-path={tmp_path / 'backup' / 'repo'}" in lines
    # The primary is pg1 in pgBackRest's numbering, the standby pg2.
    assert f"pg1-path={tmp_path / 'pg1'}" in lines
    assert "pg1-port=6433" in lines
    assert f"pg2-path={tmp_path / 'pg0'}" in lines
    assert "backup-standby=y" in lines
    alone = render_config(
        settings=settings(tmp_path),
        log_dir=tmp_path / "logs",
        superuser="postgres",
        hosts=[(tmp_path / "pg0", 6432)],
        backup_standby=False,
    )
    assert "backup-standby=y" not in alone
    assert "pg2-path" not in alone


def backup(label: str, minute: int, start_wal: str, stop_lsn: int) -> BackupInfo:
    return BackupInfo(
        label=label,
        type=BackupType.FULL,
        started_at=T0 + timedelta(minutes=minute),
        stopped_at=T0 + timedelta(minutes=minute, seconds=5),
        start_lsn=stop_lsn - 100,
        stop_lsn=stop_lsn,
        size_bytes=1,
        repository_bytes=1,
        first_wal=start_wal,
    )


def segments(*names: str) -> list[ArchivedSegment]:
    return [ArchivedSegment(name, T0 + timedelta(minutes=10)) for name in names]


def info_entry(label: str, kind: str, start: int, segment: int) -> dict[str, Any]:
    """One backup as ``pgbackrest info --output=json`` shows it."""
    return {
        "label": label,
        "type": kind,
        "timestamp": {"start": start, "stop": start + 5},
        "lsn": {"start": f"0/{segment:X}000028", "stop": f"0/{segment:X}000100"},
        "info": {"size": 30000000, "repository": {"delta": 1000}},
        "archive": {"start": f"0000000100000000000000{segment:02X}"},
    }


def test_pgbackrest_info_and_listing_are_read_into_backups_and_segments() -> None:
    info = [
        {
            "backup": [
                info_entry("20261205-060500F_20261205-061000I", "incr", 1796450000, 5),
                info_entry("20261205-060500F", "full", 1796440000, 3),
            ]
        }
    ]
    info[0]["backup"][0]["annotation"] = {"replikit-node": "pg1", "replikit-role": "replica"}
    found = parse_backups(info)
    assert [b.type for b in found] == [BackupType.FULL, BackupType.INCR]  # oldest first
    assert found[0].stop_lsn == 0x3000100
    # Where the files came from, as replikit annotated the backup (none on the older one).
    assert [b.copied_from for b in found] == [None, "pg1 (replica)"]
    listing: dict[str, dict[str, Any]] = {
        "15-1": {"type": "path"},
        "15-1/0000000100000000/000000010000000000000003-" + "a" * 40 + ".zst": {
            "type": "file",
            "time": 1796440001,
        },
        "15-1/0000000100000000/000000010000000000000004.partial-" + "b" * 40 + ".zst": {
            "type": "file",
            "time": 1796440002,
        },
        "15-1/0000000100000000/000000010000000000000003.00000028.backup": {
            "type": "file",
            "time": 1796440003,
        },
        "15-1/00000002.history": {"type": "file", "time": 1796440004},
    }
    assert [s.name for s in parse_segments(listing)] == ["000000010000000000000003"]


def test_a_missing_segment_is_a_gap_and_a_failover_onto_a_new_timeline_is_not() -> None:
    first = backup("F", 0, "000000010000000000000003", 0x3000100)
    complete = Catalog(
        backups=[first],
        segments=segments(
            "000000010000000000000003",
            "000000010000000000000004",
            # promoted at segment 5: the old timeline's partial is not needed
            "000000020000000000000005",
            "000000020000000000000006",
        ),
        segment_bytes=MB16,
    )
    assert archive_gaps(complete) == []
    holed = Catalog(
        backups=[first],
        segments=segments(
            "000000010000000000000003", "000000010000000000000005", "0000000100000001000000FF"
        ),
        segment_bytes=MB16,
    )
    missing = archive_gaps(holed)
    assert missing[0] == "000000010000000000000004"
    assert "000000010000000100000000" in missing  # across a log file boundary
    assert "0000000100000001000000FF" not in missing


def test_a_restore_starts_from_the_newest_backup_before_its_target() -> None:
    old = backup("old", 0, "000000010000000000000003", 0x3000100)
    new = backup("new", 5, "000000010000000000000005", 0x5000100)
    catalog = Catalog(
        backups=[old, new],
        segments=segments(*(f"0000000100000000000000{n:02X}" for n in range(3, 9))),
        segment_bytes=MB16,
    )
    assert catalog.window is not None
    assert catalog.window.earliest_time == old.stopped_at
    assert catalog.window.latest_lsn == 9 * MB16
    between = RestoreTarget(TargetKind.TIME, time=T0 + timedelta(minutes=3))
    assert choose_backup(catalog, between) is old
    later = RestoreTarget(TargetKind.TIME, time=T0 + timedelta(minutes=8))
    assert choose_backup(catalog, later) is new
    assert choose_backup(catalog, RestoreTarget(TargetKind.LSN, lsn=0x4000000)) is old
    assert choose_backup(catalog, RestoreTarget(TargetKind.LATEST)) is new


@pytest.mark.parametrize(
    "target",
    [
        RestoreTarget(TargetKind.TIME, time=T0 - timedelta(minutes=1)),
        RestoreTarget(TargetKind.TIME, time=T0 + timedelta(hours=1)),
        RestoreTarget(TargetKind.LSN, lsn=0x100),
        RestoreTarget(TargetKind.LSN, lsn=0x90000000),
    ],
)
def test_a_target_outside_the_window_is_refused_naming_the_window(target: RestoreTarget) -> None:
    catalog = Catalog(
        backups=[backup("only", 0, "000000010000000000000003", 0x3000100)],
        segments=segments("000000010000000000000003", "000000010000000000000004"),
        segment_bytes=MB16,
    )
    with pytest.raises(BadInputError, match="outside the recoverable window") as refused:
        choose_backup(catalog, target)
    assert catalog.window is not None
    assert catalog.window.describe() in str(refused.value)


def test_nothing_to_restore_without_a_backup() -> None:
    catalog = Catalog(backups=[], segments=[], segment_bytes=MB16)
    with pytest.raises(BadInputError, match="replikit backup"):
        choose_backup(catalog, RestoreTarget(TargetKind.LATEST))


def test_a_promoted_replica_archives_the_old_timeline_segments_the_archive_lacks() -> None:
    history = "1\t0/5000000\tno recovery target specified\n"  # timeline 2 began in segment 5
    wal_files = [
        "000000010000000000000003",  # archived already
        "000000010000000000000004",  # completed by the dead primary, never archived
        "000000010000000000000005.partial",
        "000000020000000000000005",  # the new timeline: its own archiver's
        "000000010000000000000006",  # a recycled file named after a future segment
        "00000002.history",
        "archive_status",
    ]
    rescued = segments_to_rescue(
        wal_files=wal_files,
        history=history,
        archived=segments("000000010000000000000003"),
        segment_bytes=MB16,
    )
    assert rescued == ["000000010000000000000004"]
    nothing_missing = segments_to_rescue(
        wal_files=wal_files,
        history=history,
        archived=segments("000000010000000000000003", "000000010000000000000004"),
        segment_bytes=MB16,
    )
    assert nothing_missing == []
    # Segments older than the oldest backup were expired by the retention: none comes back.
    expired = segments_to_rescue(
        wal_files=wal_files,
        history=history,
        archived=[],
        segment_bytes=MB16,
        oldest_needed="000000010000000000000004",
    )
    assert expired == ["000000010000000000000004"]
    assert (
        segments_to_rescue(wal_files=wal_files, history="", archived=[], segment_bytes=MB16) == []
    )
