"""Failover as a client sees it: fault on the primary -> first acknowledged write, per target.

Any of replikit's clusters, in rounds, with one report shape:

    .venv/bin/python -m loadtests.benchmarks.failover --target native --target compose --rounds 5
    .venv/bin/python -m loadtests.benchmarks.failover --target patroni --rounds 5
    .venv/bin/python -m loadtests.benchmarks.failover --target patroni --measure phases --rounds 5
    .venv/bin/python -m loadtests.benchmarks.failover --target compose-ha --rounds 5
    .venv/bin/python -m loadtests.benchmarks.failover --target native --measure write \
        --via cli --via in-process --switchover --rounds 5

It builds each ``--target`` (a local cluster or a compose stack of its own, synchronous
replication, upload rate limit off), then runs ``--rounds`` rounds: in each, every target takes
every one of its faults (or the ``--fault`` given) in turn, issued each ``--via`` way, so slow
drift of the machine hits every kind alike. The cluster is whole (every replica streaming)
before each round and made whole again after it (the old primary rejoins). Native and compose
fail over with ``replikit cluster failover`` right after the fault; Patroni's agents, on their
own. Prints a line per round, then medians per kind of round and each target's median over the
first target's; the same goes to ``results/bench-failover-<stamp>/failover.json``. Everything
built is removed at the end, also on failure. See docs/benchmarks.md for the figures.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from loadtests.benchmarks.failover_measures import one_round, prepare
from loadtests.benchmarks.failover_options import (
    FAULTS,
    Fault,
    Measure,
    Plan,
    PlanError,
    Target,
    Via,
    make_plan,
)
from loadtests.benchmarks.failover_report import FailoverReport
from loadtests.benchmarks.failover_targets import PORTS_PER_LOCAL_CLUSTER, FailoverTarget, built
from loadtests.benchmarks.scratch import scratch_dir
from replication.topology import SyncMode


def run(plan: Plan) -> Path:
    """Build every target, run the plan's rounds, tear everything down; the JSON report."""
    report = FailoverReport(plan, Path())
    report.out = plan.results_dir / f"bench-failover-{report.started_at}" / "failover.json"
    steps = plan.schedule()
    per_round = len(steps) // plan.rounds
    with scratch_dir("replikit-bench-failover-") as scratch, contextlib.ExitStack() as stack:
        targets: dict[Target, FailoverTarget] = {}
        first_port = plan.first_port
        for target in plan.targets:
            targets[target] = stack.enter_context(built(target, scratch, plan, first_port))
            prepare(plan, targets[target])
            if first_port is not None:
                first_port += PORTS_PER_LOCAL_CLUSTER
        for index, step in enumerate(steps):
            result = one_round(plan, targets[step.target], step)
            report.add(index // per_round + 1, step, result)
    report.finish()
    return report.out


def parse_plan(argv: list[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--target",
        type=Target,
        action="append",
        choices=list(Target),
        help="cluster to break (repeatable: rounds alternate; default native)",
    )
    parser.add_argument(
        "--fault",
        type=Fault,
        action="append",
        choices=list(Fault),
        help="only this fault (repeatable; default: each of the target's faults in turn: "
        + "; ".join(f"{t.value} {'/'.join(f.value for f in FAULTS[t])}" for t in Target)
        + ")",
    )
    parser.add_argument(
        "--measure",
        type=Measure,
        choices=list(Measure),
        default=Measure.UPLOAD,
        help="where the window ends: first acknowledged upload through the service (upload), "
        "first commit as the app role (write), or a phase split per round (phases, patroni)",
    )
    parser.add_argument(
        "--via",
        type=Via,
        action="append",
        choices=list(Via),
        help="issue the kill and failover with the CLI or in this process (repeatable: "
        "alternate; native and compose; default cli)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind")
    parser.add_argument("--sync", type=SyncMode, choices=list(SyncMode), default=SyncMode.ON)
    parser.add_argument(
        "--switchover",
        action="store_true",
        help="also time `replikit cluster switchover` to the first write (--measure write)",
    )
    parser.add_argument("--users", type=int, default=4, help="Locust users (--measure phases)")
    parser.add_argument(
        "--base-port",
        type=int,
        help="local clusters take the first free ports from here (default: free ports below "
        "the ephemeral range, from a random start)",
    )
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument(
        "--no-build",
        action="store_true",
        help="compose targets: use the images as they are (made by `make compose-up`)",
    )
    args = parser.parse_args(argv)
    try:
        return make_plan(
            targets=args.target or (),
            faults=args.fault or (),
            measure=args.measure,
            vias=args.via or (),
            rounds=args.rounds,
            sync=args.sync,
            switchover=args.switchover,
            users=args.users,
            first_port=args.base_port,
            results_dir=args.results_dir,
            build=not args.no_build,
        )
    except PlanError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    run(parse_plan(argv))


if __name__ == "__main__":
    main()
