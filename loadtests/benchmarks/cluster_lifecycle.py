"""Benchmark: how long `cluster up` from nothing, `cluster status` and `cluster down` take.

Each round builds a fresh cluster in a new directory on free ports, times the real CLI
commands as a user runs them, and purges it. Prints one line per round and the medians.

    .venv/bin/python -m loadtests.benchmarks.cluster_lifecycle --rounds 5 --replicas 2
"""

from __future__ import annotations

import argparse
import statistics
import time

from loadtests.benchmarks.bench_cluster import free_ports_below_ephemeral
from loadtests.benchmarks.replikit_cli import replikit, replikit_quietly
from loadtests.benchmarks.scratch import scratch_dir


def timed(*args: str) -> float:
    started = time.perf_counter()
    replikit(*args)
    return time.perf_counter() - started


def one_round(replicas: int) -> dict[str, float]:
    with scratch_dir() as root:
        data_dir = str(root / "cluster")
        base = free_ports_below_ephemeral(replicas + 1)
        try:
            up = timed(
                "cluster", "up", "--replicas", str(replicas), "--base-port", str(base),
                "--data-dir", data_dir,
            )  # fmt: skip
            status = statistics.median(
                timed("cluster", "status", "--json", "--data-dir", data_dir) for _ in range(5)
            )
            down = timed("cluster", "down", "--data-dir", data_dir)
            restart = timed("cluster", "up", "--data-dir", data_dir)
            timed("cluster", "down", "--purge", "--data-dir", data_dir)
            return {"up_from_nothing": up, "status": status, "down": down, "up_restart": restart}
        finally:
            replikit_quietly("cluster", "down", "--data-dir", data_dir)


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
