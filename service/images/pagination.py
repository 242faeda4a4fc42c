"""Opaque keyset cursors over (created_at, id), newest first.

A cursor names the last row of a page; the next page holds rows strictly older in that order,
so inserts during paging never shift rows between pages (no duplicates, no gaps).

A cursor comes back from the client, so it is untrusted input: anything that does not decode to
an aware timestamp and a UUID is refused as INVALID_CURSOR (400), never sent to the database.
The timestamp is normalized to UTC here because that conversion is where an offset near the
ends of Python's range (``0001-01-01T00:00+14:00``) overflows; done later, by the driver, it
was a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from service.errors import InvalidCursorError


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        payload = json.dumps({"t": self.created_at.isoformat(), "id": str(self.id)})
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
            created_at = datetime.fromisoformat(payload["t"])
            if created_at.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(created_at=created_at.astimezone(UTC), id=uuid.UUID(payload["id"]))
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            OverflowError,
            binascii.Error,
        ) as error:
            raise InvalidCursorError(
                "The cursor is not one this API returned; start again without it."
            ) from error
