"""A decode pool built on ``pebble.ProcessPool``, behind the interface of ``ImageDecoder``.

Kept only to measure it against the service's own pool (loadtests/benchmarks/decode_pool.py,
docs/benchmarks.md "Decode pool: pebble vs ours"): the service does not use it, because pebble
5.2 breaks the whole pool when a worker is killed while idle, and wedges it when a worker is
killed while sending its reply (both measured there).

What pebble does here: one process per worker from a ``forkserver`` context, an initializer
(RLIMIT_AS), a per-task timeout that stops only the overrunning worker, and replacement of
workers that exit. What is still ours: the bounded wait for a free worker (503 with
Retry-After), the CPU budget per decode, the mapping of pebble's errors to the API's, and
re-creating the pool when pebble reports it broken.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

from pebble import ProcessExpired, ProcessPool

from service.images.decoder import (
    PRELOAD,
    DecoderConfig,
    busy_error,
    decode_reply,
    limit_memory,
    overrun_error,
    unpack_reply,
    worker_died_error,
    worker_gone_error,
)
from service.images.validation import ImageFacts


def decode_task(data: bytes, config: DecoderConfig) -> tuple[tuple[Any, ...], bytes]:
    """Run in a pebble worker: the same decode, CPU budget and reply as the service's."""
    return decode_reply(data, config)


class PebbleDecoder:
    """``facts, stored_bytes = await decoder.process(data)``, with pebble running the workers."""

    def __init__(self, config: DecoderConfig) -> None:
        self.config = config
        self._context: Any = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._pool = self._new_pool()
        self._slots: asyncio.Semaphore | None = None
        self.pools_created = 1

    def _new_pool(self) -> ProcessPool:
        return ProcessPool(
            max_workers=self.config.workers,
            initializer=limit_memory,
            initargs=(self.config.memory_mib,),
            context=self._context,
        )

    def worker_pids(self) -> list[int]:
        """The pids of the pool's live workers (for the benchmark's RSS and kill scenarios)."""
        return list(self._pool._pool_manager.worker_manager.workers)

    async def process(self, data: bytes) -> tuple[ImageFacts, bytes]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.workers)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.config.queue_timeout)
        except TimeoutError:
            raise busy_error(self.config) from None
        try:
            reply, cleaned = await self._run(data)
        finally:
            self._slots.release()
        if reply[0] == "ok":  # as the service's pool hands it back: the bytes to store
            reply = ("ok", reply[1], data if reply[2] else cleaned)
        return unpack_reply(reply)

    async def _run(self, data: bytes) -> tuple[tuple[Any, ...], bytes]:
        if not self._pool.active:  # pebble gave up on it (a worker died while idle)
            broken, self._pool = self._pool, self._new_pool()
            self.pools_created += 1
            broken.stop()  # type: ignore[no-untyped-call]
            await asyncio.to_thread(broken.join, 10)  # stops its remaining workers
        try:
            future = self._pool.schedule(
                decode_task, (data, self.config), timeout=self.config.timeout
            )
            return await asyncio.wrap_future(future)
        except FutureTimeoutError:
            raise overrun_error(self.config) from None
        except ProcessExpired as error:
            raise worker_died_error() from error
        except RuntimeError as error:  # BrokenProcessPool, or a pool that broke just now
            raise worker_gone_error() from error

    async def close(self) -> None:
        self._pool.stop()  # type: ignore[no-untyped-call]
        await asyncio.to_thread(self._pool.join, 10)
