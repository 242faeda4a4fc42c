"""The service as a user runs it: `replikit serve --detach` on the local cluster, driven over
real HTTP, and a schemathesis run over its OpenAPI that must find no 5xx."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

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


def test_openapi_fuzzing_finds_no_server_error(live_service: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_service}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 7
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=live_service, checks=[not_a_server_error], timeout=10)

        try:
            no_server_error()
        except Unsatisfiable:
            # Operations without parameters (e.g. /health) have no invalid input to send.
            assert mode is GenerationMode.NEGATIVE
