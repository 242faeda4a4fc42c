"""Faults on demand: crash or stop a node, delay or pause a replica's replay."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replication.admin import execute, fetchval
from replication.cluster import Cluster
from replication.drivers.base import StopMode
from replication.drivers.patroni import PatroniDriver
from replication.durations import format_ms, parse_duration_ms
from replication.errors import BadInputError
from replication.failover import Readings
from replication.steps import StepClock
from replication.topology import Manager


def kill(
    data_dir: Path, name: str, mode: StopMode = StopMode.IMMEDIATE, *, postgres_only: bool = False
) -> dict[str, Any]:
    """Crash (immediate: no shutdown checkpoint, like a power cut) or stop (fast) a node.

    Under Patroni a node is PostgreSQL and its agent: both go, as with a lost machine, unless
    ``postgres_only``, which crashes PostgreSQL under a live agent (a crash Patroni sees and
    handles). With the native manager there is no agent and both are the same.
    """
    cluster = Cluster.open(data_dir)
    if name == "primary":  # the node the state file records as primary now
        if cluster.state.manager is Manager.PATRONI:
            cluster.status()  # the state file follows Patroni's leader
        name = cluster.state.primary
    node = cluster.state.node(name)
    was_primary = name == cluster.state.primary
    if not cluster.driver.is_running(node):
        raise BadInputError(f"{name} is already down.")
    clock = StepClock("kill")
    if postgres_only and isinstance(cluster.driver, PatroniDriver):
        if mode is not StopMode.IMMEDIATE:
            raise BadInputError("--postgres-only is a crash; it takes no --mode fast.")
        cluster.driver.crash_postgres(node)
    else:
        cluster.driver.stop(node, mode)
    clock.step("stopped", node=name, mode=mode.value, postgres_only=postgres_only)
    return clock.to_json(
        node=name, mode=mode.value, was_primary=was_primary, postgres_only=postgres_only
    )


@dataclass
class LagChange:
    apply_delay: str | None = None
    pause: bool = False
    resume: bool = False
    clear: bool = False

    def validate(self) -> None:
        chosen = [self.apply_delay is not None, self.pause, self.resume, self.clear]
        if sum(chosen) > 1:
            raise BadInputError(
                "Give one of --apply-delay, --pause, --resume or --clear at a time."
            )


def lag(data_dir: Path, name: str, change: LagChange) -> dict[str, Any]:
    """Set, or with no change show, a replica's replay delay and pause state."""
    change.validate()
    delay_ms = parse_duration_ms(change.apply_delay) if change.apply_delay is not None else None
    cluster = Cluster.open(data_dir)
    state = cluster.state
    node = state.node(name)
    reading = Readings.take(state).alive(name)
    if reading is None:
        raise BadInputError(f"{name} is down; start it (replikit cluster up) before lagging it.")
    if not reading.in_recovery:
        raise BadInputError(f"{name} is the primary; lag applies to replicas.")
    if delay_ms is not None:
        execute(
            state,
            node,
            f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay_ms}ms'",
            "SELECT pg_reload_conf()",
        )
    elif change.pause:
        execute(state, node, "SELECT pg_wal_replay_pause()")
    elif change.resume:
        execute(state, node, "SELECT pg_wal_replay_resume()")
    elif change.clear:
        execute(
            state, node, "ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()"
        )
        if fetchval(state, node, "SELECT pg_get_wal_replay_pause_state()") != "not paused":
            execute(state, node, "SELECT pg_wal_replay_resume()")
    delay = fetchval(
        state, node, "SELECT setting::int FROM pg_settings WHERE name = 'recovery_min_apply_delay'"
    )
    pause_state = fetchval(state, node, "SELECT pg_get_wal_replay_pause_state()")
    return {
        "node": name,
        "apply_delay": format_ms(delay) if delay else None,
        "replay_paused": pause_state != "not paused",
        "pause_state": pause_state,
    }
