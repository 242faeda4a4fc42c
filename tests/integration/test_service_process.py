"""The service as a user runs it: `replikit serve --detach` on the local cluster, driven over
real HTTP. (The property-based run over its OpenAPI is tests/integration/test_api_fuzzing.py.)"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from replication.cluster import Cluster
from tests.integration.clusters import free_base_port, replikit
from tests.integration.service_fixtures import image_bytes


@pytest.fixture(scope="module")
def live_service(migrated: Cluster) -> Iterator[str]:
    port = free_base_port(2)  # the public port and the operations listener after it
    data_dir = str(migrated.data_dir)
    started = replikit(
        "serve",
        "--detach",
        "--port",
        str(port),
        "--workers",
        "2",
        "--data-dir",
        data_dir,
        env={"REPLIKIT_PRIMARY_URL": "", "REPLIKIT_UPLOAD_RATE_LIMIT": "0"},
    )
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stopped = replikit("serve", "--stop", "--data-dir", data_dir)
        assert stopped.returncode == 0, stopped.stderr


def test_detached_service_uses_the_cluster_urls_and_serves_uploads(live_service: str) -> None:
    data = image_bytes("JPEG")
    with httpx.Client(base_url=live_service, timeout=10) as client:
        created = client.post(
            "/api/v1/images/upload", files={"file": ("photo.jpg", data, "image/jpeg")}
        )
        assert created.status_code == 201, created.text
        fetched = client.get(created.json()["url"])
        # Reads may go to a replica that has not replayed the upload yet; retry briefly.
        for _ in range(50):
            if fetched.status_code == 200:
                break
            fetched = client.get(created.json()["url"])
        assert fetched.content == data
        assert client.get("/docs").status_code == 200


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_workers_are_one_instance_in_merged_metrics(
    live_service: str, migrated: Cluster
) -> None:
    """With --workers 2 a scrape reaches one worker, yet must count every worker's requests."""
    record = json.loads((migrated.data_dir / "service.json").read_text())
    assert len(_children(record["pid"])) >= 2  # the two workers (and multiprocessing helpers)
    sent = 40
    for _ in range(sent):  # a new connection each time, so both workers take some
        missing = httpx.get(f"{live_service}/api/v1/images/{uuid.uuid4()}", timeout=10)
        assert missing.status_code == 404
    ops_url = f"http://127.0.0.1:{record['ops_port']}"
    text = httpx.get(f"{ops_url}/metrics", timeout=10).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    counted = sum(
        sample.value
        for sample in families["replikit_http_requests"].samples
        if sample.name == "replikit_http_requests_total"
        and sample.labels.get("status") == "404"
        and sample.labels.get("route") == "/api/v1/images/{image_id}"
    )
    assert counted == sent
    instances = {sample.labels["instance"] for sample in families["replikit_instance_info"].samples}
    assert len(instances) == 1
    # Declared even though no worker has counted one yet, as with one worker (dashboards).
    assert "# TYPE replikit_unavailable_total counter" in text
