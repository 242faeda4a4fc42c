"""Benchmark: how long `cluster up` from nothing, `cluster status` and `cluster down` take.

Each round builds a fresh cluster in a new directory on free ports, times the real CLI
commands as a user runs them, and purges it. Prints one line per round and the medians.

    .venv/bin/python -m loadtests.benchmarks.cluster_lifecycle --rounds 5 --replicas 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from replication.ports import find_free_port_range

REPLIKIT = str(Path(sys.executable).parent / "replikit")


def timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([REPLIKIT, *args], check=True, capture_output=True)
    return time.perf_counter() - started


def one_round(replicas: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="replikit-bench-", dir="/var/tmp"))
    root.chmod(0o755)
    data_dir = str(root / "cluster")
    base = find_free_port_range(replicas + 1, start=30000)
    try:
        up = timed(
            "cluster",
            "up",
            "--replicas",
            str(replicas),
            "--base-port",
            str(base),
            "--data-dir",
            data_dir,
        )
        status = statistics.median(
            timed("cluster", "status", "--json", "--data-dir", data_dir) for _ in range(5)
        )
        down = timed("cluster", "down", "--data-dir", data_dir)
        restart = timed("cluster", "up", "--data-dir", data_dir)
        timed("cluster", "down", "--purge", "--data-dir", data_dir)
        return {"up_from_nothing": up, "status": status, "down": down, "up_restart": restart}
    finally:
        subprocess.run(
            [REPLIKIT, "cluster", "down", "--data-dir", data_dir], capture_output=True, check=False
        )
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=2)
    options = parser.parse_args()
    rounds = []
    for number in range(1, options.rounds + 1):
        result = one_round(options.replicas)
        rounds.append(result)
        print(f"round {number}: " + "  ".join(f"{k}={v:.2f}s" for k, v in result.items()))
    print(
        "median:  "
        + "  ".join(f"{key}={statistics.median(r[key] for r in rounds):.2f}s" for key in rounds[0])
    )


if __name__ == "__main__":
    main()
