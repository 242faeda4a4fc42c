"""Backups and restore, measured side by side in one run (issue 22):

    .venv/bin/python -m loadtests.benchmarks.backups [--rounds 3] [--gigabytes 1] [--failovers 5]
        [--part rpo|size|failovers|sources ...] [--scratch DIR]

Each part builds a local cluster of its own (``cluster up --archive``, one replica, ports from
``--first-port`` or free ones), uploads through a ``replikit serve`` instance, and removes
everything at the end, also on failure:

* **rpo**: per round, uploads under load, then every node's processes killed with SIGKILL (a
  lost host), ``restore --latest`` into a new cluster, and every acknowledged upload asked for
  through a service on it: RPO = newest acknowledged upload - newest one that came back.
* **size**: ``--gigabytes`` of incompressible ~1 MB PNGs uploaded (at most ``--load-seconds``),
  then per round: a full backup with uploads running (throughput against the same span with no
  backup, the order alternating), and ``restore --latest`` of it all (seconds per GB of images).
* **failovers**: ``--failovers`` crash failovers under uploads (the old primary rejoined each
  time), then ``backup verify``.
* **sources**: ``--gigabytes`` of images loaded as for *size*, then per round, in an order that
  turns by one each round, the same uploads with no backup and during a full backup copied
  from the primary, from the replica, from the replica at low priority (``nice``/``ionice``),
  from the replica with ``compress-type=lz4``, and with both: uploads per second, each against
  the same round's no-backup rate, and the CPU seconds the backup and each server used.

Medians over the rounds go to ``results/bench-backups-<stamp>/backups.json`` and are printed.
The machine is shared: figures are medians, and the spread is in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from loadtests.benchmarks.bench_cluster import free_ports_below_ephemeral
from loadtests.benchmarks.scratch import scratch_dir
from loadtests.experiments.analysis import median
from loadtests.experiments.failover import on_primary
from loadtests.experiments.restore import acknowledged_digests, came_back, restored_cluster
from loadtests.experiments.targets import LocalInstances
from replication import cluster as clusters
from replication.backup.base import BackupSource, BackupType, RestoreTarget, TargetKind
from replication.cluster import Cluster, cluster_down, cluster_up
from replication.topology import NodeSpec
from service import migrate

GB = 1024**3
LATEST = RestoreTarget(TargetKind.LATEST)
NOISE_SIDE = 580  # 580 x 580 RGB of random bytes: a PNG of about 1 MB that compresses to nothing


def noise_png(seed: int) -> bytes:
    """A PNG of random pixels (stored, not deflated): images compress little, and this none."""
    del seed  # every image is new random bytes
    pixels = os.urandom(NOISE_SIDE * NOISE_SIDE * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (NOISE_SIDE, NOISE_SIDE), pixels).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


@contextlib.contextmanager
def archiving_cluster(scratch: Path, name: str, first_port: int | None) -> Iterator[Cluster]:
    """A migrated 1+1 cluster that archives WAL, with a full backup; removed afterwards."""
    data_dir = scratch / name
    port = free_ports_below_ephemeral(2, start=first_port)
    try:
        cluster, _ = cluster_up(data_dir, replicas=1, base_port=port, archive=True)
        migrate.upgrade(cluster.state.owner_url(cluster.state.primary_node))
        cluster.manager.backups().backup(BackupType.FULL)
        yield Cluster.open(data_dir)
    finally:
        with contextlib.suppress(Exception):
            cluster_down(data_dir, purge=True)


@contextlib.contextmanager
def service_on(cluster: Cluster, scratch: Path) -> Iterator[str]:
    instances = LocalInstances.start(cluster, scratch / f"service-{time.monotonic_ns()}", 1)
    try:
        yield instances.load_urls[0]
    finally:
        instances.close()


@contextlib.contextmanager
def uploading(url: str, streams: int = 2, **options: Any) -> Iterator[list[AckedUploads]]:
    uploads = [AckedUploads(url, seed=i * 1_000_000, **options) for i in range(streams)]
    with contextlib.ExitStack() as stack:
        for stream in uploads:
            stack.enter_context(running(stream))
        yield uploads


def kill_nine(cluster: Cluster, node: NodeSpec) -> None:
    """SIGKILL the node's postmaster and every process it started, as a lost host goes."""
    pid_file = cluster.data_dir / node.name / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    for pid in [postmaster, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def restore_dir(scratch: Path, name: str) -> Path:
    return scratch / f"{name}-restored-{time.monotonic_ns()}"


def rpo_round(scratch: Path, first_port: int | None, load_seconds: float) -> dict[str, Any]:
    with archiving_cluster(scratch, "rpo", first_port) as cluster:
        with service_on(cluster, scratch) as url, uploading(url) as streams:
            time.sleep(load_seconds)
            killed_at = time.time()
            for node in cluster.state.nodes:  # the primary first: nothing more is archived
                kill_nine(cluster, node)
        receipts = [r for s in streams for r in s.receipts]
        with restored_cluster(cluster.data_dir, restore_dir(scratch, "rpo"), LATEST) as result:
            missing = came_back(result.data_dir, acknowledged_digests(streams))
    back = [r for r in receipts if r.image_id not in missing]
    newest = max(r.acked_wall for r in receipts)
    newest_back = max((r.acked_wall for r in back), default=min(r.sent_wall for r in receipts))
    # Every acknowledged upload older than the newest one that came back must be back too.
    holes = [r.image_id for r in receipts if r.image_id in missing and r.acked_wall < newest_back]
    return {
        "acknowledged": len(receipts),
        "lost": len(missing),
        "holes": holes,
        "newest_acknowledged_before_kill_seconds": round(killed_at - newest, 3),
        "rpo_seconds": round(newest - newest_back, 3),
        "restore_seconds": result.seconds,
    }


def load_images(url: str, target_bytes: int, max_seconds: float) -> dict[str, Any]:
    started, each = time.monotonic(), len(noise_png(0))
    with uploading(url, streams=3, make_image=noise_png) as streams:
        while time.monotonic() - started < max_seconds:
            if sum(len(s.acknowledged) for s in streams) * each >= target_bytes:
                break
            time.sleep(1)
    count = sum(len(s.acknowledged) for s in streams)
    return {"images": count, "seconds": round(time.monotonic() - started, 1)}


def upload_rate(url: str, seconds: float) -> float:
    """Acknowledged small uploads per second over ``seconds``, two clients."""
    with uploading(url) as streams:
        time.sleep(seconds)
    return sum(len(s.receipts) for s in streams) / seconds


def backup_round(cluster: Cluster, url: str, index: int) -> dict[str, Any]:
    """A full backup under uploads, and the same span without one, in alternating order."""
    tool = cluster.manager.backups()
    measured: dict[str, Any] = {}

    def with_backup() -> None:
        with uploading(url) as streams:
            started = time.monotonic()
            taken, source = tool.backup(BackupType.FULL)
            seconds = time.monotonic() - started
        measured.update(
            backup_seconds=round(seconds, 2),
            backup_bytes=taken.size_bytes,
            repository_bytes=taken.repository_bytes,
            backup_source=source,
            uploads_per_second_during_backup=round(
                sum(len(s.receipts) for s in streams) / seconds, 1
            ),
        )

    def without_backup() -> None:
        seconds = measured.get("backup_seconds", 15.0)
        measured["uploads_per_second_without"] = round(upload_rate(url, seconds), 1)

    for step in (with_backup, without_backup) if index % 2 == 0 else (without_backup, with_backup):
        step()
    measured["backup_mb_per_second"] = round(
        measured["backup_bytes"] / measured["backup_seconds"] / 2**20, 1
    )
    measured["upload_ratio"] = round(
        measured["uploads_per_second_during_backup"] / measured["uploads_per_second_without"], 3
    )
    return measured


def restore_round(cluster: Cluster, scratch: Path, image_bytes: int) -> dict[str, Any]:
    with restored_cluster(cluster.data_dir, restore_dir(scratch, "size"), LATEST) as result:
        steps = {step["step"]: step["elapsed_seconds"] for step in result.steps}
    writable = steps["recovered_and_promoted"]
    return {
        "restore_seconds": result.seconds,
        "primary_writable_seconds": writable,
        "seconds_per_gb": round(result.seconds / (image_bytes / GB), 1),
        "primary_writable_seconds_per_gb": round(writable / (image_bytes / GB), 1),
        "steps": steps,
    }


async def _image_bytes(connection: Any) -> int:
    return int(await connection.fetchval("SELECT coalesce(sum(file_size), 0) FROM images"))


def size_part(scratch: Path, options: argparse.Namespace) -> dict[str, Any]:
    with archiving_cluster(scratch, "size", options.first_port) as cluster:
        with service_on(cluster, scratch) as url:
            loaded = load_images(url, int(options.gigabytes * GB), options.load_seconds)
            image_bytes = int(asyncio.run(on_primary(cluster.data_dir, _image_bytes)))
            database = int(
                asyncio.run(
                    on_primary(
                        cluster.data_dir,
                        lambda c: c.fetchval("SELECT pg_database_size(current_database())"),
                    )
                )
            )
            backups = [backup_round(cluster, url, i) for i in range(options.rounds)]
        restores = [restore_round(cluster, scratch, image_bytes) for _ in range(options.rounds)]
    return {
        "loaded": {**loaded, "image_bytes": image_bytes, "database_bytes": database},
        "backup_rounds": backups,
        "restore_rounds": restores,
        "median": {
            key: median([r[key] for r in rounds])
            for rounds, keys in (
                (
                    backups,
                    (
                        "backup_seconds",
                        "backup_mb_per_second",
                        "uploads_per_second_during_backup",
                        "uploads_per_second_without",
                        "upload_ratio",
                    ),
                ),
                (
                    restores,
                    (
                        "restore_seconds",
                        "seconds_per_gb",
                        "primary_writable_seconds",
                        "primary_writable_seconds_per_gb",
                    ),
                ),
            )
            for key in keys
        },
    }


@dataclass(frozen=True)
class BackupCase:
    """One way of running the uploads of the *sources* part: with no backup (``source`` None
    and not ``backup``), or during a full backup from ``source``."""

    name: str
    backup: bool
    source: BackupSource | None = None
    low_priority: bool = False
    env: dict[str, str] = field(default_factory=dict)  # PGBACKREST_* options for this backup


LZ4 = {"PGBACKREST_COMPRESS_TYPE": "lz4", "PGBACKREST_COMPRESS_LEVEL": "1"}
SOURCE_CASES = (
    BackupCase("none", backup=False),
    BackupCase("primary", backup=True, source=BackupSource.PRIMARY),
    BackupCase("replica", backup=True, source=BackupSource.REPLICA),
    BackupCase(
        "replica, low priority", backup=True, source=BackupSource.REPLICA, low_priority=True
    ),
    BackupCase("replica, lz4", backup=True, source=BackupSource.REPLICA, env=LZ4),
    BackupCase(
        "replica, low priority, lz4",
        backup=True,
        source=BackupSource.REPLICA,
        low_priority=True,
        env=LZ4,
    ),
)


def server_cpu_seconds(cluster: Cluster, node: NodeSpec) -> float:
    """User + system CPU seconds of a node's server so far: its postmaster's own, that of the
    children it has reaped (backends that ended), and that of the children running now."""
    pid_file = cluster.data_dir / node.name / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    ticks = 0
    for pid in [postmaster, *map(int, children)]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            if pid == postmaster:
                ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backup_options(cluster: Cluster) -> list[str]:
    """The compression and standby options pgBackRest says the newest backup ran with (its
    log's "backup command begin" line names every option in effect, from any source)."""
    log = (cluster.data_dir / "logs" / "replikit-backup.log").read_text()
    begin = log.rsplit("backup command begin", 1)[1].splitlines()[0]
    return [word for word in begin.split() if word.startswith(("--compress", "--backup-standby"))]


def source_case(cluster: Cluster, url: str, case: BackupCase, seconds: float) -> dict[str, Any]:
    """Uploads with ``case``'s backup running (or for ``seconds`` with none)."""
    tool = cluster.manager.backups()
    nodes = [cluster.state.primary_node, *cluster.state.replicas]
    servers_before = [server_cpu_seconds(cluster, node) for node in nodes]
    backup_before = children_cpu_seconds()
    measured: dict[str, Any] = {"case": case.name, "load_average": os.getloadavg()[0]}
    with uploading(url) as streams:
        started = time.monotonic()
        if case.backup:
            saved = {key: os.environ.get(key) for key in case.env}
            os.environ.update(case.env)  # pgBackRest reads PGBACKREST_* over its config file
            try:
                taken, copied = tool.backup(
                    BackupType.FULL, source=case.source, low_priority=case.low_priority
                )
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
            measured.update(
                copied_from=copied,
                options=backup_options(cluster),
                backup_bytes=taken.size_bytes,
                repository_bytes=taken.repository_bytes,
            )
        else:
            time.sleep(seconds)
        elapsed = time.monotonic() - started
    measured["seconds"] = round(elapsed, 2)
    measured["uploads_per_second"] = round(sum(len(s.receipts) for s in streams) / elapsed, 1)
    measured["backup_cpu_seconds"] = round(children_cpu_seconds() - backup_before, 2)
    for node, before in zip(nodes, servers_before, strict=True):
        role = "primary" if node == cluster.state.primary_node else "replica"
        measured[f"{role}_cpu_seconds"] = round(server_cpu_seconds(cluster, node) - before, 2)
    if case.backup:
        measured["backup_mb_per_second"] = round(measured["backup_bytes"] / elapsed / 2**20, 1)
    return measured


def source_round(cluster: Cluster, url: str, index: int) -> dict[str, dict[str, Any]]:
    """Every case once, in an order turned by ``index``; each case's upload ratio is against
    this round's no-backup rate (which lasts as long as the last backup did)."""
    turned = SOURCE_CASES[index % len(SOURCE_CASES) :] + SOURCE_CASES[: index % len(SOURCE_CASES)]
    results: dict[str, dict[str, Any]] = {}
    seconds = 20.0
    for case in turned:
        results[case.name] = source_case(cluster, url, case, seconds)
        if case.backup:
            seconds = results[case.name]["seconds"]
    without = results["none"]["uploads_per_second"]
    for measured in results.values():
        measured["upload_ratio"] = round(measured["uploads_per_second"] / without, 3)
    return results


def sources_part(scratch: Path, options: argparse.Namespace) -> dict[str, Any]:
    with (
        archiving_cluster(scratch, "sources", options.first_port) as cluster,
        service_on(cluster, scratch) as url,
    ):
        loaded = load_images(url, int(options.gigabytes * GB), options.load_seconds)
        rounds = [source_round(cluster, url, i) for i in range(options.rounds)]
    keys = (
        "uploads_per_second",
        "upload_ratio",
        "seconds",
        "backup_mb_per_second",
        "backup_cpu_seconds",
        "primary_cpu_seconds",
        "replica_cpu_seconds",
        "load_average",
    )
    return {
        "loaded": loaded,
        "rounds": rounds,
        "median": {
            case.name: {
                key: median([r[case.name][key] for r in rounds if key in r[case.name]])
                for key in keys
            }
            for case in SOURCE_CASES
        },
    }


def failover_part(scratch: Path, options: argparse.Namespace) -> dict[str, Any]:
    with archiving_cluster(scratch, "failovers", options.first_port) as cluster:
        data_dir = cluster.data_dir
        timelines = []
        with service_on(cluster, scratch) as url, uploading(url) as streams:
            for _ in range(options.failovers):
                time.sleep(2)
                old = Cluster.open(data_dir).state.primary
                clusters.kill(data_dir, old)
                timelines.append(clusters.failover(data_dir)["timeline"])
                time.sleep(1)
                clusters.rejoin(data_dir, old)
        found = Cluster.open(data_dir).manager.backups().verify()
    return {
        "failovers": options.failovers,
        "timelines": timelines,
        "acknowledged_uploads": sum(len(s.receipts) for s in streams),
        "verify": found.to_json(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=["rpo", "size", "failovers", "sources"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rpo-load-seconds", type=float, default=6.0)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--load-seconds", type=float, default=240.0)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--first-port", type=int, default=None)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument(
        "--scratch", default=None, help="Where the clusters go (default: a new dir in /var/tmp)."
    )
    options = parser.parse_args(argv)
    parts = options.part or ["rpo", "size", "failovers"]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = options.results / f"bench-backups-{stamp}"
    out.mkdir(parents=True)
    result: dict[str, Any] = {"started_at": stamp, "options": vars(options) | {"parts": parts}}
    with scratch_dir("replikit-bench-backups-", parent=options.scratch) as scratch:
        if "rpo" in parts:
            rounds = [
                rpo_round(scratch, options.first_port, options.rpo_load_seconds)
                for _ in range(options.rounds)
            ]
            result["rpo"] = {
                "rounds": rounds,
                "median_rpo_seconds": median([r["rpo_seconds"] for r in rounds]),
                "max_rpo_seconds": max(r["rpo_seconds"] for r in rounds),
            }
            print(json.dumps(result["rpo"], indent=2))
        if "size" in parts:
            result["size"] = size_part(scratch, options)
            print(json.dumps(result["size"]["median"], indent=2))
        if "sources" in parts:
            result["sources"] = sources_part(scratch, options)
            print(json.dumps(result["sources"]["median"], indent=2))
        if "failovers" in parts:
            result["failovers"] = failover_part(scratch, options)
            print(json.dumps(result["failovers"], indent=2))
    (out / "backups.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"Results: {out / 'backups.json'}")


if __name__ == "__main__":
    main()
