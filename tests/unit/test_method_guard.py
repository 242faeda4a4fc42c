"""A 405's ``Allow`` lists exactly the methods of the path, whichever routers and route classes
its operations are split across, and a concrete path is not taken for a template's value."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import PlainTextResponse, Response

from service.api.errors import install_error_handlers
from service.api.method_guard import MethodGuard, install_method_guard, precedence
from service.api.path_only_route import PathOnlyRoute
from service.app import create_app
from service.settings import Settings

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY"]
# Fixed: a random id in the parametrized ids made pytest-xdist's workers collect different tests.
IMAGE_ID = "6d4a0ecd-196c-4dd7-813a-8ea436f119b8"


def service_app() -> FastAPI:
    """The real app; nothing here reaches the database (405s are decided before any route)."""
    settings = Settings(_env_file=None, primary_url="postgresql+asyncpg://app@127.0.0.1:1/x")
    return create_app(settings)


def declared_methods(app: FastAPI) -> dict[str, set[str]]:
    """Every path of the app's OpenAPI description and the methods it lists there, plus the
    paths the description leaves out (its own, the docs, the operators' endpoints)."""
    paths = {
        path: {method.upper() for method in operations}
        for path, operations in app.openapi()["paths"].items()
    }
    undescribed = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    paths.update({path: {"GET", "HEAD"} for path in undescribed})  # Starlette routes: HEAD too
    paths.update({"/cluster": {"GET"}, "/metrics": {"GET"}})
    return paths


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://replikit.test") as client:
        yield client


def test_every_route_of_the_app_is_covered() -> None:
    """The oracle below lists every path the app routes, so no path escapes the next test."""
    app = service_app()
    guard = app.router.routes[0]
    assert isinstance(guard, MethodGuard)
    assert {resource.path for resource in guard.table} == set(declared_methods(app))


async def test_every_path_answers_an_undeclared_method_with_405_and_its_exact_allow(
    client: httpx.AsyncClient,
) -> None:
    for path, methods in declared_methods(service_app()).items():
        url = path.replace("{image_id}", IMAGE_ID)
        allow = ", ".join(sorted(methods))
        for method in sorted(set(METHODS) - methods):
            response = await client.request(method, url)
            where = f"{method} {url}"
            assert response.status_code == 405, where
            assert response.headers["allow"] == allow, where
            if method != "HEAD":
                assert response.json() == {
                    "error": {
                        "code": "METHOD_NOT_ALLOWED",
                        "message": f"This path does not take {method}; it takes {allow}.",
                        "details": {"allowed": sorted(methods)},
                    }
                }, where


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # What the external fuzzer found: upload's Allow said GET, the image's left out DELETE.
        ("OPTIONS", "/api/v1/images/upload", "POST"),
        ("OPTIONS", f"/api/v1/images/{IMAGE_ID}", "DELETE, GET"),
        # A concrete path is not the image "upload": GET there is a 405, not a 404.
        ("GET", "/api/v1/images/upload", "POST"),
        ("DELETE", "/api/v1/images/upload", "POST"),
        # The server does not answer HEAD where only GET is declared.
        ("HEAD", f"/api/v1/images/{IMAGE_ID}", "DELETE, GET"),
        ("HEAD", "/api/v1/images", "GET"),
        ("PUT", f"/api/v1/images/{IMAGE_ID}/file", "GET, HEAD"),
    ],
)
async def test_the_reported_paths(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert (response.status_code, response.headers.get("allow")) == (405, allow)


async def test_declared_methods_go_on_to_their_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.head("/openapi.json")).status_code == 200
    # An id that is no UUID reaches the read route, which refuses it itself.
    missing = await client.get("/api/v1/images/not-an-id")
    assert missing.json()["error"]["code"] == "IMAGE_NOT_FOUND"


def test_a_literal_segment_precedes_a_parameter() -> None:
    ordered = sorted(["/{x}/b", "/a/{id}/file", "/a/{id}", "/a/upload", "/a"], key=precedence)
    assert ordered == ["/a", "/a/upload", "/a/{id}", "/a/{id}/file", "/{x}/b"]


async def test_methods_split_across_routers_and_route_classes_are_listed_together() -> None:
    """The cause, on its own: Starlette's 405 lists only the first matching route's methods."""
    reads = APIRouter(route_class=PathOnlyRoute)
    writes = APIRouter()

    @reads.get("/things/{name}")
    async def read(name: str, request: Request) -> Response:
        return PlainTextResponse(name)

    @writes.delete("/things/{name}")
    async def delete(name: str) -> Response:
        return Response(status_code=204)

    @writes.post("/things/new")
    async def create() -> Response:
        return Response(status_code=201)

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(reads)
    app.include_router(writes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = await client.options("/things/x")
        assert before.headers["allow"] == "GET"  # Starlette alone: DELETE left out
        install_method_guard(app)
        after = await client.options("/things/x")
        concrete = await client.options("/things/new")
        assert (await client.delete("/things/x")).status_code == 204
        assert (await client.post("/things/new")).status_code == 201
    assert after.headers["allow"] == "DELETE, GET"
    assert concrete.headers["allow"] == "POST"
