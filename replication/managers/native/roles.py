"""Failover, switchover and rejoin: moving the primary role without losing what was promised.

* ``failover`` is for a primary that is gone. The candidate is the reachable replica with the
  most WAL *received* (flushed to its disk), not merely replayed: with synchronous replication
  a commit is acknowledged once the synchronous standby has flushed it, and promotion replays
  everything on disk, so the replica that received the most holds every acknowledged commit.
  The old primary is fenced before anything else: recorded in the state file (``cluster up``
  will not start it) and given a ``standby.signal`` so that whatever starts it, it starts
  read-only. It must be rejoined.
* ``switchover`` is planned: the primary stops cleanly (its shutdown checkpoint is streamed to
  every connected replica), the target is promoted only once it has replayed that checkpoint,
  and the old primary becomes a replica of it. Nothing acknowledged can be lost.
* ``rejoin`` makes a stopped node a replica of the current primary: pg_rewind when histories
  diverged, a fresh base backup when pg_rewind cannot, or when the node's slot on the primary
  was invalidated (it fell more than ``max_slot_wal_keep_size`` behind: the WAL it needs is
  gone, so no restart or rewind could make it stream again).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from replication.admin import drop_slot, ensure_slots, execute, fetchval, quote_literal, with_admin
from replication.drivers.base import StopMode
from replication.errors import BadInputError, ClusterTimeoutError, ReplikitError
from replication.lag import clear_lag
from replication.managers.base import ClusterManager
from replication.probe import NodeReading, Readings
from replication.steps import StepClock
from replication.tls.provision import replication_login
from replication.topology import ClusterState, NodeSpec, SyncMode, save_state
from service.routing.lsn import format_lsn, parse_lsn

WRITE_PROBE_TIMEOUT_SECONDS = 15.0
CATCH_UP_TIMEOUT_SECONDS = 30.0
STREAMING_TIMEOUT_SECONDS = 30.0


def _received(reading: NodeReading) -> int:
    return max(reading.receive_lsn or 0, reading.replay_lsn or 0)


def _refuse_lagging(name: str, reading: NodeReading, force: bool) -> None:
    held = reading.pause_state not in (None, "not paused") or reading.apply_delay_ms > 0
    if held and not force:
        what = "paused" if reading.pause_state not in (None, "not paused") else "delayed"
        raise BadInputError(
            f"{name} is {what} (replikit cluster lag {name} --clear undoes it); choose "
            f"another node with --to or pass --force to promote it anyway."
        )


def standby_names(state: ClusterState, primary: str) -> str:
    names = ", ".join(f'"{node.name}"' for node in state.nodes if node.name != primary)
    if state.sync is SyncMode.OFF or not names:
        return ""
    return f"{'FIRST' if state.sync is SyncMode.ON else 'ANY'} 1 ({names})"


def _prepare_new_primary(state: ClusterState, target: NodeSpec) -> None:
    """Slots for every other node (so their WAL is kept from now on) and the sync setting."""
    ensure_slots(state, target, [n.name for n in state.nodes if n.name != target.name])
    execute(
        state,
        target,
        "ALTER SYSTEM SET synchronous_standby_names = "
        + quote_literal(standby_names(state, target.name)),
        "SELECT pg_reload_conf()",
    )


def _promote(state: ClusterState, target: NodeSpec) -> int:
    promoted = fetchval(state, target, "SELECT pg_promote(wait => true, wait_seconds => 60)")
    if not promoted:
        raise ClusterTimeoutError(f"{target.name} did not finish promotion within 60 s.")
    timeline: int = fetchval(
        state,
        target,
        "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
    )
    return timeline


def primary_conninfo(state: ClusterState, node: NodeSpec, primary: NodeSpec) -> str:
    host, port = state.replication_address(primary)
    return (
        f"host={host} port={port} user={state.replication_user} "
        f"{replication_login(state)} application_name={node.name}"
    )


def repoint(state: ClusterState, node: NodeSpec, primary: NodeSpec) -> None:
    """Point a running replica at ``primary`` over its own slot (reload, no restart)."""
    execute(
        state,
        node,
        "ALTER SYSTEM SET primary_conninfo = "
        + quote_literal(primary_conninfo(state, node, primary)),
        f"ALTER SYSTEM SET primary_slot_name = {quote_literal(node.name)}",
        "SELECT pg_reload_conf()",
    )


def wait_until_writable(state: ClusterState, primary: NodeSpec) -> float | None:
    """Commit one transaction that writes WAL (so it waits for synchronous replicas, as a real
    write does); the moment it returns, or None if it did not within the probe timeout."""

    async def probe(connection: asyncpg.Connection) -> None:
        await connection.fetchval(
            "SELECT pg_current_xact_id()", timeout=WRITE_PROBE_TIMEOUT_SECONDS
        )

    try:
        asyncio.run(with_admin(state, primary, probe))
    except (TimeoutError, asyncpg.PostgresError, OSError):
        return None
    return time.monotonic()


def wait_streaming(state: ClusterState, primary: NodeSpec, names: list[str]) -> None:
    async def streaming(connection: asyncpg.Connection) -> set[str]:
        rows = await connection.fetch(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
        )
        return {row["application_name"] for row in rows}

    deadline = time.monotonic() + STREAMING_TIMEOUT_SECONDS
    while True:
        missing = set(names) - asyncio.run(with_admin(state, primary, streaming))
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"{', '.join(sorted(missing))} did not stream from {primary.name} within "
                f"{STREAMING_TIMEOUT_SECONDS:.0f} s; see their logs."
            )
        time.sleep(0.05)


def _writable_result(clock: StepClock, state: ClusterState, primary: NodeSpec) -> float | None:
    writable_at = wait_until_writable(state, primary)
    if writable_at is None:
        clock.step("writes_waiting", reason="no synchronous replica is connected yet")
        return None
    clock.step("accepting_writes")
    return clock.since_start(writable_at)


def _promote_and_repoint(
    cluster: ClusterManager,
    clock: StepClock,
    readings: Readings,
    *,
    old: NodeSpec,
    target: NodeSpec,
) -> tuple[int, list[str]]:
    """Slots and sync setting on the target, promote it, record it, repoint the running
    replicas; returns the new timeline and the repointed nodes."""
    state = cluster.state
    _prepare_new_primary(state, target)
    clock.step("prepared_slots_and_sync")
    timeline = _promote(state, target)
    state.primary = target.name
    save_state(cluster.data_dir, state)
    clock.step("promoted", node=target.name, timeline=timeline)
    repointed = [
        node.name
        for node in state.nodes
        if node.name not in (target.name, old.name, *state.fenced)
        and readings.alive(node.name) is not None
    ]
    for name in repointed:
        repoint(state, state.node(name), target)
    clock.step("repointed", nodes=repointed)
    return timeline, repointed


# failover ---------------------------------------------------------------------------------
def failover(
    cluster: ClusterManager, *, to: str | None = None, force: bool = False
) -> dict[str, Any]:
    state, driver = cluster.state, cluster.driver
    clock = StepClock("failover")
    old = state.primary_node
    if to is not None:
        state.node(to)  # unknown names fail here, before anything changes
        if to == old.name:
            raise BadInputError(f"{to} is the current primary; name a replica with --to.")
    readings = Readings.take(state)
    if readings.is_writable(old.name):
        if not force:
            raise BadInputError(
                f"The primary {old.name} is alive; use 'replikit cluster switchover' for a "
                f"planned change, or --force to stop it and fail over anyway."
            )
        driver.stop(old, StopMode.IMMEDIATE)
        clock.step("stopped_old_primary", node=old.name)
    candidates = readings.replicas(state, exclude={old.name, *state.fenced})
    if to is not None and to not in candidates:
        raise BadInputError(f"{to} is not a reachable replica; it cannot be promoted.")
    if not candidates:
        raise ReplikitError("No replica is reachable; there is nothing to promote.")
    target_name = to or max(
        candidates, key=lambda n: (_received(candidates[n]), candidates[n].replay_lsn or 0)
    )
    chosen = candidates[target_name]
    _refuse_lagging(target_name, chosen, force)
    target = state.node(target_name)
    clock.step(
        "chose_candidate",
        node=target_name,
        received_lsn=format_lsn(_received(chosen)),
        candidates={n: format_lsn(_received(r)) for n, r in candidates.items()},
    )

    # Fence first: from here on the old primary can only come back as a rejoined replica.
    state.fence(old.name)
    state.previous_primary = old.name
    save_state(cluster.data_dir, state)
    if not driver.is_running(old):
        driver.fence(old)
    clock.step("fenced_old_primary", node=old.name)

    if force:
        clear_lag(state, target)
    timeline, repointed = _promote_and_repoint(cluster, clock, readings, old=old, target=target)
    seconds = _writable_result(clock, state, target)
    return clock.to_json(
        old_primary=old.name,
        new_primary=target.name,
        timeline=timeline,
        repointed=repointed,
        fenced=list(state.fenced),
        seconds_to_writable=seconds,
    )


# rejoin -----------------------------------------------------------------------------------
def _rejoin(
    cluster: ClusterManager, node: NodeSpec, primary: NodeSpec, *, reclone: bool = False
) -> str:
    state, driver = cluster.state, cluster.driver
    if driver.is_running(node):
        driver.stop(node, StopMode.FAST)
    if reclone:
        # An invalidated slot reserves nothing and never will again: a new one, from now.
        drop_slot(state, primary, node.name)
    ensure_slots(state, primary, [node.name])
    # pg_rewind reads the source's timeline from its control file, which a fresh promotion
    # only updates at its next checkpoint; without this it may see "the same timeline" and
    # skip a rewind that is needed.
    execute(state, primary, "CHECKPOINT")
    method = driver.rejoin(node, primary, reclone=reclone)
    driver.start(node)
    state.unfence(node.name)
    save_state(cluster.data_dir, state)
    return method


def lost_slot_reason(
    state: ClusterState, readings: Readings, node: NodeSpec, primary: NodeSpec
) -> str | None:
    """Why ``node`` must be re-cloned rather than rewound or restarted: its slot on the
    primary was invalidated, so the WAL it would stream from is gone. None when it was not."""
    reading = readings.alive(primary.name)
    slot = reading.slots.get(node.name) if reading is not None else None
    if slot is None or not slot.lost:
        return None
    limit = fetchval(state, primary, "SELECT current_setting('max_slot_wal_keep_size')")
    return (
        f"its slot {node.name} on {primary.name} was invalidated (wal_status lost): it fell "
        f"more than max_slot_wal_keep_size ({limit}) behind, so {primary.name} removed WAL "
        f"it still needed"
    )


def rejoin(cluster: ClusterManager, name: str) -> dict[str, Any]:
    state = cluster.state
    node = state.node(name)
    if name == state.primary:
        raise BadInputError(
            f"{name} is the current primary; rejoin makes a former primary or a stopped "
            f"replica follow it."
        )
    primary = state.primary_node
    readings = Readings.take(state)
    if not readings.is_writable(primary.name):
        raise ReplikitError(
            f"The primary {primary.name} is not reachable; fail over first, then rejoin {name}."
        )
    clock = StepClock("rejoin")
    reclone_reason = lost_slot_reason(state, readings, node, primary)
    if reclone_reason is not None:
        clock.step("slot_lost", node=name, slot=name)
    method = _rejoin(cluster, node, primary, reclone=reclone_reason is not None)
    clock.step(method, node=name)
    wait_streaming(state, primary, [name])
    clock.step("streaming", node=name)
    return clock.to_json(
        node=name, primary=primary.name, method=method, reclone_reason=reclone_reason
    )


# switchover -------------------------------------------------------------------------------
def _default_switchover_target(state: ClusterState, candidates: dict[str, NodeReading]) -> str:
    if state.previous_primary in candidates:
        return state.previous_primary
    return max(candidates, key=lambda n: (candidates[n].replay_lsn or 0, n))


def switchover(cluster: ClusterManager, *, to: str | None = None) -> dict[str, Any]:
    state, driver = cluster.state, cluster.driver
    old = state.primary_node
    if to is not None:
        state.node(to)
        if to == old.name:
            raise BadInputError(f"{to} is already the primary.")
    readings = Readings.take(state)
    if not readings.is_writable(old.name):
        raise BadInputError(
            f"The primary {old.name} is not running; use 'replikit cluster failover'."
        )
    candidates = readings.replicas(state, exclude={old.name, *state.fenced})
    if to is not None and to not in candidates:
        raise BadInputError(f"{to} is not a running replica; switch over to a streaming one.")
    if not candidates:
        raise BadInputError("There is no running replica to switch over to.")
    target_name = to or _default_switchover_target(state, candidates)
    _refuse_lagging(target_name, candidates[target_name], force=False)
    target = state.node(target_name)
    clock = StepClock("switchover")

    driver.stop(old, StopMode.FAST)
    shutdown_lsn = parse_lsn(driver.controldata(old)["Latest checkpoint location"])
    clock.step("stopped_old_primary", node=old.name, shutdown_checkpoint=format_lsn(shutdown_lsn))
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_SECONDS
    while True:
        replayed = fetchval(state, target, "SELECT pg_last_wal_replay_lsn()::text")
        if replayed and parse_lsn(replayed) > shutdown_lsn:
            break
        if time.monotonic() > deadline:
            driver.start(old)
            raise ClusterTimeoutError(
                f"{target.name} did not replay {old.name}'s shutdown checkpoint within "
                f"{CATCH_UP_TIMEOUT_SECONDS:.0f} s; switchover cancelled, {old.name} restarted "
                f"as the primary."
            )
        time.sleep(0.02)
    clock.step("target_caught_up", node=target.name, replayed=replayed)

    state.previous_primary = old.name
    timeline, others = _promote_and_repoint(cluster, clock, readings, old=old, target=target)
    method = _rejoin(cluster, old, target)
    clock.step("old_primary_rejoined", node=old.name, method=method)
    wait_streaming(state, target, [old.name, *others])
    clock.step("streaming", nodes=[old.name, *others])
    seconds = _writable_result(clock, state, target)
    return clock.to_json(
        old_primary=old.name,
        new_primary=target.name,
        timeline=timeline,
        rejoin_method=method,
        seconds_to_writable=seconds,
    )
