"""What one run of the failover benchmark does: which clusters, which faults, how a round is
measured, and which combinations make sense.

Kept apart from the runner (no cluster, Docker or Locust imports) so the choices are checked,
and unit-tested, before anything starts: a bad combination costs one sentence, not a cluster
built for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from replication.topology import SyncMode


class Target(StrEnum):
    """Which cluster the rounds run on."""

    NATIVE = "native"  # local processes; `replikit cluster failover` moves the primary
    PATRONI = "patroni"  # local processes under Patroni agents, which fail over by themselves
    COMPOSE = "compose"  # the compose stack attached as a cluster; `replikit cluster failover`
    # The same stack with the app instances straight on the nodes, not through the poolers.
    COMPOSE_DIRECT = "compose-direct"
    COMPOSE_HA = "compose-ha"  # the compose HA variant: Patroni agents in containers


class Fault(StrEnum):
    """What breaks on the primary (the leader) at the start of the window."""

    NODE = "node"  # agent (if any) and PostgreSQL gone: a lost machine
    POSTGRES = "postgres"  # PostgreSQL crashes under a live Patroni agent
    PARTITION = (
        "partition"  # the leader is cut off etcd and the other nodes, clients still reach it
    )


class Measure(StrEnum):
    """Where a round's window ends, and so what the round needs running."""

    UPLOAD = "upload"  # the sending of the first upload then acknowledged through the service
    WRITE = "write"  # the first commit through the app role on the new primary (no service)
    PHASES = "phases"  # a `replikit experiment failover --mode auto` per round, split in phases


class Via(StrEnum):
    """How the fault and the failover command are issued (native and compose)."""

    CLI = "cli"  # `replikit cluster kill` / `failover`: each pays Python's start-up
    IN_PROCESS = "in-process"  # the same functions called in this process


FAULTS: dict[Target, tuple[Fault, ...]] = {
    Target.NATIVE: (Fault.NODE,),
    Target.PATRONI: (Fault.POSTGRES, Fault.NODE),
    Target.COMPOSE: (Fault.NODE,),
    Target.COMPOSE_DIRECT: (Fault.NODE,),
    Target.COMPOSE_HA: (Fault.NODE, Fault.PARTITION),
}
MEASURES: dict[Target, tuple[Measure, ...]] = {
    Target.NATIVE: (Measure.UPLOAD, Measure.WRITE),
    Target.PATRONI: (Measure.UPLOAD, Measure.PHASES),
    Target.COMPOSE: (Measure.UPLOAD, Measure.WRITE),
    Target.COMPOSE_DIRECT: (Measure.UPLOAD, Measure.WRITE),
    Target.COMPOSE_HA: (Measure.UPLOAD,),
}
# Targets where a person (here: the benchmark) runs the failover command after the fault.
MANUAL = (Target.NATIVE, Target.COMPOSE, Target.COMPOSE_DIRECT)


class PlanError(ValueError):
    """A combination of options that cannot run; the message names the fix."""


@dataclass(frozen=True)
class Step:
    """One round of one target: the fault it injects and how."""

    target: Target
    fault: Fault
    via: Via


@dataclass(frozen=True)
class Plan:
    targets: tuple[Target, ...]
    faults: tuple[Fault, ...] | None  # None: every fault of each target, alternately
    measure: Measure = Measure.UPLOAD
    vias: tuple[Via, ...] = (Via.CLI,)
    rounds: int = 5
    sync: SyncMode = SyncMode.ON
    switchover: bool = False
    users: int = 4
    first_port: int | None = None  # local clusters' first port; None: a free one
    results_dir: Path = Path("results")
    build: bool = True  # build the compose images first (every layer cached after the first)

    def faults_of(self, target: Target) -> tuple[Fault, ...]:
        return self.faults or FAULTS[target]

    def schedule(self) -> list[Step]:
        """Every step of the run in order: per round, each target, each of its faults, each
        way of issuing them, so slow drift of the machine hits every kind alike."""
        return [
            Step(target, fault, via)
            for _ in range(self.rounds)
            for target in self.targets
            for fault in self.faults_of(target)
            for via in self.vias
        ]


def _names(values: Sequence[StrEnum]) -> str:
    return ", ".join(value.value for value in values)


def make_plan(
    *,
    targets: Sequence[Target],
    faults: Sequence[Fault] = (),
    measure: Measure = Measure.UPLOAD,
    vias: Sequence[Via] = (),
    rounds: int = 5,
    sync: SyncMode = SyncMode.ON,
    switchover: bool = False,
    users: int = 4,
    first_port: int | None = None,
    results_dir: Path = Path("results"),
    build: bool = True,
) -> Plan:
    """The plan for these options, or :class:`PlanError` naming what to change."""
    chosen = tuple(dict.fromkeys(targets)) or (Target.NATIVE,)
    fault_list = tuple(dict.fromkeys(faults))
    via_list = tuple(dict.fromkeys(vias)) or (Via.CLI,)
    if rounds < 1:
        raise PlanError("--rounds must be 1 or more.")
    if users < 1:
        raise PlanError("--users must be 1 or more.")
    for target in chosen:
        for fault in fault_list:
            if fault not in FAULTS[target]:
                raise PlanError(
                    f"--fault {fault.value} does not apply to --target {target.value} (its "
                    f"faults: {_names(FAULTS[target])}); drop one of the two."
                )
        if measure not in MEASURES[target]:
            raise PlanError(
                f"--measure {measure.value} does not run on --target {target.value} (it "
                f"takes {_names(MEASURES[target])}); pick one of those or another target."
            )
        if Via.IN_PROCESS in via_list and target not in MANUAL:
            raise PlanError(
                f"--via in-process applies to targets with a failover command "
                f"({_names(MANUAL)}), not --target {target.value}; drop --via in-process."
            )
    if switchover and measure is not Measure.WRITE:
        raise PlanError("--switchover times a switchover to the first write: add --measure write.")
    if Target.COMPOSE_HA in chosen and sync is not SyncMode.ON:
        raise PlanError(
            "The compose HA stack always replicates synchronously; drop --sync or use --sync on."
        )
    return Plan(
        targets=chosen,
        faults=fault_list or None,
        measure=measure,
        vias=via_list,
        rounds=rounds,
        sync=sync,
        switchover=switchover,
        users=users,
        first_port=first_port,
        results_dir=results_dir,
        build=build,
    )
