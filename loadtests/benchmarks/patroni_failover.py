"""Automatic failover under Patroni as a client sees it: fault → first acknowledged upload.

    .venv/bin/python -m loadtests.benchmarks.patroni_failover --rounds 5

One local 1+2 cluster built with ``replikit cluster up --manager patroni --sync on`` (the
timing in docs/operations.md), served by one ``replikit serve`` instance (rate limit off),
every node in its URLs. Each round streams uploads and injects one fault through the CLI, with
no failover command afterwards:

* ``postgres``: ``replikit cluster kill primary --postgres-only``: PostgreSQL crashes, its
  agent lives (it restarts PostgreSQL in place while it still holds the leader lease);
* ``node``: ``replikit cluster kill primary``: agent and PostgreSQL gone, as a lost machine
  (the lease must expire: ttl), then ``replikit cluster rejoin`` brings the node back.

The window runs from the kill command returning to the sending of the first upload that is
then acknowledged. Rounds alternate between the two faults; the cluster settles (every replica
streaming, a synchronous standby chosen) before each. Prints every round, the medians, and
how many acknowledged uploads were lost (expected: none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from loadtests.experiments.targets import target_for
from replication.cluster import Cluster
from replication.ports import find_free_port_range

REPLIKIT = str(Path(sys.executable).parent / "replikit")
FAULTS = ("postgres", "node")


def cli(*args: str) -> str:
    result = subprocess.run([REPLIKIT, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"replikit {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@contextlib.contextmanager
def patroni_cluster(scratch: Path) -> Iterator[tuple[Path, str]]:
    data_dir = scratch / "patroni"
    base = find_free_port_range(3)
    target = None
    try:
        cli(
            "cluster", "up", "--manager", "patroni", "--sync", "on", "--base-port", str(base),
            "--data-dir", str(data_dir),
        )  # fmt: skip
        cli("migrate", "--data-dir", str(data_dir))
        target = target_for(Cluster.open(data_dir), scratch, 1)
        yield data_dir, target.load_urls[0]
    finally:
        if target is not None:
            target.close()
        cli("cluster", "down", "--data-dir", str(data_dir))


def one_round(data_dir: Path, url: str, fault: str) -> tuple[float, str, str, int, int]:
    """(window seconds, old leader, new leader, acknowledged, lost) of one fault."""
    Cluster.open(data_dir).wait_streaming()
    with running(AckedUploads(url)) as stream:
        time.sleep(2)
        extra = ["--postgres-only"] if fault == "postgres" else []
        killed = json.loads(
            cli("cluster", "kill", "primary", *extra, "--json", "--data-dir", str(data_dir))
        )
        down_at = time.monotonic()
        window = stream.first_ack_sent_after(down_at, within=90)
        time.sleep(1)
    lost = len(stream.missing(url))
    old = str(killed["node"])
    cluster = Cluster.open(data_dir)
    cluster.status()  # the state file follows Patroni's leader
    new = cluster.state.primary
    if fault == "node":
        cli("cluster", "rejoin", old, "--data-dir", str(data_dir))
    return window, old, new, len(stream.acknowledged), lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each fault")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="replikit-bench-", dir="/var/tmp"))
    scratch.chmod(0o755)
    windows: dict[str, list[float]] = {fault: [] for fault in FAULTS}
    lost_total = dict.fromkeys(FAULTS, 0)
    try:
        with patroni_cluster(scratch) as (data_dir, url):
            for index in range(args.rounds):
                for fault in FAULTS:
                    window, old, new, acked, lost = one_round(data_dir, url, fault)
                    windows[fault].append(window)
                    lost_total[fault] += lost
                    print(
                        f"round {index + 1} {fault:8s} fault -> first acked upload "
                        f"{window:6.2f} s  (leader {old} -> {new}; {acked} acked, {lost} lost)",
                        flush=True,
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for fault in FAULTS:
        values = windows[fault]
        print(
            f"median {fault:8s} {statistics.median(values):6.2f} s  "
            f"(min {min(values):.2f}, max {max(values):.2f}; lost {lost_total[fault]})"
        )


if __name__ == "__main__":
    main()
