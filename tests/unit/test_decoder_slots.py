"""The decoder's slots: a worker killed during an upload never serves the next one.

Real worker processes; only the moment of death is staged, so the test does not depend on
how fast the machine reports it.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from service.errors import DecodeBudgetExceededError
from service.images.decoder import DecoderConfig, DecodeWorker, ImageDecoder
from service.images.validation import DecodeLimits

LIMITS = DecodeLimits(allowed_formats=("PNG",), max_pixels=10_000, max_frames=1)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def decoder() -> AsyncIterator[ImageDecoder]:
    """A one-slot decoder whose worker has started (it served one upload)."""
    decoder = ImageDecoder(DecoderConfig(limits=LIMITS, workers=1))
    try:
        await decoder.process(png())
        yield decoder
    finally:
        await decoder.close()


def only_worker(decoder: ImageDecoder) -> DecodeWorker:
    (worker,) = decoder._workers
    return worker


def seems_alive_after_death(monkeypatch: pytest.MonkeyPatch, worker: DecodeWorker) -> None:
    """Until its exit is reported, a killed worker still looks alive (on a loaded machine the
    next upload came that soon)."""
    real_alive = DecodeWorker.alive
    monkeypatch.setattr(DecodeWorker, "alive", lambda w: w is worker or real_alive(w))


async def assert_served_by_a_new_worker(decoder: ImageDecoder, old: DecodeWorker) -> None:
    facts, _ = await decoder.process(png())
    assert (facts.width, facts.height) == (8, 8)
    assert only_worker(decoder) is not old


async def test_the_upload_after_a_worker_died_mid_decode_gets_a_new_worker(
    decoder: ImageDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = only_worker(decoder)
    real_roundtrip = DecodeWorker.roundtrip

    def dies_mid_decode(worker: DecodeWorker, data: bytes) -> tuple[Any, ...]:
        if worker is first:  # the kernel kills it while it decodes: its pipe hits EOF
            worker.process.kill()
            worker.process.join()
            raise EOFError
        return real_roundtrip(worker, data)

    monkeypatch.setattr(DecodeWorker, "roundtrip", dies_mid_decode)
    seems_alive_after_death(monkeypatch, first)

    with pytest.raises(DecodeBudgetExceededError) as died:
        await decoder.process(png())
    assert died.value.details == {"reason": "worker_died"}

    await assert_served_by_a_new_worker(decoder, first)


async def test_an_upload_sent_to_a_worker_killed_while_idle_is_retried_on_a_new_worker(
    decoder: ImageDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kill lands just before the upload: the send still succeeds (the worker is not torn
    down yet), then its pipe closes. The upload is innocent, so it must not get that 422."""
    first = only_worker(decoder)
    seems_alive_after_death(monkeypatch, first)
    pid = first.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it cannot read the upload, but the send is buffered
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()

    await assert_served_by_a_new_worker(decoder, first)
