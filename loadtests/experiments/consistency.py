"""The consistency experiment: which anomalies each consistency mode lets clients see.

1. Bring up (or reuse) the cluster, migrate, start ``--instances`` service instances (on a
   compose cluster: its load balancer), and delay each replica's replay by its own amount
   (``--apply-delay 0,1500ms``: the first replica not at all, the second 1.5 s), so the
   replicas disagree about the present.
2. For each mode in turn, the same ``--clients`` clients (each with its own token, alternating
   instances; :mod:`loadtests.experiments.consistency_clients`) upload, delete, read metadata
   and list for ``--duration`` seconds (``--readers`` of them only read, the clients the issue
   is about), every request logged; with ``--failover`` the primary
   is crashed half-way through each mode and a replica promoted (the old primary rejoins as
   a replica after the mode). Then every image the mode wrote is read back strongly.
3. The checker (:mod:`loadtests.experiments.consistency_check`) counts each mode's
   read-your-writes and monotonic-read violations and lost writes; beside them, each mode's
   cost: the share of reads the primary served, the token waits, read latency.
4. ``results/consistency-<timestamp>/``: ``requests.jsonl``, ``summary.json``,
   ``summary.md``, ``consistency.png`` and ``replica_lag.png``. Delays are cleared at the end,
   also on failure.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtests.experiments import analysis, plots
from loadtests.experiments.common import experiment, results_dir
from loadtests.experiments.consistency_check import check_history
from loadtests.experiments.consistency_clients import (
    OperationMix,
    Phase,
    run_phase,
    verify_writes,
    warm_up,
)
from loadtests.experiments.consistency_records import Op, RequestRecord, write_log
from loadtests.experiments.lag import RYW_OUTCOMES, ryw_outcomes
from loadtests.experiments.report import write_consistency_report
from replication import cluster as clusters
from replication.cluster import Cluster, cluster_up
from replication.durations import format_ms, parse_duration_ms
from replication.errors import BadInputError, ReplikitError
from replication.lag import LagChange
from replication.topology import require_state
from service import migrate
from service.routing.consistency import Consistency

DEFAULT_MODES = "eventual,bounded,read_your_writes,monotonic,strong"


def parse_modes(modes: list[str]) -> list[Consistency]:
    """The ``--consistency`` modes, or one sentence naming the valid ones."""
    try:
        return [Consistency(m.strip()) for m in modes]
    except ValueError:
        raise BadInputError(
            f"--consistency takes {', '.join(c.value for c in Consistency)}, not {','.join(modes)}."
        ) from None


@dataclass(frozen=True)
class ConsistencyRun:
    """What the user asked for, checked."""

    modes: list[Consistency]
    delays_ms: list[int]
    clients: int
    readers: int
    seconds_per_mode: float
    think_seconds: float
    instances: int
    failover: bool
    seed: int
    mix: OperationMix = field(default_factory=OperationMix)

    @classmethod
    def parse(
        cls,
        *,
        modes: list[str],
        delays: list[str],
        clients: int,
        readers: int,
        seconds_per_mode: float,
        think: str,
        instances: int,
        failover: bool,
        seed: int,
    ) -> ConsistencyRun:
        chosen = parse_modes(modes)
        if not chosen or not delays:
            raise BadInputError("Give at least one mode (--consistency) and one --apply-delay.")
        if clients < 1 or instances < 1 or seconds_per_mode <= 0:
            raise BadInputError("--clients, --instances and --duration must be positive.")
        if not 0 <= readers < clients:
            raise BadInputError(
                f"--readers must leave at least one writing client: 0 to {clients - 1} "
                f"for --clients {clients}, not {readers}."
            )
        return cls(
            modes=chosen,
            delays_ms=[parse_duration_ms(d) for d in delays],
            clients=clients,
            readers=readers,
            seconds_per_mode=seconds_per_mode,
            think_seconds=parse_duration_ms(think) / 1000,
            instances=instances,
            failover=failover,
            seed=seed,
        )


def _delay_text(milliseconds: int) -> str:
    return format_ms(milliseconds) if milliseconds else "0"


def set_replica_delays(data_dir: Path, delays_ms: list[int] | None) -> dict[str, str]:
    """Delay each replica (in node order) by its own amount, the last amount repeating;
    ``None`` clears every delay. Returns what each replica got."""
    applied: dict[str, str] = {}
    for index, node in enumerate(require_state(data_dir).replicas):
        delay = 0 if delays_ms is None else delays_ms[min(index, len(delays_ms) - 1)]
        change = LagChange(apply_delay=f"{delay}ms") if delay else LagChange(clear=True)
        clusters.lag(data_dir, node.name, change)
        applied[node.name] = _delay_text(delay)
    return applied


def token_outcomes(metrics_text: str) -> dict[str, float]:
    """Token waits (``replikit_ryw_waits_total``) and read fallbacks, summed over instances."""
    totals = ryw_outcomes(metrics_text)
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "replikit_read_fallbacks":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals["fallbacks"] = totals.get("fallbacks", 0) + sample.value
    return totals


def primary_share(records: list[RequestRecord], writer: str) -> float | None:
    """Share of answered reads served by the writer of the moment: the node that served the
    latest acknowledged write (so a failover mid-mode moves it)."""
    reads = on_primary = 0
    for record in sorted(records, key=lambda r: r.started):
        if record.op in (Op.UPLOAD, Op.DELETE) and record.status in (201, 204) and record.node:
            writer = record.node
        elif record.op in (Op.GET, Op.LIST) and record.status in (200, 404) and record.node:
            reads += 1
            on_primary += record.node == writer
    return round(on_primary / reads, 4) if reads else None


def _fail_over_midway(data_dir: Path, after: float, events: dict[str, Any]) -> None:
    """Crash the primary ``after`` seconds from now and promote the replica that received
    the most WAL; runs beside the clients, in a thread."""
    try:
        time.sleep(after)
        old = require_state(data_dir).primary
        events["kill_at"] = time.time()
        clusters.kill(data_dir, old)
        events["old_primary"] = old
        # --force: the candidate's apply delay would refuse it; promotion clears it.
        result = clusters.failover(data_dir, force=True)
        events.update(
            new_primary=result["new_primary"],
            seconds_to_writable=result["seconds_to_writable"],
            done_at=time.time(),
        )
    except Exception as error:
        events["error"] = f"{type(error).__name__}: {error}"


def _mode_summary(
    mode: Consistency,
    records: list[RequestRecord],
    writer: str,
    waits_before: dict[str, float],
    waits_after: dict[str, float],
    failover: dict[str, Any] | None,
) -> dict[str, Any]:
    work = [r for r in records if r.op is not Op.VERIFY]
    reads = [r for r in work if r.op in (Op.GET, Op.LIST)]
    writes = [r for r in work if r.op in (Op.UPLOAD, Op.DELETE)]
    waits = {
        k: int(waits_after.get(k, 0) - waits_before.get(k, 0)) for k in (*RYW_OUTCOMES, "fallbacks")
    }
    return {
        "mode": mode.value,
        "cost": {
            "primary_share": primary_share(work, writer),
            "token_waits": waits,
            "read_latency_ms": analysis.percentiles(r.ms for r in reads),
            "write_latency_ms": analysis.percentiles(r.ms for r in writes),
            "server_errors": sum(r.status >= 500 or r.status == 0 for r in work),
        },
        "failover": failover,
    }


def run_consistency(*, data_dir: Path, results: Path, run: ConsistencyRun) -> Path:
    cluster, _ = cluster_up(data_dir)
    for name in list(cluster.state.fenced):  # a previous --failover run stopped half-way
        clusters.rejoin(data_dir, name)
    state = require_state(data_dir)
    migrate.upgrade(state.owner_url(state.primary_node))
    cluster = Cluster.open(data_dir)
    out = results_dir(results, "consistency")
    start = time.time()
    records: list[RequestRecord] = []
    modes: list[dict[str, Any]] = []
    marks: dict[str, float] = {}
    with experiment(cluster, out) as exp:
        try:
            exp.start_services(run.instances)
            service = exp.describe_service()
            exp.start_sampling(0.25)
            delays = set_replica_delays(data_dir, run.delays_ms)
            asyncio.run(warm_up(exp.urls))
            for mode in run.modes:
                marks[mode.value] = time.time() - start
                writer = require_state(data_dir).primary
                waits_before = token_outcomes(exp.metrics_text())
                events: dict[str, Any] = {}
                killer = None
                if run.failover:
                    killer = threading.Thread(
                        target=_fail_over_midway,
                        args=(data_dir, run.seconds_per_mode / 2, events),
                        daemon=True,
                    )
                    killer.start()
                phase = Phase(
                    mode=mode.value,
                    urls=exp.urls,
                    clients=run.clients,
                    readers=run.readers,
                    seconds=run.seconds_per_mode,
                    think_seconds=run.think_seconds,
                    mix=run.mix,
                    seed=run.seed,
                )
                phase_records = asyncio.run(run_phase(phase))
                if killer is not None:
                    killer.join()
                    if "error" in events:
                        raise ReplikitError(
                            f"The failover during {mode.value} failed: {events['error']}"
                        )
                    clusters.rejoin(data_dir, events["old_primary"])
                    set_replica_delays(data_dir, run.delays_ms)  # the replicas are others now
                    events = {
                        k: round(v - start, 3) if k.endswith("_at") else v
                        for k, v in events.items()
                    }
                waits_after = token_outcomes(exp.metrics_text())
                phase_records += asyncio.run(verify_writes(mode.value, exp.urls[0], phase_records))
                records += phase_records
                modes.append(
                    _mode_summary(
                        mode, phase_records, writer, waits_before, waits_after, events or None
                    )
                )
        finally:
            set_replica_delays(data_dir, None)
        samples = list(exp.samples)
    write_log(out / "requests.jsonl", records)
    anomalies = check_history(records)
    for entry in modes:
        entry["anomalies"] = anomalies[entry["mode"]].to_json()
    summary = {
        "experiment": "consistency",
        "schema_version": 1,
        "started_at": start,
        "parameters": {
            "consistency": [m.value for m in run.modes],
            "apply_delays": delays,
            "clients": run.clients,
            "readers": run.readers,
            "seconds_per_mode": run.seconds_per_mode,
            "think_ms": round(run.think_seconds * 1000),
            "mix": {
                "upload": run.mix.upload,
                "delete": run.mix.delete,
                "get": run.mix.get,
                "list": run.mix.list,
            },
            "failover": run.failover,
            "seed": run.seed,
            "service_instances": service["instances"],
            "service": service,
        },
        "modes": modes,
        "log": "requests.jsonl",
        "plots": ["consistency.png", "replica_lag.png"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plots.consistency_plot(out / "consistency.png", modes)
    plots.lag_plot(out / "replica_lag.png", samples, start, marks, "Replica lag per mode")
    write_consistency_report(out, summary)
    return out
