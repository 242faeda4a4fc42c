"""The HA variant on three hosts, run the way docs/operations.md ("Compose HA variant on three
hosts") tells a user to: one etcd member, one Patroni node, app instances and a load balancer
per host, the same .env everywhere but for REPLIKIT_HOST_ADDRESS, and on each host only the
commands of that host. The hosts are network namespaces with Docker engines of their own
(tests/compose/virtual_hosts.py): traffic between nodes crosses a real (virtual) network.

Two faults, each on the host of the leader of the moment, with uploads running through another
host's load balancer: the host is cut off (every packet dropped), then lost (power cut) and
booted again. The checks of the one-host HA tests hold here too: a new leader with no command,
never two writers (every node sampled through its own engine, which a cut does not reach), no
acknowledged upload lost, and the faulted host back as a streaming replica.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from loadtests.benchmarks.acked_uploads import AckedUploads, running
from replication.compose.stack import ComposeStack, Variant
from replication.managers.patroni.config import CONTAINER_AGENT_CONFIG, DEFAULT_TTL
from tests.compose.stacks import ROOT, write_env
from tests.compose.virtual_hosts import VirtualHost, VirtualHosts, virtual_hosts

pytestmark = [pytest.mark.compose, pytest.mark.destructive]

HOSTS_FILE = ROOT / "deploy" / "compose" / "ha-hosts.yml"
NODES = ("pg0", "pg1", "pg2")
SAMPLE_INTERVAL = 0.5
ELECTION_SECONDS = DEFAULT_TTL + 30


@dataclass
class HostShare:
    """One host of the layout: its engine and the compose project a user runs there."""

    index: int
    host: VirtualHost
    stack: ComposeStack
    names: dict[str, str] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return f"pg{self.index}"

    @property
    def own_services(self) -> tuple[str, str, str]:
        """What this host runs of the cluster: its etcd member, its node and the node's pooler."""
        return (f"etcd{self.index}", self.node, f"pooler{self.index}")

    def compose_up(self, *services: str) -> None:
        """``docker compose -p … up -d --no-deps SERVICES`` on this host, as documented."""
        self.stack.run("up", "-d", "--no-deps", "--no-build", *services, what=f"up {services}")

    def container(self, service: str) -> str:
        """The service's container on this host (started again, never recreated, after a
        fault, so its name is looked up once)."""
        if service not in self.names:
            names = [c.name for c in self.stack.containers() if c.service == service]
            assert names, f"{self.host.name} runs no {service}"
            self.names[service] = names[0]
        return self.names[service]

    def in_recovery(self) -> bool | None:
        """The node's answer over its own socket, through its own engine: a cut does not
        hide it. None while it does not answer (stopped, shutting down, its host lost)."""
        if self.host.engine_pid() is None:
            return None
        try:
            result = subprocess.run(
                ["docker", "-H", self.host.docker_host, "exec", self.container(self.node), "psql",
                 "-h", "/var/run/postgresql", "-U", "postgres", "-d", "postgres", "-Atc",
                 "SELECT pg_is_in_recovery()"],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
        answer = result.stdout.strip()
        return {"t": True, "f": False}.get(answer) if result.returncode == 0 else None

    def members(self) -> dict[str, dict[str, object]]:
        """Patroni's member list as this host's agent sees it (name -> member)."""
        output = self.host.docker(
            "exec", self.container(self.node), "patronictl", "-c", CONTAINER_AGENT_CONFIG,
            "list", "--format", "json", timeout=20,
        )  # fmt: skip
        return {str(m["Member"]): m for m in json.loads(output or "[]")}


@dataclass
class Layout:
    """The three hosts' shares of one HA cluster."""

    fleet: VirtualHosts
    shares: list[HostShare]
    http_port: int

    def url(self, share: HostShare) -> str:
        return f"http://{share.host.address}:{self.http_port}"

    def share_of(self, node: str) -> HostShare:
        return self.shares[NODES.index(node)]

    def writers(self) -> list[str]:
        with ThreadPoolExecutor(len(self.shares)) as pool:
            answers = list(pool.map(HostShare.in_recovery, self.shares))
        pairs = zip(self.shares, answers, strict=True)
        return [share.node for share, answer in pairs if answer is False]

    def settled(self, *, via: list[HostShare] | None = None) -> str | None:
        """The leader once every member streams from it (one of them synchronously)."""
        for share in via or self.shares:
            with contextlib.suppress(Exception):
                members = share.members()
                leaders = [n for n, m in members.items() if m.get("Role") == "Leader"]
                others = [m for n, m in members.items() if n not in leaders]
                if (
                    len(members) == len(NODES)
                    and len(leaders) == 1
                    and all(m.get("State") == "streaming" for m in others)
                    and any(m.get("Role") == "Sync Standby" for m in others)
                ):
                    return leaders[0]
        return None

    def wait_settled(self, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        while (leader := self.settled()) is None:
            assert time.monotonic() < deadline, f"not whole within {timeout:.0f} s"
            time.sleep(1)
        return leader

    def wait_writer(self, *, other_than: str, timeout: float = ELECTION_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = [node for node in self.writers() if node != other_than]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no node replaced {other_than} in {timeout} s"
            time.sleep(0.2)


@dataclass
class WriterSamples:
    """Which nodes answered out of recovery, every :data:`SAMPLE_INTERVAL`, until stopped."""

    layout: Layout
    samples: list[tuple[float, list[str]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.layout.writers()))
            time.sleep(SAMPLE_INTERVAL)

    def doubles(self, since: float) -> list[tuple[float, list[str]]]:
        return [(round(t - since, 1), w) for t, w in self.samples if len(w) > 1]

    def first(self, since: float, node: str, *, writer: bool) -> float:
        for moment, writers in self.samples:
            if moment > since and (node in writers) == writer:
                return moment - since
        raise AssertionError(f"{node} was never seen {'as' if writer else 'leaving'} writer")


@contextlib.contextmanager
def sampling(layout: Layout) -> Iterator[WriterSamples]:
    samples = WriterSamples(layout)
    thread = threading.Thread(target=samples.run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        samples.stop.set()
        thread.join(30)


LAYOUT_SERVICES = ("etcd0", "etcd1", "etcd2", *NODES, "pooler0", "migrate", "app", "lb")


def image_names(stack: ComposeStack) -> list[str]:
    """The images the layout runs, as compose resolves them from the files and .env."""
    services = yaml.safe_load(stack.run("config", what="reading the layout").stdout)["services"]
    return sorted({services[name]["image"] for name in LAYOUT_SERVICES})


@pytest.fixture(scope="module")
def layout(ha_images: None) -> Iterator[Layout]:
    scratch = Path(tempfile.mkdtemp(prefix="replikit-three-hosts-"))
    try:
        with virtual_hosts(3) as fleet:
            yield bring_up(fleet, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def bring_up(fleet: VirtualHosts, scratch: Path) -> Layout:
    """docs/operations.md's recipe: the same .env on every host plus the addresses, then each
    host's own commands."""
    addresses = [host.address for host in fleet.hosts]
    env_file = scratch / ".env"
    network = ".".join(addresses[0].split(".")[:3]) + ".0/24"
    write_env(
        env_file,
        **{f"REPLIKIT_ETCD{i}_ADDRESS": a for i, a in enumerate(addresses)},
        **{f"REPLIKIT_PG{i}_ADDRESS": a for i, a in enumerate(addresses)},
        REPLIKIT_HBA_ADDRESS=f"samenet,127.0.0.1/32,{network}",
        REPLIKIT_UPLOAD_RATE_LIMIT="0",
    )
    project = f"rkt3hosts{secrets.token_hex(3)}"
    shares = [
        HostShare(index=index, host=host, stack=host_stack(env_file, project, host))
        for index, host in enumerate(fleet.hosts)
    ]
    fleet.load_images(image_names(shares[0].stack))
    for share in shares:
        share.compose_up(*share.own_services)
    layout = Layout(fleet=fleet, shares=shares, http_port=int(read_port(env_file)))
    layout.wait_settled()
    shares[0].compose_up("migrate")
    shares[0].stack.wait_ready(services=["migrate"], timeout=180)
    for share in shares:
        share.compose_up("app", "lb")
    for share in shares:
        share.stack.wait_ready(services=["app", "lb"], timeout=180)
    return layout


def host_stack(env_file: Path, project: str, host: VirtualHost) -> ComposeStack:
    """The compose calls of one host: its engine, its address, the three files."""
    return ComposeStack(
        root=ROOT,
        env_file=env_file,
        project_name=project,
        variant=Variant.HA,
        overlays=(HOSTS_FILE,),
        environment={"DOCKER_HOST": host.docker_host, "REPLIKIT_HOST_ADDRESS": host.address},
    )


def read_port(env_file: Path) -> str:
    for line in env_file.read_text().splitlines():
        if line.startswith("REPLIKIT_HTTP_PORT="):
            return line.split("=", 1)[1]
    raise AssertionError("the .env has no REPLIKIT_HTTP_PORT")


def client_share(layout: Layout, leader: str) -> HostShare:
    """The host whose load balancer the clients use: not the one about to fail."""
    return next(share for share in layout.shares if share.node != leader)


@dataclass
class FaultRun:
    """One fault on the leader's host under uploads: who led, who took over, and when."""

    leader: str
    faulted: HostShare
    url: str
    samples: WriterSamples
    stream: AckedUploads
    at: float
    new: str = ""
    window: float = 0.0


@contextlib.contextmanager
def fault_on_the_leaders_host(
    layout: Layout, fault: Callable[[VirtualHost], None]
) -> Iterator[FaultRun]:
    """Uploads through another host's load balancer, ``fault`` on the leader's host, then
    the ``with`` block once a new writer has taken an upload (sampling still running)."""
    leader = layout.wait_settled()
    faulted = layout.share_of(leader)
    url = layout.url(client_share(layout, leader))
    with sampling(layout) as samples, running(AckedUploads(url)) as stream:
        time.sleep(2)
        fault(faulted.host)
        run = FaultRun(leader, faulted, url, samples, stream, at=time.monotonic())
        run.new = layout.wait_writer(other_than=leader)
        run.window = stream.first_ack_sent_after(run.at, within=ELECTION_SECONDS)
        time.sleep(1)
        yield run
    assert samples.doubles(run.at) == [], "two writers at once"
    assert stream.acknowledged
    assert stream.missing(url) == [], f"of {len(stream.acknowledged)} acknowledged"


def test_the_leaders_host_cut_off_is_replaced_with_never_two_writers(layout: Layout) -> None:
    with fault_on_the_leaders_host(layout, VirtualHost.cut) as run:
        run.faulted.host.heal()
        layout.wait_settled()
    demoted = run.samples.first(run.at, run.leader, writer=False)
    promoted = run.samples.first(run.at, run.new, writer=True)
    print(
        f"three hosts: {run.leader}'s host cut off -> {run.new}: old leader stopped writing "
        f"{demoted:.1f} s, new writer {promoted:.1f} s, first acknowledged upload "
        f"{run.window:.2f} s on"
    )
    assert demoted < promoted
    assert layout.settled() == run.new


def test_the_leaders_host_lost_is_replaced_and_rejoins_when_booted(layout: Layout) -> None:
    with fault_on_the_leaders_host(layout, VirtualHost.lose) as run:
        pass
    print(
        f"three hosts: {run.leader}'s host lost -> {run.new}: new writer "
        f"{run.samples.first(run.at, run.new, writer=True):.1f} s, first acknowledged upload "
        f"{run.window:.2f} s on"
    )
    # Booted again, the host's own commands bring its member back as a replica.
    faulted = run.faulted
    faulted.host.restore()
    faulted.compose_up(*faulted.own_services)
    faulted.compose_up("app", "lb")
    faulted.stack.wait_ready(services=["app", "lb"], timeout=180)
    survivors = [share for share in layout.shares if share is not faulted]
    assert layout.wait_settled() == run.new
    assert layout.settled(via=survivors) == run.new
    assert run.stream.missing(layout.url(faulted)) == []
