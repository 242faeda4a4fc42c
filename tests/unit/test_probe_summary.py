"""Status rows from fake node readings: role discovery and lag arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from replication.probe import NodeReading, SlotReading, choose_primary, summarise
from replication.topology import ClusterState, NodeSpec, Passwords, SyncMode

Readings = dict[str, NodeReading | BaseException]

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_state() -> ClusterState:
    return ClusterState(
        pg_bin="/bin",
        pg_major=15,
        sync=SyncMode.OFF,
        base_port=7000,
        nodes=[NodeSpec(name=f"pg{i}", port=7000 + i) for i in range(3)],
        primary="pg0",
        passwords=Passwords.generate(),
    )


def primary(lsn: int, timeline: int = 1, **senders: str) -> NodeReading:
    reading = NodeReading(
        in_recovery=False,
        current_lsn=lsn,
        replay_lsn=None,
        replay_timestamp=None,
        now=NOW,
        timeline=timeline,
        receiver_status=None,
        pause_state=None,
        primary_slot_name="",
    )
    for name, state in senders.items():
        reading.replication[name] = {"state": state, "sync_state": "async", "slot_name": name}
    return reading


def replica(replay: int, replayed_at: datetime | None, paused: bool = False) -> NodeReading:
    return NodeReading(
        in_recovery=True,
        current_lsn=None,
        replay_lsn=replay,
        replay_timestamp=replayed_at,
        now=NOW,
        timeline=1,
        receiver_status="streaming",
        pause_state="paused" if paused else "not paused",
        primary_slot_name="pgX",
    )


def test_fully_replayed_replica_has_zero_lag_however_old_its_last_commit() -> None:
    readings: Readings = {
        "pg0": primary(1000, pg1="streaming", pg2="streaming"),
        "pg1": replica(1000, NOW - timedelta(hours=3)),
        "pg2": replica(1000, None),
    }
    rows = summarise(make_state(), readings)
    assert [(r.lag_bytes, r.lag_seconds) for r in rows[1:]] == [(0, 0.0), (0, 0.0)]


def test_behind_replica_lag_is_age_of_its_last_replayed_commit() -> None:
    readings: Readings = {
        "pg0": primary(5000, pg1="streaming"),
        "pg1": replica(1000, NOW - timedelta(seconds=1.5), paused=True),
        "pg2": ConnectionRefusedError("refused"),
    }
    rows = summarise(make_state(), readings)
    assert rows[1].lag_bytes == 4000
    assert rows[1].lag_seconds == 1.5
    assert rows[1].replay_paused is True
    assert rows[1].slot == "pg1"
    assert (rows[2].role, rows[2].state) == ("down", "unreachable")


def test_replica_unknown_to_the_primary_shows_its_receiver_state() -> None:
    readings: Readings = {"pg0": primary(10), "pg1": replica(10, None), "pg2": replica(10, None)}
    rows = summarise(make_state(), readings)
    assert rows[1].state == "streaming"
    assert rows[1].sync_state is None
    assert rows[1].slot == "pgX"


def test_primary_is_the_writable_node_on_the_highest_timeline() -> None:
    readings: Readings = {
        "pg0": primary(10, timeline=1),
        "pg1": primary(10, timeline=2),
        "pg2": replica(10, None),
    }
    assert choose_primary(readings) == "pg1"
    rows = summarise(make_state(), readings)
    assert [(r.role, r.state) for r in rows[:2]] == [
        ("primary", "stale primary"),
        ("primary", "writable"),
    ]


def test_no_primary_when_every_node_is_down_or_in_recovery() -> None:
    readings: Readings = {"pg0": OSError("down"), "pg1": replica(1, None), "pg2": replica(1, None)}
    assert choose_primary(readings) is None
    rows = summarise(make_state(), readings)
    assert rows[1].lag_bytes is None
    assert rows[1].state == "streaming"


def test_each_replica_row_carries_its_slot_retention_even_when_the_replica_is_down() -> None:
    pg0 = primary(10, pg1="streaming")
    pg0.slots = {
        "pg1": SlotReading(
            active=True, wal_status="reserved", safe_wal_size=4096, retained_bytes=512
        ),
        "pg2": SlotReading(
            active=False, wal_status="lost", safe_wal_size=None, retained_bytes=None
        ),
    }
    readings: Readings = {"pg0": pg0, "pg1": replica(10, None), "pg2": OSError("down")}
    rows = summarise(make_state(), readings)
    assert rows[0].slot_wal_status is None  # the primary has no slot of its own
    assert (rows[1].slot, rows[1].slot_wal_status, rows[1].slot_safe_wal_size) == (
        "pg1",
        "reserved",
        4096,
    )
    assert rows[1].slot_retained_bytes == 512
    assert (rows[2].state, rows[2].slot, rows[2].slot_wal_status) == ("unreachable", "pg2", "lost")
    assert rows[2].slot_safe_wal_size is None
    assert pg0.slots["pg2"].lost
    assert not pg0.slots["pg1"].lost


def test_a_replica_without_a_slot_on_the_primary_shows_no_retention() -> None:
    readings: Readings = {"pg0": primary(10), "pg1": replica(10, None), "pg2": replica(10, None)}
    rows = summarise(make_state(), readings)
    assert [(r.slot_wal_status, r.slot_safe_wal_size) for r in rows] == [(None, None)] * 3
