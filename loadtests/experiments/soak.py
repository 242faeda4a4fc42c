"""The soak: an hour (or three minutes) under steady load and seeded faults, checked for
broken promises, lost writes, errors outside faults and anything that keeps growing.

**Load.** One asyncio pool of the consistency experiment's clients
(:mod:`loadtests.experiments.consistency_clients`), not Locust: each client is one user with
its own token, alternating service instances, and every request it makes is one
:class:`~loadtests.experiments.consistency_records.RequestRecord` (time, operation, status,
error code, serving node, latency, token in and out), which is exactly what the consistency
checker, the lost-write check and the errors-outside-faults check read. ``--clients`` clients
per consistency mode (``read_your_writes``, ``monotonic``, ``strong``, ``eventual`` by default;
the first ``--readers`` of each only browse: listings and metadata reads; the others also
upload and delete their own images) pause ``--think`` between requests, so the load is bounded
in rate (a few dozen requests a second) as well as in time, and it stays on loopback.

**Faults** (:mod:`~loadtests.experiments.soak_schedule`, :mod:`~loadtests.experiments.soak_faults`):
seeded, one at a time, each with its window. **Watch** (:mod:`~loadtests.experiments.soak_watch`):
every ``--sample-every`` seconds. **Checks** at the end (:func:`verdicts`), **report**
(:mod:`~loadtests.experiments.soak_report`): ``results/soak-<timestamp>/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.experiments import analysis
from loadtests.experiments.common import experiment, results_dir
from loadtests.experiments.consistency import parse_modes
from loadtests.experiments.consistency_check import PROMISES, check_history
from loadtests.experiments.consistency_clients import (
    OperationMix,
    Phase,
    run_phase,
    verify_writes,
    warm_up,
)
from loadtests.experiments.consistency_records import RequestRecord, write_log
from loadtests.experiments.failover import prepare_cluster
from loadtests.experiments.soak_checks import (
    GrowthVerdict,
    Series,
    Tolerance,
    Window,
    errors_outside_windows,
    judge_growth,
)
from loadtests.experiments.soak_faults import FaultRunner
from loadtests.experiments.soak_report import write_soak_report
from loadtests.experiments.soak_schedule import available_kinds, plan_faults
from loadtests.experiments.soak_watch import Watcher
from loadtests.experiments.targets import LocalInstances
from replication.cluster import Cluster
from replication.durations import parse_duration_ms
from replication.errors import BadInputError
from replication.topology import Manager, SyncMode, require_state
from service import migrate
from service.routing.consistency import Consistency
from service.settings import Settings

DEFAULT_MODES = "read_your_writes,monotonic,strong,eventual"
MIB = 2**20
# Client backends that are not the service's pools: the watcher's and the probe's own
# connections, the router monitors', a rejoin's checkpoint, the verify reads' admin.
BACKENDS_BESIDE_THE_SERVICE = 20
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600}


def parse_seconds(text: str, option: str) -> float:
    """``60m``, ``3m``, ``90s``, ``1h`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise BadInputError(
            f"{option} takes a positive duration like 60m, 3m or 90s, not '{text}'."
        )
    return float(match.group(1)) * _SECONDS[match.group(2) or "s"]


@dataclass(frozen=True)
class SoakRun:
    duration: float
    seed: int
    fault_every: float
    modes: list[Consistency]
    clients: int  # per mode
    readers: int  # per mode
    instances: int
    think_seconds: float
    settle: float
    sample_every: float

    @classmethod
    def parse(
        cls,
        *,
        duration: str,
        seed: int,
        fault_every: str,
        modes: list[str],
        clients: int,
        readers: int,
        instances: int,
        think: str,
        settle: str,
        sample_every: str,
    ) -> SoakRun:
        chosen = parse_modes(modes)
        if not chosen:
            raise BadInputError("Give at least one mode with --consistency.")
        if clients < 1 or instances < 1:
            raise BadInputError("--clients and --instances must be at least 1.")
        if not 0 <= readers < clients:
            raise BadInputError(
                f"--readers must leave a writing client per mode: 0 to {clients - 1}, "
                f"not {readers}."
            )
        seconds = parse_seconds(duration, "--duration")
        if seconds < 60:
            raise BadInputError("--duration must be at least 60s: the growth check needs it.")
        return cls(
            duration=seconds,
            seed=seed,
            fault_every=parse_seconds(fault_every, "--fault-every"),
            modes=chosen,
            clients=clients,
            readers=readers,
            instances=instances,
            think_seconds=parse_duration_ms(think) / 1000,
            settle=parse_seconds(settle, "--settle"),
            sample_every=parse_seconds(sample_every, "--sample-every"),
        )


# What must not grow (see soak_checks for the window and the fitted rise). Groups not listed
# are recorded and plotted, not judged: per-node connection counts move with the primary.
def tolerances(limits: dict[str, dict[str, int]], pool_bound: int) -> dict[str, Tolerance]:
    wal_ceiling = max(
        (
            node["max_wal_size"] + node["wal_keep_size"] + 2 * node["wal_segment_size"]
            for node in limits.values()
        ),
        default=None,
    )
    return {
        "service RSS": Tolerance(relative=0.05),
        "service PSS": Tolerance(relative=0.05),
        # Each pooled database connection is a descriptor, and the pools fill on demand: a
        # pool reaching a new high adds a few; a leak keeps adding past them.
        "service descriptors": Tolerance(absolute=8),
        "service-child RSS": Tolerance(relative=0.10, floor=4 * MIB),
        "service-child descriptors": Tolerance(absolute=4),
        "postmaster PSS": Tolerance(relative=0.10, floor=4 * MIB),
        "postmaster descriptors": Tolerance(absolute=4),
        "postgres PSS": Tolerance(relative=0.10, floor=8 * MIB),
        "postgres descriptors": Tolerance(absolute=16),
        "patroni RSS": Tolerance(relative=0.10, floor=4 * MIB),
        "patroni descriptors": Tolerance(absolute=4),
        "etcd RSS": Tolerance(relative=0.10, floor=16 * MIB),
        "etcd descriptors": Tolerance(absolute=8),
        # Pools open connections on demand, up to their size, and every failover or restart
        # moves or drops them, so their number swings by more than a trend could tell from a
        # leak in minutes; a leak runs into the configured bound, which no sample may pass.
        "client backends": Tolerance(ceiling=pool_bound + BACKENDS_BESIDE_THE_SERVICE),
        "service connections": Tolerance(ceiling=pool_bound),
        "WAL on disk": Tolerance(ceiling=wal_ceiling),
    }


def pool_bound(instances: int) -> int:
    """The most connections the service may hold over the whole cluster: per instance (one
    worker) two pools (SQLAlchemy's, the plain driver's) of ``REPLIKIT_DB_POOL_SIZE`` +
    ``REPLIKIT_DB_MAX_OVERFLOW`` per node, plus the monitor's one per node."""
    per_pool = sum(
        int(os.environ.get(f"REPLIKIT_{name.upper()}") or Settings.model_fields[name].default)
        for name in ("db_pool_size", "db_max_overflow")
    )
    return instances * (2 * per_pool + 1) * 3


def judge_all(
    series: dict[str, Series], rules: dict[str, Tolerance], *, origin: float, end: float
) -> list[GrowthVerdict]:
    """Every series of a judged group, each warming up for the run's first third."""
    warm_up = (end - origin) / 3
    return [
        judge_growth(s, rules[s.group], end=end, warm_up=warm_up)
        for s in sorted(series.values(), key=lambda s: s.name)
        if s.group in rules
    ]


def _check(name: str, passed: bool, number: str, detail: str = "") -> dict[str, Any]:
    return {"check": name, "passed": passed, "number": number, "detail": detail}


def verdicts(
    *,
    records: list[RequestRecord],
    faults: list[dict[str, Any]],
    windows: list[Window],
    growth: list[GrowthVerdict],
    origin: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each check with its number, and the details summary.json keeps."""
    anomalies = check_history(records)
    lost = sum(a.lost_writes for a in anomalies.values())
    acknowledged = sum(a.writes_acknowledged for a in anomalies.values())
    verified = sum(a.writes_verified for a in anomalies.values())
    promised = {m: a for m, a in anomalies.items() if PROMISES.get(m)}
    broken = sum(a.broken_promises for a in promised.values())
    errors = errors_outside_windows(records, windows, origin=origin)
    failed_faults = [f for f in faults if f["error"]]
    answered = sum(200 <= r.status < 300 for r in records if r.op.value != "verify")
    checks = [
        _check(
            "load ran",
            answered > 0 and all(a.reads > 0 for a in anomalies.values()),
            f"{answered} requests answered 2xx",
        ),
        _check(
            "faults injected and repaired",
            not failed_faults,
            f"{len(faults) - len(failed_faults)} of {len(faults)}",
            "; ".join(f"{f['kind']} at {f['started']} s: {f['error']}" for f in failed_faults),
        ),
        _check(
            "acknowledged writes kept (strong read of every upload and delete)",
            lost == 0 and verified == acknowledged,
            f"{lost} lost of {acknowledged} ({verified} verified)",
        ),
        _check(
            "promises kept (consistency checker, whole log)",
            broken == 0,
            f"{broken} broken ("
            + ", ".join(f"{m} {a.broken_promises}" for m, a in promised.items())
            + ")",
        ),
        _check(
            "errors only inside fault windows",
            errors.outside == 0,
            f"{errors.outside} outside of {errors.failures} failed requests",
            "; ".join(errors.examples),
        ),
    ]
    by_group: dict[str, list[GrowthVerdict]] = {}
    for verdict in growth:
        by_group.setdefault(verdict.group, []).append(verdict)
    for group, judged in by_group.items():
        failing = [v for v in judged if v.passed is False]
        counted = [v for v in judged if v.passed is not None]
        checks.append(
            _check(
                f"no growth: {group}",
                not failing,
                f"{len(failing)} of {len(counted)} series rising beyond tolerance"
                + (
                    f" ({len(judged) - len(counted)} too short to judge)"
                    if len(counted) < len(judged)
                    else ""
                ),
                "; ".join(f"{v.name}: {v.reason}" for v in failing),
            )
        )
    details = {
        "anomalies": {mode: a.to_json() for mode, a in anomalies.items()},
        "errors": errors.to_json(),
    }
    return checks, details


def _prepare(data_dir: Path, sync: SyncMode, manager: Manager | None) -> Cluster:
    """A local cluster as the failover experiment prepares it; an attached compose stack is
    used as it is (its HA variant refuses to be started by replikit), only migrated."""
    if (data_dir / "state.json").exists() and require_state(data_dir).driver == "compose":
        cluster = Cluster.open(data_dir)
        cluster.manager.follow_primary()
        migrate.upgrade(cluster.state.owner_url(cluster.state.primary_node))
        return Cluster.open(data_dir)
    return prepare_cluster(data_dir, sync, manager or Manager.NATIVE)


def _phases(run: SoakRun, urls: list[str]) -> list[Phase]:
    return [
        Phase(
            mode=mode.value,
            urls=urls,
            clients=run.clients,
            readers=run.readers,
            seconds=run.duration,
            think_seconds=run.think_seconds,
            mix=OperationMix(),
            seed=run.seed * 100 + index,
        )
        for index, mode in enumerate(run.modes)
    ]


async def _load(phases: list[Phase], records: list[RequestRecord]) -> None:
    await asyncio.gather(*(run_phase(phase, records) for phase in phases))


def run_soak(
    *,
    data_dir: Path,
    results: Path,
    run: SoakRun,
    sync: SyncMode = SyncMode.ON,
    manager: Manager | None = None,
) -> Path:
    cluster = _prepare(data_dir, sync, manager)
    out = results_dir(results, "soak")
    records: list[RequestRecord] = []
    with experiment(cluster, out) as exp:
        exp.start_services(run.instances)
        service = exp.describe_service()
        instances = exp.target if isinstance(exp.target, LocalInstances) else None
        asyncio.run(warm_up(exp.urls))
        kinds = available_kinds(
            local_instances=instances is not None,
            ha_compose=cluster.state.driver == "compose" and cluster.manager.promotes_by_itself,
        )
        schedule = plan_faults(
            seed=run.seed, duration=run.duration, mean_interval=run.fault_every, kinds=kinds
        )
        origin = time.time()
        watcher = Watcher(
            data_dir=data_dir,
            target=exp.service,
            services=lambda: (
                {r.pid: f"service-{i}" for i, (_, r) in enumerate(instances.records)}
                if instances is not None
                else {}
            ),
            records=records,
            path=out / "watch.jsonl",
            interval=run.sample_every,
        )
        faults = FaultRunner(
            data_dir=data_dir,
            schedule=schedule,
            settle=run.settle,
            instances=instances,
            origin=origin,
        )
        watcher.start()
        faults.start()
        try:
            asyncio.run(_load(_phases(run, exp.urls), records))
        finally:
            faults.stop(timeout=300)
            watcher.stop()
        ended = time.time()
        for mode in run.modes:
            of_mode = [r for r in records if r.mode == mode.value]
            records += asyncio.run(verify_writes(mode.value, exp.urls[0], of_mode))
    write_log(out / "requests.jsonl", sorted(records, key=lambda r: r.started))
    fault_log = [record.to_json(origin) for record in faults.records]
    windows = [w for w in (record.window() for record in faults.records) if w is not None]
    rules = tolerances(watcher.limits, pool_bound(max(1, service["instances"])))
    growth = judge_all(watcher.series, rules, origin=origin, end=ended)
    checks, details = verdicts(
        records=records, faults=fault_log, windows=windows, growth=growth, origin=origin
    )
    work = [r for r in records if r.op.value != "verify"]
    summary: dict[str, Any] = {
        "experiment": "soak",
        "schema_version": 1,
        "started_at": origin,
        "parameters": {
            "duration_seconds": run.duration,
            "seed": run.seed,
            "fault_every_seconds": run.fault_every,
            "consistency": [m.value for m in run.modes],
            "clients_per_mode": run.clients,
            "readers_per_mode": run.readers,
            "think_ms": round(run.think_seconds * 1000),
            "settle_seconds": run.settle,
            "sample_every_seconds": run.sample_every,
            "manager": cluster.state.manager.value,
            "driver": cluster.state.driver,
            "sync": cluster.state.sync.value,
            "service": service,
        },
        "verdict": "pass" if all(c["passed"] for c in checks) else "fail",
        "checks": checks,
        "faults": fault_log,
        "requests": {
            "total": len(work),
            "per_second": round(len(work) / max(1.0, ended - origin), 2),
            "latency_ms": analysis.percentiles(r.ms for r in work),
        },
        "growth": [v.to_json() for v in growth],
        "tolerances": {group: rule.__dict__ for group, rule in rules.items()},
        "limits": watcher.limits,
        **details,
        "files": ["requests.jsonl", "watch.jsonl", "watch.csv", "timeline.png"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_soak_report(out, summary, watcher.samples, watcher.series)
    return out
