"""What hostile clients do to one `replikit serve` worker under the default settings.

    .venv/bin/python -m loadtests.benchmarks.hostile_clients --slowloris 3000 --slow-readers 25

It brings up (or reuses) the local cluster in --data-dir, migrates it and starts one service
worker with the default limits (upload rate limit off). Then, one attack at a time, while the
attack runs, a well-behaved client measures ``/health``, a metadata read, a strong read and an
upload, and the script prints status counts and latencies:

* **slowloris**: N connections that send a partial request and then one header byte every
  2 s; how many the server refuses at once (connection cap), how many it has closed after the
  header timeout, and how the good client fares meanwhile;
* **slow readers**: N clients that ask for an 8 MB file with ``strong`` consistency (the
  primary's pool) and never read the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from loadtests.benchmarks.bench_cluster import migrated_cluster
from loadtests.hostile_images import noise_png
from replication.ports import find_free_port_range
from replication.serving.process import ServiceRecord, start_service, stop_service
from replication.serving.urls import service_urls
from service.settings import Settings

TRICKLE_SECONDS = 2.0


async def good_client(url: str, file_path: str, seconds: float) -> dict[str, object]:
    """Requests of a well-behaved client for ``seconds``: status counts and latencies."""
    statuses: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {}
    small = noise_png(0.01)
    deadline = time.monotonic() + seconds
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("health", "GET", "/health", {}),
        ("metadata", "GET", "/api/v1/images?limit=1", {}),
        ("strong_file", "GET", file_path, {"headers": {"X-Replikit-Consistency": "strong"}}),
        ("upload", "POST", "/api/v1/images/upload", {"files": {"file": ("s.png", small)}}),
    ]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            for name, method, path, options in requests:
                started = time.monotonic()
                try:
                    response = await client.request(method, path, **options)
                    statuses[f"{name} {response.status_code}"] += 1
                except httpx.HTTPError as error:
                    statuses[f"{name} {type(error).__name__}"] += 1
                latencies.setdefault(name, []).append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    return {
        "statuses": dict(sorted(statuses.items())),
        "median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in latencies.items()},
        "max_ms": {k: round(max(v) * 1000, 1) for k, v in latencies.items()},
    }


async def slowloris(record: ServiceRecord, count: int, file_path: str, seconds: float) -> None:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused = failed = 0
    for _ in range(count):
        try:
            reader, writer = await asyncio.open_connection(record.host, record.port)
            writer.write(b"GET /api/v1/images HTTP/1.1\r\nHost: x\r\n")
            opened.append((reader, writer))
        except OSError:
            failed += 1

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        try:
            while True:
                try:
                    first = await asyncio.wait_for(reader.read(64), TRICKLE_SECONDS)
                except TimeoutError:
                    writer.write(b"X")  # one more header byte
                    await writer.drain()
                    continue
                return first[:12].decode(errors="replace") or "closed"
        except OSError:
            return "reset"

    started = time.monotonic()
    outcomes = [asyncio.create_task(trickle(r, w)) for r, w in opened]
    good = await good_client(record.url, file_path, seconds)
    done = [task.result() for task in outcomes if task.done()]
    for task in outcomes:
        task.cancel()
    for _, writer in opened:
        writer.close()
    answers = Counter(done)
    refused = answers.get("HTTP/1.1 503", 0)
    print(
        f"slowloris: {count} connections ({failed} failed to open); after "
        f"{time.monotonic() - started:.1f} s: {len(done)} closed by the server "
        f"({dict(answers)}), {len(opened) - len(done)} still open; refused at the cap: "
        f"{refused}"
    )
    print(f"  good client meanwhile: {good}")


async def slow_readers(record: ServiceRecord, count: int, file_path: str, seconds: float) -> None:
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(record.host, record.port, limit=4096)
        request = f"GET {file_path} HTTP/1.1\r\nHost: x\r\nX-Replikit-Consistency: strong\r\n\r\n"
        writer.write(request.encode())
        writers.append((reader, writer))
    await asyncio.sleep(1)
    good = await good_client(record.url, file_path, seconds)
    print(f"slow readers: {count} clients asking for 8 MB and reading nothing")
    print(f"  good client meanwhile: {good}")
    for _, writer in writers:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".replikit/cluster"))
    parser.add_argument("--slowloris", type=int, default=3000)
    parser.add_argument("--slow-readers", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=15.0)
    options = parser.parse_args()

    cluster = migrated_cluster(options.data_dir, new=False)
    urls = service_urls(cluster.state)
    defaults = Settings(_env_file=None, primary_url=urls["REPLIKIT_PRIMARY_URL"])
    print(
        f"defaults: header timeout {defaults.header_timeout} s, body idle "
        f"{defaults.body_idle_timeout} s, send timeout {defaults.send_timeout} s, "
        f"max connections {defaults.max_connections}, max in flight {defaults.max_in_flight}, "
        f"pool {defaults.db_pool_size}+{defaults.db_max_overflow} per node, pool timeout "
        f"{defaults.db_pool_timeout} s"
    )
    with tempfile.TemporaryDirectory(prefix="replikit-hostile-") as scratch:
        port = find_free_port_range(2, start=39000)
        record = start_service(
            Path(scratch),
            host="127.0.0.1",
            port=port,
            ops_port=port + 1,
            workers=1,
            env={**urls, "REPLIKIT_UPLOAD_RATE_LIMIT": "0"},
        )
        try:
            created = httpx.post(
                f"{record.url}/api/v1/images/upload",
                files={"file": ("big.png", noise_png(8), "image/png")},
                timeout=60,
            )
            created.raise_for_status()
            file_path = f"/api/v1/images/{created.json()['id']}/file"
            asyncio.run(slowloris(record, options.slowloris, file_path, options.seconds))
            asyncio.run(slow_readers(record, options.slow_readers, file_path, options.seconds))
        finally:
            stop_service(Path(scratch))


if __name__ == "__main__":
    main()
