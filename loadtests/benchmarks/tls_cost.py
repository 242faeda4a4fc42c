"""Issue 23's TLS bench: what TLS between the service, the replicas and PostgreSQL costs.

    make bench-tls                      # or:
    .venv/bin/python -m loadtests.benchmarks.tls_cost --rounds 3 --seconds 5

Two local 1+1 clusters side by side, built by the same code as ``replikit cluster up``: one
with ``--tls on`` (the default: hostssl only, the service on verify-full, the replica streaming
with its client certificate) and one with ``--tls off``. Every round measures both, the order
alternating (TLS first in odd rounds), so slow drift of the machine hits both alike:

- **requests/s of one service worker** (``replikit serve``, 1 worker, its defaults) for GET
  metadata and GET a ~100 KB file, wrk on persistent HTTP connections; the service keeps its
  database connections in its pools, so this is TLS on warm connections (after one second of
  unrecorded load that fills the pools);
- **connection set-up**: ``asyncpg.connect`` as the service's role to the primary, as the
  service connects (verify-full against the cluster's CA, or asyncpg's default without TLS),
  the median of ``--connects``;
- **replication throughput**: ``pg_basebackup`` of the primary (``--backup-mb`` of padding
  in it) over a replication connection as the replica makes one (client certificate, or the
  role's password), written to a pipe and counted: MB/s.

Results: ``results/bench-tls-<timestamp>/tls.json`` (every round) and ``tls.md`` (medians,
TLS / plain ratios, the 1-minute load average as each round began).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from loadtests.benchmarks import endpoints
from loadtests.benchmarks.bench_cluster import free_ports_below_ephemeral
from loadtests.benchmarks.scratch import scratch_dir
from loadtests.benchmarks.side_by_side import machine
from loadtests.benchmarks.wrk import require_wrk, run_wrk
from loadtests.sample_images import noise_png
from replication.cluster import Cluster, cluster_up
from replication.drivers.base import StopMode
from replication.pgbin import find_pg_binaries
from replication.server_user import ServerUser
from replication.serving.urls import service_urls
from replication.tls.provision import cluster_layout, replication_login
from service import migrate
from service.db.engines import ssl_argument

MODES = ("tls", "plain")
WORKLOADS = ("metadata", "file")
MEASURES = ("metadata_rps", "file_rps", "connect_ms", "basebackup_mb_s")
# Higher is better for throughput, lower for set-up time; the goal is on the reads only.
GOAL_MEASURES = ("metadata_rps", "file_rps")
GOAL_LOSS = 0.05
NOTES = {
    "metadata_rps": "GET metadata, 1 worker, persistent HTTP connections (req/s)",
    "file_rps": "GET a ~100 KB file, 1 worker, persistent HTTP connections (req/s)",
    "connect_ms": "asyncpg.connect to the primary, as the service connects (ms, median)",
    "basebackup_mb_s": "pg_basebackup of the primary over a replication connection (MB/s)",
}


@dataclass
class TlsCostOptions:
    rounds: int = 3
    seconds: float = 5.0  # per workload and round
    connections: int = 16
    warm_up_seconds: float = 1.0
    connects: int = 50  # per round and mode
    backup_mb: int = 256  # padding written into each primary before the rounds
    base_port: int | None = None  # the two clusters', then the services'; None: free ones
    results_dir: Path = Path("results")


@dataclass
class Side:
    """One of the two clusters and the ~100 KB image the reads ask for."""

    mode: str
    cluster: Cluster
    scratch: Path  # where its service records go
    image_id: str = ""
    rounds: list[dict[str, float]] = field(default_factory=list)

    @property
    def ca(self) -> Path | None:
        state = self.cluster.state
        return cluster_layout(state).ca_cert if state.tls is not None else None


def bring_up(scratch: Path, mode: str, base_port: int, backup_mb: int) -> Side:
    """A migrated 1+1 cluster with ``backup_mb`` of padding written into its primary."""
    cluster, _ = cluster_up(scratch / mode, replicas=1, base_port=base_port, tls=mode == "tls")
    side = Side(mode, cluster, scratch)
    primary = cluster.state.owner_url(cluster.state.primary_node)
    migrate.upgrade(primary, ssl_root_cert=side.ca)
    asyncio.run(_pad(endpoints.plain_dsn(primary), side.ca, backup_mb))
    return side


async def _pad(dsn: str, ca: Path | None, megabytes: int) -> None:
    """Rows of ~1 KB (under the TOAST threshold, so stored as written, not compressed)."""
    connection = await asyncpg.connect(dsn, timeout=10, **ssl_argument(ca))
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS tls_bench_padding (filler text)")
        await connection.execute(
            "INSERT INTO tls_bench_padding "
            "SELECT repeat(md5(i::text), 30) FROM generate_series(1, $1) AS i",
            megabytes * 1000,
        )
    finally:
        await connection.close()


@contextlib.contextmanager
def service(side: Side, port_start: int) -> Iterator[endpoints.Endpoint]:
    env = {**service_urls(side.cluster.state), "REPLIKIT_UPLOAD_RATE_LIMIT": "0"}
    with endpoints.replikit_service(side.scratch, env, port_start=port_start) as ep:
        yield ep


def upload_image(side: Side, port_start: int) -> None:
    with (
        service(side, port_start) as endpoint,
        httpx.Client(base_url=endpoint.url, timeout=30) as client,
    ):
        created = client.post(
            "/api/v1/images/upload", files={"file": ("bench.png", noise_png(), "image/png")}
        )
        created.raise_for_status()
        side.image_id = created.json()["id"]


def _paths(side: Side) -> dict[str, str]:
    return {
        "metadata": f"/api/v1/images/{side.image_id}",
        "file": f"/api/v1/images/{side.image_id}/file",
    }


def requests_per_second(
    order: list[Side], options: TlsCostOptions, port_start: int
) -> dict[str, dict[str, float]]:
    """Both services up at once; per workload wrk runs A, B, B, A (A first in this round's
    order), so drift of the machine within the round falls on both alike; each side's figure
    is the mean of its two runs."""
    results: dict[str, dict[str, float]] = {side.mode: {} for side in order}
    with contextlib.ExitStack() as stack:
        urls = {side.mode: stack.enter_context(service(side, port_start)).url for side in order}
        for side in order:
            url = urls[side.mode]
            with httpx.Client(base_url=url, timeout=30) as client:
                for path in _paths(side).values():
                    client.get(path).raise_for_status()
            if options.warm_up_seconds:  # fills the service's pools, not recorded
                run_wrk(
                    url + _paths(side)["metadata"],
                    seconds=options.warm_up_seconds,
                    connections=options.connections,
                )
        first, second = order
        for workload in WORKLOADS:
            runs: dict[str, list[float]] = {side.mode: [] for side in order}
            for side in (first, second, second, first):
                result = run_wrk(
                    urls[side.mode] + _paths(side)[workload],
                    seconds=options.seconds,
                    connections=options.connections,
                )
                if result.failed:
                    raise RuntimeError(f"{side.mode} {workload}: {result.failed} requests failed")
                runs[side.mode].append(result.ok_per_second)
            for mode, values in runs.items():
                results[mode][f"{workload}_rps"] = round(statistics.mean(values), 1)
    return results


@dataclass
class Connects:
    median_ms: dict[str, float]
    cipher: str  # the TLS side's protocol and cipher, as pg_stat_ssl names them


async def _connect_ms(order: list[Side], count: int) -> Connects:
    """``count`` connections per side, one side's and the other's alternating."""
    times: dict[str, list[float]] = {side.mode: [] for side in order}
    cipher = ""
    targets = []
    for side in order:
        state = side.cluster.state
        dsn = endpoints.plain_dsn(state.app_url(state.primary_node))
        targets.append((side.mode, dsn, ssl_argument(side.ca)))  # built once, as the service
    for attempt in range(count):
        for mode, dsn, ssl in targets:
            started = time.perf_counter()
            connection = await asyncpg.connect(dsn, timeout=10, **ssl)
            times[mode].append(time.perf_counter() - started)
            if attempt == 0:  # the comparison means nothing if both sides were alike
                row = await connection.fetchrow(
                    "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
                if row is None or row["ssl"] != (mode == "tls"):
                    raise RuntimeError(f"the {mode} side's connection has ssl = {row}")
                if row["ssl"]:
                    cipher = f"{row['version']} {row['cipher']}"
            await connection.close()
    medians = {mode: round(statistics.median(values) * 1000, 3) for mode, values in times.items()}
    return Connects(medians, cipher)


def basebackup_mb_s(side: Side) -> float:
    """A tar of the primary's data directory on standard output (no WAL), counted."""
    state = side.cluster.state
    node = state.primary_node
    conninfo = (
        f"host={state.host} port={node.port} user={state.replication_user} "
        + replication_login(state)
    )
    program = find_pg_binaries(state.pg_bin).program("pg_basebackup")
    argv = [program, "-d", conninfo, "-D", "-", "-Ft", "-X", "none", "-c", "fast", "-w"]
    # As the server account: libpq refuses a client key owned by anybody else.
    command = ServerUser.detect().argv(argv)
    started = time.perf_counter()
    received = 0
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd="/"
    ) as process:
        assert process.stdout is not None
        while chunk := process.stdout.read(1 << 20):
            received += len(chunk)
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"pg_basebackup ({side.mode}) failed: {error.strip()}")
    return round(received / 1e6 / elapsed, 1)


def one_round(
    round_number: int, sides: list[Side], options: TlsCostOptions, service_port: int
) -> tuple[float, str]:
    """Both sides, TLS first in odd rounds; the 1-minute load average as the round began, and
    the TLS side's protocol and cipher."""
    load = os.getloadavg()[0]
    order = sides if round_number % 2 == 0 else sides[::-1]
    figures = requests_per_second(order, options, service_port)
    connects = asyncio.run(_connect_ms(order, options.connects))
    for side in order:
        figures[side.mode]["connect_ms"] = connects.median_ms[side.mode]
    for side in order:
        figures[side.mode]["basebackup_mb_s"] = basebackup_mb_s(side)
    for side in sides:
        side.rounds.append(figures[side.mode])
    return load, connects.cipher


def summarize(sides: list[Side]) -> dict[str, dict[str, Any]]:
    """Per measure: each side's median over the rounds, and the median of the rounds' own
    TLS / plain ratios (each taken from measurements minutes apart at most, so a machine
    busier in one round than in another does not skew it as a ratio of medians would)."""
    by_mode = {side.mode: side for side in sides}
    summary: dict[str, dict[str, Any]] = {}
    for measure in MEASURES:
        pairs = [
            (tls[measure], plain[measure])
            for tls, plain in zip(by_mode["tls"].rounds, by_mode["plain"].rounds, strict=True)
        ]
        ratios = [tls / plain for tls, plain in pairs if plain]
        entry: dict[str, Any] = {
            "tls": statistics.median(tls for tls, _ in pairs),
            "plain": statistics.median(plain for _, plain in pairs),
            "tls_over_plain": statistics.median(ratios) if ratios else None,
            "ratio_range": [min(ratios), max(ratios)] if ratios else None,
        }
        if measure in GOAL_MEASURES and entry["tls_over_plain"] is not None:
            entry["goal_met"] = entry["tls_over_plain"] >= 1 - GOAL_LOSS
        summary[measure] = entry
    return summary


def markdown_report(result: dict[str, Any]) -> str:
    lines = [
        f"# TLS cost, {result['started_at']}",
        "",
        f"{result['options']['rounds']} rounds, medians; 1-minute load average as each round "
        f"began: {', '.join(f'{x:.1f}' for x in result['load_average_per_round'])}; "
        f"TLS: {result['tls_cipher']}.",
        "",
        "| measure | TLS | plain | TLS / plain: median of the rounds' (range) "
        "| goal (≤ 5 % fewer req/s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for measure, entry in result["summary"].items():
        ratio, spread = entry["tls_over_plain"], entry["ratio_range"]
        goal = {True: "met", False: "**not met**"}.get(entry.get("goal_met"), "—")
        lines.append(
            f"| {NOTES[measure]} | {entry['tls']:,.1f} | {entry['plain']:,.1f} | "
            f"{'—' if ratio is None else f'{ratio:.3f} ({spread[0]:.2f} to {spread[1]:.2f})'} | "
            f"{goal} |"
        )
    return "\n".join(lines) + "\n"


def run_bench(options: TlsCostOptions, log: Callable[[str], None] = print) -> Path:
    """Run the whole bench; return the results directory (tls.json, tls.md)."""
    require_wrk()
    begun = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = options.base_port or free_ports_below_ephemeral(8)
    sides: list[Side] = []
    with scratch_dir("replikit-bench-tls-") as scratch:
        try:
            for offset, mode in enumerate(MODES):
                sides.append(bring_up(scratch, mode, base + 2 * offset, options.backup_mb))
                upload_image(sides[-1], base + 4)
                log(f"bench-tls: {mode} cluster up in {scratch / mode}")
            loads, cipher = [], ""
            for round_number in range(options.rounds):
                load, cipher = one_round(round_number, sides, options, base + 4)
                loads.append(load)
                for side in sides:
                    log(f"round {round_number + 1} {side.mode:<5} {side.rounds[-1]}")
        finally:
            for side in sides:
                with contextlib.suppress(Exception):
                    side.cluster.stop_all(StopMode.IMMEDIATE)
    result = {
        "started_at": stamp,
        "duration_s": round(time.monotonic() - begun, 1),
        "machine": machine(),
        "options": {**asdict(options), "results_dir": str(options.results_dir)},
        "load_generator": "wrk -t1, pinned to the last core with taskset",
        "load_average_per_round": loads,
        "tls_cipher": cipher,
        "rounds": {side.mode: side.rounds for side in sides},
        "summary": summarize(sides),
    }
    out_dir = options.results_dir / f"bench-tls-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tls.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "tls.md").write_text(markdown_report(result))
    log(markdown_report(result))
    log(f"bench-tls: {result['duration_s']} s; results in {out_dir}")
    return out_dir


def parse_options(argv: list[str] | None = None) -> TlsCostOptions:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per workload and round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--connects", type=int, default=50, help="per round and mode")
    parser.add_argument("--backup-mb", type=int, default=256, help="padding per primary")
    parser.add_argument("--base-port", type=int, help="8 free ports from here (default: any)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.connects < 1 or args.backup_mb < 0:
        parser.error("--rounds and --connects need at least 1, --seconds more than 0")
    return TlsCostOptions(
        rounds=args.rounds,
        seconds=args.seconds,
        connections=args.connections,
        connects=args.connects,
        backup_mb=args.backup_mb,
        base_port=args.base_port,
        results_dir=args.results_dir,
    )


def main(argv: list[str] | None = None) -> None:
    run_bench(parse_options(argv))


if __name__ == "__main__":
    main()
