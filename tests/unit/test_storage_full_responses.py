"""A full disk is answered 503 ``STORAGE_FULL`` with ``Retry-After`` in the API's error body,
however it reaches the handlers: the router's own error, asyncpg's ``53100``, SQLAlchemy's
wrapper of it. Never a 500."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from service.api.errors import install_error_handlers
from service.errors import StorageFullError

DISK_FULL = 'could not extend file "base/16387/16411": No space left on device'
RAISED: dict[str, BaseException] = {
    "router": StorageFullError(
        "The primary pg0 has no disk space left.",
        details={"node": "pg0", "reason": "disk_full"},
        headers={"Retry-After": "2"},
    ),
    "asyncpg": asyncpg.exceptions.DiskFullError(DISK_FULL),
    "sqlalchemy": DBAPIError("INSERT", {}, asyncpg.exceptions.DiskFullError(DISK_FULL)),
}


def failing_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail/{kind}")
    async def fail(kind: str) -> None:
        raise RAISED[kind]

    return app


@pytest.mark.parametrize("kind", sorted(RAISED))
async def test_a_full_disk_is_a_503_storage_full_with_retry_after(kind: str) -> None:
    transport = httpx.ASGITransport(app=failing_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(f"/fail/{kind}")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "STORAGE_FULL"
    assert error["details"]["reason"] == "disk_full"
    assert "space" in error["message"]
    assert int(response.headers["Retry-After"]) >= 1
