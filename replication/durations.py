"""Durations as users type them (250ms, 1s, 1.5s, 2min) for PostgreSQL time settings."""

from __future__ import annotations

import re

from replication.errors import BadInputError

_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")


def parse_duration_ms(text: str) -> int:
    """Milliseconds in ``text``; a bare number is milliseconds, like PostgreSQL's own."""
    match = _PATTERN.match(text)
    if match is None:
        raise BadInputError(f"'{text}' is not a duration; write it like 250ms, 1s, 1.5s or 2min.")
    value = float(match.group(1)) * _UNITS_MS[match.group(2) or "ms"]
    if value > 24 * 3_600_000:
        raise BadInputError(f"'{text}' is longer than a day; choose a shorter delay.")
    return round(value)


def format_ms(milliseconds: int) -> str:
    if milliseconds % 1000 == 0:
        return f"{milliseconds // 1000}s"
    return f"{milliseconds}ms"
