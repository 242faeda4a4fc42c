"""Routing decisions with fake node states: no database is touched."""

from __future__ import annotations

import errno
from collections import Counter
from typing import Any

import asyncpg
import pytest

from service.errors import StorageFullError
from service.routing.consistency import Consistency, RequestRouting
from service.routing.metrics import ServiceMetrics
from service.routing.nodes import Probe, Role
from service.routing.policies import LeastLag, RandomChoice, RoundRobin, Weighted
from service.routing.router import Router, is_node_failure
from service.settings import ReadPolicy, Settings

URL = "postgresql+asyncpg://app:pw@127.0.0.1:{port}/replikit"


def make_router(**overrides: Any) -> Router:
    settings = Settings(
        _env_file=None,
        primary_url=URL.format(port=7000),
        replica_urls=[URL.format(port=7001), URL.format(port=7002)],
        **overrides,
    )
    router = Router(settings, ServiceMetrics())
    for index, node in enumerate(router.nodes):
        node.probe = Probe(
            in_recovery=index > 0,
            timeline=1,
            current_lsn=1000,
            replay_lsn=1000,
            replay_paused=False,
            cluster_name=f"pg{index}",
            receive_lsn=None if index == 0 else 1000,
        )
        node.role = Role.PRIMARY if index == 0 else Role.REPLICA
        node.lag_bytes, node.lag_seconds = (None, None) if index == 0 else (0, 0.0)
    router.monitor.writer = router.nodes[0]
    return router


def routing(mode: Consistency = Consistency.EVENTUAL, token: int | None = None) -> RequestRouting:
    return RequestRouting(consistency=mode, token=token)


def names(router: Router, request: RequestRouting, count: int = 100) -> Counter[str]:
    picks: Counter[str] = Counter()
    for _ in range(count):
        node, _reason = router.choose_reader(request, set())
        picks[node.name if node else "none"] += 1
    return picks


def test_round_robin_is_even() -> None:
    assert names(make_router(), routing(), 1000) == {"pg1": 500, "pg2": 500}


def test_weighted_follows_the_weights_within_tolerance() -> None:
    picks = names(
        make_router(read_policy=ReadPolicy.WEIGHTED, replica_weights=[3, 1]), routing(), 8000
    )
    assert picks["pg1"] / 8000 == pytest.approx(0.75, abs=0.03)


def test_least_lag_prefers_the_fresher_replica_and_shares_ties() -> None:
    router = make_router(read_policy=ReadPolicy.LEAST_LAG)
    router.nodes[1].lag_bytes = 5000
    assert names(router, routing()) == {"pg2": 100}
    router.nodes[1].lag_bytes = 0
    assert names(router, routing()) == {"pg1": 50, "pg2": 50}


def test_bounded_skips_replicas_over_either_limit() -> None:
    router = make_router(max_lag_seconds=1.0, max_lag_bytes=10_000)
    router.nodes[1].lag_seconds = 1.5
    assert names(router, routing(Consistency.BOUNDED)) == {"pg2": 100}
    router.nodes[2].lag_bytes = 20_000
    node, reason = router.choose_reader(routing(Consistency.BOUNDED), set())
    assert (node, reason) == (None, "replicas_too_stale")
    # Eventual does not care about lag.
    assert names(router, routing()) == {"pg1": 50, "pg2": 50}


def test_read_your_writes_prefers_replicas_that_replayed_the_token() -> None:
    router = make_router()
    router.nodes[2].probe.replay_lsn = 5000  # type: ignore[union-attr]
    assert names(router, routing(Consistency.READ_YOUR_WRITES, token=4000)) == {"pg2": 100}
    # Without a token it is eventual.
    assert names(router, routing(Consistency.READ_YOUR_WRITES)) == {"pg1": 50, "pg2": 50}


def test_monotonic_prefers_replicas_known_to_be_past_the_token() -> None:
    router = make_router()
    router.nodes[2].probe.replay_lsn = 5000  # type: ignore[union-attr]
    assert names(router, routing(Consistency.MONOTONIC, token=4000)) == {"pg2": 100}
    # A read on pg1 measured a position past the token since the last probe: pg1 counts too.
    router.nodes[1].note_replayed(4500)
    assert names(router, routing(Consistency.MONOTONIC, token=4000)) == {"pg1": 50, "pg2": 50}
    # A lower measure never lowers what is known.
    router.nodes[1].note_replayed(10)
    assert router.nodes[1].known_replayed == 4500


def test_monotonic_skips_the_wait_when_every_replica_lags_longer_than_it() -> None:
    router = make_router(ryw_wait=0.2)
    for replica in router.nodes[1:]:
        replica.lag_seconds = 1.0
    chosen, reason = router.choose_reader(routing(Consistency.MONOTONIC, token=4000), set())
    assert (chosen, reason) == (None, "ryw_lagging")
    # Eventual does not care, and a token-less monotonic read has nothing to wait for.
    assert router.choose_reader(routing(Consistency.EVENTUAL, token=4000), set())[0] is not None
    assert router.choose_reader(routing(Consistency.MONOTONIC), set())[0] is not None


def test_only_monotonic_reads_report_what_they_saw() -> None:
    assert [mode.value for mode in Consistency if mode.reports_reads] == ["monotonic"]
    assert [mode.value for mode in Consistency if mode.honours_token] == [
        "read_your_writes",
        "monotonic",
    ]
    read = routing(Consistency.MONOTONIC, token=3000)
    handed_back = []
    for position in (None, 2000, None, 7000, 6000):
        read.saw(position)
        handed_back.append(read.read_token)
    # Nothing measured: nothing to hand back; then never below the client's own token, and
    # never lowered by a later, lower measure.
    assert handed_back == [None, 3000, 3000, 7000, 7000]
    assert routing(Consistency.MONOTONIC).read_token is None


async def test_a_role_change_forgets_measured_positions() -> None:
    router = make_router()
    replica = router.nodes[1]
    replica.note_replayed(9000)
    router.monitor._set_role(replica, Role.DOWN)  # also disposes of the (unused) pool
    await router.monitor.stop()
    assert replica.observed_replay_lsn is None
    assert replica.known_replayed == 1000


def test_a_node_in_recovery_streams_only_when_it_received_what_it_replayed() -> None:
    def probe(receive: int | None, replay: int | None) -> Probe:
        return Probe(True, 1, None, replay, False, "pg1", receive_lsn=receive)

    assert not probe(None, 5000).has_streamed  # never asked an upstream for WAL
    # Asked for the segment after its own WAL (0/5000000) and was refused: the receive
    # position is that segment's start, below what it replayed of its own.
    assert not probe(0x5000000, 0x50000A0).has_streamed
    assert probe(0x50000A0, 0x50000A0).has_streamed  # caught up
    assert probe(0x5100000, 0x50000A0).has_streamed  # replay behind what it received
    assert probe(0x5000000, None).has_streamed
    # A segment switch replayed whose rest the upstream never sent (a primary that PANICked,
    # unable to create the next segment on a full disk): replay at the next segment's start,
    # receive at the switch record's end. Everything replayed came from the upstream.
    assert probe(0x60000C8, 0x7000000).has_streamed
    # ...but not one byte further than that segment's end, nor with another segment size.
    assert not probe(0x60000C8, 0x70000A0).has_streamed
    small = Probe(True, 1, None, 0x7000000, False, "pg1", receive_lsn=0x60000C8)
    small.wal_segment_size = 1024 * 1024
    assert not small.has_streamed


async def test_a_diverged_former_primary_is_detached_and_never_passes_a_token() -> None:
    """Issue 25: after a Patroni failover the crashed leader comes back in recovery, replays
    its own WAL past the fork (0/50000A0, on the timeline the cluster left) and asks the new
    leader for more, which refuses. Its replay position is above every token the new leader
    hands out (0/44FBA78), so as a replica it served read-your-writes and monotonic reads at
    once, without the rows written since the failover."""
    router = make_router(ryw_wait=0.2)
    writer, former, follower = router.nodes
    for node, (receive, replay) in (
        (former, (0x5000000, 0x50000A0)),
        (follower, (0x44FBA78, 0x44FBA78)),
    ):
        node.probe.receive_lsn, node.probe.replay_lsn = receive, replay  # type: ignore[union-attr]
    writer.probe.timeline = 2  # type: ignore[union-attr]
    writer.probe.current_lsn = 0x44FBA78  # type: ignore[union-attr]
    router.monitor._assign_roles(0.0)
    await router.monitor.stop()
    assert [n.role for n in router.nodes] == [Role.PRIMARY, Role.DETACHED, Role.REPLICA]
    for mode in (Consistency.READ_YOUR_WRITES, Consistency.MONOTONIC):
        assert names(router, routing(mode, token=0x44FBA78)) == {"pg2": 100}
    # With the follower gone too, a read goes to the writer, never to the former primary.
    follower.suspect = True
    request = routing(Consistency.READ_YOUR_WRITES, token=0x44FBA78)
    assert router.choose_reader(request, set()) == (None, "no_healthy_replica")


def test_strong_after_write_and_policy_primary_need_the_writer() -> None:
    router = make_router()
    assert router.needs_writer(routing(Consistency.STRONG))
    after_write = routing()
    after_write.wrote = True
    assert router.needs_writer(after_write)
    assert not router.needs_writer(routing())
    assert make_router(read_policy=ReadPolicy.PRIMARY).needs_writer(routing())


def test_unhealthy_suspect_and_stale_primary_nodes_are_never_candidates() -> None:
    router = make_router()
    router.nodes[1].last_error = "ConnectionRefusedError"
    router.nodes[2].suspect = True
    assert router.choose_reader(routing(), set()) == (None, "no_healthy_replica")
    router.nodes[1].last_error = None
    router.nodes[1].role = Role.STALE_PRIMARY
    assert router.choose_reader(routing(), set()) == (None, "no_healthy_replica")


def test_excluded_nodes_are_skipped() -> None:
    router = make_router()
    node, _ = router.choose_reader(routing(), {id(router.nodes[1])})
    assert node is router.nodes[2]


def test_view_explains_rotation() -> None:
    router = make_router()
    router.nodes[1].last_error = "boom"
    view = router.view()
    assert view["writer"] == "pg0"
    by_name = {node["name"]: node for node in view["nodes"]}
    assert by_name["pg0"]["why_not"] == "writer"
    assert (by_name["pg1"]["in_rotation"], by_name["pg1"]["why_not"]) == (False, "unhealthy")
    assert by_name["pg2"]["in_rotation"] is True


def test_node_failures_are_told_apart_from_request_errors() -> None:
    class ReadOnly(Exception):
        sqlstate = "25006"

    class Unique(Exception):
        sqlstate = "23505"

    assert is_node_failure(ConnectionRefusedError())
    # A timeout is what a saturated service sees from a healthy node: not a failure
    # (service/routing/failures.py; issue 25).
    assert not is_node_failure(TimeoutError())
    assert is_node_failure(ReadOnly())
    assert not is_node_failure(Unique())
    assert not is_node_failure(ValueError())


def test_simple_policies_cover_every_candidate() -> None:
    router = make_router()
    candidates = router.nodes[1:]
    for chooser in (RoundRobin(), RandomChoice(), Weighted(), LeastLag()):
        picked: set[str] = {chooser.choose(candidates).name for _ in range(200)}
        assert picked == {"pg1", "pg2"}


async def test_a_full_disk_on_a_write_is_storage_full_and_never_marks_the_writer() -> None:
    router = make_router(storage_full_hold=30.0)
    writer = router.nodes[0]
    with pytest.raises(StorageFullError) as refused:
        async with router.write_session(routing()):
            raise asyncpg.exceptions.DiskFullError('could not extend file "base/1/2"')
    assert refused.value.status_code == 503
    assert refused.value.details == {"node": "pg0", "reason": "disk_full", "where": "database"}
    assert refused.value.headers == {"Retry-After": "30"}
    # The node still serves reads and stays the writer: nothing for the monitor to do.
    assert not writer.suspect
    assert router.writer is writer
    assert router.view()["nodes"][0]["storage_full"] is True
    # Within the hold, the next upload is refused before its body is read ...
    with pytest.raises(StorageFullError) as early:
        router.require_writer_with_room()
    assert 1 <= int(early.value.headers["Retry-After"]) <= 30
    # ... and after it, one tries the database again (space may have been freed).
    writer.full_until = 0.0
    assert router.require_writer_with_room() is writer


async def test_a_full_blob_directory_is_named_and_a_hold_of_zero_holds_nothing() -> None:
    router = make_router(storage_full_hold=0.0)
    with pytest.raises(StorageFullError) as refused:
        async with router.write_session(routing()):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert refused.value.details["where"] == "blob_directory"
    assert refused.value.message.startswith("The blob directory has no disk space left")
    assert not router.nodes[0].suspect
    assert router.require_writer_with_room() is router.nodes[0]
