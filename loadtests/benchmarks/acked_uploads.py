"""A stream of small uploads through the service that notes which ones were acknowledged, for
measuring failover windows and checking that no acknowledged upload was lost."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass, field

import httpx
from PIL import Image

from service.routing.lsn import parse_lsn


@dataclass(frozen=True)
class Receipt:
    """One acknowledged upload: which node took it (``X-Replikit-Node``), the primary's WAL
    position after its commit (``X-Replikit-LSN``), when it was sent and acknowledged."""

    image_id: str
    node: str
    lsn: int
    sent_at: float
    acked_at: float


@dataclass
class AckedUploads:
    """Uploads one small PNG after another to ``url``; run it in a thread, stop with ``stop``."""

    url: str
    acknowledged: dict[str, str] = field(default_factory=dict)  # id -> sha256 of the bytes
    acked_sent_at: list[float] = field(default_factory=list)  # when acked requests were sent
    receipts: list[Receipt] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        seed = 0
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                seed += 1
                buffer = io.BytesIO()
                Image.new("RGB", (16, 16), (seed % 256, seed // 256 % 256, 7)).save(buffer, "PNG")
                data = buffer.getvalue()
                sent_at = time.monotonic()
                try:
                    response = client.post(
                        f"{self.url}/api/v1/images/upload",
                        files={"file": (f"s{seed}.png", data, "image/png")},
                    )
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 201:
                    image_id = response.json()["id"]
                    self.acknowledged[image_id] = hashlib.sha256(data).hexdigest()
                    self.acked_sent_at.append(sent_at)
                    self.receipts.append(
                        Receipt(
                            image_id=image_id,
                            node=response.headers.get("X-Replikit-Node", ""),
                            lsn=parse_lsn(response.headers.get("X-Replikit-LSN", "0/0")),
                            sent_at=sent_at,
                            acked_at=time.monotonic(),
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
        lost = []
        with httpx.Client(timeout=10) as client:
            for image_id, digest in self.acknowledged.items():
                response = client.get(
                    f"{base_url}/api/v1/images/{image_id}/file",
                    headers={"X-Replikit-Consistency": "strong"},
                )
                if (
                    response.status_code != 200
                    or hashlib.sha256(response.content).hexdigest() != digest
                ):
                    lost.append(image_id)
        return lost


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
