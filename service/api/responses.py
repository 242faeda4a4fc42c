"""JSON bodies written straight from plain data, without a response model's validation.

pydantic-core's ``to_json`` writes UUIDs, datetimes and the rest exactly as FastAPI's
serialization of the declared model does (tests/unit/test_responses.py holds them equal), at
a fraction of the CPU: validating a returned model and encoding it cost more than the read.
The routes still declare their ``response_model``, for the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json
from starlette.responses import Response

JSON = "application/json"


def json_response(
    content: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=to_json(content), status_code=status_code, headers=headers, media_type=JSON
    )
