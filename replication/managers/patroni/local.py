"""The Patroni manager of local clusters (``cluster up --manager patroni``): where a Patroni
failover, switchover and rejoin happen.

Patroni owns the primary role: it elects the leader through etcd, promotes, rewinds and
rejoins by itself. The commands here therefore never promote or repoint anything; they ask
Patroni (its REST API, authenticated with the generated credentials) and then check the
outcome over SQL, like every other command. The state file's ``primary`` follows Patroni's
leader so ``cluster env`` and the tools start from the right node; the service does not need
it (its URLs list every node and roles come from the databases).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

from replication.drivers.base import StopMode
from replication.errors import BadInputError, ClusterTimeoutError, ReplikitError
from replication.managers.base import ClusterManager, ConsensusView
from replication.managers.patroni.agents import LocalAgents, Member, ensure_installed
from replication.managers.patroni.config import (
    DEFAULT_LOOP_WAIT,
    DEFAULT_RETRY_TIMEOUT,
    DEFAULT_TTL,
)
from replication.managers.patroni.etcd import ETCD_MEMBERS
from replication.ports import ephemeral_port_floor, find_free_port_range
from replication.probe import NodeReading, NodeStatus, read_all
from replication.steps import StepClock
from replication.topology import ClusterState, NodeSpec, PatroniSettings, SyncMode, save_state

SETTLE_TIMEOUT_SECONDS = 90.0
LEADER_TIMEOUT_SECONDS = 60.0


def new_settings(state: ClusterState, python: Path) -> PatroniSettings:
    """Ports for 3 etcd members (client and peer) and one REST API per node, from the free
    port picker: 100 above the PostgreSQL ports when that is below the kernel's ephemeral
    range, else below it; a generated REST password."""
    count = 2 * ETCD_MEMBERS + len(state.nodes)
    start = state.base_port + 100
    floor = ephemeral_port_floor()
    if start + count >= floor:
        # Above the floor a client connection may take a port before its listener binds.
        start = max(1024, floor - 12000)
    first = find_free_port_range(count, start=start, stop=max(floor, start + count + 1))
    ports = list(range(first, first + count))
    return PatroniSettings(
        scope=f"replikit-{secrets.token_hex(4)}",
        etcd_client_ports=ports[:ETCD_MEMBERS],
        etcd_peer_ports=ports[ETCD_MEMBERS : 2 * ETCD_MEMBERS],
        rest_ports={
            node.name: port
            for node, port in zip(state.nodes, ports[2 * ETCD_MEMBERS :], strict=True)
        },
        rest_password=secrets.token_urlsafe(24),
        ttl=DEFAULT_TTL,
        loop_wait=DEFAULT_LOOP_WAIT,
        retry_timeout=DEFAULT_RETRY_TIMEOUT,
        python=str(python),
    )


def settled(driver: LocalAgents, members: list[Member]) -> list[str]:
    """Names of members not yet where a healthy cluster has them: one leader running, every
    replica streaming and, in synchronous modes, a synchronous standby chosen."""
    names = {m.name for m in members}
    waiting = [n.name for n in driver.state.nodes if n.name not in names]
    leaders = [m for m in members if m.is_leader and m.state == "running"]
    if not leaders:
        waiting.append("leader")
    waiting += [m.name for m in members if not m.is_leader and m.state != "streaming"]
    if driver.state.sync is not SyncMode.OFF and not any(
        m.role in ("sync_standby", "quorum_standby") for m in members
    ):
        waiting.append("synchronous standby")
    return waiting


def wait_settled(
    cluster: LocalPatroniManager, timeout: float = SETTLE_TIMEOUT_SECONDS
) -> list[Member]:
    driver = cluster.agents
    deadline = time.monotonic() + timeout
    while True:
        members = driver.members()
        waiting = settled(driver, members)
        if not waiting:
            follow_leader(cluster, members)
            return members
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"The Patroni cluster did not settle within {timeout:.0f} s (waiting for "
                f"{', '.join(waiting)}); see {cluster.data_dir / 'logs'}."
            )
        time.sleep(0.2)


def follow_leader(cluster: LocalPatroniManager, members: list[Member]) -> None:
    """Record Patroni's leader as the state file's primary (what ``env`` and the tools use)."""
    leader = next((m.name for m in members if m.is_leader), None)
    if leader is not None and leader != cluster.state.primary:
        cluster.state.previous_primary = cluster.state.primary
        cluster.state.primary = leader
        save_state(cluster.data_dir, cluster.state)


def build(cluster: LocalPatroniManager) -> None:
    """A new cluster: etcd is up (prepare); the first agent bootstraps pg0 with
    init-primary.sh, the others clone it with pg_basebackup."""
    driver = cluster.agents
    first, *others = cluster.state.nodes
    driver.start(first)
    for node in others:
        driver.start(node)


def start_all(cluster: LocalPatroniManager) -> None:
    """Start every agent that is not running (a restarted machine, ``cluster up`` again)."""
    driver = cluster.agents
    leader = cluster.state.primary_node
    ordered = [leader, *(n for n in cluster.state.nodes if n is not leader)]
    for node in ordered:
        if not driver.agent_running(node):
            driver.start(node)


def _wait_leader(cluster: LocalPatroniManager, name: str, clock: StepClock) -> None:
    driver = cluster.agents
    deadline = time.monotonic() + LEADER_TIMEOUT_SECONDS
    while True:
        members = driver.members()
        if any(m.name == name and m.is_leader and m.state == "running" for m in members):
            follow_leader(cluster, members)
            clock.step("leader", node=name)
            return
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(f"{name} was not the leader {LEADER_TIMEOUT_SECONDS} s on.")
        time.sleep(0.1)


def _candidate(
    cluster: LocalPatroniManager, members: list[Member], to: str | None, leader: str | None
) -> str:
    if to is not None:
        cluster.state.node(to)
        if to == leader:
            raise BadInputError(f"{to} is already the leader; name a replica with --to.")
        if not any(m.name == to and m.state in ("streaming", "running") for m in members):
            raise BadInputError(f"{to} is not a running replica; it cannot be promoted.")
        return to
    replicas = [m for m in members if not m.is_leader and m.state in ("streaming", "running")]
    if not replicas:
        raise ReplikitError("No replica is running; there is nothing to promote.")
    # A synchronous standby holds every acknowledged commit; then the least lag.
    best = min(
        replicas,
        key=lambda m: (
            m.role not in ("sync_standby", "quorum_standby"),
            m.lag if isinstance(m.lag, int) else 1 << 62,
            m.name,
        ),
    )
    return best.name


def _post(cluster: LocalPatroniManager, action: str, body: dict[str, Any]) -> None:
    """POST to the first agent that answers; Patroni forwards the request through etcd."""
    driver = cluster.agents
    errors: list[str] = []
    for node in cluster.state.nodes:
        if driver.rest_get(node, "/patroni") is None:
            continue
        status, text = driver.rest_post(node, f"/{action}", body)
        if status == 200:
            return
        errors.append(f"{node.name}: {status} {text.strip()}")
        if status != 0:
            break
    raise ReplikitError(f"Patroni refused the {action}: {'; '.join(errors) or 'no agent'}.")


def switchover(cluster: LocalPatroniManager, to: str | None) -> dict[str, Any]:
    driver = cluster.agents
    clock = StepClock("switchover")
    members = driver.members()
    leader = next((m.name for m in members if m.is_leader), None)
    if leader is None:
        raise BadInputError("There is no leader; Patroni elects one by itself (see status).")
    target = _candidate(cluster, members, to, leader)
    _post(cluster, "switchover", {"leader": leader, "candidate": target})
    clock.step("requested", leader=leader, candidate=target)
    _wait_leader(cluster, target, clock)
    wait_settled(cluster)
    clock.step("old_leader_streaming", node=leader)
    return clock.to_json(
        old_primary=leader,
        new_primary=target,
        timeline=_timeline(cluster, target),
        rejoin_method="patroni",
    )


def _timeline(cluster: LocalPatroniManager, name: str) -> int | None:
    """The node's timeline as PostgreSQL reports it (Patroni's /cluster lags a promotion)."""
    reading = asyncio.run(read_all(cluster.state)).get(name)
    return reading.timeline if isinstance(reading, NodeReading) else None


def _writable(cluster: LocalPatroniManager, name: str) -> bool:
    """True when ``name``'s PostgreSQL answers out of recovery: a leader whose lease is still
    in etcd may be a dead machine (the lease outlives it by up to ttl)."""
    reading = asyncio.run(read_all(cluster.state)).get(name)
    return isinstance(reading, NodeReading) and not reading.in_recovery


def failover(cluster: LocalPatroniManager, to: str | None, force: bool) -> dict[str, Any]:
    """Patroni's manual failover: promote ``to`` (or the best replica) now, whether or not
    the leader is alive. A lost leader's lease still has to expire (up to ttl) before any
    member may take over; the failover then names who does."""
    driver = cluster.agents
    clock = StepClock("failover")
    members = driver.members()
    leader = next((m.name for m in members if m.is_leader), None)
    if leader is not None and _writable(cluster, leader) and not force:
        raise BadInputError(
            f"The leader {leader} is alive; use 'replikit cluster switchover' for a planned "
            f"change, or --force to fail over anyway."
        )
    old = leader or cluster.state.primary
    target = _candidate(cluster, members, to, leader)
    try:
        _post(cluster, "failover", {"candidate": target})
        clock.step("requested", candidate=target)
    except ReplikitError as error:
        # Patroni answers 503 when its own 20 s poll ends before a stale lease expires; the
        # election still happens, so wait for it rather than report a failure.
        clock.step("requested", candidate=target, answer=str(error))
    new = _wait_new_leader(cluster, old, clock)
    return clock.to_json(
        old_primary=old,
        new_primary=new,
        timeline=_timeline(cluster, new),
        repointed=[],
        fenced=[],
        seconds_to_writable=clock.since_start(time.monotonic()),
    )


def _wait_new_leader(cluster: LocalPatroniManager, old: str, clock: StepClock) -> str:
    driver = cluster.agents
    deadline = time.monotonic() + LEADER_TIMEOUT_SECONDS
    while True:
        members = driver.members()
        leader = next((m for m in members if m.is_leader and m.state == "running"), None)
        if leader is not None and leader.name != old and _writable(cluster, leader.name):
            follow_leader(cluster, members)
            clock.step("leader", node=leader.name)
            return leader.name
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"No member replaced {old} as the leader within {LEADER_TIMEOUT_SECONDS:.0f} s."
            )
        time.sleep(0.1)


# What a replica's PostgreSQL logs when the leader no longer has the WAL it asks for: its
# slot was invalidated past max_slot_wal_keep_size (Patroni then recreates the slot, empty).
WAL_GONE = b"has already been removed"


def rejoin(cluster: LocalPatroniManager, name: str) -> dict[str, Any]:
    """Start the node's agent (and so its PostgreSQL) again: Patroni rewinds a former leader
    with pg_rewind, or re-clones it, and makes it follow the leader. A member that cannot
    stream because the leader removed the WAL it needs is emptied and started again, and its
    agent clones it afresh from the leader."""
    driver = cluster.agents
    node = cluster.state.node(name)
    members = driver.members()
    leader = next((m.name for m in members if m.is_leader and m.state == "running"), None)
    if leader is None:
        raise ReplikitError("There is no running leader yet; wait for Patroni to elect one.")
    if leader == name:
        raise BadInputError(f"{name} is the leader; rejoin makes a stopped node follow it.")
    clock = StepClock("rejoin")
    log = cluster.data_dir / "logs" / f"patroni-{name}.log"
    log_offset = log.stat().st_size if log.exists() else 0
    if not driver.agent_running(node):
        # A PostgreSQL left running without its agent is stopped first, so the agent decides
        # how it comes back (a former leader must be rewound before it runs again).
        driver.crash_postgres(node)
    driver.start(node)
    clock.step("agent_started", node=name)
    reclone_reason: str | None = None
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while not any(
        m.name == name and m.state == "streaming" and not m.is_leader for m in driver.members()
    ):
        if reclone_reason is None and _logged(log, log_offset, WAL_GONE):
            reclone_reason = (
                f"{leader} no longer has the WAL {name} needs (its slot was invalidated: it "
                f"fell more than max_slot_wal_keep_size behind)"
            )
            clock.step("wal_gone", node=name)
            driver.stop(node)
            driver.empty_data_dir(node)
            driver.start(node)
            clock.step("agent_restarted_empty", node=name)
            deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"{name} was not streaming {SETTLE_TIMEOUT_SECONDS:.0f} s after its agent "
                f"started; see {cluster.data_dir / 'logs' / f'patroni-{name}.log'}."
            )
        time.sleep(0.2)
    clock.step("streaming", node=name)
    if reclone_reason is not None:
        method = "recloned"
    else:
        method = "rewound" if _logged(log, log_offset, b"pg_rewind") else "unchanged"
    return clock.to_json(node=name, primary=leader, method=method, reclone_reason=reclone_reason)


def _logged(log: Path, offset: int, text: bytes) -> bool:
    """True when the agent's log (its PostgreSQL's too) holds ``text`` after ``offset``."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return text in handle.read()
    except OSError:
        return False


class LocalPatroniManager(ClusterManager):
    """Patroni agents that replikit runs on this machine (``cluster up --manager patroni``):
    replikit starts and stops them and asks them, over their REST API, to switch over, fail
    over or rejoin; they decide and act."""

    promotes_by_itself = True

    def __init__(self, *, data_dir: Path, state: ClusterState, agents: LocalAgents) -> None:
        super().__init__(data_dir=data_dir, state=state, driver=agents)
        self.agents = agents

    @classmethod
    def configure_new(cls, state: ClusterState) -> None:
        """Ports for etcd and the agents' REST APIs and the REST password, after installing
        etcd and Patroni when they are missing."""
        state.patroni = new_settings(state, ensure_installed())

    def build(self) -> None:
        build(self)

    def start_all(self) -> list[str]:
        start_all(self)
        return []

    def stop_all(self, mode: StopMode = StopMode.FAST) -> None:
        self.agents.stop_all(self.agents.leader() or self.state.primary)

    def discard(self) -> None:
        self.agents.discard()

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT_SECONDS) -> list[NodeStatus]:
        wait_settled(self, timeout)
        return self.status()

    def follow_primary(self) -> None:
        follow_leader(self, self.agents.members())

    def status(self) -> list[NodeStatus]:
        """The SQL view of every node beside Patroni's: each member's role and state."""
        found = self.agents.members()
        follow_leader(self, found)
        members = {member.name: member for member in found}
        rows = self.node_rows()
        for row in rows:
            member = members.get(row.name)
            row.patroni_role = member.role if member else "absent"
            row.patroni_state = member.state if member else "absent"
        return rows

    def consensus_view(self) -> ConsensusView | None:
        return self.agents.etcd.view()

    def stop_node(self, node: NodeSpec, mode: StopMode, *, postgres_only: bool = False) -> None:
        """A lost machine (agent and PostgreSQL, the default) or, with ``postgres_only``, a
        PostgreSQL crash under a live agent, which the agent sees and handles."""
        if not postgres_only:
            self.agents.stop(node, mode)
            return
        if mode is not StopMode.IMMEDIATE:
            raise BadInputError("--postgres-only is a crash; it takes no --mode fast.")
        self.agents.crash_postgres(node)

    def failover(self, *, to: str | None = None, force: bool = False) -> dict[str, Any]:
        return failover(self, to, force)

    def switchover(self, *, to: str | None = None) -> dict[str, Any]:
        return switchover(self, to)

    def rejoin(self, name: str) -> dict[str, Any]:
        return rejoin(self, name)
