"""One routing decision for "which resource is this, and does it take this method?".

Starlette answers a method a path does not take with a 405 built from the *first* route whose
path matches, listing that route's methods only. Here one path's methods live in several routes
(``GET /api/v1/images/{image_id}`` is a PathOnlyRoute in the hot-reads router, its ``DELETE`` a
plain route in the other; the file's ``GET`` and ``HEAD`` are two routes) and a templated path
also matches a concrete one (``{image_id}`` matches ``upload``). So ``OPTIONS .../upload``
answered ``Allow: GET`` (from ``GET /{image_id}``) although the path takes POST only, a
``GET .../upload`` was read as the image ``upload`` (a 404), and ``/{image_id}``'s 405 left
out DELETE.

The guard is the first route the app tries. It knows every route's path template and methods,
finds the resource a request path belongs to the way OpenAPI does (a concrete path before a
templated one, segment by segment) and, when that resource does not take the method, answers
405 (``METHOD_NOT_ALLOWED``) with ``Allow`` listing exactly the methods its routes answer, in
the API's JSON error body. Any other request goes on to the routes as before. Every route
must be included before :func:`install_method_guard` runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from service.errors import MethodNotAllowedError


@dataclass(frozen=True)
class Resource:
    """A path template and the methods its routes answer. ``path`` names it in the request
    metrics, as a route's template does."""

    path: str
    regex: re.Pattern[str]
    methods: frozenset[str]


def precedence(path: str) -> tuple[bool, ...]:
    """OpenAPI's matching order: at the first segment where two templates differ, a literal
    segment wins over a parameter (``/images/upload`` before ``/images/{image_id}``)."""
    return tuple(segment.startswith("{") for segment in path.split("/"))


def resources(routes: Iterable[tuple[str, re.Pattern[str], Iterable[str]]]) -> list[Resource]:
    """One resource per path template, with the union of its routes' methods, in OpenAPI's
    matching order."""
    methods: dict[str, set[str]] = {}
    regexes: dict[str, re.Pattern[str]] = {}
    for path, regex, route_methods in routes:
        methods.setdefault(path, set()).update(route_methods)
        regexes.setdefault(path, regex)
    ordered = sorted(methods, key=precedence)
    return [Resource(path, regexes[path], frozenset(methods[path])) for path in ordered]


class MethodGuard(BaseRoute):
    def __init__(self, table: list[Resource]) -> None:
        self.table = table

    def owner(self, scope: Scope) -> Resource | None:
        path = get_route_path(scope)
        for resource in self.table:
            if resource.regex.match(path):
                return resource
        return None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        resource = self.owner(scope)
        if resource is None or scope["method"] in resource.methods:
            return Match.NONE, {}
        return Match.FULL, {"route": resource}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        resource = self.owner(scope)
        assert resource is not None  # matches() said so
        raise MethodNotAllowedError(scope["method"], sorted(resource.methods))


def install_method_guard(app: FastAPI) -> MethodGuard:
    """Put the guard in front of the app's routes, built from every route it has now."""
    table = resources(
        (context.path_format, context.path_regex, context.methods)
        for context in iter_route_contexts(app.routes)
        if context.path_format is not None and context.methods
    )
    guard = MethodGuard(table)
    app.router.routes.insert(0, guard)
    return guard
