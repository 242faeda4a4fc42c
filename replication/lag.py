"""Replay lag on demand: delay or pause a replica's replay, or undo it.

Plain SQL on the replica (``recovery_min_apply_delay``, ``pg_wal_replay_pause``), so it is the
same for every manager and every place nodes run; the managers' ``lag`` command calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replication.admin import execute, fetchval
from replication.durations import format_ms, parse_duration_ms
from replication.errors import BadInputError
from replication.probe import Readings
from replication.topology import ClusterState, NodeSpec


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


def clear_lag(state: ClusterState, node: NodeSpec) -> None:
    """No replay delay and replay running: what a replica must be before it is promoted."""
    execute(state, node, "ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()")
    if fetchval(state, node, "SELECT pg_get_wal_replay_pause_state()") != "not paused":
        execute(state, node, "SELECT pg_wal_replay_resume()")


def set_lag(state: ClusterState, name: str, change: LagChange) -> dict[str, Any]:
    """Set, or with no change show, a replica's replay delay and pause state."""
    change.validate()
    delay_ms = parse_duration_ms(change.apply_delay) if change.apply_delay is not None else None
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
        clear_lag(state, node)
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
