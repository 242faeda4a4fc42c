"""Crash the compose primary under a stream of uploads, fail over, lose nothing, rejoin, and
the stack comes back clean with `up -d`; `down -v` then leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from replication.compose_stack import ComposeStack
from tests.compose.stacks import ROOT, api_url, compose_stack, leftovers

pytestmark = [pytest.mark.compose, pytest.mark.destructive]


def replikit(*args: str) -> str:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "replikit"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"replikit {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


@dataclass
class UploadStream:
    """Uploads one small PNG after another through the load balancer, noting what was acked."""

    url: str
    acknowledged: dict[str, str] = field(default_factory=dict)  # id -> sha256
    acked_sent_at: list[float] = field(default_factory=list)  # when acked requests were sent
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
                    self.errors += 1
                    time.sleep(0.05)
                    continue
                if response.status_code == 201:
                    self.acknowledged[response.json()["id"]] = hashlib.sha256(data).hexdigest()
                    self.acked_sent_at.append(sent_at)
                else:
                    self.errors += 1
                    time.sleep(0.05)


def test_crash_of_the_primary_under_uploads_loses_no_acknowledged_upload(
    docker_images: None,
) -> None:
    with (
        compose_stack("failover", REPLIKIT_SYNC_MODE="on", REPLIKIT_UPLOAD_RATE_LIMIT="0") as stack,
        tempfile.TemporaryDirectory(prefix="replikit-compose-state-") as state,
    ):
        project = stack.project_name
        assert project is not None
        data_dir = ["--data-dir", str(Path(state) / "compose")]
        replikit(
            "cluster", "attach-compose", "--env-file", str(stack.env_file), "-p", project,
            *data_dir,
        )  # fmt: skip
        stream = UploadStream(api_url(stack))
        uploader = threading.Thread(target=stream.run, daemon=True)
        uploader.start()
        try:
            time.sleep(3)
            # `kill` returns once the node refuses connections: the crash is done by then.
            replikit("cluster", "kill", "primary", *data_dir)
            down_at = time.monotonic()
            replikit("cluster", "failover", *data_dir)
            deadline = time.monotonic() + 60
            while not any(t > down_at for t in stream.acked_sent_at):
                assert time.monotonic() < deadline, "no upload was acknowledged after failover"
                time.sleep(0.1)
            window = next(t for t in stream.acked_sent_at if t > down_at) - down_at
            time.sleep(2)
        finally:
            stream.stop.set()
            uploader.join(30)
        assert len(stream.acknowledged) > 10
        print(f"compose failover: first acknowledged upload sent {window:.2f} s after the crash")

        status = replikit("cluster", "status", "--json", *data_dir)
        roles = {node["name"]: node["role"] for node in json.loads(status)["nodes"]}
        assert roles["pg0"] != "primary"
        assert sorted(roles.values()).count("primary") == 1, roles
        check_nothing_lost(stack, stream.acknowledged)

        replikit("cluster", "rejoin", "pg0", *data_dir)
        stack.run("up", "-d", "--no-build", what="up -d after the failover")
        stack.wait_ready(timeout=180)
        check_nothing_lost(stack, stream.acknowledged)

        stack.down(volumes=True)
        assert leftovers(project) == {"containers": [], "volumes": [], "networks": []}


def check_nothing_lost(stack: ComposeStack, acknowledged: dict[str, str]) -> None:
    missing = []
    with httpx.Client(timeout=10) as client:
        for image_id, digest in acknowledged.items():
            response = client.get(
                f"{api_url(stack)}/api/v1/images/{image_id}/file",
                headers={"X-Replikit-Consistency": "strong"},
            )
            if response.status_code != 200 or hashlib.sha256(response.content).hexdigest() != (
                digest
            ):
                missing.append((image_id, response.status_code))
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged uploads lost"
