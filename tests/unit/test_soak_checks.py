"""The soak's arithmetic verdicts on made-up samples and requests: growth trends and errors
outside fault windows."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from loadtests.experiments.consistency_records import Op, RequestRecord
from loadtests.experiments.soak_checks import (
    MIN_SAMPLES,
    Series,
    Tolerance,
    Window,
    errors_outside_windows,
    is_failure,
    judge_growth,
    least_squares,
)

MIB = 2**20


def series(values: Sequence[float], *, every: float = 10.0, start: float = 1000.0) -> Series:
    one = Series(name="service-0 service pid 1 RSS", group="service RSS")
    for index, value in enumerate(values):
        one.add(start + index * every, value)
    return one


def test_least_squares_finds_the_line() -> None:
    slope, intercept = least_squares([(0, 1), (1, 3), (2, 5), (3, 7)])
    assert slope == pytest.approx(2)
    assert intercept == pytest.approx(1)
    assert least_squares([(5, 4), (5, 6)]) == (0.0, 5.0)


def test_a_flat_noisy_series_passes() -> None:
    values = [100 * MIB + (MIB if i % 2 else -MIB) for i in range(360)]
    verdict = judge_growth(series(values), Tolerance(relative=0.05), end=1000 + 3590)
    assert verdict.passed is True, verdict.reason
    assert abs(verdict.rise or 0) < MIB


def test_a_leak_over_the_last_two_thirds_fails_and_warm_up_in_the_first_third_does_not() -> None:
    # An hour at one sample per 10 s: a 30 % climb in the first 20 minutes (warm-up),
    # then flat: passes. The same hour leaking 0.1 MiB a sample after minute 20: fails.
    warm = [100 * MIB * (1 + 0.3 * min(i, 120) / 120) for i in range(360)]
    leak = [130 * MIB + max(0, i - 120) * 0.1 * MIB for i in range(360)]
    end = 1000 + 3590
    assert judge_growth(series(warm), Tolerance(relative=0.05), end=end).passed is True
    failed = judge_growth(series(leak), Tolerance(relative=0.05), end=end)
    assert failed.passed is False
    assert "allowed" in failed.reason
    assert failed.rise == pytest.approx(24 * MIB, rel=0.02)  # 240 samples x 0.1 MiB


def test_the_relative_rule_has_an_absolute_floor() -> None:
    small = [10 * MIB + i * 0.01 * MIB for i in range(60)]  # ~0.4 MiB over the window
    end = 1000 + 590
    assert judge_growth(series(small), Tolerance(relative=0.01), end=end).passed is False
    assert judge_growth(series(small), Tolerance(relative=0.01, floor=MIB), end=end).passed is True


def test_counts_rise_by_an_absolute_number_and_a_ceiling_caps_any_sample() -> None:
    end = 1000 + 590
    descriptors = series([20 + i // 6 for i in range(60)])  # +6 over the window
    assert judge_growth(descriptors, Tolerance(absolute=4), end=end).passed is False
    assert judge_growth(descriptors, Tolerance(absolute=8), end=end).passed is True
    wal = series([64 * MIB] * 30 + [400 * MIB] + [64 * MIB] * 29)
    capped = judge_growth(wal, Tolerance(ceiling=300 * MIB), end=end)
    assert capped.passed is False
    assert "ceiling" in capped.reason


def test_a_series_too_short_to_judge_is_neither_pass_nor_fail() -> None:
    short = series([float(i) * MIB for i in range(MIN_SAMPLES + 1)], every=2)
    verdict = judge_growth(short, Tolerance(relative=0.05), end=1000 + 2 * MIN_SAMPLES)
    assert verdict.passed is None
    assert verdict.reason.startswith("not judged")
    assert judge_growth(Series("x", "g"), Tolerance(relative=0.05), end=0).passed is None


def test_a_restarted_process_is_judged_over_its_own_life() -> None:
    # Born at t=1000+1800 (half-way through an hour), warming up for its first third.
    late = series([50 * MIB * (1 + 0.2 * min(i, 60) / 60) for i in range(180)], start=2800)
    verdict = judge_growth(late, Tolerance(relative=0.05), end=2800 + 1790)
    assert verdict.passed is True, verdict.reason
    assert verdict.window_seconds == pytest.approx(1790 * 2 / 3, abs=10)


def test_a_late_process_warms_up_as_long_as_the_run_did() -> None:
    # Born at minute 30 of an hour, filling for 15 minutes, then flat: judged from minute 50
    # it passes; judged over the last two thirds of its own life (from minute 40) it would not.
    late = series([50 * MIB * (1 + 0.5 * min(i, 90) / 90) for i in range(180)], start=2800)
    end = 2800 + 1790
    assert judge_growth(late, Tolerance(relative=0.05), end=end, warm_up=1200).passed is True
    assert judge_growth(late, Tolerance(relative=0.05), end=end).passed is False


def request(started: float, status: int, ended: float | None = None) -> RequestRecord:
    return RequestRecord(
        mode="monotonic",
        client=1,
        instance=0,
        op=Op.GET,
        started=started,
        ended=started + 0.01 if ended is None else ended,
        status=status,
        error="PRIMARY_UNAVAILABLE" if status == 503 else None,
    )


def test_only_failures_count_and_404_is_an_answer() -> None:
    assert [is_failure(request(0, s)) for s in (200, 201, 204, 404, 400, 409, 503, 0)] == [
        False, False, False, False, True, True, True, True,
    ]  # fmt: skip


def test_errors_inside_windows_pass_and_those_outside_are_listed() -> None:
    windows = [Window(100, 120, "primary_crash pg0"), Window(200, 210, "app_crash service-1")]
    records = [
        request(50, 200),
        request(101, 503),
        request(119.5, 0, ended=125),  # began inside, answered after: overlaps
        request(99.5, 0, ended=100.5),  # began before, failed inside: overlaps
        request(150, 503),  # outside every window
        request(205, 0),
        request(230, 404),  # an answer, not a failure
        request(250, 500),  # outside
    ]
    result = errors_outside_windows(records, windows, origin=0)
    assert result.failures == 6
    assert result.outside == 2
    assert result.by_type_outside == {"503 PRIMARY_UNAVAILABLE": 1, "500 -": 1}
    assert sum(result.by_type_inside.values()) == 4
    assert result.examples[0].startswith("150.0 s: client 1 (monotonic) get")
    assert errors_outside_windows(records[:1], [], origin=0).failures == 0
