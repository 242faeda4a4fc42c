"""The decoder's slots: a worker killed during an upload never serves the next one.

Real worker processes; only the moment of death is staged, so the test does not depend on
how fast the machine reports it.
"""

from __future__ import annotations

import io
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


async def test_the_upload_after_a_worker_died_mid_decode_gets_a_new_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoder = ImageDecoder(DecoderConfig(limits=LIMITS, workers=1))
    try:
        await decoder.process(png())
        (first,) = decoder._workers
        real_roundtrip, real_alive = DecodeWorker.roundtrip, DecodeWorker.alive

        def dies_mid_decode(worker: DecodeWorker, data: bytes) -> tuple[Any, ...]:
            if worker is first:  # the kernel kills it while it decodes: its pipe hits EOF
                worker.process.kill()
                worker.process.join()
                raise EOFError
            return real_roundtrip(worker, data)

        # Until its exit is reported, a killed worker still looks alive (on a loaded machine
        # the next upload came that soon).
        monkeypatch.setattr(DecodeWorker, "roundtrip", dies_mid_decode)
        monkeypatch.setattr(DecodeWorker, "alive", lambda w: w is first or real_alive(w))

        with pytest.raises(DecodeBudgetExceededError) as died:
            await decoder.process(png())
        assert died.value.details == {"reason": "worker_died"}

        facts, _ = await decoder.process(png())
        assert (facts.width, facts.height) == (8, 8)
        (second,) = decoder._workers
        assert second is not first
    finally:
        await decoder.close()
