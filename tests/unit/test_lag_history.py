from __future__ import annotations

import pytest

from service.routing.lag import LsnHistory


def test_no_history_means_unknown_lag() -> None:
    assert LsnHistory().lag_seconds(100, now=5.0) is None


def test_idle_primary_fully_replayed_replica_has_zero_lag_forever() -> None:
    history = LsnHistory()
    for tick in range(100):
        history.record(1000, at=float(tick))
    assert history.lag_seconds(1000, now=1000.0) == 0.0


def test_lag_counts_from_when_the_primary_moved_on_not_from_the_last_commit() -> None:
    history = LsnHistory()
    for tick in range(10):  # idle at 1000 from t=0 to t=9
        history.record(1000, at=float(tick))
    history.record(2000, at=10.0)  # a write seen at t=10
    # A replica still at 1000 became stale between t=9 and t=10, not at t=0.
    assert history.lag_seconds(1000, now=12.0) == pytest.approx(3.0)
    # Half-way through the new WAL: interpolated.
    assert history.lag_seconds(1500, now=12.0) == pytest.approx(2.5)
    assert history.lag_seconds(2000, now=12.0) == 0.0


def test_paused_replica_lag_grows_with_time() -> None:
    history = LsnHistory()
    history.record(100, at=0.0)
    history.record(200, at=1.0)
    assert history.lag_seconds(100, now=2.0) == pytest.approx(2.0)
    assert history.lag_seconds(100, now=7.0) == pytest.approx(7.0)


def test_older_than_history_uses_the_oldest_sample() -> None:
    history = LsnHistory()
    history.record(500, at=3.0)
    history.record(600, at=4.0)
    assert history.lag_seconds(100, now=10.0) == pytest.approx(7.0)


def test_reset_and_pruning() -> None:
    history = LsnHistory(horizon_seconds=10)
    for tick in range(100):
        history.record(tick * 10, at=float(tick))
    assert len(history._samples) <= 12
    assert history.latest == 990
    history.reset()
    assert history.latest is None
