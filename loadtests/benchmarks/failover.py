"""Benchmark the failure toolkit: kill → failover → first write on the new primary, and
switchover, with the real CLI on a fresh cluster.

    .venv/bin/python -m loadtests.benchmarks.failover --rounds 5 --sync on

Each round crashes the current primary, fails over, then writes through the app role until a
write commits on the new primary; then rejoins the old primary and times one switchover.
Rounds alternate between the real CLI (``replikit cluster kill`` / ``failover`` as separate
processes, so each pays Python's start-up) and the same functions called in-process, to show
how much of the CLI figure is interpreter start-up. Prints every round and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from replication import cluster as clusters
from replication.admin import app_connect, owner_connect
from replication.ports import find_free_port_range
from replication.topology import require_state

REPLIKIT = str(Path(sys.executable).parent / "replikit")


def cli(*args: str) -> dict[str, object]:
    result = subprocess.run(
        [REPLIKIT, *args, "--json"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"replikit {' '.join(args)} failed: {result.stderr.strip()}")
    return dict(json.loads(result.stdout))


async def first_write(data_dir: Path, deadline_seconds: float = 30.0) -> float:
    """Write until a commit succeeds on the primary the state file names; return when."""
    state = require_state(data_dir)
    node = state.primary_node
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            connection = await app_connect(state, node, connect_timeout=1)
            try:
                await connection.execute("INSERT INTO bench_writes VALUES (now())")
                return time.monotonic()
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.01)
    raise SystemExit("no write succeeded on the new primary")


async def create_table(data_dir: Path) -> None:
    """The benchmark's table, made by the owner: the app role that writes it may create none."""
    state = require_state(data_dir)
    connection = await owner_connect(state, state.primary_node)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_writes (at timestamptz)")
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sync", choices=["off", "on", "quorum"], default="on")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="replikit-bench-failover-", dir="/var/tmp"))
    root.chmod(0o755)
    data_dir = root / "cluster"
    d = ("--data-dir", str(data_dir))
    port = find_free_port_range(3, start=39000)
    kill_to_write: dict[str, list[float]] = {"cli": [], "in-process": []}
    failover_command: list[float] = []
    switchovers: list[float] = []
    try:
        subprocess.run(
            [REPLIKIT, "cluster", "up", "--sync", options.sync, "--base-port", str(port), *d],
            check=True,
            capture_output=True,
        )
        asyncio.run(create_table(data_dir))
        for number in range(1, 2 * options.rounds + 1):
            way = "cli" if number % 2 else "in-process"
            old = require_state(data_dir).primary
            started = time.monotonic()
            if way == "cli":
                cli("cluster", "kill", old, *d)
                result = cli("cluster", "failover", *d)
            else:
                clusters.kill(data_dir, old)
                result = clusters.failover(data_dir)
            written = asyncio.run(first_write(data_dir))
            kill_to_write[way].append(written - started)
            failover_command.append(float(str(result["duration_seconds"])))
            cli("cluster", "rejoin", old, *d)
            switch_started = time.monotonic()
            cli("cluster", "switchover", *d)
            asyncio.run(first_write(data_dir))
            switchovers.append(time.monotonic() - switch_started)
            print(
                f"round {number} ({way}): kill→first write {kill_to_write[way][-1]:.2f} s "
                f"(failover itself {failover_command[-1]:.2f} s), "
                f"switchover (CLI)→first write {switchovers[-1]:.2f} s"
            )
        print(
            f"median (sync {options.sync}): kill→first write via CLI "
            f"{statistics.median(kill_to_write['cli']):.2f} s, in-process "
            f"{statistics.median(kill_to_write['in-process']):.2f} s; failover itself "
            f"{statistics.median(failover_command):.2f} s; switchover via CLI "
            f"{statistics.median(switchovers):.2f} s"
        )
    finally:
        subprocess.run(
            [REPLIKIT, "cluster", "down", "--purge", *d], capture_output=True, check=False
        )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
