"""The restore experiment: an operator's mistake under load, undone by point-in-time recovery.

1. Bring up (or reuse) a local cluster that archives WAL (``cluster up --archive``), migrate,
   take a full backup (from a replica), and start ``--instances`` service instances.
2. ``--clients`` clients upload small PNGs through the service, one after another, noting
   each acknowledged upload (id, bytes' digest, when it was sent and acknowledged: the wall
   clock, which PostgreSQL's commit timestamps share on this machine).
3. At T, after ``--before`` seconds, the mistake: ``DELETE FROM images`` as the schema's owner
   (``--mistake sql``), or every image uploaded so far deleted through the API with its
   delete token (``--mistake api``). The uploads go on for ``--after`` seconds.
4. ``replikit restore --to T`` builds a NEW cluster (the source is only read): a commit
   acknowledged before T was committed before T, so recovery keeps it; an upload sent after T
   was committed after T, so recovery stops before it, and before the mistake.
5. A service instance on the restored cluster is asked for every acknowledged upload, byte
   for byte. Verdict: every upload acknowledged before T is back, none sent after T is (those
   in flight at T may go either way). RPO: from the oldest acknowledged upload before T that
   did not come back to T (0 when every one came back). The restored cluster is stopped and
   removed unless ``--keep-restored``.
6. ``results/restore-<timestamp>/``: ``summary.json``, ``summary.md``, ``timeline.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import cycle
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from loadtests.benchmarks.acked_uploads import AckedUploads, Receipt, missing_from, running
from loadtests.experiments import plots
from loadtests.experiments.common import experiment, progress, results_dir
from loadtests.experiments.failover import on_primary
from loadtests.experiments.report import write_restore_report
from loadtests.experiments.targets import LocalInstances
from replication import cluster as clusters
from replication.backup.base import BackupType, RestoredCluster, RestoreTarget, TargetKind
from replication.backup.restore import restore_cluster
from replication.cluster import Cluster, cluster_down, cluster_up
from replication.errors import BadInputError
from replication.topology import require_state
from service import migrate


class Mistake(StrEnum):
    SQL = "sql"  # DELETE FROM images, as the schema's owner
    API = "api"  # DELETE /api/v1/images/{id} for every image uploaded so far


@dataclass(frozen=True)
class RestoreRun:
    """What the user asked for, checked."""

    before_seconds: float
    after_seconds: float
    clients: int
    instances: int
    mistake: Mistake
    restore_dir: Path | None  # None: beside the source, removed afterwards unless kept
    keep_restored: bool

    def __post_init__(self) -> None:
        if self.before_seconds < 1 or self.after_seconds < 1:
            raise BadInputError(
                "--before and --after take at least 1 second each: uploads on both sides of "
                "the mistake are what the experiment checks."
            )
        if self.clients < 1 or self.instances < 1:
            raise BadInputError("--clients and --instances take 1 or more.")


@dataclass(frozen=True)
class Outcome:
    """Which acknowledged uploads came back, by when they happened against T."""

    before: list[Receipt]  # acknowledged before T: each must be back
    in_flight: list[Receipt]  # sent before T, acknowledged after: either way
    after: list[Receipt]  # sent after T: each must be absent
    missing: set[str]  # ids the restored cluster does not return byte for byte

    @classmethod
    def split(cls, receipts: list[Receipt], moment: float, missing: set[str]) -> Outcome:
        return cls(
            before=[r for r in receipts if r.acked_wall < moment],
            in_flight=[r for r in receipts if r.sent_wall < moment <= r.acked_wall],
            after=[r for r in receipts if r.sent_wall >= moment],
            missing=missing,
        )

    def lost(self) -> list[Receipt]:
        return [r for r in self.before if r.image_id in self.missing]

    def resurrected(self) -> list[Receipt]:
        return [r for r in self.after if r.image_id not in self.missing]

    def rpo_seconds(self, moment: float) -> float:
        """From the oldest upload acknowledged before T that did not come back, to T."""
        lost = self.lost()
        return round(moment - min(r.acked_wall for r in lost), 3) if lost else 0.0

    def to_json(self, moment: float) -> dict[str, Any]:
        back_before = [r for r in self.before if r.image_id not in self.missing]
        newest_back = max((r.acked_wall for r in back_before), default=None)
        return {
            "acknowledged": len(self.before) + len(self.in_flight) + len(self.after),
            "before_t": {
                "total": len(self.before),
                "back": len(back_before),
                "lost": [r.image_id for r in self.lost()],
            },
            "in_flight_at_t": {
                "total": len(self.in_flight),
                "back": sum(r.image_id not in self.missing for r in self.in_flight),
            },
            "after_t": {
                "total": len(self.after),
                "absent": sum(r.image_id in self.missing for r in self.after),
                "back": [r.image_id for r in self.resurrected()],
            },
            "newest_back_before_t_seconds": (
                round(moment - newest_back, 3) if newest_back is not None else None
            ),
        }


def acknowledged_digests(streams: list[AckedUploads]) -> dict[str, str]:
    return {image_id: digest for s in streams for image_id, digest in dict(s.acknowledged).items()}


def came_back(restored: Path, acknowledged: dict[str, str]) -> set[str]:
    """The ids of ``acknowledged`` that a service instance started on the cluster in
    ``restored`` (pointed at it as the restore's output says) does NOT return byte for byte."""
    scratch = Path(tempfile.mkdtemp(prefix="replikit-restored-service-"))
    instances = LocalInstances.start(Cluster.open(restored), scratch, 1)
    try:
        return set(missing_from(instances.load_urls[0], acknowledged))
    finally:
        instances.close()
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def restored_cluster(
    source: Path, new_dir: Path, target: RestoreTarget, *, keep: bool = False
) -> Iterator[RestoredCluster]:
    """``replikit restore`` of ``source`` into ``new_dir``; stopped and removed afterwards
    (also on failure) unless ``keep``."""
    result = restore_cluster(source=source, new_dir=new_dir, target=target)
    try:
        yield result
    finally:
        if not keep:
            with contextlib.suppress(Exception):
                cluster_down(new_dir, purge=True)


async def _delete_every_row(connection: asyncpg.Connection) -> int:
    status = await connection.execute("DELETE FROM images")
    return int(str(status).split()[-1])


async def _count_images(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM images"))


def _delete_through_api(url: str, receipts: list[Receipt]) -> int:
    deleted = 0
    with httpx.Client(timeout=10) as client:
        for receipt in receipts:
            answer = client.delete(
                f"{url}/api/v1/images/{receipt.image_id}",
                headers={"X-Delete-Token": receipt.delete_token},
            )
            deleted += answer.status_code == 204
    return deleted


def make_mistake(data_dir: Path, mistake: Mistake, url: str, receipts: list[Receipt]) -> int:
    """Delete every image, as an operator might by mistake; how many were deleted."""
    if mistake is Mistake.SQL:
        return int(asyncio.run(on_primary(data_dir, _delete_every_row, as_owner=True)))
    return _delete_through_api(url, receipts)


def prepare_archiving_cluster(data_dir: Path) -> Cluster:
    """The cluster in ``data_dir`` (built with ``--archive`` when new), whole and migrated."""
    cluster, _ = cluster_up(data_dir, archive=True)
    for name in list(cluster.state.fenced):  # a previous run that stopped half-way
        clusters.rejoin(data_dir, name)
    state = require_state(data_dir)
    migrate.upgrade(state.owner_url(state.primary_node))
    return Cluster.open(data_dir)


def _default_restore_dir(data_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return data_dir.parent / f"{data_dir.name}-restored-{stamp}"


def run_restore(*, data_dir: Path, results: Path, run: RestoreRun) -> Path:
    cluster = prepare_archiving_cluster(data_dir)
    tool = cluster.manager.backups()  # refuses a cluster that cannot take backups
    out = results_dir(results, "restore")
    start = time.time()
    backup, backup_node = tool.backup(BackupType.FULL)
    backup_done = time.time()
    with experiment(cluster, out) as exp:
        exp.start_services(run.instances)
        service = exp.describe_service()
        urls = cycle(exp.urls)
        streams = [AckedUploads(next(urls), seed=index * 1_000_000) for index in range(run.clients)]
        with contextlib.ExitStack() as uploading:
            for stream in streams:
                uploading.enter_context(running(stream))
            for _ in progress("uploads before the mistake", run.before_seconds):
                pass
            mistake_at = time.time()
            known = [r for s in streams for r in list(s.receipts)]
            deleted = make_mistake(data_dir, run.mistake, exp.urls[0], known)
            mistake_done = time.time()
            for _ in progress("uploads after the mistake", run.after_seconds):
                pass
        uploads_done = time.time()
        failed_uploads = sum(s.errors for s in streams)
    left = int(asyncio.run(on_primary(data_dir, _count_images)))
    tool.flush()  # the WAL past T reaches the archive before the restore reads it
    receipts = sorted((r for s in streams for r in s.receipts), key=lambda r: r.acked_wall)
    target = RestoreTarget(TargetKind.TIME, time=datetime.fromtimestamp(mistake_at, UTC))
    new_dir = (run.restore_dir or _default_restore_dir(data_dir)).absolute()
    restore_started = time.time()
    with restored_cluster(data_dir, new_dir, target, keep=run.keep_restored) as restored:
        restore_done = time.time()
        missing = came_back(new_dir, acknowledged_digests(streams))
    outcome = Outcome.split(receipts, mistake_at, missing)
    lost, resurrected = outcome.lost(), outcome.resurrected()

    def since(moment: float) -> float:
        return round(moment - start, 3)

    summary: dict[str, Any] = {
        "experiment": "restore",
        "schema_version": 1,
        "started_at": start,
        "parameters": {
            "before_seconds": run.before_seconds,
            "after_seconds": run.after_seconds,
            "clients": run.clients,
            "mistake": run.mistake.value,
            "service_instances": service["instances"],
            "service": service,
        },
        "backup": {
            **backup.to_json(),
            "source": backup_node,
            "done_at": since(backup_done),
        },
        "mistake": {
            "kind": run.mistake.value,
            "at": since(mistake_at),
            "at_time": target.describe(),
            "seconds": round(mistake_done - mistake_at, 3),
            "deleted": deleted,
            "images_left_in_source": left,
        },
        "uploads_stopped_at": since(uploads_done),
        "failed_uploads": failed_uploads,
        "restore": {
            **restored.to_json(),
            "target": target.describe(),
            "started_at": since(restore_started),
            "done_at": since(restore_done),
            "kept": run.keep_restored,
        },
        "uploads": outcome.to_json(mistake_at),
        "rpo_seconds": outcome.rpo_seconds(mistake_at),
        "restore_seconds": restored.seconds,
        # A run where nothing was deleted, or nothing acknowledged before T, proves nothing.
        "verdict": "pass" if deleted and outcome.before and not (lost or resurrected) else "fail",
        "plots": ["timeline.png"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plots.restore_timeline_plot(
        out / "timeline.png",
        acked=[(since(r.acked_wall), r.image_id not in missing) for r in receipts],
        marks={
            "backup": since(backup_done),
            "mistake (T)": since(mistake_at),
            "mistake done": since(mistake_done),
            "restore target": since(target.time.timestamp()) if target.time else since(mistake_at),
        },
        restore=(since(restore_started), since(restore_done)),
        title=f"Restore to just before the mistake ({run.mistake.value}): {summary['verdict']}",
    )
    write_restore_report(out, summary)
    return out
