"""The adaptive concurrency limit on a fake clock: deterministic, no event loop needed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from service.api.adaptive_limit import WINDOW_SAMPLES, GradientLimit


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def make_limit(clock: FakeClock, **overrides: float) -> GradientLimit:
    options: dict[str, float] = {
        "min_limit": 4,
        "max_limit": 200,
        "initial_limit": 32,
        "tolerance": 2.0,
        "recalibrate": 10.0,
    }
    options.update(overrides)
    return GradientLimit(clock=clock, **options)  # type: ignore[arg-type]


def run_window(limit: GradientLimit, clock: FakeClock, latency: float, in_flight: int) -> None:
    """WINDOW_SAMPLES requests of ``latency`` seconds each, over just past one window."""
    for _ in range(WINDOW_SAMPLES):
        clock.now += 0.101 / WINDOW_SAMPLES
        limit.sample(clock.now - latency, in_flight)


def calibrate(limit: GradientLimit, clock: FakeClock, latency: float) -> None:
    """A saturated window with no (or an old) baseline starts a measurement at the minimum
    limit; one more window of requests admitted at it ends it."""
    run_window(limit, clock, latency, limit.current)
    assert limit.calibrating_since is not None
    assert limit.current == limit.min_limit
    clock.now += latency
    run_window(limit, clock, latency, limit.min_limit)
    assert limit.calibrating_since is None


def test_a_saturated_window_measures_the_no_load_latency_at_the_minimum_limit() -> None:
    clock = FakeClock()
    limit = make_limit(clock)
    calibrate(limit, clock, 0.002)
    assert limit.baseline == pytest.approx(0.002)
    assert limit.current == 32  # back where it was


def test_requests_admitted_before_the_calibration_do_not_count_in_it() -> None:
    clock = FakeClock()
    limit = make_limit(clock)
    run_window(limit, clock, 0.002, 32)
    old_start = clock.now - 1.0
    for _ in range(WINDOW_SAMPLES * 2):
        clock.now += 0.001
        limit.sample(old_start, 32)  # slow requests from the old, high concurrency
    assert limit.calibrating_since is not None
    assert limit.baseline is None


def test_latency_within_tolerance_grows_the_limit_up_to_the_cap() -> None:
    clock = FakeClock()
    limit = make_limit(clock, max_limit=60, recalibrate=1e9)
    calibrate(limit, clock, 0.002)
    before = limit.current
    run_window(limit, clock, 0.003, in_flight=limit.current)
    assert limit.current > before
    for _ in range(200):
        run_window(limit, clock, 0.003, in_flight=limit.current)
    assert limit.current == 60


def test_latency_far_above_the_baseline_shrinks_the_limit_to_the_minimum() -> None:
    clock = FakeClock()
    limit = make_limit(clock)
    calibrate(limit, clock, 0.002)
    run_window(limit, clock, 0.050, in_flight=32)
    assert limit.current < 32
    for _ in range(60):
        run_window(limit, clock, 0.050, in_flight=limit.current)
    assert limit.current == 4


def test_the_limit_settles_where_latency_is_about_tolerance_times_the_baseline() -> None:
    """A CPU-bound worker: latency grows with what it admits (1 ms each, 2 ms at least)."""
    clock = FakeClock()
    limit = make_limit(clock, recalibrate=1e9)
    calibrate(limit, clock, 0.002)
    for _ in range(300):
        run_window(limit, clock, max(0.002, 0.001 * limit.current), in_flight=limit.current)
    assert 4 <= limit.current <= 8, limit.current


def test_an_idle_worker_does_not_grow_its_limit() -> None:
    clock = FakeClock()
    limit = make_limit(clock)
    calibrate(limit, clock, 0.002)
    for _ in range(20):
        run_window(limit, clock, 0.002, in_flight=2)
    assert limit.current == 32


def test_the_baseline_is_measured_again_after_the_interval() -> None:
    clock = FakeClock()
    limit = make_limit(clock, recalibrate=5.0)
    calibrate(limit, clock, 0.002)
    clock.now += 5.0
    calibrate(limit, clock, 0.004)
    assert limit.baseline == pytest.approx(0.004)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="min_limit"):
        GradientLimit(min_limit=10, max_limit=5, initial_limit=5)


def test_a_calibration_without_enough_traffic_ends_after_a_second() -> None:
    clock = FakeClock()
    limit = make_limit(clock)
    run_window(limit, clock, 0.002, 32)
    assert limit.current == 4
    clock.now += 0.5
    limit.sample(clock.now - 0.003, 1)
    clock.now += 0.6
    limit.sample(clock.now - 0.003, 1)
    assert limit.calibrating_since is None
    assert limit.current == 32
    assert limit.baseline == pytest.approx(0.003)


def test_slow_answers_do_not_shrink_the_limit_while_the_loop_runs_on_time() -> None:
    """Reads waiting for a replica to replay a token are slow but cost the worker nothing."""
    clock = FakeClock()
    limit = make_limit(clock)
    limit.saturated_since = lambda _since: False
    for _ in range(30):
        run_window(limit, clock, 0.200, in_flight=limit.current)
        assert limit.calibrating_since is None  # nor is any measurement started for them
    assert limit.current >= 32
