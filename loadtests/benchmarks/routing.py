"""Benchmark the session router: the cost of one routing decision, and GET metadata
throughput through the router versus the same service pinned to one node.

    .venv/bin/python -m loadtests.benchmarks.routing --seconds 5 --rounds 3 --concurrency 16

It brings up (or reuses) the local cluster in --data-dir, migrates it, uploads one image, then
alternates two service processes on the same machine, measured in the same run:
``routed`` (primary + 2 replicas, round_robin, eventual) and ``pinned`` (primary only).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from loadtests.benchmarks.packages import find_program
from loadtests.benchmarks.wrk import run_wrk
from replication.cluster import cluster_up
from replication.ports import find_free_port_range
from replication.serving.process import start_service, stop_service
from replication.serving.urls import service_urls
from service import migrate
from service.routing.consistency import Consistency, RequestRouting
from service.routing.metrics import ServiceMetrics
from service.routing.nodes import Probe, Role
from service.routing.router import Router
from service.settings import Settings

FAKE_URL = "postgresql+asyncpg://app:pw@127.0.0.1:{port}/replikit"


def decision_nanoseconds(consistency: Consistency, calls: int = 200_000) -> float:
    """Median wall time of Router.choose_reader over fake, healthy node states."""
    settings = Settings(
        _env_file=None,
        primary_url=FAKE_URL.format(port=7000),
        replica_urls=[FAKE_URL.format(port=7001), FAKE_URL.format(port=7002)],
    )
    router = Router(settings, ServiceMetrics())
    for index, node in enumerate(router.nodes):
        node.probe = Probe(index > 0, 1, 1000, 1000, False, f"pg{index}")
        node.role = Role.PRIMARY if index == 0 else Role.REPLICA
        node.lag_bytes, node.lag_seconds = 0, 0.0
    router.monitor.writer = router.nodes[0]
    routing = RequestRouting(consistency=consistency, token=900)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        router.choose_reader(routing, set())
        samples.append(clock() - started)
    return statistics.median(samples)


async def httpx_throughput(base_url: str, path: str, seconds: float, concurrency: int) -> float:
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                response = await client.get(path)
                response.raise_for_status()
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


def throughput(base_url: str, path: str, seconds: float, concurrency: int) -> float:
    """Requests per second: with wrk when installed (C, light on the CPU the service needs),
    else with an httpx load loop in this process."""
    if find_program("wrk") is None:
        return asyncio.run(httpx_throughput(base_url, path, seconds, concurrency))
    result = run_wrk(f"{base_url}{path}", seconds=seconds, connections=concurrency)
    if result.failed:
        raise RuntimeError(f"{result.failed} requests failed during the benchmark")
    return result.requests / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".replikit/cluster"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args()

    for mode in (Consistency.EVENTUAL, Consistency.BOUNDED, Consistency.READ_YOUR_WRITES):
        print(f"routing decision ({mode.value}): median {decision_nanoseconds(mode) / 1000:.2f} µs")

    cluster, _ = cluster_up(options.data_dir)
    urls = service_urls(cluster.state)
    migrate.upgrade(cluster.state.owner_url(cluster.state.primary_node))
    variants = {
        "routed": {**urls, "REPLIKIT_READ_POLICY": "round_robin"},
        "pinned": {
            "REPLIKIT_PRIMARY_URL": urls["REPLIKIT_PRIMARY_URL"],
            "REPLIKIT_REPLICA_URLS": "",
            "REPLIKIT_READ_POLICY": "primary",
        },
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="replikit-bench-") as scratch:
        image_path = Path(scratch) / "bench.png"
        Image.new("RGB", (64, 64), (10, 20, 30)).save(image_path)
        for round_number in range(options.rounds):
            for name, env in variants.items():
                port = find_free_port_range(1, start=38000)
                record_dir = Path(scratch) / name
                record = start_service(
                    record_dir,
                    host="127.0.0.1",
                    port=port,
                    workers=1,
                    env={**env, "REPLIKIT_UPLOAD_RATE_LIMIT": "0"},
                )
                try:
                    with httpx.Client(base_url=record.url) as client:
                        created = client.post(
                            "/api/v1/images/upload",
                            files={"file": ("b.png", image_path.read_bytes(), "image/png")},
                        )
                        created.raise_for_status()
                        path = f"/api/v1/images/{created.json()['id']}"
                        time.sleep(0.5)  # let replicas replay it
                        client.get(path).raise_for_status()
                    rate = throughput(record.url, path, options.seconds, options.concurrency)
                finally:
                    stop_service(record_dir)
                results[name].append(rate)
                print(f"round {round_number + 1} {name}: {rate:.0f} req/s")
    routed = statistics.median(results["routed"])
    pinned = statistics.median(results["pinned"])
    print(
        f"median routed {routed:.0f} req/s, pinned {pinned:.0f} req/s, ratio {routed / pinned:.3f}"
    )


if __name__ == "__main__":
    main()
