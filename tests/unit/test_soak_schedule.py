"""The soak's fault schedule: seeded, deterministic, every kind early, a quiet start and end."""

from __future__ import annotations

import itertools

import pytest

from loadtests.experiments.soak_schedule import (
    HOLD_SECONDS,
    QUIET_END_MIN_SECONDS,
    QUIET_START_SECONDS,
    FaultKind,
    available_kinds,
    plan_faults,
)

ALL_LOCAL = available_kinds(local_instances=True, ha_compose=False)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    first = plan_faults(seed=7, duration=3600, mean_interval=300, kinds=ALL_LOCAL)
    again = plan_faults(seed=7, duration=3600, mean_interval=300, kinds=ALL_LOCAL)
    other = plan_faults(seed=8, duration=3600, mean_interval=300, kinds=ALL_LOCAL)
    assert first == again
    assert first != other
    assert [f.to_json() for f in first] == [f.to_json() for f in again]


def test_every_kind_comes_once_before_any_repeats() -> None:
    faults = plan_faults(seed=3, duration=3600, mean_interval=120, kinds=ALL_LOCAL)
    assert len(faults) > 2 * len(ALL_LOCAL)
    for start in range(0, len(faults) - len(ALL_LOCAL) + 1, len(ALL_LOCAL)):
        assert {f.kind for f in faults[start : start + len(ALL_LOCAL)]} == set(ALL_LOCAL)


@pytest.mark.parametrize(("duration", "mean"), [(180, 30), (600, 60), (3600, 300)])
def test_faults_keep_the_start_and_the_end_quiet_and_the_gaps_near_the_mean(
    duration: float, mean: float
) -> None:
    faults = plan_faults(seed=1, duration=duration, mean_interval=mean, kinds=ALL_LOCAL)
    assert faults, "a run this long gets faults"
    assert faults[0].at >= QUIET_START_SECONDS
    assert faults[-1].at <= duration - QUIET_END_MIN_SECONDS
    gaps = [b.at - a.at for a, b in itertools.pairwise(faults)]
    assert all(0.5 * mean - 0.1 <= gap <= 1.5 * mean + 0.1 for gap in gaps), gaps


def test_holds_and_delays_fit_their_kind() -> None:
    faults = plan_faults(seed=5, duration=3600, mean_interval=30, kinds=ALL_LOCAL)
    for fault in faults:
        if fault.kind is FaultKind.PRIMARY_CRASH:
            assert fault.hold == 0
        else:
            assert 0 < fault.hold <= min(HOLD_SECONDS, 30 / 3)
        assert (fault.delay_ms > 0) == (fault.kind is FaultKind.REPLICA_LAG)


def test_the_kinds_follow_the_target() -> None:
    assert FaultKind.APP_CRASH not in available_kinds(local_instances=False, ha_compose=False)
    assert FaultKind.LEADER_PARTITION not in ALL_LOCAL
    ha = available_kinds(local_instances=False, ha_compose=True)
    assert FaultKind.LEADER_PARTITION in ha
    assert FaultKind.APP_CRASH not in ha


def test_no_faults_when_the_run_is_too_short_or_none_are_asked_for() -> None:
    assert plan_faults(seed=1, duration=25, mean_interval=5, kinds=ALL_LOCAL) == []
    assert plan_faults(seed=1, duration=3600, mean_interval=60, kinds=[]) == []
