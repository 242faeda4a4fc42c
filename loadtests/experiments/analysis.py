"""Numbers from request logs: percentiles, windows, stale reads."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile of ``values`` (at least one), interpolated between the
    two nearest samples as ``statistics.quantiles(method="inclusive")`` does: the 50th is the
    median, and a small sample does not jump from one sample to the next."""
    if len(values) == 1:  # quantiles wants two points on Python 3.11
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    data = list(values)
    if not data:
        return {"p50": None, "p95": None, "p99": None, "count": 0}
    picked: dict[str, float | None] = {
        f"p{percent}": round(percentile(data, percent), 2) for percent in (50, 95, 99)
    }
    return {**picked, "count": len(data)}


def is_error(record: dict[str, Any]) -> bool:
    return not bool(record["ok"]) and not str(record.get("error") or "").startswith("stale_read")


def is_server_error(record: dict[str, Any]) -> bool:
    status = int(record["status"])
    return status >= 500 or status == 0


def writes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "write"]


def reads(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] in ("read", "ryw")]


def write_window(records: list[dict[str, Any]], kill_at: float) -> dict[str, float | None]:
    """Last acknowledged write before the kill → first acknowledged write after it."""
    ok = [r["t"] for r in writes(records) if r["ok"] and r["status"] == 201]
    before = max((t for t in ok if t <= kill_at), default=None)
    after = min((t for t in ok if t > kill_at), default=None)
    return {
        "last_write_before": before,
        "first_write_after": after,
        "seconds": round(after - before, 3) if before is not None and after is not None else None,
    }


def first_write_sent_after(records: list[dict[str, Any]], moment: float) -> float | None:
    """When the first upload sent after ``moment`` was acknowledged (its response time).

    Only uploads *sent* after the moment count: one sent before a crash and answered just
    after it committed on the old primary, before the fault.
    """
    return min(
        (
            r["t"]
            for r in writes(records)
            if r["ok"] and r["status"] == 201 and r["t"] - r["ms"] / 1000 > moment
        ),
        default=None,
    )


def per_second(records: list[dict[str, Any]], start: float) -> list[dict[str, Any]]:
    buckets: dict[int, dict[str, int]] = {}
    for r in records:
        second = int(r["t"] - start)
        bucket = buckets.setdefault(second, {"requests": 0, "errors": 0, "writes_ok": 0})
        bucket["requests"] += 1
        bucket["errors"] += int(is_server_error(r) or is_error(r))
        bucket["writes_ok"] += int(r["kind"] == "write" and r["status"] == 201)
    return [{"second": s, **buckets[s]} for s in sorted(buckets)]


def stale_reads(records: list[dict[str, Any]]) -> dict[str, Any]:
    ryw = [r for r in records if r["kind"] == "ryw"]
    stale = [r for r in ryw if str(r.get("error") or "").startswith("stale_read")]
    return {
        "ryw_reads": len(ryw),
        "stale_reads": len(stale),
        "stale_rate": round(len(stale) / len(ryw), 4) if ryw else None,
        "stale_by_node": dict(statistics_counter(r["node"] for r in stale)),
    }


def statistics_counter(items: Iterable[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        key = item or "?"
        counts[key] = counts.get(key, 0) + 1
    return counts


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None
