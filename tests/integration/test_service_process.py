"""The service as a user runs it: `replikit serve --detach` on the local cluster, driven over
real HTTP. (The property-based run over its OpenAPI is tests/integration/test_api_fuzzing.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

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
