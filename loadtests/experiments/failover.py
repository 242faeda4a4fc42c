"""The failover experiment: crash the primary under load and measure what users saw.

1. Bring up (or reuse) the local cluster, migrate, start two service instances; on a compose
   cluster, use the stack's load balancer instead (see :mod:`loadtests.experiments.targets`).
2. Run the ``mixed`` Locust load against them, plus a timeline-stamped heartbeat writer.
3. At ``--kill-at`` crash the primary (``cluster kill``) and run ``cluster failover``
   (``--mode manual``). With ``--mode auto`` (a Patroni cluster) only the fault is injected,
   ``--fault node`` (agent and PostgreSQL, a lost machine) or ``postgres`` (PostgreSQL under a
   live agent); a :class:`~loadtests.experiments.leader_watch.LeaderWatch` samples etcd and
   the nodes so the window can be split into detection, election, promotion and router
   catch-up (:mod:`loadtests.experiments.window_split`).
4. Measure: write-unavailability window from the clients (last acknowledged upload before the
   kill → first after) and from the database (heartbeat rows per timeline), server errors on
   reads during the window, p50/p95/p99 latency before/during/after, and acknowledged uploads
   that are missing afterwards (every 2xx upload id is looked up on the new primary).
5. Rejoin the old primary (under Patroni: start its agent; a PostgreSQL crash needs nothing),
   so the cluster is whole again; write summary.json, summary.md, Locust CSV/HTML and plots
   under results/failover-<timestamp>/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from string import ascii_lowercase
from typing import Any, Protocol

import asyncpg

from loadtests.experiments import analysis, plots
from loadtests.experiments.common import (
    experiment,
    progress,
    read_requests,
    results_dir,
)
from loadtests.experiments.failover_plan import FailoverPlan, Fault, check_timing
from loadtests.experiments.heartbeat import Heartbeat, database_gap, database_window, prepare
from loadtests.experiments.leader_watch import LeaderWatch
from loadtests.experiments.report import write_failover_report
from loadtests.experiments.window_split import WindowSplit, split_window
from replication import cluster as clusters
from replication.admin import app_connect, owner_connect
from replication.cluster import Cluster, cluster_up
from replication.errors import BadInputError
from replication.probe import Readings
from replication.topology import Manager, SyncMode, require_state
from service import migrate


async def on_primary(data_dir: Path, work: Any, *, as_owner: bool = False) -> Any:
    """``await work(connection)`` on the cluster's primary, as the service's role (or, with
    ``as_owner``, as the schema's owner)."""
    state = require_state(data_dir)
    node = state.primary_node
    connect = owner_connect if as_owner else app_connect
    connection = await connect(state, node, connect_timeout=3)
    try:
        return await work(connection)
    finally:
        await connection.close()


async def _missing(connection: asyncpg.Connection, ids: list[str]) -> int:
    present = await connection.fetchval(
        "SELECT count(*) FROM images WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]
    )
    return len(ids) - int(present)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@contextlib.contextmanager
def _stopping(thread: _Stoppable | None) -> Iterator[None]:
    """Stop a sampling thread (heartbeat, leader watch) however the experiment ends."""
    try:
        yield
    finally:
        if thread is not None:
            thread.stop()


def prepare_cluster(data_dir: Path, sync: SyncMode, manager: Manager = Manager.NATIVE) -> Cluster:
    existing = data_dir / "state.json"
    if existing.exists() and (recorded := require_state(data_dir)).sync is not sync:
        other = (
            f"set REPLIKIT_SYNC_MODE={sync.value} in {recorded.compose_env_file or '.env'} and "
            "recreate the stack"
            if recorded.driver == "compose"
            else "use another --data-dir"
        )
        raise BadInputError(
            f"The cluster in {data_dir} runs with --sync {recorded.sync.value}; pass "
            f"--sync {recorded.sync.value} or {other}."
        )
    new = not existing.exists()
    cluster, _ = cluster_up(data_dir, sync=sync if new else None, manager=manager if new else None)
    state = cluster.state
    for name in list(state.fenced):  # a previous run that stopped half-way
        clusters.rejoin(data_dir, name)
    state = require_state(data_dir)
    migrate.upgrade(state.owner_url(state.primary_node))
    return Cluster.open(data_dir)


def _restore_after_fault(data_dir: Path, plan: FailoverPlan, old_primary: str) -> str:
    """Make the cluster whole again; how the old primary came back."""
    if not plan.automatic:
        return str(clusters.rejoin(data_dir, old_primary)["method"])
    method = "restarted by its agent"
    if plan.fault is Fault.NODE:
        method = str(clusters.rejoin(data_dir, old_primary)["method"])
    Cluster.open(data_dir).wait_streaming()  # also records the leader as the primary
    return method


def run_failover(
    *,
    data_dir: Path,
    results: Path,
    users: int,
    duration: float,
    kill_at: float,
    sync: SyncMode,
    plan: FailoverPlan | None = None,
) -> Path:
    plan = plan or FailoverPlan()
    check_timing(plan, data_dir, duration=duration, kill_at=kill_at)
    cluster = prepare_cluster(data_dir, sync, plan.manager)
    out = results_dir(results, "failover")
    asyncio.run(on_primary(data_dir, prepare, as_owner=True))  # creates its table
    heartbeat = Heartbeat(data_dir)
    watch = LeaderWatch(cluster) if plan.automatic else None
    events: dict[str, float] = {}
    with experiment(cluster, out) as run, _stopping(heartbeat), _stopping(watch):
        run.start_services(2)
        service = run.describe_service()
        run.start_sampling()
        heartbeat.start()
        if watch is not None:
            watch.start()
        start = time.time()
        per_url = max(1, users // len(run.urls))
        for index, url in enumerate(run.urls):
            run.start_locust(
                url=url,
                label=ascii_lowercase[index],
                users=per_url,
                seconds=duration,
                tags=["mixed"],
            )
        old_primary = require_state(data_dir).primary
        failover_result: dict[str, Any] = {}
        for elapsed in progress("failover experiment", duration):
            if elapsed >= kill_at and "kill" not in events:
                events["kill_issued"] = time.time()
                clusters.kill(data_dir, old_primary, postgres_only=plan.fault is Fault.POSTGRES)
                # The node is down once the command returns; before that it may still take
                # writes (a compose kill spends seconds in docker-compose before the signal).
                events["kill"] = time.time()
                if not plan.automatic:
                    failover_result = clusters.failover(data_dir)
                    events["failover_done"] = time.time()
        run.wait_locusts(timeout=30)
        heartbeat.stop()
        if watch is not None:
            watch.stop()
        records = read_requests(run.locusts)
        window = analysis.write_window(records, events["kill"])
        if plan.automatic:
            Cluster.open(data_dir).status()  # the state file follows Patroni's leader
        db_window = asyncio.run(
            on_primary(
                data_dir,
                (lambda c: database_gap(c, events["kill"])) if plan.automatic else database_window,
            )
        )
        uploaded = [
            r["image_id"]
            for r in records
            if r["kind"] == "write" and r["status"] == 201 and r["image_id"]
        ]
        lost = asyncio.run(on_primary(data_dir, lambda c: _missing(c, uploaded)))
        rejoin_method = _restore_after_fault(data_dir, plan, old_primary)
        samples = list(run.samples)

    split = (
        split_window(
            samples=watch.samples,
            fault_at=events["kill"],
            old_leader=old_primary,
            heartbeat_acks=heartbeat.acked_at,
            first_upload_ack=analysis.first_write_sent_after(records, events["kill"]),
        )
        if watch is not None
        else None
    )
    if watch is not None:
        (out / "leader-watch.json").write_text(json.dumps([s.to_json() for s in watch.samples]))
    during_start = window["last_write_before"] or events["kill"]
    during_end = window["first_write_after"] or events.get("failover_done") or time.time()

    def phase(lo: float, hi: float) -> list[dict[str, Any]]:
        return [r for r in records if lo <= r["t"] < hi]

    read_records = analysis.reads(records)
    state = require_state(data_dir)
    new_reading = None if failover_result else Readings.take(state).alive(state.primary)
    summary: dict[str, Any] = {
        "experiment": "failover",
        "schema_version": 1,
        "started_at": start,
        "parameters": {
            "users": users,
            "duration_seconds": duration,
            "kill_at_seconds": kill_at,
            "sync": sync.value,
            "mode": plan.mode.value,
            **(
                {"manager": plan.manager.value, "fault": plan.fault.value}
                if plan.fault is not None
                else {}
            ),
            "service_instances": service["instances"],
            "service": service,
        },
        "old_primary": old_primary,
        "new_primary": failover_result["new_primary"] if failover_result else state.primary,
        "new_timeline": (
            failover_result["timeline"]
            if failover_result
            else (new_reading.timeline if new_reading is not None else None)
        ),
    }
    if failover_result:
        summary["failover_command"] = {
            "seconds_to_writable": failover_result["seconds_to_writable"],
            "duration_seconds": failover_result["duration_seconds"],
        }
    if split is not None:
        summary["automatic_failover"] = split.to_json()
    summary |= {
        "write_unavailability": {
            "client_seconds": window["seconds"],
            "database_seconds": db_window["seconds"],
            "database": db_window,
        },
        "requests": {
            "total": len(records),
            "server_errors": sum(analysis.is_server_error(r) for r in records),
        },
        "reads_during_window": {
            "total": len([r for r in read_records if during_start <= r["t"] < during_end]),
            "server_errors": sum(
                analysis.is_server_error(r)
                for r in read_records
                if during_start <= r["t"] < during_end
            ),
        },
        "latency_ms": {
            "before": analysis.percentiles(r["ms"] for r in phase(start, during_start)),
            "during": analysis.percentiles(r["ms"] for r in phase(during_start, during_end)),
            "after": analysis.percentiles(r["ms"] for r in phase(during_end, time.time())),
        },
        "acknowledged_uploads": {"total": len(uploaded), "lost": lost},
        "heartbeat_writes_acknowledged": heartbeat.acknowledged,
        "rejoin": {"node": old_primary, "method": rejoin_method},
        "events": {k: round(v - start, 3) for k, v in events.items()},
        "plots": ["throughput.png", "replica_lag.png"]
        + (["window_split.png"] if split is not None else []),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    marks = _marks(events, start, window, split)
    title = (
        f"Automatic failover under load (Patroni, {plan.fault} fault, sync {sync.value}, "
        f"{users} users)"
        if split is not None
        else f"Failover under load (sync {sync.value}, {users} users)"
    )
    plots.throughput_plot(out / "throughput.png", analysis.per_second(records, start), marks, title)
    plots.lag_plot(out / "replica_lag.png", samples, start, marks, "Replica lag during failover")
    if split is not None:
        plots.window_split_plot(out / "window_split.png", split.phases, title)
    write_failover_report(out, summary)
    return out


def _marks(
    events: dict[str, float],
    start: float,
    window: dict[str, float | None],
    split: WindowSplit | None,
) -> dict[str, float]:
    """Moments to draw on the plots, in seconds since the start of the load."""
    marks = {"kill": events["kill"] - start}
    if events["kill"] - events["kill_issued"] > 0.5:  # a compose kill takes seconds by itself
        marks = {"kill sent": events["kill_issued"] - start, "kill returned": marks["kill"]}
    if "failover_done" in events:
        marks["failover done"] = events["failover_done"] - start
    if split is not None:
        for name in ("detected", "elected", "writable"):
            offset = split.milestones[name]
            if offset is not None:
                marks[name] = events["kill"] - start + offset
    if window["first_write_after"]:
        marks["first write"] = window["first_write_after"] - start
    return marks
