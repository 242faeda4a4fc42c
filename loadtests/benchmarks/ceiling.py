"""The database's own ceiling: pgbench running the bench's SELECTs straight on one replica, with
the same client count as wrk and no HTTP or Python in between (a ``-S``-like custom script).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

from loadtests.benchmarks.bare_app import BLOB, METADATA
from loadtests.benchmarks.wrk import WrkResult
from loadtests.experiments.analysis import percentile
from replication.topology import ClusterState, NodeSpec


def _literal(query: str, image_id: str) -> str:
    return query.replace("$1", f"'{image_id}'") + ";\n"


def ceiling_script(path: Path, *, workload: str, image_id: str) -> Path:
    """metadata: the metadata SELECT; file: the metadata SELECT then the bytes, as one
    request of the service does."""
    body = _literal(METADATA, image_id)
    if workload == "file":
        body += _literal(BLOB, image_id)
    path.write_text(body)
    return path


def run_pgbench(
    state: ClusterState,
    node: NodeSpec,
    *,
    script: Path,
    seconds: float,
    clients: int,
    scratch: Path,
) -> WrkResult:
    """pgbench -n -M prepared with one thread on the load generator's core; latencies from its
    per-transaction log (microseconds, third column)."""
    pgbench = str(Path(state.pg_bin) / "pgbench")
    log_dir = scratch / f"pgbench-{script.stem}-{os.getpid()}-{node.port}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    command = [
        pgbench,
        "-n",
        "-M",
        "prepared",
        f"-c{clients}",
        "-j1",
        f"-T{max(1, round(seconds))}",
        "-f",
        str(script),
        "-l",
        f"--log-prefix={log_dir / 'tx'}",
        "-h",
        state.host,
        "-p",
        str(node.port),
        "-U",
        state.app_user,
        state.database,
    ]
    cores = os.cpu_count() or 1
    if shutil.which("taskset") and cores > 1:
        command = ["taskset", "-c", str(cores - 1), *command]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        env={**os.environ, "PGPASSWORD": state.passwords.app},
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed: {completed.stderr.strip()[-400:]}")
    processed = re.search(r"number of transactions actually processed: (\d+)", completed.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", completed.stdout)
    duration = re.search(r"duration: (\d+) s", completed.stdout)
    if processed is None or duration is None:
        raise RuntimeError(f"could not read pgbench's output: {completed.stdout}")
    latencies = sorted(
        float(line.split()[2]) / 1000
        for log in log_dir.iterdir()
        for line in log.read_text().splitlines()
        if line.strip()
    )
    shutil.rmtree(log_dir, ignore_errors=True)
    if not latencies:
        raise RuntimeError("pgbench logged no transactions")
    return WrkResult(
        requests=int(processed.group(1)),
        failed=int(failed.group(1)) if failed else 0,
        seconds=float(duration.group(1)),
        p50_ms=statistics.median(latencies),
        p99_ms=percentile(latencies, 99),
    )
