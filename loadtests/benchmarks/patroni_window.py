"""The automatic failover window split into its phases, median of N rounds per fault.

    .venv/bin/python -m loadtests.benchmarks.patroni_window --rounds 5

One local 1+2 Patroni cluster (``--sync on``, the timing in docs/operations.md) in a scratch
directory, deleted afterwards. Each round is one ``replikit experiment failover --mode auto``
run (Locust ``mixed`` load on two service instances, no failover command) with the fault
alternating between ``postgres`` (PostgreSQL crashes under a live agent) and ``node`` (agent
and PostgreSQL: a lost machine). Prints each round's phases (detection, election, promotion,
router catch-up, and the whole fault → first acknowledged upload window), then the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from loadtests.experiments.failover import run_failover
from loadtests.experiments.failover_plan import FailoverMode, FailoverPlan, Fault
from replication.cluster import cluster_down, cluster_up
from replication.ports import find_free_port_range
from replication.topology import Manager, SyncMode

PHASES = ("detection", "election", "promotion", "router_catch_up")
RUN_SECONDS = {Fault.POSTGRES: 16.0, Fault.NODE: 32.0}
KILL_AT_SECONDS = 4.0


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def one_round(data_dir: Path, results: Path, fault: Fault, users: int) -> dict[str, float | None]:
    out = run_failover(
        data_dir=data_dir,
        results=results,
        users=users,
        duration=RUN_SECONDS[fault],
        kill_at=KILL_AT_SECONDS,
        sync=SyncMode.ON,
        plan=FailoverPlan(manager=Manager.PATRONI, mode=FailoverMode.AUTO, fault=fault),
    )
    summary = json.loads((out / "summary.json").read_text())
    split = summary["automatic_failover"]
    return {
        **{phase: split["phases"][phase] for phase in PHASES},
        "window": split["window_seconds"],
        "lost": summary["acknowledged_uploads"]["lost"],
        "acked": summary["acknowledged_uploads"]["total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each fault")
    parser.add_argument("--users", type=int, default=4, help="Locust users per round")
    parser.add_argument(
        "--fault",
        choices=[fault.value for fault in Fault],
        action="append",
        help="only this fault (repeatable; default: postgres and node alternately)",
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="replikit-bench-", dir="/var/tmp"))
    scratch.chmod(0o755)
    data_dir = scratch / "patroni"
    rounds: dict[Fault, list[dict[str, float | None]]] = {fault: [] for fault in Fault}
    try:
        cluster_up(
            data_dir,
            sync=SyncMode.ON,
            base_port=find_free_port_range(3, start=26000),
            manager=Manager.PATRONI,
        )
        for index in range(args.rounds):
            for fault in [Fault(f) for f in args.fault or ("postgres", "node")]:
                result = one_round(data_dir, scratch / "results", fault, args.users)
                rounds[fault].append(result)
                print(
                    f"round {index + 1} {fault.value:8s} "
                    + "  ".join(f"{phase} {_seconds(result[phase])}" for phase in PHASES)
                    + f"  window {_seconds(result['window'])} s  ({result['acked']} acked, "
                    f"{result['lost']} lost; load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        cluster_down(data_dir, purge=True)
        shutil.rmtree(scratch, ignore_errors=True)
    for fault, results in rounds.items():
        if not results:
            continue
        medians = {key: _median([r[key] for r in results]) for key in (*PHASES, "window")}
        windows = [w for r in results if (w := r["window"]) is not None]
        print(
            f"median {fault.value:8s} "
            + "  ".join(f"{phase} {_seconds(medians[phase])}" for phase in PHASES)
            + f"  window {_seconds(medians['window'])} s"
            f" (min {_seconds(min(windows, default=None))},"
            f" max {_seconds(max(windows, default=None))}; "
            f"lost {sum(r['lost'] or 0 for r in results)})"
        )


if __name__ == "__main__":
    main()
