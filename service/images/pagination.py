"""Opaque keyset cursors over (created_at, id), newest first.

A cursor names the last row of a page; the next page holds rows strictly older in that order,
so inserts during paging never shift rows between pages (no duplicates, no gaps).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

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
            return cls(created_at=created_at, id=uuid.UUID(payload["id"]))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
            raise InvalidCursorError(
                "The cursor is not one this API returned; start again without it."
            ) from error
