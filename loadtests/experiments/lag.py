"""The replica-lag experiment: a matrix of replay delays by consistency modes.

For each cell every replica's replay is delayed by the cell's ``apply_delay``
(``recovery_min_apply_delay``), then the ``ryw`` (upload, read back at once) and ``browse``
scenarios run with reads in the cell's consistency mode. Measured per cell: stale-read rate,
share of reads the primary served, read-your-writes wait outcomes (from /metrics), read
latency, and replica lag over time (from /cluster). Delays are cleared at the end, also on
failure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtests.experiments import analysis, plots
from loadtests.experiments.common import (
    experiment,
    progress,
    read_requests,
    results_dir,
)
from loadtests.experiments.report import write_lag_report
from replication import cluster as clusters
from replication.cluster import Cluster, cluster_up
from replication.durations import format_ms, parse_duration_ms
from replication.errors import BadInputError
from replication.lag import LagChange
from replication.topology import require_state
from service import migrate
from service.routing.consistency import Consistency

# What a read-your-writes read with a token did: served at once by a replica that had it,
# waited and was served, waited in vain, or went to the primary without waiting because every
# replica's lag was longer than the wait.
RYW_OUTCOMES = ("immediate", "waited", "timeout", "skipped")


def ryw_outcomes(metrics_text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "replikit_ryw_waits":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    outcome = sample.labels["outcome"]
                    totals[outcome] = totals.get(outcome, 0) + sample.value
    return totals


def _set_delay(cluster: Cluster, delay_ms: int) -> None:
    for node in require_state(cluster.data_dir).replicas:
        change = LagChange(apply_delay=f"{delay_ms}ms") if delay_ms else LagChange(clear=True)
        clusters.lag(cluster.data_dir, node.name, change)


def run_lag(
    *,
    data_dir: Path,
    results: Path,
    delays: list[str],
    modes: list[str],
    users: int,
    seconds_per_cell: float,
) -> Path:
    delays_ms = [parse_duration_ms(d) for d in delays]
    try:
        consistencies = [Consistency(m.strip()) for m in modes]
    except ValueError:
        raise BadInputError(
            f"--consistency takes {', '.join(c.value for c in Consistency)}, not {modes}."
        ) from None
    cluster, _ = cluster_up(data_dir)
    if cluster.state.fenced:
        raise BadInputError(
            f"{', '.join(cluster.state.fenced)} is fenced; rejoin it before this experiment."
        )
    migrate.upgrade(cluster.state.owner_url(cluster.state.primary_node))
    out = results_dir(results, "lag")
    ryw_users = max(1, users // 2)
    cells: list[dict[str, Any]] = []
    marks: dict[str, float] = {}
    start = time.time()
    with experiment(cluster, out) as run:
        try:
            run.start_services(1)
            service = run.describe_service()
            run.start_sampling(0.25)
            writer = require_state(data_dir).primary
            for delay_ms in delays_ms:
                _set_delay(cluster, delay_ms)
                for mode in consistencies:
                    label = f"{format_ms(delay_ms) if delay_ms else '0'}-{mode.value}"
                    marks[label] = time.time() - start
                    before = ryw_outcomes(run.metrics_text())
                    cell_start = time.time()
                    env = {
                        "REPLIKIT_CONSISTENCY": mode.value,
                        "REPLIKIT_RYW_CONSISTENCY": mode.value,
                    }
                    ryw = run.start_locust(
                        url=run.urls[0],
                        label=f"{label}-ryw",
                        users=ryw_users,
                        seconds=seconds_per_cell,
                        tags=["ryw"],
                        env=env,
                    )
                    browse = run.start_locust(
                        url=run.urls[0],
                        label=f"{label}-browse",
                        users=max(1, users - ryw_users),
                        seconds=seconds_per_cell,
                        tags=["browse"],
                        env=env,
                    )
                    for _ in progress(f"lag {label}", seconds_per_cell):
                        pass
                    run.wait_locusts(timeout=30)
                    after = ryw_outcomes(run.metrics_text())
                    records = read_requests([ryw, browse])
                    reads = analysis.reads(records)
                    lags = [
                        node["lag_seconds"] or 0
                        for sample in run.samples
                        if sample["t"] >= cell_start
                        for node in sample["nodes"]
                        if node["role"] == "replica"
                    ]
                    stale = analysis.stale_reads(records)
                    cells.append(
                        {
                            "apply_delay": format_ms(delay_ms) if delay_ms else "0",
                            "consistency": mode.value,
                            **stale,
                            "reads": len(reads),
                            "primary_share": (
                                round(sum(r["node"] == writer for r in reads) / len(reads), 4)
                                if reads
                                else None
                            ),
                            "ryw_waits": {
                                k: int(after.get(k, 0) - before.get(k, 0)) for k in RYW_OUTCOMES
                            },
                            "read_latency_ms": analysis.percentiles(r["ms"] for r in reads),
                            "server_errors": sum(analysis.is_server_error(r) for r in records),
                            "max_replica_lag_seconds": round(max(lags), 3) if lags else None,
                        }
                    )
        finally:
            _set_delay(cluster, 0)
        samples = list(run.samples)
    summary = {
        "experiment": "lag",
        "schema_version": 1,
        "started_at": start,
        "parameters": {
            "apply_delays": [format_ms(d) if d else "0" for d in delays_ms],
            "consistency": [m.value for m in consistencies],
            "users": users,
            "ryw_users": ryw_users,
            "seconds_per_cell": seconds_per_cell,
            "service_instances": service["instances"],
            "service": service,
        },
        "cells": cells,
        "plots": ["stale_reads.png", "replica_lag.png"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plots.stale_rate_plot(out / "stale_reads.png", cells)
    plots.lag_plot(out / "replica_lag.png", samples, start, marks, "Replica lag per cell")
    write_lag_report(out, summary)
    return out
