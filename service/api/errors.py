"""Every error response, 4xx and 5xx, has the body ``{"error": {code, message, details}}``."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError
from service.routing.failures import is_busy, is_node_failure, is_storage_full

logger = logging.getLogger("replikit.service")

HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or {}}},
        status_code=status,
        headers=headers,
    )


def _is_connection_problem(error: Exception) -> bool:
    """Through SQLAlchemy (writes) or straight from asyncpg (reads, service/db/driver_pools.py)."""
    if isinstance(error, DBAPIError):
        return bool(error.connection_invalidated) or isinstance(
            error, OperationalError | InterfaceError
        )
    return is_node_failure(error)


def _count_unavailable(request: Request, reason: str = "database_unavailable") -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.unavailable.labels(reason=reason).inc()


def _retry_shortly(
    request: Request, *, reason: str, code: str, message: str, details: dict[str, Any]
) -> JSONResponse:
    """A 503 with ``Retry-After: 1``, counted by ``reason``."""
    _count_unavailable(request, reason)
    return error_response(503, code, message, details, headers={"Retry-After": "1"})


def _database_busy(request: Request, error: Exception) -> JSONResponse:
    """A timeout that reached the handlers (the router converts most of them): the database
    was slow to answer a busy service, which is no sign it is down (routing/failures.py)."""
    logger.info("event=database_busy path=%s error=%s", request.url.path, type(error).__name__)
    return _retry_shortly(
        request,
        reason="timeout",
        code="DATABASE_BUSY",
        message="The database did not answer in time while the service is busy; retry shortly.",
        details={"reason": "timeout"},
    )


def _storage_full(request: Request, error: Exception) -> JSONResponse:
    """A full disk that reached the handlers (the router converts the writes' own): a read's
    temporary file, say. The node is fine otherwise; nothing was stored."""
    logger.warning("event=storage_full path=%s error=%s", request.url.path, type(error).__name__)
    return _retry_shortly(
        request,
        reason="storage_full",
        code="STORAGE_FULL",
        message="The database has no disk space left; nothing was stored. "
        "Retry once space is freed.",
        details={"reason": "disk_full", "where": "database"},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return error_response(
            error.status_code, error.code, error.message, error.details, error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"location": ".".join(str(part) for part in item["loc"]), "problem": item["msg"]}
            for item in error.errors()
        ]
        return error_response(
            422, "VALIDATION_ERROR", "The request is not valid.", {"errors": problems}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, f"HTTP_{error.status_code}")
        return error_response(
            error.status_code, code, str(error.detail), headers=getattr(error, "headers", None)
        )

    @app.exception_handler(DBAPIError)
    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(asyncpg.InterfaceError)
    async def database_error(request: Request, error: Exception) -> JSONResponse:
        if is_busy(error):
            return _database_busy(request, error)
        if is_storage_full(error):
            return _storage_full(request, error)
        if _is_connection_problem(error):
            _count_unavailable(request)
            logger.warning(
                "event=database_unavailable path=%s error=%s",
                request.url.path,
                type(getattr(error, "orig", error)).__name__,
            )
            return error_response(
                503,
                "DATABASE_UNAVAILABLE",
                "The database is not reachable right now.",
                headers={"Retry-After": "1"},
            )
        logger.exception("event=database_error path=%s", request.url.path)
        return error_response(500, "INTERNAL_ERROR", "The request failed unexpectedly.")

    @app.exception_handler(TimeoutError)
    async def timeout_error(request: Request, error: Exception) -> JSONResponse:
        return _database_busy(request, error)

    @app.exception_handler(ConnectionError)
    async def connection_error(request: Request, error: Exception) -> JSONResponse:
        _count_unavailable(request)
        logger.warning(
            "event=database_unavailable path=%s error=%s", request.url.path, type(error).__name__
        )
        return error_response(
            503,
            "DATABASE_UNAVAILABLE",
            "The database is not reachable right now.",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        # Starlette re-raises after this response, so the server logs the traceback once.
        return error_response(500, "INTERNAL_ERROR", "The request failed unexpectedly.")
