"""Which failover an experiment runs: the manager, who fails over, and what breaks.

Kept apart from the experiment (no plotting or Locust imports) so the CLI can name these
choices as options without loading the experiment itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from replication.drivers.patroni import DEFAULT_TTL
from replication.errors import BadInputError
from replication.topology import Manager, load_state

# A node fault needs the lease (ttl) plus election, promotion and catch-up inside the load.
NODE_FAULT_MARGIN_SECONDS = 5


class FailoverMode(StrEnum):
    """Who moves the primary role in the experiment."""

    MANUAL = "manual"  # the experiment runs `cluster failover` right after the crash
    AUTO = "auto"  # Patroni's agents, unprompted


class Fault(StrEnum):
    """What an automatic-failover run breaks on the leader."""

    NODE = "node"  # agent and PostgreSQL: a lost machine, so the leader's lease must expire
    POSTGRES = "postgres"  # PostgreSQL only: its agent, alive, sees the crash


@dataclass(frozen=True)
class FailoverPlan:
    manager: Manager = Manager.NATIVE
    mode: FailoverMode = FailoverMode.MANUAL
    fault: Fault | None = None

    @property
    def automatic(self) -> bool:
        return self.mode is FailoverMode.AUTO


def plan_failover(
    data_dir: Path,
    *,
    manager: Manager | None,
    mode: FailoverMode | None,
    fault: Fault | None,
) -> FailoverPlan:
    """Settle manager, mode and fault from the options and the cluster already in
    ``data_dir``; refuse the combinations that cannot run, before anything starts."""
    existing = load_state(data_dir)
    recorded = existing.manager if existing is not None else None
    if existing is not None and existing.driver == "compose" and recorded is Manager.PATRONI:
        raise BadInputError(
            "The failover experiment does not drive the compose HA stack (its agents are "
            "out of replikit's reach); measure it with 'python -m "
            "loadtests.benchmarks.failover --target compose-ha' (docs/benchmarks.md)."
        )
    if manager is not None and recorded is not None and manager is not recorded:
        raise BadInputError(
            f"The cluster in {data_dir} is managed by {recorded.value}; pass --manager "
            f"{recorded.value} or use another --data-dir."
        )
    chosen = manager or recorded or (Manager.PATRONI if mode is FailoverMode.AUTO else None)
    chosen = chosen or Manager.NATIVE
    mode = mode or (FailoverMode.AUTO if chosen is Manager.PATRONI else FailoverMode.MANUAL)
    if mode is FailoverMode.AUTO and chosen is not Manager.PATRONI:
        raise BadInputError(
            "--mode auto needs a cluster that fails over by itself: pass --manager patroni "
            "(for a new cluster) or the --data-dir of one built with it."
        )
    if mode is FailoverMode.MANUAL and chosen is Manager.PATRONI:
        raise BadInputError(
            "A Patroni cluster fails over by itself; use --mode auto (the default with "
            "--manager patroni)."
        )
    if fault is not None and mode is FailoverMode.MANUAL:
        raise BadInputError(
            "--fault applies to --mode auto; the manual experiment always crashes the whole "
            "primary."
        )
    if mode is FailoverMode.AUTO:
        fault = fault or Fault.NODE
    return FailoverPlan(manager=chosen, mode=mode, fault=fault)


def check_timing(plan: FailoverPlan, data_dir: Path, *, duration: float, kill_at: float) -> None:
    """Refuse a fault the load cannot outlast: a node fault needs the lease to expire
    (up to ttl) and the rest of the failover inside ``--duration``."""
    if not 0 < kill_at < duration:
        raise BadInputError("--kill-at must fall inside --duration.")
    if plan.fault is not Fault.NODE:
        return
    existing = load_state(data_dir)
    ttl = existing.patroni.ttl if existing and existing.patroni else DEFAULT_TTL
    needed = ttl + NODE_FAULT_MARGIN_SECONDS
    if duration - kill_at < needed:
        raise BadInputError(
            f"--duration must leave at least {needed} s after --kill-at for a node fault: "
            f"the lost leader's lease alone lasts up to ttl ({ttl} s); e.g. --duration "
            f"{round(kill_at + needed + 5)}."
        )
