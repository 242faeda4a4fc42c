"""The service's exception hierarchy; service/api/errors.py maps it to JSON responses.

Each error carries its HTTP status and a stable machine-readable code, so clients (and the
Locust scenarios) can branch on ``error.code`` rather than on message text.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class ImageNotFoundError(ServiceError):
    status_code = 404
    code = "IMAGE_NOT_FOUND"


class NonCanonicalIdError(ServiceError):
    """The id parses as a UUID but is not spelled canonically; the route redirects."""

    status_code = 308
    code = "NON_CANONICAL_ID"

    def __init__(self, canonical: str) -> None:
        super().__init__(
            "Image ids are lowercase hyphenated UUIDs; use the Location URL.",
            details={"canonical_id": canonical},
        )
        self.canonical = canonical


class MethodNotAllowedError(ServiceError):
    """The path exists but does not take this method; ``Allow`` lists the ones it does."""

    status_code = 405
    code = "METHOD_NOT_ALLOWED"

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(
            f"This path does not take {method[:16]}; it takes {', '.join(allowed)}.",
            details={"allowed": allowed},
            headers={"Allow": ", ".join(allowed)},
        )


class InvalidUploadError(ServiceError):
    status_code = 400
    code = "INVALID_UPLOAD"


class EmptyFileError(ServiceError):
    status_code = 400
    code = "EMPTY_FILE"


class InvalidCursorError(ServiceError):
    status_code = 400
    code = "INVALID_CURSOR"


class InvalidClientAddressError(ServiceError):
    status_code = 400
    code = "INVALID_CLIENT_ADDRESS"


class DeleteTokenRequiredError(ServiceError):
    status_code = 401
    code = "DELETE_TOKEN_REQUIRED"


class InvalidDeleteTokenError(ServiceError):
    status_code = 403
    code = "INVALID_DELETE_TOKEN"


class FileTooLargeError(ServiceError):
    status_code = 413
    code = "FILE_TOO_LARGE"


class ImageTooLargeError(ServiceError):
    status_code = 413
    code = "IMAGE_TOO_LARGE"


class UnsupportedImageError(ServiceError):
    status_code = 415
    code = "UNSUPPORTED_IMAGE"


class RateLimitExceededError(ServiceError):
    status_code = 429
    code = "RATE_LIMIT_EXCEEDED"


class DatabaseUnavailableError(ServiceError):
    status_code = 503
    code = "DATABASE_UNAVAILABLE"


class DatabaseBusyError(ServiceError):
    """Every pooled connection to the node is in use: capacity, not failure; retry shortly."""

    status_code = 503
    code = "DATABASE_BUSY"


class ServerBusyError(ServiceError):
    """This worker already handles REPLIKIT_MAX_IN_FLIGHT requests."""

    status_code = 503
    code = "SERVER_BUSY"


class StorageFullError(ServiceError):
    """The primary's disk (or the blob directory) is full: nothing was stored; retry once
    space is freed. Reads are unaffected (docs/operations.md#a-full-disk)."""

    status_code = 503
    code = "STORAGE_FULL"


class InvalidConsistencyError(ServiceError):
    status_code = 400
    code = "INVALID_CONSISTENCY"


class PrimaryUnavailableError(ServiceError):
    """No writable primary right now (down, demoted, or failing); retry shortly."""

    status_code = 503
    code = "PRIMARY_UNAVAILABLE"


class NoReaderAvailableError(ServiceError):
    """No node may serve this read under the requested consistency (fallback=error)."""

    status_code = 503
    code = "NO_READER_AVAILABLE"


class DecodeBudgetExceededError(ServiceError):
    """Decoding overran its wall-clock, CPU or memory budget, or killed its worker process."""

    status_code = 422
    code = "DECODE_BUDGET_EXCEEDED"


class DecoderBusyError(ServiceError):
    """Every decode worker stayed busy for the whole queue wait; retry shortly."""

    status_code = 503
    code = "DECODER_BUSY"
