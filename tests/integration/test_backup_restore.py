"""Backups and point-in-time recovery on real clusters with real pgBackRest: a restore builds a
new cluster that holds exactly what was committed up to its target, across a failover too,
and a target the archive cannot reach is refused before anything is built."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from loadtests.benchmarks.backups import (
    SOURCE_CASES,
    archiving_cluster,
    rpo_round,
    service_on,
    source_round,
)
from replication.backup.base import BackupType
from replication.cluster import Cluster, cluster_down
from replication.pgbin import find_pg_binaries
from replication.topology import SyncMode, build_state, save_state
from tests.integration.clusters import (
    force_stop,
    free_base_port,
    reachable_temp_dir,
    replikit,
    running_cluster,
)
from tests.integration.test_experiments import assert_plots, assert_valid

pytestmark = pytest.mark.skipif(
    shutil.which("pgbackrest") is None,
    reason="pgbackrest is not installed (apt-get install pgbackrest, or 'make setup' as root)",
)


async def _sql(
    cluster: Cluster, query: str, *args: object, port: int | None = None
) -> list[asyncpg.Record]:
    state = cluster.state
    connection = await asyncpg.connect(
        host=state.host,
        port=port or state.primary_node.port,
        user=state.superuser,
        password=state.passwords.superuser,
        database="postgres",
        timeout=5,
    )
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def sql(
    cluster: Cluster, query: str, *args: object, port: int | None = None
) -> list[asyncpg.Record]:
    return asyncio.run(_sql(cluster, query, *args, port=port))


def write(cluster: Cluster, value: int) -> datetime:
    """Commit one row; returns a moment just after the commit."""
    sql(cluster, "INSERT INTO marks VALUES ($1)", value)
    return datetime.now(UTC)


@contextlib.contextmanager
def restored(source: Cluster, *args: str) -> Iterator[tuple[Cluster | None, str]]:
    """Run 'replikit restore' into a new directory; yields the new cluster (None when the
    restore failed) and the command's output, and always stops what it built."""
    new_dir = reachable_temp_dir("replikit-restored-") / "cluster"
    result = replikit("restore", "--from", str(source.data_dir), "--data-dir", str(new_dir), *args)
    try:
        output = result.stdout + result.stderr
        yield (Cluster.open(new_dir) if result.returncode == 0 else None), output
    finally:
        with contextlib.suppress(Exception):
            cluster_down(new_dir)
        force_stop(new_dir)


def rows(cluster: Cluster) -> list[int]:
    return [row[0] for row in sql(cluster, "SELECT value FROM marks ORDER BY value")]


@pytest.fixture(scope="module")
def archived() -> Iterator[Cluster]:
    """A 1+1 cluster that archives WAL, with a table and a full backup."""
    with running_cluster(replicas=1, name="archived", archive=True) as cluster:
        sql(cluster, "CREATE TABLE marks (value int PRIMARY KEY)")
        cluster.manager.backups().backup(BackupType.FULL)
        yield cluster


def test_restore_to_a_time_between_two_writes_brings_back_exactly_the_first(
    archived: Cluster,
) -> None:
    between = write(archived, 1)
    time.sleep(0.2)
    write(archived, 2)
    with restored(archived, "--to", between.isoformat()) as (new, output):
        assert new is not None, output
        assert rows(new) == [1]
        assert "replikit cluster env --data-dir" in output
        # A new cluster: its own ports, a replica streaming from its primary, its own archive.
        assert new.state.primary_node.port != archived.state.primary_node.port
        statuses = new.status()
        assert [row.role for row in statuses] == ["primary", "replica"]
        replica = new.state.replicas[0]
        assert sql(new, "SELECT count(*) FROM marks", port=replica.port)[0][0] == 1
        assert new.state.archive is not None
        assert archived.state.archive is not None
        assert new.state.archive.directory != archived.state.archive.directory
        assert new.manager.backups().verify().oldest_backup is None  # no backup of its own yet
    assert rows(archived) == [1, 2]  # the source is untouched


def test_a_target_outside_the_recoverable_window_is_refused_naming_the_window(
    archived: Cluster,
) -> None:
    window = archived.manager.backups().catalog().window
    assert window is not None
    for target in (["--to", "2001-01-01T00:00:00+00:00"], ["--lsn", "0/10"]):
        with restored(archived, *target) as (new, output):
            assert new is None
            assert "outside the recoverable window" in output, output
            assert window.earliest_time.isoformat() in output, output
            assert output.startswith("error: "), output
            assert output.count("\n") == 1, output
    # Later than any archived WAL: now + one hour, even after the current WAL is archived.
    future = datetime.fromtimestamp(time.time() + 3600, tz=UTC).isoformat()
    with restored(archived, "--to", future) as (new, output):
        assert new is None
        assert "outside the recoverable window" in output, output


def wait_received(cluster: Cluster, port: int, lsn: str) -> None:
    deadline = time.monotonic() + 30
    query = f"SELECT pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn"
    while not sql(cluster, query, port=port)[0][0]:
        assert time.monotonic() < deadline, f"the replica did not receive {lsn} in 30 s"
        time.sleep(0.05)


def test_restore_to_latest_after_a_failover_includes_the_writes_on_the_new_timeline() -> None:
    """The primary dies with a completed segment it never archived (its archiving is broken
    here, as a crash right after a segment switch does by chance): the promoted replica
    archives it, so the archive has no gap and --latest brings back both timelines."""
    with running_cluster(replicas=1, name="archived-failover", archive=True) as cluster:
        sql(cluster, "CREATE TABLE marks (value int PRIMARY KEY)")
        cluster.manager.backups().backup(BackupType.FULL)
        sql(cluster, "ALTER SYSTEM SET archive_command = 'false'")
        sql(cluster, "SELECT pg_reload_conf()")
        write(cluster, 1)
        switched = sql(cluster, "SELECT pg_switch_wal()::text")[0][0]
        wait_received(cluster, cluster.state.replicas[0].port, switched)
        cluster.manager.kill("primary")
        result = cluster.manager.failover()
        assert result["timeline"] == 2
        assert result["archive_rescued"], result  # the segment holding row 1
        write(cluster, 2)  # on the new primary, timeline 2
        verify = replikit("backup", "verify", "--data-dir", str(cluster.data_dir))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "complete" in verify.stdout
        with restored(cluster, "--latest") as (new, output):
            assert new is not None, output
            assert rows(new) == [1, 2]
            timeline = sql(new, "SELECT timeline_id FROM pg_control_checkpoint()")[0][0]
            assert timeline > 2  # the restore promotes onto a timeline of its own


def test_backup_list_shows_each_backup_and_the_window(archived: Cluster) -> None:
    incremental = replikit("backup", "--type", "incr", "--data-dir", str(archived.data_dir))
    assert incremental.returncode == 0, incremental.stderr
    assert "(incr) copied from pg1" in incremental.stdout  # from the replica
    listed = replikit("backup", "list", "--json", "--data-dir", str(archived.data_dir))
    assert listed.returncode == 0, listed.stderr
    catalog = json.loads(listed.stdout)
    assert [backup["type"] for backup in catalog["backups"]][-2:] == ["full", "incr"]
    window = catalog["window"]
    assert window["earliest_time"] <= window["latest_time"]
    assert Path(archived.data_dir / "backup" / "pgbackrest.conf").stat().st_mode & 0o077 == 0


async def _write_for(cluster: Cluster, seconds: float) -> tuple[int, datetime]:
    """Commit numbered rows every 20 ms; returns the last number and when it was acknowledged."""
    state = cluster.state
    connection = await asyncpg.connect(
        host=state.host,
        port=state.primary_node.port,
        user=state.superuser,
        password=state.passwords.superuser,
        database="postgres",
        timeout=5,
    )
    number, acknowledged = 0, datetime.now(UTC)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            number += 1
            await connection.execute("INSERT INTO marks VALUES ($1)", number)
            acknowledged = datetime.now(UTC)
            await asyncio.sleep(0.02)
    finally:
        await connection.close()
    return number, acknowledged


def test_losing_every_node_loses_at_most_the_last_five_seconds_of_commits() -> None:
    with running_cluster(replicas=1, name="archived-lost", archive=True) as cluster:
        sql(cluster, "CREATE TABLE marks (value int PRIMARY KEY, at timestamptz DEFAULT now())")
        cluster.manager.backups().backup(BackupType.FULL)
        last, acknowledged = asyncio.run(_write_for(cluster, 4.0))
        for node in [cluster.state.primary, *(n.name for n in cluster.state.replicas)]:
            cluster.manager.kill(node)  # a crash, primary first: nothing more is archived
        with restored(cluster, "--latest") as (new, output):
            assert new is not None, output
            back = sql(new, "SELECT count(*), max(value), max(at) FROM marks")[0]
            assert back[0] == back[1]  # every commit up to the newest one restored: no hole
            rpo = (acknowledged - back[2]).total_seconds()
            print(f"acknowledged {last}, restored {back[1]}, RPO {rpo:.2f} s")
            assert back[1] <= last
            assert rpo <= 5.0


def test_archiving_is_refused_for_the_patroni_manager_before_anything_is_written() -> None:
    data_dir = reachable_temp_dir("replikit-no-archive-") / "cluster"
    result = replikit(
        "cluster",
        "up",
        "--archive",
        "--manager",
        "patroni",
        "--base-port",
        str(free_base_port(3)),
        "--data-dir",
        str(data_dir),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: WAL archiving and backups are built for the native")
    assert not data_dir.exists()


def test_backups_of_a_cluster_that_archives_nothing_are_refused_naming_the_option() -> None:
    data_dir = reachable_temp_dir("replikit-no-archive-")
    binaries = find_pg_binaries()
    state = build_state(
        replicas=1,
        sync=SyncMode.OFF,
        base_port=free_base_port(2),
        pg_bin=binaries.directory,
        pg_major=binaries.major_version,
    )
    save_state(data_dir, state)  # a cluster's record; no node needs to run to be refused
    for command in (["backup"], ["backup", "list"], ["backup", "verify"]):
        result = replikit(*command, "--data-dir", str(data_dir))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "does not archive WAL" in result.stderr
        assert "replikit cluster up --archive" in result.stderr
    restore = replikit(
        "restore", "--latest", "--from", str(data_dir), "--data-dir", str(data_dir / "new")
    )
    assert restore.returncode == 2
    assert "does not archive WAL" in restore.stderr


def test_restore_experiment_brings_back_every_upload_acknowledged_before_the_mistake() -> None:
    """``replikit experiment restore`` for real, CI-sized: uploads through a service instance,
    every image deleted through the API at T, a restore to T into a new cluster; its verdict
    holds only if each upload acknowledged before T is back byte for byte and none sent
    after T is."""
    results = reachable_temp_dir("replikit-results-")
    restore_dir = reachable_temp_dir("replikit-restored-") / "cluster"
    with running_cluster(replicas=1, name="restore-experiment", archive=True) as cluster:
        done = replikit(
            "experiment",
            "restore",
            "--before", "4",
            "--after", "2",
            "--mistake", "api",
            "--restore-dir", str(restore_dir),
            "--data-dir", str(cluster.data_dir),
            "--results", str(results),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert cluster.driver.is_running(cluster.state.primary_node)  # left as it was found
    (out,) = results.glob("restore-*")
    summary: dict[str, Any] = assert_valid(out / "summary.json", "restore.schema.json")
    uploads = summary["uploads"]
    assert summary["verdict"] == "pass"
    assert uploads["before_t"]["total"] > 10
    assert uploads["before_t"]["back"] == uploads["before_t"]["total"]
    assert uploads["after_t"]["total"] > 0
    assert uploads["after_t"]["absent"] == uploads["after_t"]["total"]
    assert summary["mistake"]["deleted"] >= uploads["before_t"]["total"]
    assert summary["rpo_seconds"] == 0
    assert 0 < summary["restore_seconds"] < 120
    assert_plots(out, ["timeline.png"])
    assert "Restore experiment: **pass**" in (out / "summary.md").read_text()
    assert not (restore_dir / "state.json").exists()  # the restored cluster was removed


def test_bench_rpo_round_after_sigkill_of_every_node_restores_all_but_the_last_seconds() -> None:
    """One round of the backups bench's RPO part (loadtests/benchmarks/backups.py): uploads
    through a service, every node's processes SIGKILLed, restore --latest; uploads come back,
    and every upload older than the newest one that came back is back too.

    The RPO itself (goal <= 5 s) is the bench's figure, not asserted here: on a quiet machine it
    is 0.1-1 s, but the archiver runs one pgBackRest process per 16 MB segment, and on a CI
    machine running two test workers it fell more than 3 s behind (every upload of a 3 s load
    lost). Eight seconds of load leave room for that lag and still show the archive working."""
    scratch = reachable_temp_dir("replikit-bench-backups-")
    load_seconds = 8
    measured = rpo_round(scratch, free_base_port(2), load_seconds=load_seconds)
    assert measured["acknowledged"] > 10, measured
    assert measured["lost"] < measured["acknowledged"], measured
    assert measured["holes"] == [], measured
    assert 0 <= measured["rpo_seconds"] < load_seconds, measured
    assert not list(scratch.glob("*/state.json")), "the bench left a cluster behind"


def files_copied_by_the_last_backup(cluster: Cluster) -> list[str]:
    """The paths pgBackRest's log says the newest backup command copied ("backup file ...")."""
    log = (cluster.data_dir / "logs" / "replikit-backup.log").read_text()
    last_run = log.rsplit("backup command begin", 1)[1]
    return [
        line.split("backup file ", 1)[1].split(" (", 1)[0]
        for line in last_run.splitlines()
        if "backup file " in line
    ]


def test_a_backup_from_the_replica_after_a_failover_copies_its_files_and_restores() -> None:
    """After a failover and a rejoin the old primary pg0 is the replica: the backup is copied
    from pg0's data directory (pgBackRest's own log of each file), the primary pg1 only starts
    and stops it, and a restore --latest of it brings back every row. With no replica
    streaming, --from replica is refused and the default falls back to the primary."""
    with running_cluster(replicas=1, name="standby-backup", archive=True) as cluster:
        sql(cluster, "CREATE TABLE marks (value int PRIMARY KEY)")
        write(cluster, 1)
        cluster.manager.kill("pg0")
        cluster.manager.failover()
        cluster.manager.rejoin("pg0")
        cluster = Cluster.open(cluster.data_dir)
        assert cluster.state.primary == "pg1"
        write(cluster, 2)
        pg0, pg1 = (str(cluster.data_dir / name) for name in ("pg0", "pg1"))
        data_dir = str(cluster.data_dir)

        taken = replikit("backup", "--from", "replica", "--data-dir", data_dir)
        assert taken.returncode == 0, taken.stdout + taken.stderr
        assert "(full) copied from pg0 (replica)" in taken.stdout, taken.stdout
        copied = files_copied_by_the_last_backup(cluster)
        from_replica = [path for path in copied if path.startswith(pg0 + "/base/")]
        assert len(from_replica) > 100, copied[:5]  # the relations' files, from the replica
        assert not [path for path in copied if path.startswith(pg1 + "/base/")]
        config = (cluster.data_dir / "backup" / "pgbackrest.conf").read_text()
        assert f"pg1-path={pg1}\n" in config  # the new primary first,
        assert f"pg2-path={pg0}\n" in config  # every node listed

        write(cluster, 3)
        with restored(cluster, "--latest") as (new, output):
            assert new is not None, output
            assert rows(new) == [1, 2, 3]

        cluster.manager.kill("pg0")  # no replica streams now
        refused = replikit("backup", "--from", "replica", "--data-dir", data_dir)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.startswith("error: No replica of this cluster is streaming")
        assert "--from primary" in refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr
        fallback = replikit("backup", "--type", "incr", "--data-dir", data_dir)
        assert fallback.returncode == 0, fallback.stdout + fallback.stderr
        assert "(incr) copied from pg1 (primary)" in fallback.stdout, fallback.stdout
        assert [p for p in files_copied_by_the_last_backup(cluster) if p.startswith(pg1)]

        listed = replikit("backup", "list", "--json", "--data-dir", data_dir)
        assert listed.returncode == 0, listed.stderr
        sources = [backup["copied_from"] for backup in json.loads(listed.stdout)["backups"]]
        assert sources == ["pg0 (replica)", "pg1 (primary)"]


def test_bench_sources_round_copies_each_backup_from_the_node_its_case_names() -> None:
    """One round of the backups bench's *sources* part, CI-sized: every case once (turned by
    one), each backup copied from the node its case names, with the options it names."""
    scratch = reachable_temp_dir("replikit-bench-backups-")
    with (
        archiving_cluster(scratch, "sources", free_base_port(2)) as cluster,
        service_on(cluster, scratch) as url,
    ):
        measured = source_round(cluster, url, 1)
        primary, replica = cluster.state.primary, cluster.state.replicas[0].name
    assert list(measured) == [case.name for case in (*SOURCE_CASES[1:], SOURCE_CASES[0])]
    assert measured["none"]["upload_ratio"] == 1.0
    assert "copied_from" not in measured["none"]
    assert measured["primary"]["copied_from"] == primary
    assert "--backup-standby" not in measured["primary"]["options"]
    for case in SOURCE_CASES[2:]:
        assert measured[case.name]["copied_from"] == replica, measured[case.name]
        assert "--backup-standby" in measured[case.name]["options"]
    assert "--compress-type=lz4" in measured["replica, lz4"]["options"]
    assert "--compress-type=zst" in measured["replica"]["options"]
    for result in measured.values():
        assert result["uploads_per_second"] > 0, result
        assert result["primary_cpu_seconds"] >= 0, result
    assert all(measured[case.name]["backup_cpu_seconds"] > 0 for case in SOURCE_CASES[1:])
    assert not list(scratch.glob("*/state.json")), "the bench left a cluster behind"
