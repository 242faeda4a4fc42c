"""The write window of an automatic failover, split into the steps nobody ran by hand.

From the fault to the first upload acknowledged through the service:

* **detection**: etcd shows the leader is in trouble: its leader key is gone (the lease
  expired, or the agent released it) or held by another member, or the leader's agent
  published a state other than ``running`` (it noticed its PostgreSQL down);
* **election**: a member holds the leader key (the same one when an agent restarts its
  PostgreSQL in place: then this phase is empty);
* **promotion**: from the key to the first write the database acknowledges (the heartbeat's
  first commit after the fault): ``pg_promote`` or a restart, and in synchronous modes the
  wait for a synchronous standby; ``out_of_recovery`` marks when the holder first answered
  ``pg_is_in_recovery() = false`` inside it;
* **router catch-up**: from that first acknowledged write to the first acknowledged upload.

Each milestone is the first sample that shows it. A later milestone proves the earlier ones
(nobody writes without a leader), so a milestone the ~100 ms sampling saw only after a later
one is moved back to it: the phases are then never negative and add up to the window exactly.
``observed`` keeps the samples' own times.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from loadtests.experiments.leader_watch import WatchSample

MILESTONES = ("detected", "elected", "out_of_recovery", "writable", "first_ack")
PHASES = {  # phase: (from milestone, to milestone); None is the fault itself
    "detection": (None, "detected"),
    "election": ("detected", "elected"),
    "promotion": ("elected", "writable"),
    "router_catch_up": ("writable", "first_ack"),
}


@dataclass(frozen=True)
class WindowSplit:
    old_leader: str
    new_leader: str | None
    window_seconds: float | None  # fault -> first acknowledged upload
    milestones: dict[str, float | None]  # seconds after the fault, moved back as above
    observed: dict[str, float | None]  # seconds after the fault, as sampled
    phases: dict[str, float | None]
    resolution_seconds: float | None  # median time between two samples

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _first(samples: list[WatchSample], after: float, test: Any) -> WatchSample | None:
    return next((s for s in samples if s.t >= after and test(s)), None)


def _in_trouble(sample: WatchSample, old_leader: str) -> bool:
    return sample.dcs_answered and (
        sample.leader != old_leader or sample.member_states.get(old_leader) != "running"
    )


def split_window(
    *,
    samples: list[WatchSample],
    fault_at: float,
    old_leader: str,
    heartbeat_acks: list[float],
    first_upload_ack: float | None,
) -> WindowSplit:
    """The phases of one automatic failover (times are Unix seconds)."""
    watched = [s for s in samples if s.t >= fault_at]
    detected = _first(watched, fault_at, lambda s: _in_trouble(s, old_leader))
    elected = (
        _first(watched, detected.t, lambda s: s.leader is not None)
        if detected is not None
        else None
    )
    new_leader = elected.leader if elected is not None else None
    out_of_recovery = (
        _first(watched, elected.t, lambda s: s.in_recovery.get(str(new_leader)) is False)
        if elected is not None
        else None
    )
    writable = next((t for t in sorted(heartbeat_acks) if t > fault_at), None)
    observed_at: dict[str, float | None] = {
        "detected": detected.t if detected else None,
        "elected": elected.t if elected else None,
        "out_of_recovery": out_of_recovery.t if out_of_recovery else None,
        "writable": writable,
        "first_ack": first_upload_ack,
    }
    moved: dict[str, float | None] = {}
    later: float | None = None
    for name in reversed(MILESTONES):
        candidates = [v for v in (observed_at[name], later) if v is not None]
        moved[name] = later = min(candidates) if candidates else None

    def since_fault(at: float | None) -> float | None:
        return round(at - fault_at, 3) if at is not None else None

    phases: dict[str, float | None] = {}
    for phase, (start, end) in PHASES.items():
        begin = fault_at if start is None else moved[start]
        finish = moved[end]
        phases[phase] = (
            round(finish - begin, 3) if begin is not None and finish is not None else None
        )
    gaps = [b.t - a.t for a, b in itertools.pairwise(samples)]
    return WindowSplit(
        old_leader=old_leader,
        new_leader=new_leader,
        window_seconds=since_fault(first_upload_ack),
        milestones={name: since_fault(moved[name]) for name in MILESTONES},
        observed={name: since_fault(observed_at[name]) for name in MILESTONES},
        phases=phases,
        resolution_seconds=round(statistics.median(gaps), 3) if gaps else None,
    )
