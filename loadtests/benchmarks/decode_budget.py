"""Benchmark the image decode budget: worst accepted CPU, pool overhead, stripping speed.

    .venv/bin/python -m loadtests.benchmarks.decode_budget --repeat 50

No database is needed. Under the default settings it measures:

1. the worst uploads still accepted: for each format, the largest canvas the pixel ceiling
   allows with as many frames (or rows) as ``max_decoded_pixels`` allows, decoded through the
   real :class:`ImageDecoder` (worker process, rlimits on), reporting the worker's CPU
   seconds, the wall time, its peak address space and the answer;
2. what the known bombs cost to refuse (GIF frame bomb, 1x40,000,000 PNG);
3. per-upload overhead of the process pool against decoding in a thread (median of N for a
   small PNG), and the start cost of forkserver and spawn workers;
4. metadata stripping (container walk) against re-encoding with Pillow, for a 12 MP JPEG and
   a 4 MP PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from loadtests.hostile_images import gif_frame_bomb, gps_exif, tall_png
from service.errors import ServiceError
from service.images.decoder import DecoderConfig, DecodeWorker, ImageDecoder
from service.images.metadata import strip_metadata
from service.images.validation import ROW_COST_PIXELS, clean_image, decode_cost
from service.settings import Settings

FAKE_URL = "postgresql+asyncpg://app:pw@127.0.0.1:7000/replikit"
CLOCK_TICKS = 100


@dataclass(frozen=True)
class Measured:
    name: str
    size: int
    outcome: str
    wall: float
    cpu: float
    peak_mib: float


def _encode(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def worst_cases(config: DecoderConfig) -> dict[str, bytes]:
    """The most expensive inputs the defaults should still accept, one per shape of cost."""
    limits = config.limits
    side = int(limits.max_pixels**0.5)
    budget = limits.max_decoded_pixels or 0
    frames = min(limits.max_frames, budget // decode_cost(side, side, 1))
    tall = min(limits.max_pixels, budget // (1 + ROW_COST_PIXELS))
    solid = Image.new("RGB", (side, side), (40, 90, 160))
    solid_frames = [Image.new("RGB", (side, side), (i * 20, 90, 160)) for i in range(frames)]
    palette_frames = [Image.new("P", (side, side), i) for i in range(frames)]
    for frame in palette_frames:
        frame.putpalette([(i * 37) % 256 for i in range(768)])
    return {
        f"GIF {side}x{side}, {frames} one-pixel frames": gif_frame_bomb(frames, side),
        f"GIF {side}x{side}, {frames} full frames": _encode(
            palette_frames[0], "GIF", save_all=True, append_images=palette_frames[1:]
        ),
        f"PNG {side}x{side} RGBA": _encode(solid.convert("RGBA"), "PNG"),
        f"PNG 1x{tall}": tall_png(1, tall),
        f"APNG {side}x{side}, {frames} frames": _encode(
            solid_frames[0], "PNG", save_all=True, append_images=solid_frames[1:]
        ),
        f"JPEG {side}x{side} progressive": _encode(solid, "JPEG", quality=95, progressive=True),
        f"WEBP {side}x{side} lossless": _encode(solid, "WEBP", lossless=True),
        f"WEBP {side}x{side}, {frames} frames": _encode(
            solid_frames[0], "WEBP", save_all=True, append_images=solid_frames[1:], quality=50
        ),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure_in_worker(config: DecoderConfig, name: str, data: bytes) -> Measured:
    """One decode in a fresh single-worker decoder, so CPU and peak memory are its own."""
    decoder = ImageDecoder(DecoderConfig(config.limits, 1, config.timeout, 60, config.memory_mib))
    await decoder.process(_encode(Image.new("RGB", (2, 2)), "PNG"))  # start the worker
    (worker,) = decoder._workers
    pid = worker.process.pid or 0
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    try:
        facts, _ = await decoder.process(data)
        outcome = f"accepted {facts.width}x{facts.height}"
    except ServiceError as error:
        outcome = f"{error.status_code} {error.code}"
    wall = time.perf_counter() - started
    alive = worker.alive()
    cpu = cpu_seconds(pid) - cpu_before if alive else float("nan")
    peak = _peak_mib(pid) if alive else float("nan")
    await decoder.close()
    return Measured(name, len(data), outcome, wall, cpu, peak)


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def pool_overhead(config: DecoderConfig, repeat: int) -> tuple[float, float]:
    """Median seconds per small upload: in a thread versus through a warm worker process."""
    data = _encode(Image.new("RGB", (64, 48), (200, 30, 30)), "PNG")
    loop = asyncio.get_running_loop()
    threads = ThreadPoolExecutor(1)
    in_thread, in_pool = [], []
    decoder = ImageDecoder(config)
    await decoder.process(data)
    for _ in range(repeat):
        started = time.perf_counter()
        await loop.run_in_executor(threads, clean_image, data, config.limits)
        in_thread.append(time.perf_counter() - started)
        started = time.perf_counter()
        await decoder.process(data)
        in_pool.append(time.perf_counter() - started)
    await decoder.close()
    threads.shutdown()
    return statistics.median(in_thread), statistics.median(in_pool)


def _noop() -> None:
    """A worker that does nothing: only the start cost is measured."""
    import service.images.validation  # noqa: F401  (what a decode worker needs loaded)


def start_cost(method: str, repeat: int) -> float:
    context: Any = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["service.images.decoder"])
        warm = context.Process(target=_noop)
        warm.start()
        warm.join()

    def one() -> None:
        process = context.Process(target=_noop)
        process.start()
        process.join()

    return median_seconds(one, repeat)


def decode_worker_start(config: DecoderConfig, repeat: int) -> float:
    """Median seconds to start one real decode worker up to its ready message, and stop it."""

    def one() -> None:
        DecodeWorker(config).stop()

    one()  # the fork server itself starts once per service process
    return median_seconds(one, repeat)


def strip_versus_reencode(repeat: int) -> list[tuple[str, int, float, float]]:
    noise = Image.effect_noise((4000, 3000), 40).convert("RGB")
    jpeg = _encode(noise, "JPEG", quality=90, exif=gps_exif(6).tobytes())
    png = _encode(Image.effect_noise((2000, 2000), 20).convert("RGB"), "PNG")
    rows = []
    for fmt, data in (("JPEG 4000x3000", jpeg), ("PNG 2000x2000", png)):
        kind = fmt.split()[0]

        def strip(data: bytes = data, kind: str = kind) -> bytes:
            return strip_metadata(data, kind, keep_metadata=False, orientation=6)

        def reencode(data: bytes = data, kind: str = kind) -> bytes:
            with Image.open(io.BytesIO(data)) as image:
                return _encode(image, kind, **({"quality": 90} if kind == "JPEG" else {}))

        rows.append(
            (
                fmt,
                len(data),
                median_seconds(strip, repeat),
                median_seconds(reencode, max(3, repeat // 10)),
            )
        )
    return rows


async def run(repeat: int) -> None:
    settings = Settings(_env_file=None, primary_url=FAKE_URL)
    config, max_upload_bytes = DecoderConfig.from_settings(settings), settings.max_upload_bytes
    limits = config.limits
    print(
        f"defaults: max_image_pixels={limits.max_pixels} max_image_frames={limits.max_frames} "
        f"max_decoded_pixels={limits.max_decoded_pixels} decode_timeout={config.timeout}s "
        f"decode_workers={config.workers} decode_worker_memory_mib={config.memory_mib}"
    )
    print("\nworst accepted uploads (one worker process, defaults):")
    print(f"{'input':44} {'bytes':>9} {'outcome':>28} {'wall s':>7} {'cpu s':>6} {'peak MiB':>9}")
    cases = dict(worst_cases(config))
    cases["GIF 6300x6300, 100 one-pixel frames (bomb)"] = gif_frame_bomb(100, 6300)
    cases["PNG 1x40000000 (bomb)"] = tall_png(1, 40_000_000)
    for name, data in cases.items():
        if len(data) > max_upload_bytes:
            print(f"{name:44} {len(data):9} {'over REPLIKIT_MAX_UPLOAD_BYTES':>28}")
            continue
        m = await measure_in_worker(config, name, data)
        print(
            f"{m.name:44} {m.size:9} {m.outcome:>28} {m.wall:7.2f} {m.cpu:6.2f} {m.peak_mib:9.0f}"
        )
    thread, pool = await pool_overhead(config, repeat)
    print(f"\nsmall PNG (64x48), median of {repeat}: in a thread {thread * 1000:.2f} ms,")
    overhead = (pool - thread) * 1000
    print(f"  through a worker process {pool * 1000:.2f} ms (overhead {overhead:.2f} ms)")
    print(f"decode worker start to ready: {decode_worker_start(config, 5) * 1000:.0f} ms")
    for method in ("forkserver", "spawn"):
        print(f"bare process start, {method}: {start_cost(method, 5) * 1000:.0f} ms (median of 5)")
    print("\nmetadata removal, median:")
    for fmt, size, strip, reencode in strip_versus_reencode(repeat):
        print(
            f"  {fmt} ({size} bytes): container strip {strip * 1000:.2f} ms, "
            f"Pillow re-encode {reencode * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50, help="samples per median")
    args = parser.parse_args()
    asyncio.run(run(args.repeat))


if __name__ == "__main__":
    main()
