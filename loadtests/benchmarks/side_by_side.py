"""Issue 13's side-by-side bench: the service against a bare ASGI app, Pgpool-II, libpq
multi-host URLs and pgbench, on one local 1+2 cluster, configurations alternated round by round.

    make bench                         # or: replikit bench
    .venv/bin/python -m loadtests.benchmarks.side_by_side --rounds 3 --seconds 3
    .venv/bin/python -m loadtests.benchmarks.side_by_side --configuration pinned \
        --configuration "replikit round_robin eventual" --workload metadata --no-stale --no-kills

Per round every configuration runs the three workloads (GET metadata, GET a ~100 KB file, a
90/10 read/upload mix) under the same wrk load, so slow drift of the machine hits all of them
alike; medians over the rounds are reported. Then: stale reads under a 1 s replay delay
(pgpool against the router's read_your_writes), the primary killed mid-run once per
configuration (rejoined after), and RSS per service process. Results go to
``results/bench-<timestamp>/bench.json`` and ``bench.md``. ``--configuration`` and
``--workload`` narrow the run to some columns and workloads (the router against the pinned
service, say); ``--no-stale`` and ``--no-kills`` leave out the parts after the throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from loadtests.benchmarks import endpoints
from loadtests.benchmarks.bench_cluster import migrated_cluster
from loadtests.benchmarks.bench_report import TWO_WORKERS, markdown_report, summarize
from loadtests.benchmarks.ceiling import ceiling_script, run_pgbench
from loadtests.benchmarks.endpoints import Endpoint
from loadtests.benchmarks.pgpool import DELAY_THRESHOLD_BYTES, require_pgpool, start_pgpool
from loadtests.benchmarks.processes import process_tree_memory
from loadtests.benchmarks.wrk import (
    CONSISTENCY_HEADER,
    WrkResult,
    multipart_file,
    require_wrk,
    run_wrk,
    write_mix_script,
)
from loadtests.sample_images import noise_png
from replication.cluster import Cluster, failover, kill, lag, rejoin
from replication.drivers.base import StopMode
from replication.lag import LagChange
from replication.serving.urls import service_urls
from replication.topology import ClusterState

WORKLOADS = ("metadata", "file", "mix")
BOUNDARY = "replikitbenchboundary7MA4YWxkTrZu0gW"
LSN_HEADER = "X-Replikit-LSN"
BENCH_ENV = {"REPLIKIT_UPLOAD_RATE_LIMIT": "0"}  # the mix uploads ~10 % of requests from one IP


@dataclass
class Configuration:
    """One column of the comparison: how to start it and which headers its requests carry."""

    name: str
    server: str  # which running server it shares (two consistencies, one replikit process)
    headers: dict[str, str] = field(default_factory=dict)


def with_workers(server: str, workers: int) -> str:
    """The server key of ``server`` run with ``workers`` processes."""
    return server if workers == 1 else f"{server}@{workers}"


def server_workers(key: str) -> tuple[str, int]:
    server, _, workers = key.partition("@")
    return server, int(workers or 1)


CONFIGURATIONS = [
    Configuration("baseline", "baseline"),
    Configuration("pinned", "pinned"),
    Configuration("replikit round_robin eventual", "round_robin", {CONSISTENCY_HEADER: "eventual"}),
    Configuration(
        "replikit round_robin read_your_writes",
        "round_robin",
        {CONSISTENCY_HEADER: "read_your_writes"},
    ),
    Configuration("replikit least_lag eventual", "least_lag", {CONSISTENCY_HEADER: "eventual"}),
    Configuration(
        "replikit least_lag read_your_writes",
        "least_lag",
        {CONSISTENCY_HEADER: "read_your_writes"},
    ),
    Configuration("pgpool", "pgpool"),
    Configuration("multihost", "multihost"),
    Configuration("ceiling", "ceiling"),
    # What --workers buys on this machine: the same pair with two processes each.
    Configuration("baseline" + TWO_WORKERS, with_workers("baseline", 2)),
    Configuration(
        "replikit round_robin eventual" + TWO_WORKERS,
        with_workers("round_robin", 2),
        {CONSISTENCY_HEADER: "eventual"},
    ),
]
# Configurations the primary-kill run covers: one per server (consistency does not change
# where writes go); the ceiling reads one replica and never writes, so a kill says nothing.
KILL_CONFIGURATIONS = {
    "baseline": "baseline",
    "pinned": "pinned",
    "replikit round_robin read_your_writes": "round_robin",
    "replikit least_lag read_your_writes": "least_lag",
    "pgpool": "pgpool",
    "multihost": "multihost",
}


@dataclass
class Operation:
    """One request of the primary-kill client."""

    kind: str  # write | read
    started: float
    ended: float
    ok: bool


@dataclass
class BenchOptions:
    rounds: int = 3
    seconds: float = 3.0
    connections: int = 16
    stale_samples: int = 20
    kill_seconds: float = 6.0
    warm_up_seconds: int = 1  # unrecorded load per server start, so pools are full (0: none)
    kill_configurations: list[str] = field(default_factory=lambda: list(KILL_CONFIGURATIONS))
    results_dir: Path = Path("results")
    configurations: list[str] = field(default_factory=lambda: [c.name for c in CONFIGURATIONS])
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))

    def chosen(self) -> list[Configuration]:
        return [c for c in CONFIGURATIONS if c.name in self.configurations]

    @property
    def needs_pgpool(self) -> bool:
        return "pgpool" in self.configurations


@dataclass
class BenchRows:
    """The rows every configuration reads, written once before the first round."""

    metadata_id: str
    file_id: str
    file_bytes: int
    upload_body: Path
    small_image: bytes


class Bench:
    """Owns the scratch directory, the cluster and the pgpool process of one bench run."""

    def __init__(self, options: BenchOptions, scratch: Path) -> None:
        self.options = options
        self.scratch = scratch
        self.data_dir = scratch / "cluster"
        self.cluster: Cluster | None = None
        self.log: Callable[[str], None] = print

    # -- cluster and rows -------------------------------------------------------------------

    @property
    def state(self) -> ClusterState:
        if self.cluster is None:
            raise RuntimeError("the bench cluster is not up")
        return self.cluster.state

    def reload(self) -> None:
        self.cluster = Cluster.open(self.data_dir)

    def cluster_start(self) -> None:
        self.cluster = migrated_cluster(self.data_dir)

    def cluster_stop(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop_all(StopMode.IMMEDIATE)

    def write_rows(self) -> BenchRows:
        """Upload the read targets through a pinned service, and build the mix's body once."""
        small = io.BytesIO()
        Image.new("RGB", (64, 48), (40, 90, 160)).save(small, format="JPEG", quality=80)
        body = multipart_file(
            BOUNDARY, small.getvalue(), filename="bench.jpg", content_type="image/jpeg"
        )
        body_path = self.scratch / "upload-body.bin"
        body_path.write_bytes(body)
        with (
            endpoints.replikit_service(self.scratch, self.server_env("pinned")) as endpoint,
            httpx.Client(base_url=endpoint.url, timeout=30) as client,
        ):
            created = client.post(
                "/api/v1/images/upload",
                files={"file": ("bench.png", noise_png(), "image/png")},
            )
            created.raise_for_status()
            image = created.json()
        self.wait_replayed()
        return BenchRows(
            metadata_id=image["id"],
            file_id=image["id"],
            file_bytes=int(image["file_size"]),
            upload_body=body_path,
            small_image=small.getvalue(),
        )

    def wait_replayed(self, timeout: float = 10.0) -> None:
        """Until every replica has replayed everything the primary has written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.cluster.status() if self.cluster else []
            if rows and all(row.role != "replica" or (row.lag_bytes or 0) == 0 for row in rows):
                return
            time.sleep(0.1)

    # -- servers ----------------------------------------------------------------------------

    def server_env(self, server: str, pgpool_url: str | None = None) -> dict[str, str]:
        urls = service_urls(self.state)
        if server == "pinned":
            return {
                **BENCH_ENV,
                "REPLIKIT_PRIMARY_URL": urls["REPLIKIT_PRIMARY_URL"],
                "REPLIKIT_REPLICA_URLS": "",
                "REPLIKIT_READ_POLICY": "primary",
            }
        if server == "pgpool":
            assert pgpool_url is not None
            return {
                **BENCH_ENV,
                "REPLIKIT_PRIMARY_URL": pgpool_url,
                "REPLIKIT_REPLICA_URLS": "",
                "REPLIKIT_READ_POLICY": "primary",
            }
        return {**BENCH_ENV, **urls, "REPLIKIT_READ_POLICY": server}

    @contextlib.contextmanager
    def server(self, key: str) -> Iterator[tuple[Endpoint, int | None]]:
        """The endpoint of server ``key`` and, for pgpool, pgpool's own pid (for its memory)."""
        state = self.state
        server, workers = server_workers(key)
        if server == "baseline":
            with endpoints.bare_app(
                self.scratch,
                workers=workers,
                write_dsn=endpoints.plain_dsn(state.app_url(state.primary_node)),
                read_dsns=[endpoints.plain_dsn(state.app_url(node)) for node in state.replicas],
            ) as endpoint:
                yield endpoint, None
        elif server == "multihost":
            with endpoints.bare_app(
                self.scratch,
                write_dsn=endpoints.multihost_dsn(state, "read-write"),
                read_dsns=[endpoints.multihost_dsn(state, "prefer-standby")],
            ) as endpoint:
                yield endpoint, None
        elif server == "pgpool":
            pool = start_pgpool(state, self.scratch / f"pgpool-{time.monotonic_ns()}")
            try:
                env = self.server_env("pgpool", pool.app_url(state))
                with endpoints.replikit_service(self.scratch, env) as endpoint:
                    yield endpoint, pool.process.pid
            finally:
                pool.stop()
        else:
            with endpoints.replikit_service(
                self.scratch, self.server_env(server), workers=workers
            ) as endpoint:
                yield endpoint, None

    # -- throughput -------------------------------------------------------------------------

    def measure(
        self, endpoint: Endpoint, configuration: Configuration, workload: str, rows: BenchRows
    ) -> WrkResult:
        seconds, connections = self.options.seconds, self.options.connections
        if workload == "metadata":
            url = f"{endpoint.url}/api/v1/images/{rows.metadata_id}"
            return run_wrk(
                url, seconds=seconds, connections=connections, headers=configuration.headers
            )
        if workload == "file":
            url = f"{endpoint.url}/api/v1/images/{rows.file_id}/file"
            return run_wrk(
                url, seconds=seconds, connections=connections, headers=configuration.headers
            )
        script = write_mix_script(
            self.scratch / "mix.lua",
            read_path=f"/api/v1/images/{rows.metadata_id}",
            body_file=rows.upload_body,
            boundary=BOUNDARY,
            headers=configuration.headers,
        )
        return run_wrk(endpoint.url, seconds=seconds, connections=connections, script=script)

    def ceiling(self, workload: str, rows: BenchRows) -> WrkResult | None:
        if workload == "mix":
            return None  # pgbench's ceiling is for the reads; uploads are HTTP + Pillow work
        script = ceiling_script(
            self.scratch / f"ceiling-{workload}.sql", workload=workload, image_id=rows.file_id
        )
        return run_pgbench(
            self.state,
            self.state.replicas[0],
            script=script,
            seconds=self.options.seconds,
            clients=self.options.connections,
            scratch=self.scratch,
        )

    def warm_up(self, endpoint: Endpoint, rows: BenchRows, headers: dict[str, str]) -> None:
        """Check both read paths and an upload answer, then fill the connection pools with
        one second of the metadata load (not recorded): a fresh process should not pay for its
        first connections, nor the service for starting its decode processes (the first upload
        takes a second or more), inside a measurement."""
        with httpx.Client(base_url=endpoint.url, timeout=30, headers=headers) as client:
            client.get(f"/api/v1/images/{rows.metadata_id}").raise_for_status()
            client.get(f"/api/v1/images/{rows.file_id}/file").raise_for_status()
        asyncio.run(self.warm_uploads(endpoint, rows, headers))
        if not self.options.warm_up_seconds:
            return
        run_wrk(
            f"{endpoint.url}/api/v1/images/{rows.metadata_id}",
            seconds=self.options.warm_up_seconds,
            connections=self.options.connections,
            headers=headers,
        )

    async def warm_uploads(
        self, endpoint: Endpoint, rows: BenchRows, headers: dict[str, str], parallel: int = 4
    ) -> None:
        """A few uploads at once, so every decode process the mix will use is started."""
        async with httpx.AsyncClient(base_url=endpoint.url, timeout=30, headers=headers) as client:

            async def one() -> None:
                files = {"file": ("warm.jpg", rows.small_image, "image/jpeg")}
                (await client.post("/api/v1/images/upload", files=files)).raise_for_status()

            await asyncio.gather(*(one() for _ in range(parallel)))

    def throughput_round(
        self,
        round_number: int,
        rows: BenchRows,
        samples: dict[str, dict[str, list[dict[str, float]]]],
        memory: dict[str, list[list[dict[str, Any]]]],
    ) -> None:
        by_server: dict[str, list[Configuration]] = {}
        for configuration in self.options.chosen():
            by_server.setdefault(configuration.server, []).append(configuration)
        for server, configurations in by_server.items():
            if server == "ceiling":
                for workload in self.options.workloads:
                    result = self.ceiling(workload, rows)
                    if result is not None:
                        self.record(samples, "ceiling", workload, result, round_number)
                continue
            with self.server(server) as (endpoint, pgpool_pid):
                for configuration in configurations:
                    self.warm_up(endpoint, rows, configuration.headers)
                    for workload in self.options.workloads:
                        result = self.measure(endpoint, configuration, workload, rows)
                        self.record(samples, configuration.name, workload, result, round_number)
                processes = [asdict(p) for p in process_tree_memory(endpoint.pid)]
                if pgpool_pid is not None:
                    processes += [
                        {**asdict(p), "program": "pgpool: " + p.program}
                        for p in process_tree_memory(pgpool_pid)
                    ]
                for configuration in configurations:
                    memory.setdefault(configuration.name, []).append(processes)

    def record(
        self,
        samples: dict[str, dict[str, list[dict[str, float]]]],
        name: str,
        workload: str,
        result: WrkResult,
        round_number: int,
    ) -> None:
        sample = {
            "ok_per_second": round(result.ok_per_second, 1),
            "p50_ms": round(result.p50_ms, 3),
            "p99_ms": round(result.p99_ms, 3),
            "requests": result.requests,
            "failed": result.failed,
        }
        samples.setdefault(name, {}).setdefault(workload, []).append(sample)
        self.log(
            f"round {round_number + 1} {name:<38} {workload:<8} "
            f"{result.ok_per_second:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  failed {result.failed}"
        )

    # -- stale reads ------------------------------------------------------------------------

    def stale_reads(self, rows: BenchRows) -> dict[str, dict[str, Any]]:
        """Upload, then at once read the new id back with the upload's token, under a 1 s
        replay delay on every replica; a 404 is a stale read."""
        cases = {
            "pgpool": ("pgpool", {CONSISTENCY_HEADER: "read_your_writes"}),
            "replikit round_robin read_your_writes": (
                "round_robin",
                {CONSISTENCY_HEADER: "read_your_writes"},
            ),
            "replikit round_robin eventual": ("round_robin", {CONSISTENCY_HEADER: "eventual"}),
        }
        cases = {
            label: case for label, case in cases.items() if label in self.options.configurations
        }
        if not cases or not self.options.stale_samples:
            return {}
        replicas = [node.name for node in self.state.replicas]
        outcome: dict[str, dict[str, Any]] = {}
        for name in replicas:
            lag(self.data_dir, name, LagChange(apply_delay="1s"))
        try:
            for label, (server, headers) in cases.items():
                with self.server(server) as (endpoint, _):
                    outcome[label] = self.read_back(endpoint, headers, rows)
                self.log(f"stale reads {label}: {outcome[label]}")
        finally:
            for name in replicas:
                lag(self.data_dir, name, LagChange(clear=True))
        self.wait_replayed(timeout=15)
        return outcome

    def read_back(
        self, endpoint: Endpoint, headers: dict[str, str], rows: BenchRows
    ) -> dict[str, Any]:
        stale = errors = 0
        read_ms: list[float] = []
        with httpx.Client(base_url=endpoint.url, timeout=10, headers=headers) as client:
            for _ in range(self.options.stale_samples):
                created = client.post(
                    "/api/v1/images/upload",
                    files={"file": ("stale.jpg", rows.small_image, "image/jpeg")},
                )
                created.raise_for_status()
                token = created.headers.get(LSN_HEADER, "")
                started = time.perf_counter()
                back = client.get(
                    f"/api/v1/images/{created.json()['id']}", headers={LSN_HEADER: token}
                )
                read_ms.append((time.perf_counter() - started) * 1000)
                if back.status_code == 404:
                    stale += 1
                elif back.status_code != 200:
                    errors += 1
        reads = self.options.stale_samples
        return {
            "reads": reads,
            "stale": stale,
            "errors": errors,
            "stale_rate": round(stale / reads, 3) if reads else None,
            "read_p50_ms": round(statistics.median(read_ms), 2) if read_ms else None,
            "read_max_ms": round(max(read_ms), 2) if read_ms else None,
        }

    # -- primary killed mid-run -------------------------------------------------------------

    def primary_kills(self, rows: BenchRows) -> dict[str, dict[str, Any]]:
        outcome: dict[str, dict[str, Any]] = {}
        for name in self.options.kill_configurations:
            server = KILL_CONFIGURATIONS[name]
            self.reload()
            with self.server(server) as (endpoint, _):
                outcome[name] = asyncio.run(self.kill_run(endpoint, rows))
            self.log(f"primary kill {name}: {outcome[name]}")
            self.reload()
            rejoin(self.data_dir, outcome[name]["killed"])
            self.reload()
            self.cluster_ready()
        return outcome

    def cluster_ready(self) -> None:
        assert self.cluster is not None
        self.cluster.wait_streaming()

    async def kill_run(self, endpoint: Endpoint, rows: BenchRows) -> dict[str, Any]:
        """One client writes then reads in a loop; the primary is crashed after 1.5 s and a
        replica promoted right after (``replikit cluster failover``).

        The write gap is from the crash to the end of the first successful write that was
        *sent* after it; None when no write succeeded before the run ended."""
        killed = self.state.primary
        events: list[Operation] = []
        stop = asyncio.Event()

        async def timed(kind: str, call: Any, expected: int) -> bool:
            started = time.monotonic()
            try:
                ok = bool((await call).status_code == expected)
            except httpx.HTTPError:
                ok = False
            events.append(Operation(kind, started, time.monotonic(), ok))
            return ok

        async def client_loop() -> None:
            async with httpx.AsyncClient(base_url=endpoint.url, timeout=3) as client:
                while not stop.is_set():
                    upload = client.post(
                        "/api/v1/images/upload",
                        files={"file": ("kill.jpg", rows.small_image, "image/jpeg")},
                    )
                    wrote = await timed("write", upload, 201)
                    read = await timed(
                        "read", client.get(f"/api/v1/images/{rows.metadata_id}"), 200
                    )
                    if not (wrote and read):
                        await asyncio.sleep(0.02)

        loop_task = asyncio.create_task(client_loop())
        try:
            await asyncio.sleep(1.5)
            # From when the crash is done: a write sent while pg_ctl was still stopping the
            # node may have committed, and would make the gap look shorter than it is.
            await asyncio.to_thread(kill, self.data_dir, "primary")
            killed_at = time.monotonic()
            await asyncio.to_thread(failover, self.data_dir)
            promoted_at = time.monotonic()
            await asyncio.sleep(max(self.options.kill_seconds - 1.5 - (promoted_at - killed_at), 2))
        finally:
            stop.set()
            await loop_task
        ended = time.monotonic()
        first_write_after = min(
            (op.ended for op in events if op.kind == "write" and op.ok and op.started > killed_at),
            default=None,
        )

        def count(kind: str, *, ok: bool | None = None, since: float = 0.0) -> int:
            return sum(
                1
                for op in events
                if op.kind == kind and (ok is None or op.ok == ok) and op.started >= since
            )

        return {
            "killed": killed,
            "failover_s": round(promoted_at - killed_at, 2),
            "observed_s": round(ended - killed_at, 2),
            "writes": count("write"),
            "write_errors": count("write", ok=False),
            "reads": count("read"),
            "read_errors": count("read", ok=False),
            "write_gap_s": (
                None if first_write_after is None else round(first_write_after - killed_at, 2)
            ),
            "writes_after_failover": count("write", ok=True, since=promoted_at),
            "reads_ok_after_failover": count("read", ok=True, since=promoted_at),
        }


def run_bench(options: BenchOptions, log: Callable[[str], None] = print) -> Path:
    """Run the whole bench; return the results directory (bench.json, bench.md)."""
    require_wrk()
    if options.needs_pgpool:
        require_pgpool()
    begun = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = options.results_dir / f"bench-{stamp}"
    scratch = Path(tempfile.mkdtemp(prefix="replikit-bench-", dir="/tmp"))
    scratch.chmod(0o755)  # the postgres account must reach the cluster's directory
    bench = Bench(options, scratch)
    bench.log = log
    try:
        log(f"bench: cluster in {scratch}")
        bench.cluster_start()
        rows = bench.write_rows()
        samples: dict[str, dict[str, list[dict[str, float]]]] = {}
        memory: dict[str, list[list[dict[str, Any]]]] = {}
        load_averages: list[float] = []
        for round_number in range(options.rounds):
            load_averages.append(float(Path("/proc/loadavg").read_text().split()[0]))
            bench.throughput_round(round_number, rows, samples, memory)
        stale = bench.stale_reads(rows)
        kills = bench.primary_kills(rows) if options.kill_configurations else {}
        result = {
            "started_at": stamp,
            "duration_s": round(time.monotonic() - begun, 1),
            "machine": machine(),
            "options": {**asdict(options), "results_dir": str(options.results_dir)},
            "load_generator": "wrk -t1 --latency, pinned to the last core with taskset",
            "rows": {"file_bytes": rows.file_bytes, "upload_bytes": len(rows.small_image)},
            "pgpool": {"delay_threshold_bytes": DELAY_THRESHOLD_BYTES, "sr_check_period_s": 1},
            # 1-minute load average as each round began: other work on the machine (2 cores)
            # slows every configuration; alternating spreads it, this says how much there was.
            "load_average_per_round": load_averages,
            "throughput": summarize(samples),
            "memory": memory,
            "stale_reads": stale,
            "primary_kill": kills,
        }
    finally:
        bench.cluster_stop()
        shutil.rmtree(scratch, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "bench.md").write_text(markdown_report(result))
    log(f"bench: {result['duration_s']} s; results in {out_dir}")
    return out_dir


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def parse_options(argv: list[str] | None = None) -> BenchOptions:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per workload and round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--stale-samples", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, kills for two")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument(
        "--configuration",
        action="append",
        choices=[c.name for c in CONFIGURATIONS],
        metavar="NAME",
        help="only this configuration (repeatable; default all): "
        + ", ".join(repr(c.name) for c in CONFIGURATIONS),
    )
    parser.add_argument(
        "--workload", action="append", choices=WORKLOADS, help="only this workload (repeatable)"
    )
    parser.add_argument("--no-stale", action="store_true", help="leave out the stale reads")
    parser.add_argument("--no-kills", action="store_true", help="leave out the primary kills")
    args = parser.parse_args(argv)
    configurations = args.configuration or [c.name for c in CONFIGURATIONS]
    kills = (
        ["replikit round_robin read_your_writes", "pgpool"] if args.quick else KILL_CONFIGURATIONS
    )
    options = BenchOptions(
        rounds=1 if args.quick else args.rounds,
        seconds=1.0 if args.quick else args.seconds,
        connections=args.connections,
        stale_samples=0 if args.no_stale else (5 if args.quick else args.stale_samples),
        kill_configurations=[] if args.no_kills else [k for k in kills if k in configurations],
        results_dir=args.results_dir,
        configurations=configurations,
        workloads=args.workload or list(WORKLOADS),
    )
    if args.quick:
        options.kill_seconds = 4.0
    return options


def main(argv: list[str] | None = None) -> None:
    run_bench(parse_options(argv))


if __name__ == "__main__":
    main()
