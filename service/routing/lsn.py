"""WAL positions (LSNs) as integers, so lag can be compared across nodes in bytes."""

from __future__ import annotations


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> byte position. Raises ValueError for anything else."""
    high, sep, low = text.partition("/")
    if not sep or not high or not low:
        raise ValueError(f"not a WAL position: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
