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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from loadtests.benchmarks.fault_rounds import RoundResult, run_rounds
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


def one_round(data_dir: Path, url: str, fault: str) -> RoundResult:
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
    return RoundResult(window, old, new, len(stream.acknowledged), lost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each fault")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="replikit-bench-", dir="/var/tmp"))
    scratch.chmod(0o755)
    try:
        with patroni_cluster(scratch) as (data_dir, url):
            run_rounds(args.rounds, FAULTS, lambda fault: one_round(data_dir, url, fault))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
