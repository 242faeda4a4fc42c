"""The event-loop lateness that tells the service's own saturation from a node's silence."""

from __future__ import annotations

import asyncio

from service.routing.loop_lag import BUSY_LATENESS, SATURATED_LATENESS, LoopLag


def test_lateness_counts_only_since_the_given_time() -> None:
    lag = LoopLag(clock=lambda: 10.0)
    lag.record(5.0, 0.5)  # long ago
    lag.record(9.0, 0.002)
    assert lag.worst_since(8.0) == 0.002
    assert not lag.saturated_since(8.0)
    assert lag.saturated_since(4.0)


def test_busy_is_a_lower_bar_than_saturated() -> None:
    lag = LoopLag(clock=lambda: 10.0)
    lag.record(9.5, (BUSY_LATENESS + SATURATED_LATENESS) / 2)
    assert lag.busy_since(9.0)
    assert not lag.saturated_since(9.0)


def test_old_samples_are_forgotten() -> None:
    lag = LoopLag(clock=lambda: 100.0)
    lag.record(1.0, 1.0)
    lag.record(100.0, 0.0)
    assert len(lag.samples) == 1


async def test_a_blocked_loop_is_seen_as_late() -> None:
    lag = LoopLag()
    lag.start()
    try:
        await asyncio.sleep(0.12)
        since = lag.clock()
        assert not lag.saturated_since(since)
        started = lag.clock()
        while lag.clock() - started < 0.25:  # the loop runs nothing else for 250 ms
            pass
        assert lag.saturated_since(since)  # still pending: counted as late as it is
        await asyncio.sleep(0.06)
        assert lag.worst_since(since) >= 0.2
    finally:
        await lag.stop()
