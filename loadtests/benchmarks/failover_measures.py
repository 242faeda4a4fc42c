"""One round of the failover benchmark, for each way of telling when the window ends.

* ``upload``: uploads stream through the service; the window runs from the fault done (the
  kill command returned: the node refuses connections) to the sending of the first upload that
  is then acknowledged. Afterwards every acknowledged upload is read back from the primary,
  byte for byte: ``lost`` counts the ones it does not return (expected: none).
* ``write``: no service; after the fault (and the failover command) a client writes through
  the app role to the primary the state file names until a commit succeeds. The window ends at
  that commit; ``issued_to_write`` counts from the kill being issued, the CLI process
  included. ``--switchover`` then also times ``replikit cluster switchover`` to the next commit.
* ``phases``: each round is one ``replikit experiment failover --mode auto`` run (Locust
  ``mixed`` users on two service instances, a heartbeat writer, the etcd/SQL watcher); the
  window is split into detection, election, promotion and router catch-up.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from loadtests.benchmarks.endpoints import plain_dsn
from loadtests.benchmarks.failover_options import Measure, Plan, Step
from loadtests.benchmarks.failover_report import RoundResult
from loadtests.benchmarks.failover_targets import FailoverTarget, ManagedCluster
from replication.topology import require_state

UPLOADS_BEFORE_FAULT_SECONDS = 2.0
PHASES = ("detection", "election", "promotion", "router_catch_up")
PHASES_RUN_SECONDS = {"postgres": 16.0, "node": 32.0}  # the node fault waits out the lease
PHASES_KILL_AT_SECONDS = 4.0


def upload_round(target: FailoverTarget, step: Step) -> RoundResult:
    old = target.leader()
    url = target.service_url()
    with running(AckedUploads(url)) as stream:
        time.sleep(UPLOADS_BEFORE_FAULT_SECONDS)
        injected = target.inject(step, old)
        window = stream.first_ack_sent_after(injected.done_at, within=90)
        new = target.leader_after(old)
        time.sleep(1)  # uploads in flight at the window's end are acknowledged or refused
    lost = len(stream.missing(url))
    target.heal(step.fault, old)
    return RoundResult(window, old, new, len(stream.acknowledged), lost, injected.extra())


async def _connect(data_dir: Path, *, owner: bool = False) -> Any:
    """A connection to the primary the state file names now, as the app role (or the owner,
    who may create tables)."""
    state = require_state(data_dir)
    node = state.primary_node
    url = state.owner_url(node) if owner else state.app_url(node)
    return await asyncpg.connect(plain_dsn(url), timeout=1)


async def create_write_table(data_dir: Path) -> None:
    """The write client's table, made by the owner: the app role may create none."""
    connection = await _connect(data_dir, owner=True)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_writes (at timestamptz)")
    finally:
        await connection.close()


async def first_write(data_dir: Path, deadline_seconds: float = 30.0) -> float:
    """Write until a commit succeeds on the primary the state file names; when it did."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            connection = await _connect(data_dir)
            try:
                await connection.execute("INSERT INTO bench_writes VALUES (now())")
                return time.monotonic()
            finally:
                await connection.close()
        except (OSError, TimeoutError, asyncpg.PostgresError):
            await asyncio.sleep(0.01)
    raise SystemExit("no write succeeded on the new primary within 30 s")


def write_round(target: ManagedCluster, step: Step, *, switchover: bool) -> RoundResult:
    old = target.leader()
    injected = target.inject(step, old)
    written = asyncio.run(first_write(target.data_dir))
    new = target.leader_after(old)
    target.heal(step.fault, old)
    extra = {**injected.extra(), "issued_to_write": written - injected.issued_at}
    if switchover:
        started = time.monotonic()
        target.switchover()
        extra["switchover"] = asyncio.run(first_write(target.data_dir)) - started
    return RoundResult(written - injected.done_at, old, new, extra=extra)


def phases_round(target: ManagedCluster, step: Step, plan: Plan) -> RoundResult:
    # Imported here: the experiment brings Locust and matplotlib, which the others never need.
    from loadtests.experiments.failover import run_failover
    from loadtests.experiments.failover_plan import FailoverMode, FailoverPlan, Fault
    from replication.topology import Manager

    out = run_failover(
        data_dir=target.data_dir,
        results=target.scratch / "results",
        users=plan.users,
        duration=PHASES_RUN_SECONDS[step.fault.value],
        kill_at=PHASES_KILL_AT_SECONDS,
        sync=plan.sync,
        plan=FailoverPlan(
            manager=Manager.PATRONI, mode=FailoverMode.AUTO, fault=Fault(step.fault.value)
        ),
    )
    summary = json.loads((out / "summary.json").read_text())
    split = summary["automatic_failover"]
    events = summary["events"]
    return RoundResult(
        split["window_seconds"],
        summary["old_primary"],
        summary["new_primary"],
        summary["acknowledged_uploads"]["total"],
        summary["acknowledged_uploads"]["lost"],
        {
            "fault_command": events["kill"] - events["kill_issued"],
            **{phase: split["phases"][phase] for phase in PHASES},
        },
    )


def prepare(plan: Plan, target: FailoverTarget) -> None:
    """What a target needs once before its first round."""
    if plan.measure is Measure.WRITE and isinstance(target, ManagedCluster):
        asyncio.run(create_write_table(target.data_dir))


def one_round(plan: Plan, target: FailoverTarget, step: Step) -> RoundResult:
    if plan.measure is Measure.UPLOAD:
        return upload_round(target, step)
    if not isinstance(target, ManagedCluster):  # the plan allows write and phases on no other
        raise TypeError(f"--measure {plan.measure.value} needs a cluster with a state file")
    if plan.measure is Measure.WRITE:
        return write_round(target, step, switchover=plan.switchover)
    return phases_round(target, step, plan)
