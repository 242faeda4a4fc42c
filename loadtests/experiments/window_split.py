"""The write window of an automatic failover, split into the steps nobody ran by hand.

From the fault to the first upload acknowledged through the service:

* **detection**: etcd shows the leader is in trouble: its leader key is gone (the lease
  expired, or the agent released it) or held by another member, or the leader's agent
  published a state other than ``running`` (it noticed its PostgreSQL down);
* **election**: a member holds the leader key (the same one when an agent restarts its
  PostgreSQL in place: then this phase is empty);
* **promotion**: from the key to the moment the database takes writes steadily: the first
  commit of the heartbeat writer's unbroken run (no gap over ``STALL_SECONDS``) that reaches
  the first acknowledged upload. ``pg_promote`` or a restart, and in synchronous modes the
  wait for a synchronous standby: a new leader may acknowledge a commit or two at once and
  then hold every commit until a standby streams from it, so its *first* commit
  (``observed.first_commit``) is not when writes came back. ``out_of_recovery`` marks when
  the holder first answered ``pg_is_in_recovery() = false``;
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

STALL_SECONDS = 0.5  # the heartbeat commits every 50 ms; a longer gap is a stall
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
    observed: dict[str, float | None]  # seconds after the fault, as sampled (+ first_commit)
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


def _steady_writes_since(acks: list[float], fault_at: float, until: float | None) -> float | None:
    """First commit of the heartbeat's unbroken run of commits that reaches ``until`` (the
    first acknowledged upload), or the first commit at all when there is no upload."""
    after = sorted(t for t in acks if t > fault_at)
    run_start: float | None = None
    previous: float | None = None
    for at in after:
        if previous is None or at - previous > STALL_SECONDS:
            run_start = at
        if until is None or at >= until:
            break
        previous = at
    return run_start


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
    writable = _steady_writes_since(heartbeat_acks, fault_at, first_upload_ack)
    first_commit = next((t for t in sorted(heartbeat_acks) if t > fault_at), None)
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
        observed={name: since_fault(observed_at[name]) for name in MILESTONES}
        | {"first_commit": since_fault(first_commit)},
        phases=phases,
        resolution_seconds=round(statistics.median(gaps), 3) if gaps else None,
    )
