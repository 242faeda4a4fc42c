"""The soak's fault schedule: which fault, when and for how long, drawn from a seed.

A plain function, no servers: the same seed, duration and mean interval give the same
schedule, so a soak that found something can be run again with the same faults in the same
order. Kinds are dealt from shuffled rounds (every available kind once, in a seeded order,
then the next round), so even a 3-minute run meets each kind before any repeats, and the
gaps between faults are drawn around ``--fault-every`` (0.5 to 1.5 times it).

The schedule says when a fault *may* start; the runner (:mod:`loadtests.experiments.soak_faults`)
starts it then or, when the previous fault is still being repaired, as soon as the cluster is
whole again: faults never overlap, so each error can be laid at one fault's door.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

# No fault in the first seconds (the load and the watcher start) and none that could not be
# repaired before the end: a fault starts at least this share of the run before the end.
QUIET_START_SECONDS = 10.0
QUIET_END_SHARE = 0.12
QUIET_END_MIN_SECONDS = 20.0
# How long a held fault (a replica down, a replay delay, an app instance down, a partition)
# lasts: 0.5 to 1 times this, at most a third of the mean interval.
HOLD_SECONDS = 15.0
# A replay delay set on a replica: 1 to 3 s, beyond the router's default bounded lag (1 s).
LAG_DELAY_MS = (1000, 3000)


class FaultKind(StrEnum):
    PRIMARY_CRASH = "primary_crash"  # crash, failover (or Patroni's election), rejoin
    REPLICA_CRASH = "replica_crash"  # crash a replica, restart it (rejoin) after the hold
    REPLICA_LAG = "replica_lag"  # delay a replica's replay, clear it after the hold
    APP_CRASH = "app_crash"  # SIGKILL a service instance, start it again after the hold
    LEADER_PARTITION = "leader_partition"  # HA compose only: cut the leader off its peers


@dataclass(frozen=True)
class PlannedFault:
    """One fault as scheduled. ``target`` picks among the candidates at run time (replicas,
    or service instances) modulo their number: which node is a replica changes with every
    failover, so the schedule can only say "the n-th one"."""

    at: float  # seconds after the load started
    kind: FaultKind
    hold: float  # seconds the fault stays before it is undone (0: repaired at once)
    target: int
    delay_ms: int = 0  # REPLICA_LAG only

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def available_kinds(*, local_instances: bool, ha_compose: bool) -> list[FaultKind]:
    """The kinds this target can take: app instances are killed only where the soak started
    them; the partition needs the HA compose variant's peer network."""
    kinds = [FaultKind.PRIMARY_CRASH, FaultKind.REPLICA_CRASH, FaultKind.REPLICA_LAG]
    if local_instances:
        kinds.append(FaultKind.APP_CRASH)
    if ha_compose:
        kinds.append(FaultKind.LEADER_PARTITION)
    return kinds


def plan_faults(
    *, seed: int, duration: float, mean_interval: float, kinds: list[FaultKind]
) -> list[PlannedFault]:
    """Faults from ``QUIET_START_SECONDS`` to the last moment that leaves the end quiet."""
    if not kinds or mean_interval <= 0:
        return []
    rng = random.Random(seed)
    last_start = duration - max(QUIET_END_MIN_SECONDS, QUIET_END_SHARE * duration)
    hold_cap = min(HOLD_SECONDS, mean_interval / 3)
    faults: list[PlannedFault] = []
    deck: list[FaultKind] = []
    at = QUIET_START_SECONDS + rng.uniform(0.25, 0.75) * mean_interval
    while at <= last_start:
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        kind = deck.pop(0)
        hold = 0.0 if kind is FaultKind.PRIMARY_CRASH else round(rng.uniform(0.5, 1) * hold_cap, 1)
        faults.append(
            PlannedFault(
                at=round(at, 1),
                kind=kind,
                hold=hold,
                target=rng.randrange(1000),
                delay_ms=rng.randrange(*LAG_DELAY_MS, 100) if kind is FaultKind.REPLICA_LAG else 0,
            )
        )
        at += rng.uniform(0.5, 1.5) * mean_interval
    return faults
