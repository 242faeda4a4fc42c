"""PathOnlyRoute passes the request and the path parameters, and refuses endpoints that would
silently lose anything else."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Header, Query, Request
from starlette.responses import PlainTextResponse, Response

from service.api.path_only_route import PathOnlyRoute


async def test_the_endpoint_gets_the_request_and_its_path_parameters() -> None:
    router = APIRouter(route_class=PathOnlyRoute)

    @router.get("/things/{name}/{part}")
    async def thing(name: str, part: str, request: Request) -> Response:
        return PlainTextResponse(f"{name}/{part} {request.headers['x-probe']}")

    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/things/a%20b/2", headers={"X-Probe": "seen"})
    assert answer.text == "a b/2 seen"
    parameters = app.openapi()["paths"]["/things/{name}/{part}"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == ["name", "part"]


@pytest.mark.parametrize("kind", ["query", "header"])
def test_an_endpoint_with_more_than_path_parameters_is_refused(kind: str) -> None:
    router = APIRouter(route_class=PathOnlyRoute)

    async def with_query(name: str, request: Request, q: Annotated[str, Query()]) -> Response:
        return Response()

    async def with_header(
        name: str, request: Request, x_h: Annotated[str | None, Header()] = None
    ) -> Response:
        return Response()

    endpoint = with_query if kind == "query" else with_header
    with pytest.raises(TypeError, match="PathOnlyRoute passes only"):
        router.add_api_route("/things/{name}", endpoint)
