"""List cursors built by hand from their documented layout (service/images/pagination.py), not
with ``Cursor.encode``: the form is the contract the API description states."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros_of(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC."""
    return (moment - EPOCH) // timedelta(microseconds=1)


# Python's calendar, year 1 to 9999, in those microseconds.
CALENDAR_ENDS = (
    micros_of(datetime.min.replace(tzinfo=UTC)),
    micros_of(datetime.max.replace(tzinfo=UTC)),
)


def position_cursor(micros: int, image_id: uuid.UUID) -> str:
    """The declared form: 8 bytes of signed big-endian microseconds, then the id's 16 bytes,
    in unpadded base64url."""
    raw = micros.to_bytes(8, "big", signed=True) + image_id.bytes
    return base64.urlsafe_b64encode(raw).decode()


def legacy_cursor(payload: Any) -> str:
    """The JSON cursor of earlier versions (``{"t": <ISO time>, "id": <uuid>}``), now refused."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
