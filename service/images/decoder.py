"""Decode uploads in a bounded pool of separate, resource-limited processes.

Why processes, and why not ``concurrent.futures.ProcessPoolExecutor``:

* A decode is CPU-bound C code that holds the GIL for long stretches; in a thread it would
  still slow the event loop, and nothing can stop it once started. A process can be killed.
* Each worker limits itself with ``setrlimit``: ``RLIMIT_AS`` (address space) once at start,
  and before every decode ``RLIMIT_CPU`` to the CPU it has used so far plus the budget, so a
  decode that outruns the budget gets SIGXCPU even if the parent is too starved to notice.
* The parent enforces the wall-clock budget. ProcessPoolExecutor cannot say which process
  runs which task, so the only way to stop one runaway decode there is to kill a worker and
  break the whole pool, failing every innocent upload decoded at the same time. Here each
  slot is one process with its own pipe: an overrun kills exactly that process, and the slot
  starts a fresh one on its next use. A worker that dies (SIGXCPU, SIGKILL, a decoder crash)
  is the same case, seen as end-of-file on its pipe. A worker acknowledges each upload before
  decoding it, so one that died while idle (its death not yet visible) is told apart: that
  upload is retried on a fresh worker instead of getting the dead worker's 422.
* Processes come from the ``forkserver`` start method: a clean server process (no event loop,
  no threads, no open database connections) forks each worker, which is safe for an asyncio
  process with threads, unlike ``fork``, and cheaper than ``spawn`` because the server has
  imported Pillow once (numbers in docs/benchmarks.md).

Why not ``pebble.ProcessPool`` (a timeout per task that kills only the overrunning worker and
starts a new one, a ``forkserver`` context, an initializer for RLIMIT_AS). Prototyped behind
this interface (loadtests/benchmarks/pebble_decoder.py) and measured side by side
(loadtests/benchmarks/decode_pool.py; docs/benchmarks.md, "Decode pool: pebble vs ours"), it
fails two cases this pool handles:

* all its workers share one pipe, and a worker holds its lock while it reads a task or writes
  a reply. A worker killed in there (the OOM killer; SIGXCPU at the end of a budget) never
  releases it: no later task completes, and no timeout fires (pebble kills a worker only when
  it can take that lock). Measured: one of 2 workers killed while replying, the next task not
  done after 15 s. Here each worker has its own pipe, so a death ends only its own upload;
* a worker killed while idle makes pebble 5.2 mark the whole pool broken: 9 of 9 uploads sent
  right after such a kill were refused (here: 9 of 9 stored), and the pool must be rebuilt.

It also stops an overrun late (a 0.1 s polling tick, then SIGTERM and up to 3 s before
SIGKILL): a 422 a median 132 ms past the budget (up to 1.5 s) against 5 ms here. Latency,
throughput and memory showed no difference beyond the noise. What pebble would save (starting
workers, a timer per task) is the smaller part of this module; the pipe per worker that keeps
a death local is what it lacks.

The pool holds ``workers`` slots. An upload waits for a free slot for at most
``queue_timeout`` seconds, then gets 503 ``DECODER_BUSY`` with ``Retry-After``: concurrency is
bounded by the slots, and excess uploads wait briefly, then are refused. The event loop only
awaits; the blocking pipe I/O runs on a small thread pool of the decoder's own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import resource
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from service.errors import (
    DecodeBudgetExceededError,
    DecoderBusyError,
    ServiceError,
    UnsupportedImageError,
)
from service.images.validation import DecodeLimits, ImageFacts, clean_image
from service.settings import Settings

logger = logging.getLogger("replikit.service")

MIB = 1024 * 1024
# Imported once in the fork server, so every worker starts with Pillow loaded.
PRELOAD = ["service.images.decoder"]
READY = b"ready"
RECEIVED = b"got"  # a worker's receipt for an upload, before it decodes it
START_TIMEOUT = 30.0  # seconds for a new worker to say it is ready


@dataclass(frozen=True)
class DecoderConfig:
    """How many workers, and how much time and memory each decode may take."""

    limits: DecodeLimits
    workers: int = 2
    timeout: float = 5.0
    queue_timeout: float = 10.0
    memory_mib: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> DecoderConfig:
        return cls(
            limits=DecodeLimits(
                allowed_formats=tuple(settings.allowed_formats),
                max_pixels=settings.max_image_pixels,
                max_frames=settings.max_image_frames,
                max_decoded_pixels=settings.max_decoded_pixels,
                keep_metadata=settings.keep_image_metadata,
            ),
            workers=settings.decode_workers,
            timeout=settings.decode_timeout,
            queue_timeout=settings.decode_queue_timeout,
            memory_mib=settings.decode_worker_memory_mib,
        )

    @property
    def cpu_seconds(self) -> int:
        """The per-decode CPU backstop: the wall-clock budget rounded up, plus one second."""
        return math.ceil(self.timeout) + 1


def set_cpu_budget(seconds: int) -> None:
    """Let this process use ``seconds`` more CPU seconds, then be killed by SIGXCPU.

    RLIMIT_CPU counts the process's whole life, so a long-lived worker moves its soft limit
    before every decode (an unprivileged process may raise it up to the hard limit).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def decode_reply(data: bytes, config: DecoderConfig) -> tuple[tuple[Any, ...], bytes]:
    """Decode one upload inside a worker: the reply tuple for the parent, and the bytes to send
    after it (empty unless cleaning changed them).

    The reply is ``("ok", facts, unchanged)`` or ``("error", error_type, message, details)``.
    """
    set_cpu_budget(config.cpu_seconds)
    try:
        facts, cleaned = clean_image(data, config.limits)
    except ServiceError as error:
        return ("error", type(error), error.message, error.details), b""
    except MemoryError:
        message = "Decoding the image needs more memory than a decode may use."
        details = {"reason": "memory", "memory_mib": config.memory_mib}
        return ("error", DecodeBudgetExceededError, message, details), b""
    except Exception as error:  # Pillow raises odd types on hostile input: a 415, not a crash
        logger.warning("event=decode_unexpected_error error=%s", type(error).__name__)
        message = "The image data cannot be decoded."
        return ("error", UnsupportedImageError, message, {"reason": type(error).__name__}), b""
    # Most uploads carry nothing to strip: then the parent keeps its own copy and the bytes do
    # not cross the pipe a second time.
    unchanged = cleaned == data
    return ("ok", facts, unchanged), b"" if unchanged else cleaned


def limit_memory(memory_mib: int) -> None:
    """Cap this process's address space (once per worker: a decode cannot raise it back)."""
    if memory_mib > 0:
        limit = memory_mib * MIB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def worker_main(connection: Connection, config: DecoderConfig) -> None:
    """The worker process: decode what arrives on ``connection`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    limit_memory(config.memory_mib)
    connection.send_bytes(READY)
    while True:
        try:
            data = connection.recv_bytes()
        except (EOFError, OSError):
            return  # the service closed the pipe, or exited
        connection.send_bytes(RECEIVED)
        reply, cleaned = decode_reply(data, config)
        del data
        connection.send(reply)
        if reply[0] == "ok" and not reply[2]:
            connection.send_bytes(cleaned)


def busy_error(config: DecoderConfig) -> DecoderBusyError:
    """503: no worker freed up within the queue timeout."""
    return DecoderBusyError(
        "Every image decoder is busy; retry shortly.",
        details={"workers": config.workers},
        headers={"Retry-After": str(math.ceil(config.timeout))},
    )


def worker_gone_error() -> DecoderBusyError:
    """503: workers keep dying before they receive the upload."""
    return DecoderBusyError(
        "The image decoder keeps stopping; retry shortly.",
        details={"reason": "worker_gone"},
        headers={"Retry-After": "5"},
    )


def overrun_error(config: DecoderConfig) -> DecodeBudgetExceededError:
    """422: the decode overran its wall-clock budget (its worker was killed)."""
    return DecodeBudgetExceededError(
        f"Decoding the image took longer than {config.timeout:g} s.",
        details={"reason": "time", "timeout_seconds": config.timeout},
    )


def worker_died_error() -> DecodeBudgetExceededError:
    """422: the worker died while decoding this upload."""
    return DecodeBudgetExceededError(
        "The image decoder stopped while decoding this image (over its CPU or memory budget, "
        "or crashed).",
        details={"reason": "worker_died"},
    )


def unpack_reply(reply: tuple[Any, ...]) -> tuple[ImageFacts, bytes]:
    """``("ok", facts, stored_bytes)`` to its facts and bytes; an error reply is raised."""
    if reply[0] == "ok":
        return reply[1], reply[2]
    error_type, message, details = reply[1], reply[2], reply[3]
    if not (isinstance(error_type, type) and issubclass(error_type, ServiceError)):
        raise RuntimeError(f"unexpected reply from a decode worker: {reply[0]!r}")
    raise error_type(message, details=details)


class WorkerGoneError(Exception):
    """The worker died before it received the upload (killed while idle): safe to retry.

    Seen as a failed send, or as the pipe closing before the worker's receipt: a worker killed
    while idle can still accept a send until the kernel has torn it down, so a failed send
    alone would charge that death to the innocent upload (a 422 ``worker_died``).
    """


class DecodeWorker:
    """One decode process and the parent's end of its pipe (used from one thread at a time).

    Construction blocks until the worker says it is ready, so a worker's start (fork, and the
    re-import of a script ``__main__`` that multiprocessing does in every child) is never
    charged to the first decode's budget.
    """

    def __init__(self, config: DecoderConfig) -> None:
        context: Any = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        self._io = threading.Lock()  # held by a round trip; see reap()
        self.connection, child_end = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=worker_main, args=(child_end, config), name="replikit-decode", daemon=True
        )
        self.process.start()
        child_end.close()
        try:
            ready = self.connection.poll(START_TIMEOUT) and self.connection.recv_bytes() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            self.reap()
            raise DecoderBusyError(
                "The image decoder could not start; retry shortly.",
                details={"reason": "worker_start_failed", "exitcode": self.process.exitcode},
                headers={"Retry-After": "5"},
            )

    def roundtrip(self, data: bytes) -> tuple[Any, ...]:
        with self._io:
            try:
                self.connection.send_bytes(data)
                receipt = self.connection.recv_bytes()
            except (EOFError, OSError) as error:
                raise WorkerGoneError from error
            if receipt != RECEIVED:
                raise RuntimeError(f"unexpected receipt from a decode worker: {receipt!r}")
            reply: tuple[Any, ...] = self.connection.recv()
            if reply[0] == "ok":
                status, facts, unchanged = reply
                return status, facts, data if unchanged else self.connection.recv_bytes()
            return reply

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """SIGKILL now; :meth:`reap` (off the event loop) waits for it and closes the pipe."""
        if self.process.exitcode is None:
            self.process.kill()

    def reap(self, timeout: float = 5.0) -> int | None:
        """Wait for the process, then close the pipe once no round trip is reading it.

        A round trip abandoned on timeout may still be blocked reading the pipe until the
        kill reaches the worker; closing the descriptor under it would let a new worker's pipe
        reuse the number and the stale reader steal its reply.
        """
        self.process.join(timeout)
        with self._io:
            self.connection.close()
        return self.process.exitcode

    def stop(self, timeout: float = 2.0) -> None:
        """Close the pipe (the worker exits on EOF); kill it if it does not within ``timeout``."""
        if self._io.acquire(blocking=False):
            try:
                self.connection.close()
            finally:
                self._io.release()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
        self.reap(timeout)


class ImageDecoder:
    """The service's entry point: ``facts, stored_bytes = await decoder.process(data)``.

    Workers start lazily, on the first upload that needs one; :meth:`close` (app shutdown)
    stops them all.
    """

    def __init__(self, config: DecoderConfig) -> None:
        self.config = config
        self._idle: asyncio.LifoQueue[DecodeWorker | None] | None = None
        self._threads = ThreadPoolExecutor(
            max_workers=2 * config.workers, thread_name_prefix="replikit-decode-io"
        )
        self._workers: set[DecodeWorker] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageDecoder:
        return cls(DecoderConfig.from_settings(settings))

    def _slots(self) -> asyncio.LifoQueue[DecodeWorker | None]:
        if self._idle is None:  # made on first use, inside the running loop; warm slots first
            self._idle = asyncio.LifoQueue()
            for _ in range(self.config.workers):
                self._idle.put_nowait(None)
        return self._idle

    async def process(self, data: bytes) -> tuple[ImageFacts, bytes]:
        """Decode, check and clean ``data`` in a worker; return its facts and the bytes to store.

        Raises the worker's ServiceError (413/415/...), ``DecodeBudgetExceededError`` (422)
        when the decode overran its time or memory or killed its worker, ``DecoderBusyError``
        (503) when no worker freed up within the queue timeout.
        """
        if self._closed:
            raise DecoderBusyError("The service is shutting down.", headers={"Retry-After": "1"})
        slots = self._slots()
        try:
            worker = await asyncio.wait_for(slots.get(), self.config.queue_timeout)
        except TimeoutError:
            raise busy_error(self.config) from None
        try:
            reply, worker = await self._decode_on(worker, data)
        finally:
            # When _decode_on raises, ``worker`` is still the one taken from the slot, and
            # _decode_on may have killed it (its decode died or overran). A killed worker can
            # still look alive until its exit is reported, so the next upload would be sent to
            # it and fail too (a CI run got a second "worker_died" this way): only a worker
            # still registered goes back.
            slots.put_nowait(worker if worker in self._workers else None)
        return unpack_reply(reply)

    async def _decode_on(
        self, worker: DecodeWorker | None, data: bytes
    ) -> tuple[tuple[Any, ...], DecodeWorker | None]:
        """One round trip on ``worker`` (started or replaced as needed).

        Returns the reply and the worker to put back in the slot: the same one, or ``None``
        when it was killed (its decode overran or was abandoned, or it died), so the slot
        starts a fresh process on its next use. Never leaves a half-used worker in a slot.
        """
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            if worker is not None and not worker.alive():
                self._discard(worker, reason="found_dead")
                worker = None
            if worker is None:
                worker = await loop.run_in_executor(self._threads, DecodeWorker, self.config)
                self._workers.add(worker)
            finished = False
            try:
                reply = await asyncio.wait_for(
                    loop.run_in_executor(self._threads, worker.roundtrip, data),
                    self.config.timeout,
                )
                finished = True
                return reply, worker
            except WorkerGoneError:
                if attempt == 2:
                    raise worker_gone_error() from None
            except TimeoutError:
                raise overrun_error(self.config) from None
            except (EOFError, OSError) as error:
                raise worker_died_error() from error
            finally:
                if not finished:  # also on cancellation: the worker's state is unknown
                    self._discard(worker, reason="unfinished")
                    worker = None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _discard(self, worker: DecodeWorker, *, reason: str) -> None:
        """Kill ``worker`` (its decode overran, was abandoned, or it died) and reap it off-loop."""
        worker.kill()
        self._workers.discard(worker)
        reaped = asyncio.get_running_loop().run_in_executor(self._threads, worker.reap)

        def log(done: asyncio.Future[int | None]) -> None:
            exitcode = done.result() if not done.cancelled() and not done.exception() else None
            logger.info(
                "event=decode_worker_replaced reason=%s pid=%s exitcode=%s",
                reason,
                worker.process.pid,
                exitcode,
            )

        reaped.add_done_callback(log)

    async def close(self) -> None:
        """Stop every worker (app shutdown); uploads after this are refused with 503."""
        self._closed = True
        workers, self._workers = list(self._workers), set()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._threads, worker.stop) for worker in workers)
        )
        self._threads.shutdown(wait=True, cancel_futures=True)
