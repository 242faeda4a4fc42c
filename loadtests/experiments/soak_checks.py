"""The soak's verdicts that are plain arithmetic: growth trends and errors outside faults.

No servers here, so the rules are unit-tested on made-up samples and requests.

**Growth.** A series (one process's RSS, one node's WAL on disk, ...) is judged after a
warm-up from its first sample to its last: the soak gives every series the run's first third
(a process that lived the whole hour is judged over minutes 20 to 60, one restarted at minute
30 over minutes 50 to 60), since caches, pools and decoder processes fill in that time
whenever a process starts. A least-squares line through
the window's samples gives the *rise* (slope times window length), compared with the series'
:class:`Tolerance`: a share of the line's value at the window's start (with an absolute floor,
so a few hundred kilobytes on a small process are not a leak), an absolute number (file
descriptors, backends), and/or a ceiling no sample may pass (WAL on disk, bounded by
``max_wal_size`` + ``wal_keep_size``). A series whose window is shorter than
``MIN_WINDOW_SECONDS`` or holds fewer than ``MIN_SAMPLES`` samples (a process started late, a
backend that came and went) is listed as not judged; it neither passes nor fails.

**Errors outside faults.** Every request that failed (no answer, a 5xx, or a 4xx other than
404: nothing the clients send is malformed) must overlap a fault window, which runs from the
fault's injection to the moment the cluster was whole again plus a settle margin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.experiments.consistency_records import RequestRecord

MIN_SAMPLES = 5
MIN_WINDOW_SECONDS = 30.0


@dataclass(frozen=True)
class Tolerance:
    """How much a series may rise over its window; None: that rule does not apply."""

    relative: float | None = None  # share of the fitted value at the window's start ...
    floor: float = 0.0  # ... but never less than this many units
    absolute: float | None = None  # fitted rise, in the series' unit
    ceiling: float | None = None  # no sample above this

    def allowed_rise(self, start_value: float) -> float | None:
        limits = []
        if self.relative is not None:
            limits.append(max(self.relative * max(start_value, 0.0), self.floor))
        if self.absolute is not None:
            limits.append(self.absolute)
        return min(limits) if limits else None

    def describe(self, unit: str = "") -> str:
        parts = []
        if self.relative is not None:
            floor = f" (at least {_amount(self.floor, unit)})" if self.floor else ""
            parts.append(f"rise ≤ {self.relative:.0%}{floor}")
        if self.absolute is not None:
            parts.append(f"rise ≤ {_amount(self.absolute, unit)}")
        if self.ceiling is not None:
            parts.append(f"peak ≤ {_amount(self.ceiling, unit)}")
        return ", ".join(parts) or "not judged"


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    return f"{value:g}{' ' + unit if unit else ''}"


@dataclass
class Series:
    """Samples of one watched quantity: ``group`` names the rule it is judged by."""

    name: str
    group: str
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, value: float | None) -> None:
        if value is not None:
            self.points.append((t, float(value)))


@dataclass
class GrowthVerdict:
    name: str
    group: str
    samples: int
    window_seconds: float
    start_value: float | None  # the fitted line at the window's start
    rise: float | None  # the fitted line's rise over the window
    peak: float | None
    allowed_rise: float | None
    ceiling: float | None
    passed: bool | None  # None: not judged (too short)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through ``points`` (slope 0 for fewer
    than two distinct times)."""
    n = len(points)
    if n == 0:
        return 0.0, 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0, mean_v
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    return slope, mean_v - slope * mean_t


def judge_window(
    points: list[tuple[float, float]], end: float, warm_up: float | None = None
) -> tuple[float, float]:
    """(window start, window end): after ``warm_up`` seconds of the series' life, by default
    the first third of its life up to ``end``."""
    first = min(t for t, _ in points)
    return first + ((end - first) / 3 if warm_up is None else warm_up), end


def judge_growth(
    series: Series, tolerance: Tolerance, *, end: float, warm_up: float | None = None
) -> GrowthVerdict:
    """One series against its tolerance over its judged window (see the module docstring)."""
    empty = GrowthVerdict(
        name=series.name,
        group=series.group,
        samples=0,
        window_seconds=0.0,
        start_value=None,
        rise=None,
        peak=None,
        allowed_rise=None,
        ceiling=tolerance.ceiling,
        passed=None,
        reason="no samples",
    )
    if not series.points:
        return empty
    lo, hi = judge_window(series.points, end, warm_up)
    window = [(t, v) for t, v in series.points if lo <= t <= hi]
    last = max((t for t, _ in window), default=lo)
    verdict = empty
    verdict.samples = len(window)
    verdict.window_seconds = round(last - lo, 1)
    if len(window) < MIN_SAMPLES or last - lo < MIN_WINDOW_SECONDS:
        verdict.reason = (
            f"not judged: {len(window)} samples over {last - lo:.0f} s "
            f"(needs {MIN_SAMPLES} over {MIN_WINDOW_SECONDS:.0f} s)"
        )
        return verdict
    slope, intercept = least_squares(window)
    start_value = slope * lo + intercept
    rise = slope * (last - lo)
    peak = max(v for _, v in window)
    allowed = tolerance.allowed_rise(start_value)
    failures = []
    if allowed is not None and rise > allowed:
        failures.append(f"rose {rise:.4g} > {allowed:.4g} allowed")
    if tolerance.ceiling is not None and peak > tolerance.ceiling:
        failures.append(f"peak {peak:.4g} > ceiling {tolerance.ceiling:.4g}")
    verdict.start_value = round(start_value, 3)
    verdict.rise = round(rise, 3)
    verdict.peak = peak
    verdict.allowed_rise = None if allowed is None else round(allowed, 3)
    verdict.passed = not failures
    verdict.reason = "; ".join(failures) or "within tolerance"
    return verdict


# errors -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A fault's window: injected at ``start``, cluster whole (plus the settle margin) at
    ``end``."""

    start: float
    end: float
    label: str

    def overlaps(self, record: RequestRecord) -> bool:
        return record.started <= self.end and record.ended >= self.start


def is_failure(record: RequestRecord) -> bool:
    """No answer, a server error, or a client error other than 404 (an image deleted or
    not yet replicated is an answer, not a failure)."""
    return record.status == 0 or record.status >= 500 or (400 <= record.status != 404)


def error_type(record: RequestRecord) -> str:
    """``503 DATABASE_UNAVAILABLE``, ``0 ConnectError``: status and what the answer or the
    client said."""
    return f"{record.status} {record.error or '-'}"


@dataclass
class ErrorsOutside:
    failures: int
    outside: int
    by_type_inside: dict[str, int]
    by_type_outside: dict[str, int]
    examples: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def errors_outside_windows(
    records: Iterable[RequestRecord], windows: list[Window], *, origin: float, examples: int = 20
) -> ErrorsOutside:
    """Every failed request, sorted into inside some window or outside all of them."""
    inside: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    listed: list[str] = []
    for record in sorted(records, key=lambda r: r.started):
        if not is_failure(record):
            continue
        if any(window.overlaps(record) for window in windows):
            inside[error_type(record)] += 1
            continue
        outside[error_type(record)] += 1
        if len(listed) < examples:
            listed.append(
                f"{record.started - origin:.1f} s: client {record.client} ({record.mode}) "
                f"{record.op.value} via instance {record.instance} on {record.node or '?'}: "
                f"{error_type(record)} after {record.ms:.0f} ms"
            )
    return ErrorsOutside(
        failures=sum(inside.values()) + sum(outside.values()),
        outside=sum(outside.values()),
        by_type_inside=dict(inside),
        by_type_outside=dict(outside),
        examples=listed,
    )
