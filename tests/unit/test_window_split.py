"""Splitting an automatic failover's window into phases, from fake watch samples."""

from __future__ import annotations

import pytest

from loadtests.experiments.leader_watch import WatchSample
from loadtests.experiments.window_split import split_window

FAULT = 1000.0
RUNNING = {"pg0": "running", "pg1": "running", "pg2": "running"}


def sample(
    offset: float,
    leader: str | None,
    states: dict[str, str] | None = None,
    writable: str | None = None,
) -> WatchSample:
    return WatchSample(
        t=FAULT + offset,
        leader=leader,
        member_states=dict(states if states is not None else RUNNING),
        in_recovery={name: (name != writable if writable else True) for name in RUNNING},
    )


def every_tenth(until: float, at: dict[float, WatchSample]) -> list[WatchSample]:
    """A sample every 0.1 s; where ``at`` names a moment, from then on its kind of sample."""
    samples, current = [], sample(0.0, "pg0", writable="pg0")
    for tick in range(round(until * 10) + 1):
        offset = tick / 10
        for moment, template in at.items():
            if abs(moment - offset) < 1e-9:
                current = template
        samples.append(
            WatchSample(
                t=FAULT + offset,
                leader=current.leader,
                member_states=current.member_states,
                in_recovery=current.in_recovery,
            )
        )
    return samples


def test_lost_leader_node_is_split_at_lease_expiry_election_and_first_write() -> None:
    lost = {k: v for k, v in RUNNING.items() if k != "pg0"}
    samples = every_tenth(
        22.0,
        {
            0.1: sample(0.1, "pg0", writable=None),  # pg0 is gone, its keys are still there
            19.5: sample(19.5, None, lost),  # lease expired: leader and member keys gone
            19.7: sample(19.7, "pg1", lost),  # pg1 took the key, still in recovery
            19.9: sample(19.9, "pg1", lost, writable="pg1"),
        },
    )
    split = split_window(
        samples=samples,
        fault_at=FAULT,
        old_leader="pg0",
        heartbeat_acks=[FAULT - 0.05, FAULT + 20.2, FAULT + 20.25],
        first_upload_ack=FAULT + 20.8,
    )
    assert split.new_leader == "pg1"
    assert split.phases == pytest.approx(
        {"detection": 19.5, "election": 0.2, "promotion": 0.5, "router_catch_up": 0.6}
    )
    assert split.window_seconds == pytest.approx(20.8)
    assert sum(v or 0 for v in split.phases.values()) == pytest.approx(split.window_seconds)
    assert split.milestones["out_of_recovery"] == pytest.approx(19.9)
    assert split.resolution_seconds == pytest.approx(0.1)


def test_postgres_crash_under_a_live_agent_has_no_election() -> None:
    crashed = {**RUNNING, "pg0": "crashed"}
    starting = {**RUNNING, "pg0": "starting"}
    samples = every_tenth(
        6.0,
        {
            0.1: sample(0.1, "pg0", writable=None),
            1.2: sample(1.2, "pg0", crashed),
            2.1: sample(2.1, "pg0", starting),
            2.6: sample(2.6, "pg0", writable="pg0"),
        },
    )
    split = split_window(
        samples=samples,
        fault_at=FAULT,
        old_leader="pg0",
        heartbeat_acks=[FAULT + 4.0],
        first_upload_ack=FAULT + 4.1,
    )
    assert split.new_leader == "pg0"
    assert split.phases == pytest.approx(
        {"detection": 1.2, "election": 0.0, "promotion": 2.8, "router_catch_up": 0.1}
    )


def test_a_milestone_sampled_after_a_later_one_is_moved_back_to_it() -> None:
    """The upload was acknowledged before the heartbeat's next commit: the database was
    writable by then, so the router's phase is zero rather than negative."""
    samples = every_tenth(
        3.0, {1.0: sample(1.0, "pg0", {**RUNNING, "pg0": "crashed"}, writable="pg0")}
    )
    split = split_window(
        samples=samples,
        fault_at=FAULT,
        old_leader="pg0",
        heartbeat_acks=[FAULT + 2.5],
        first_upload_ack=FAULT + 2.4,
    )
    assert split.observed["writable"] == pytest.approx(2.5)
    assert split.milestones["writable"] == pytest.approx(2.4)
    assert split.phases["router_catch_up"] == 0.0
    assert all(v is not None and v >= 0 for v in split.phases.values())


def test_a_window_that_never_closed_has_no_total() -> None:
    samples = every_tenth(2.0, {0.5: sample(0.5, None, {})})
    split = split_window(
        samples=samples, fault_at=FAULT, old_leader="pg0", heartbeat_acks=[], first_upload_ack=None
    )
    assert split.window_seconds is None
    assert split.phases["detection"] == pytest.approx(0.5)
    assert split.phases["router_catch_up"] is None
    assert split.new_leader is None


def test_commits_that_stall_after_promotion_count_as_promotion_not_router() -> None:
    """The new leader acknowledged one commit, then held every commit for 2 s until a
    synchronous standby streamed from it: writes came back when the commits resumed."""
    samples = every_tenth(
        23.0,
        {
            19.5: sample(19.5, None, {"pg1": "running", "pg2": "running"}),
            19.6: sample(19.6, "pg1", {"pg1": "running", "pg2": "running"}, writable="pg1"),
        },
    )
    resumed = [FAULT + 21.9 + i * 0.06 for i in range(10)]
    split = split_window(
        samples=samples,
        fault_at=FAULT,
        old_leader="pg0",
        heartbeat_acks=[FAULT - 0.1, FAULT + 19.7, *resumed],
        first_upload_ack=FAULT + 22.0,
    )
    assert split.observed["first_commit"] == pytest.approx(19.7)
    assert split.milestones["writable"] == pytest.approx(21.9)
    assert split.phases["promotion"] == pytest.approx(21.9 - 19.6)
    assert split.phases["router_catch_up"] == pytest.approx(0.1)
