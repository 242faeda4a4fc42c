"""Replica lag in seconds that means something on an idle primary.

``now() - pg_last_xact_replay_timestamp()`` grows without bound when nothing is written. We
instead keep a short history of the primary's WAL positions: for each position, when it was
first and last seen as the primary's current one. A replica that has replayed position L is as
stale as the moment the primary moved past L, so its lag is the age of that moment, and 0 once
it has replayed the newest position. Write responses add exact samples, so under load the
estimate is as fine-grained as the writes themselves.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class _Sample:
    lsn: int
    first_seen: float
    last_seen: float


@dataclass
class LsnHistory:
    horizon_seconds: float = 600.0
    _samples: list[_Sample] = field(default_factory=list)
    _lsns: list[int] = field(default_factory=list)

    def record(self, lsn: int, at: float) -> None:
        """Note that the primary's current position was ``lsn`` at time ``at`` (monotonic)."""
        if self._samples and lsn <= self._samples[-1].lsn:
            if lsn == self._samples[-1].lsn:
                self._samples[-1].last_seen = max(self._samples[-1].last_seen, at)
            return
        self._samples.append(_Sample(lsn, at, at))
        self._lsns.append(lsn)
        self._prune(at)

    def reset(self) -> None:
        """Forget everything (a new primary starts a new history)."""
        self._samples.clear()
        self._lsns.clear()

    @property
    def latest(self) -> int | None:
        return self._samples[-1].lsn if self._samples else None

    def lag_seconds(self, replayed: int, now: float) -> float | None:
        """Seconds since the primary moved past ``replayed``; 0 when nothing newer exists."""
        if not self._samples:
            return None
        if replayed >= self._samples[-1].lsn:
            return 0.0
        index = bisect.bisect_right(self._lsns, replayed)
        if index == 0:
            # Older than the whole history: at least as old as the oldest sample.
            return max(0.0, now - self._samples[0].first_seen)
        before, after = self._samples[index - 1], self._samples[index]
        # The primary was still at `before` when last seen there and had reached `after` when
        # first seen there; interpolate by position in between.
        fraction = (replayed - before.lsn) / (after.lsn - before.lsn)
        moved_on = before.last_seen + fraction * (after.first_seen - before.last_seen)
        return max(0.0, now - moved_on)

    def _prune(self, now: float) -> None:
        cutoff = now - self.horizon_seconds
        drop = 0
        while drop < len(self._samples) - 1 and self._samples[drop].last_seen < cutoff:
            drop += 1
        if drop:
            del self._samples[:drop]
            del self._lsns[:drop]
