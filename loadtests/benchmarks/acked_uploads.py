"""A stream of small uploads through the service that notes which ones were acknowledged, for
measuring failover windows and checking that no acknowledged upload was lost."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from PIL import Image

from service.routing.lsn import parse_lsn


@dataclass(frozen=True)
class Receipt:
    """One acknowledged upload: which node took it (``X-Replikit-Node``), the primary's WAL
    position after its commit (``X-Replikit-LSN``), when it was sent and acknowledged
    (``time.monotonic()``, and the wall clock's ``time.time()`` beside it, which a database's
    commit timestamps can be compared with), and its delete token."""

    image_id: str
    node: str
    lsn: int
    sent_at: float
    acked_at: float
    sent_wall: float
    acked_wall: float
    delete_token: str


def small_png(seed: int) -> bytes:
    """A 16x16 PNG whose colour follows ``seed``: a few hundred bytes, different each time."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (seed % 256, seed // 256 % 256, 7)).save(buffer, "PNG")
    return buffer.getvalue()


def missing_from(base_url: str, acknowledged: dict[str, str]) -> list[str]:
    """The images of ``acknowledged`` (id -> sha256 of the bytes) that the service at
    ``base_url`` does not return byte for byte, read strongly (from the primary)."""
    lost = []
    with httpx.Client(timeout=10) as client:
        for image_id, digest in acknowledged.items():
            response = client.get(
                f"{base_url}/api/v1/images/{image_id}/file",
                headers={"X-Replikit-Consistency": "strong"},
            )
            same = hashlib.sha256(response.content).hexdigest() == digest
            if response.status_code != 200 or not same:
                lost.append(image_id)
    return lost


@dataclass
class AckedUploads:
    """Uploads one image after another to ``url`` (small PNGs unless ``make_image`` makes
    others from a counter); run it in a thread, stop with ``stop``."""

    url: str
    make_image: Callable[[int], bytes] = small_png
    seed: int = 0  # the counter's start: streams running side by side upload different bytes
    acknowledged: dict[str, str] = field(default_factory=dict)  # id -> sha256 of the bytes
    acked_sent_at: list[float] = field(default_factory=list)  # when acked requests were sent
    receipts: list[Receipt] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        seed = self.seed
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                seed += 1
                data = self.make_image(seed)
                sent_at, sent_wall = time.monotonic(), time.time()
                try:
                    response = client.post(
                        f"{self.url}/api/v1/images/upload",
                        files={"file": (f"s{seed}.png", data, "image/png")},
                    )
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 201:
                    body = response.json()
                    image_id = body["id"]
                    self.acknowledged[image_id] = hashlib.sha256(data).hexdigest()
                    self.acked_sent_at.append(sent_at)
                    self.receipts.append(
                        Receipt(
                            image_id=image_id,
                            node=response.headers.get("X-Replikit-Node", ""),
                            lsn=parse_lsn(response.headers.get("X-Replikit-LSN", "0/0")),
                            sent_at=sent_at,
                            acked_at=time.monotonic(),
                            sent_wall=sent_wall,
                            acked_wall=time.time(),
                            delete_token=body["delete_token"],
                        )
                    )
                else:
                    self.errors += 1
                    time.sleep(0.05)

    def first_ack_sent_after(self, moment: float, within: float = 60.0) -> float:
        """Seconds from ``moment`` to the sending of the first acknowledged upload after it."""
        deadline = time.monotonic() + within
        while True:
            later = [t for t in self.acked_sent_at if t > moment]
            if later:
                return later[0] - moment
            if time.monotonic() > deadline:
                raise TimeoutError(f"no upload was acknowledged within {within:.0f} s")
            time.sleep(0.05)

    def missing(self, base_url: str) -> list[str]:
        """Acknowledged uploads the primary does not return byte for byte."""
        return missing_from(base_url, self.acknowledged)


class running:
    """Run an :class:`AckedUploads` stream in a thread for the ``with`` block."""

    def __init__(self, stream: AckedUploads) -> None:
        self.stream = stream
        self.thread = threading.Thread(target=stream.run, daemon=True)

    def __enter__(self) -> AckedUploads:
        self.thread.start()
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.stop.set()
        self.thread.join(30)
