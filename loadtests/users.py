"""Locust user classes for the image API. Tags select scenarios: browse, upload, mixed, ryw.

Every request is named by route template (``/api/v1/images/[id]``), so statistics group by
route. With ``REPLIKIT_REQUEST_LOG`` set, each request is also appended to that JSON-lines
file with the node that served it, which the experiments analyse.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import deque
from typing import Any

from locust import FastHttpUser, between, events, tag, task

from loadtests.sample_images import SampleImage, image_pool

IMAGES: list[SampleImage] = image_pool()
KNOWN_IDS: deque[str] = deque(maxlen=2000)
CONSISTENCY = os.environ.get("REPLIKIT_CONSISTENCY", "")
RYW_CONSISTENCY = os.environ.get("REPLIKIT_RYW_CONSISTENCY", "read_your_writes")
LSN_HEADER = "X-Replikit-LSN"
NODE_HEADER = "X-Replikit-Node"

_log_lock = threading.Lock()
_log_file = None
if os.environ.get("REPLIKIT_REQUEST_LOG"):
    _log_file = open(os.environ["REPLIKIT_REQUEST_LOG"], "a", buffering=1)  # noqa: SIM115


def record(entry: dict[str, Any]) -> None:
    if _log_file is not None:
        with _log_lock:
            _log_file.write(json.dumps(entry) + "\n")


@events.request.add_listener
def _log_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any,
    exception: Exception | None,
    context: dict[str, Any],
    **_: Any,
) -> None:
    headers = getattr(response, "headers", None) or {}
    record(
        {
            "t": time.time(),
            "method": request_type,
            "name": name,
            "status": getattr(response, "status_code", 0) or 0,
            "ok": exception is None,
            "ms": round(response_time, 2),
            "node": headers.get(NODE_HEADER),
            "kind": context.get("kind", "read"),
            "image_id": context.get("image_id"),
            "error": str(exception)[:200] if exception else None,
        }
    )


def consistency_headers(mode: str = CONSISTENCY) -> dict[str, str]:
    return {"X-Replikit-Consistency": mode} if mode else {}


class ImageApiUser(FastHttpUser):
    abstract = True
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        if not KNOWN_IDS:
            with self.client.get(
                "/api/v1/images?limit=100", name="/api/v1/images", catch_response=True
            ) as response:
                if response.status_code == 200:
                    KNOWN_IDS.extend(item["id"] for item in response.json()["items"])
                    response.success()

    def upload(self) -> dict[str, Any] | None:
        sample = random.choice(IMAGES)
        with self.client.post(
            "/api/v1/images/upload",
            files={"file": (sample.filename, sample.data, sample.content_type)},
            name="/api/v1/images/upload",
            headers=consistency_headers(),
            context={"kind": "write"},
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"upload failed: {response.status_code}")
                return None
            body: dict[str, Any] = response.json()
            body["lsn"] = response.headers.get(LSN_HEADER, "")
            body["sample"] = sample
            response.request_meta["context"]["image_id"] = body["id"]
            response.success()
        KNOWN_IDS.append(body["id"])
        return body

    def browse(self) -> None:
        action = random.random()
        if action < 0.2 or not KNOWN_IDS:
            self.client.get(
                "/api/v1/images?limit=20", name="/api/v1/images", headers=consistency_headers()
            )
            return
        image_id = random.choice(KNOWN_IDS)
        path = f"/api/v1/images/{image_id}" + ("/file" if action > 0.6 else "")
        name = "/api/v1/images/[id]" + ("/file" if action > 0.6 else "")
        with self.client.get(
            path, name=name, headers=consistency_headers(), catch_response=True
        ) as response:
            # A deleted or not-yet-replicated id is not a failure of the service.
            if response.status_code in (200, 404):
                response.success()


class BrowseUser(ImageApiUser):
    @tag("browse")
    @task
    def browse_images(self) -> None:
        self.browse()


class UploadUser(ImageApiUser):
    @tag("upload")
    @task
    def upload_image(self) -> None:
        self.upload()


class MixedUser(ImageApiUser):
    """Reads and writes in a ratio set by REPLIKIT_MIX_BROWSE and REPLIKIT_MIX_UPLOAD."""

    @tag("mixed")
    @task(int(os.environ.get("REPLIKIT_MIX_BROWSE", "8")))
    def browse_images(self) -> None:
        self.browse()

    @tag("mixed")
    @task(int(os.environ.get("REPLIKIT_MIX_UPLOAD", "2")))
    def upload_image(self) -> None:
        self.upload()


class RywUser(ImageApiUser):
    """Upload, then at once read the metadata and the file back carrying the LSN token (header
    and cookie, as a browser would). A 404 or different bytes is a ``stale_read`` failure."""

    @tag("ryw")
    @task
    def upload_then_read(self) -> None:
        created = self.upload()
        if created is None:
            return
        headers = {**consistency_headers(RYW_CONSISTENCY), LSN_HEADER: created["lsn"]}
        sample: SampleImage = created["sample"]
        for suffix, name in (
            ("", "/api/v1/images/[id] (ryw)"),
            ("/file", "/api/v1/images/[id]/file (ryw)"),
        ):
            with self.client.get(
                f"/api/v1/images/{created['id']}{suffix}",
                name=name,
                headers=headers,
                context={"kind": "ryw"},
                catch_response=True,
            ) as response:
                node = response.headers.get(NODE_HEADER, "?")
                fresh = response.status_code == 200 and (
                    suffix == "" or response.content == sample.data
                )
                if fresh:
                    response.success()
                elif response.status_code in (200, 404):
                    response.failure(f"stale_read node={node}")
                else:
                    response.failure(f"status {response.status_code} node={node}")
