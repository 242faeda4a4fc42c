"""A route class for the hot reads: the endpoint gets the request and its path parameters.

FastAPI's request handler solves the endpoint's dependencies and validates its parameters on
every request; for a metadata read that was ~10 % of the worker's CPU, although the reads take
nothing but an id from the path (a string the endpoint parses itself, with its own 404 and
redirect) and the request. A custom ``APIRoute`` that overrides ``get_route_handler`` is
FastAPI's documented way to change that handler; everything around it stays: routing, the
exception handlers, the middleware, and the OpenAPI entry built from the declared signature
and ``response_model``.

Only endpoints whose parameters are path parameters and ``request`` may use it: anything
else (a query, a header, a body, a dependency) would be silently ignored, so it is refused
when the route is built. Such endpoints read headers from ``request.headers`` and document them
with ``openapi_extra``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class PathOnlyRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        ignored = [
            param.name
            for params in (
                dependant.query_params,
                dependant.header_params,
                dependant.cookie_params,
                dependant.body_params,
            )
            for param in params
        ] + [str(sub.call) for sub in dependant.dependencies]
        if ignored:
            raise TypeError(
                f"{endpoint.__name__} takes {', '.join(ignored)}: a PathOnlyRoute passes only "
                "the request and the path parameters."
            )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request=request, **request.path_params)
            return response

        return handler
