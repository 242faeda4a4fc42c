"""Benchmark the service's decode pool against the same pool built on pebble, side by side.

    .venv/bin/python -m loadtests.benchmarks.decode_pool --rounds 3

No database is needed. Both pools decode through the same code (``decode_reply``: the same
rlimits, CPU budget and replies) from the same fork server, and each measurement alternates
between them, round by round:

1. per-upload latency of a typical 640x640 JPEG, one at a time (median and p99);
2. throughput with 4 uploads in flight at once (2 workers, the default);
3. RSS of the pool's processes (workers and fork server) and the threads the pool starts;
4. a worker SIGKILLed mid-decode: how long until that upload's 422, and how long the next
   upload takes (it needs a new worker);
5. a decode over its wall-clock budget: how long until its 422, and the next upload;
6. a worker SIGKILLed while idle, then an upload at once.

Then, pebble alone: a worker killed while its reply is in pebble's shared pipe (ours gives
each worker a pipe of its own, so a death there is end-of-file on that worker's pipe only).
Results: docs/benchmarks.md, "Decode pool: pebble vs ours".
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from loadtests.benchmarks.decode_budget import FAKE_URL, cpu_seconds
from loadtests.benchmarks.pebble_decoder import PebbleDecoder
from loadtests.experiments.analysis import percentile
from loadtests.hostile_images import gif_frame_bomb
from service.errors import ServiceError
from service.images.decoder import DecoderConfig, ImageDecoder
from service.settings import Settings


class Pool(Protocol):
    config: DecoderConfig

    async def process(self, data: bytes) -> Any: ...

    async def close(self) -> None: ...


def worker_pids(pool: Pool) -> list[int]:
    if isinstance(pool, PebbleDecoder):
        return pool.worker_pids()
    assert isinstance(pool, ImageDecoder)
    return [worker.process.pid or 0 for worker in pool._workers]


def jpeg_640() -> bytes:
    """A typical phone-sized upload: 640x640 photo-like noise, quality 85, nothing to strip."""
    image = Image.effect_noise((640, 640), 30).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def forkserver_pid() -> int:
    for entry in Path(f"/proc/{os.getpid()}/task").iterdir():
        children = (entry / "children").read_text().split()
        for child in children:
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    return 0


async def timed(call: Awaitable[Any]) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        await call
        outcome = "ok"
    except ServiceError as error:
        outcome = f"{error.status_code} {error.details.get('reason', error.code)}"
    return time.perf_counter() - started, outcome


async def latency(pool: Pool, data: bytes, count: int) -> list[float]:
    await pool.process(data)  # warm: the workers exist
    return [(await timed(pool.process(data)))[0] for _ in range(count)]


async def throughput(pool: Pool, data: bytes, count: int, in_flight: int) -> float:
    await asyncio.gather(*(pool.process(data) for _ in range(pool.config.workers)))
    queue = list(range(count))

    async def client() -> None:
        while queue:
            queue.pop()
            await pool.process(data)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(in_flight)))
    return count / (time.perf_counter() - started)


async def kill_mid_decode(pool: Pool, data: bytes) -> tuple[float, str, float, str]:
    """SIGKILL the one worker once it is busy on a bomb: (time to the 422, next upload)."""
    await pool.process(data)
    (pid,) = worker_pids(pool)
    busy_from = cpu_seconds(pid)
    bomb = asyncio.ensure_future(timed(pool.process(gif_frame_bomb(frames=300, side=6300))))
    for _ in range(1000):  # at most 20 s
        if cpu_seconds(pid) > busy_from + 0.3:
            break
        await asyncio.sleep(0.02)
    killed_at = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    _, outcome = await bomb
    to_error = time.perf_counter() - killed_at
    next_seconds, next_outcome = await timed(pool.process(data))
    return to_error, outcome, next_seconds, next_outcome


async def overrun(pool: Pool, data: bytes) -> tuple[float, str, float, str]:
    """A bomb over a 0.5 s budget: (seconds past the budget to its 422, next upload)."""
    await pool.process(data)
    seconds, outcome = await timed(pool.process(gif_frame_bomb(frames=300, side=6300)))
    next_seconds, next_outcome = await timed(pool.process(data))
    return seconds - pool.config.timeout, outcome, next_seconds, next_outcome


async def kill_idle(pool: Pool, data: bytes) -> tuple[float, str]:
    """SIGKILL the idle worker (as the OOM killer might), then upload at once."""
    await pool.process(data)
    (pid,) = worker_pids(pool)
    os.kill(pid, signal.SIGKILL)
    return await timed(pool.process(data))


def memory(pool: Pool) -> tuple[float, float]:
    workers = worker_pids(pool)
    return sum(rss_mib(pid) for pid in workers), rss_mib(forkserver_pid())


class DiesWhileSent:
    """A reply whose pickling starts a 5 ms fuse: the worker is SIGKILLed (as by the OOM
    killer) while it holds pebble's channel lock, pickling or writing its reply."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __reduce__(self) -> tuple[Any, ...]:
        threading.Timer(0.005, os.kill, (os.getpid(), signal.SIGKILL)).start()
        return bytes, (b"x" * self.size,)


def reply_then_die(size: int) -> DiesWhileSent:
    return DiesWhileSent(size)


def small_task() -> int:
    return os.getpid()


def pebble_killed_mid_reply(config: DecoderConfig, reply_bytes: int) -> str:
    """What pebble does after a worker dies mid-reply: does the next task finish?"""
    pool = PebbleDecoder(config)._new_pool()
    try:
        pool.schedule(small_task).result(timeout=30)
        died = pool.schedule(reply_then_die, (reply_bytes,))
        try:
            died.result(timeout=30)
            first = "its task returned"
        except Exception as error:
            first = f"its task: {type(error).__name__}"
        started = time.perf_counter()
        try:
            pool.schedule(small_task, timeout=2).result(timeout=15)
            after = f"next task done in {time.perf_counter() - started:.2f} s"
        except FutureTimeoutError:
            after = "next task (2 s timeout) not done after 15 s: the pool is wedged"
        return f"{first}; {after}"
    finally:
        pool.stop()  # type: ignore[no-untyped-call]
        threading.Thread(target=pool.join, daemon=True).start()


Factory = Callable[[DecoderConfig], Pool]
POOLS: dict[str, Factory] = {"ours": ImageDecoder, "pebble": PebbleDecoder}


async def each_round(
    rounds: int, config: DecoderConfig, measure: Callable[[Pool], Awaitable[Any]]
) -> dict[str, list[Any]]:
    """``measure`` on a fresh pool of each kind, alternating, ``rounds`` times."""
    results: dict[str, list[Any]] = {name: [] for name in POOLS}
    for _ in range(rounds):
        for name, factory in POOLS.items():
            pool = factory(config)
            try:
                results[name].append(await measure(pool))
            finally:
                await pool.close()
    return results


async def run(rounds: int, count: int) -> None:
    settings = Settings(_env_file=None, primary_url=FAKE_URL)
    config = DecoderConfig.from_settings(settings)
    data = jpeg_640()
    print(f"640x640 JPEG, {len(data)} bytes; {config.workers} workers; {rounds} rounds")

    lat = await each_round(rounds, config, lambda pool: latency(pool, data, count))
    print(f"\n1. latency, one upload at a time, {count} per round (ms):")
    for name, samples in lat.items():
        flat = [s * 1000 for round_ in samples for s in round_]
        medians = " ".join(f"{statistics.median(r) * 1000:.2f}" for r in samples)
        print(
            f"  {name:7} median {statistics.median(flat):.2f}  p99 {percentile(flat, 99):.2f}"
            f"  (round medians {medians})"
        )

    rate = await each_round(rounds, config, lambda pool: throughput(pool, data, 4 * count, 4))
    print(f"\n2. throughput, 4 in flight, {4 * count} uploads per round (uploads/s):")
    for name, values in rate.items():
        listed = " ".join(f"{v:.1f}" for v in values)
        print(f"  {name:7} median {statistics.median(values):.1f}  (rounds {listed})")

    mem = await each_round(rounds, config, lambda pool: _warm_then(pool, data, memory))
    print("\n3. RSS after warm-up (MiB): workers total / fork server; threads in the service")
    for name, values in mem.items():
        workers = statistics.median(v[0][0] for v in values)
        server = statistics.median(v[0][1] for v in values)
        threads = statistics.median(v[1] for v in values)
        print(f"  {name:7} {workers:.0f} / {server:.0f}; {threads:.0f} threads")

    bomb_config = replace(
        config, workers=1, timeout=60, limits=replace(config.limits, max_decoded_pixels=10**13)
    )
    killed = await each_round(rounds, bomb_config, lambda pool: kill_mid_decode(pool, data))
    print("\n4. worker SIGKILLed mid-decode: kill -> its error; next upload (ms)")
    _print_pairs(killed)

    over = await each_round(
        rounds, replace(bomb_config, timeout=0.5), lambda pool: overrun(pool, data)
    )
    print("\n5. decode over a 0.5 s budget: past the budget -> its error; next upload (ms)")
    _print_pairs(over)

    idle = await each_round(rounds, replace(config, workers=1), lambda pool: kill_idle(pool, data))
    print("\n6. worker SIGKILLed while idle, upload at once (ms, outcome)")
    for name, values in idle.items():
        print(f"  {name:7} " + "; ".join(f"{s * 1000:.0f} {o}" for s, o in values))

    size = settings.max_upload_bytes
    print(f"\npebble alone, 2 workers, one killed while sending a {size}-byte reply:")
    print("  " + pebble_killed_mid_reply(replace(config, workers=2), size))


async def _warm_then(pool: Pool, data: bytes, then: Callable[[Pool], Any]) -> Any:
    """``then(pool)`` after 4 uploads per worker, and the threads the pool started meanwhile."""
    threads = threading.active_count()
    await asyncio.gather(*(pool.process(data) for _ in range(4 * pool.config.workers)))
    return then(pool), threading.active_count() - threads


def _print_pairs(results: dict[str, list[tuple[float, str, float, str]]]) -> None:
    for name, values in results.items():
        rows = "; ".join(f"{a * 1000:.0f} {b}, next {c * 1000:.0f} {d}" for a, b, c, d in values)
        print(f"  {name:7} {rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per pool")
    parser.add_argument("--count", type=int, default=100, help="uploads per latency round")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.count))


if __name__ == "__main__":
    main()
