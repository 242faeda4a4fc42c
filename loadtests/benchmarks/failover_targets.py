"""The clusters the failover benchmark breaks, built for the run and removed after it, each
behind one small interface: who leads, where uploads go, inject a fault, make it whole again.

* native and patroni: a local 1+2 cluster from ``replikit cluster up`` (``--manager patroni``
  for the latter) in the scratch directory, one ``replikit serve`` instance when uploads are
  measured (health interval 0.5 s, upload rate limit off);
* compose: the compose stack under a project of its own, attached with ``replikit cluster
  attach-compose``, so the same ``replikit cluster`` commands drive it; its two ``app``
  instances behind HAProxy take the uploads;
* compose-ha: the HA variant (3 etcd, 3 Patroni nodes) under a project of its own, driven
  with Docker itself (its agents are out of replikit's reach).

The stacks are removed with their volumes at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loadtests.benchmarks.bench_cluster import free_ports_below_ephemeral
from loadtests.benchmarks.failover_options import MANUAL, Fault, Plan, Step, Target, Via
from loadtests.benchmarks.replikit_cli import replikit, replikit_json, replikit_quietly
from loadtests.experiments.targets import target_for
from replication.cluster import Cluster
from replication.compose.env import ensure_env_file, free_ports, read_env
from replication.compose.ha import HaStack
from replication.compose.stack import ComposeStack, Variant

ROOT = Path(__file__).resolve().parents[2]
PORTS_PER_LOCAL_CLUSTER = 200  # PostgreSQL's 3, and Patroni's etcd and REST ports 100 above


@dataclass(frozen=True)
class Injected:
    """A fault as it happened: whose, when it was issued and when it was done (the node
    refuses connections), and what the failover command that followed reported."""

    old_leader: str
    issued_at: float
    done_at: float
    failover_seconds: float | None = None  # the command's own duration_seconds (native, compose)

    def extra(self) -> dict[str, float | None]:
        timings: dict[str, float | None] = {"fault_command": self.done_at - self.issued_at}
        if self.failover_seconds is not None:
            timings["failover_command"] = self.failover_seconds
        return timings


class FailoverTarget(Protocol):
    @property
    def target(self) -> Target: ...

    def leader(self) -> str:
        """Wait until the cluster is whole (every replica streaming); the leader's name."""

    def service_url(self) -> str:
        """Where uploads go; the service starts on first use."""

    def inject(self, step: Step, leader: str) -> Injected:
        """Break ``leader`` as ``step`` says; on native and compose, fail over at once."""

    def leader_after(self, old: str) -> str:
        """Who leads now (waiting for a new writer where the agents elect one)."""

    def heal(self, fault: Fault, old: str) -> None:
        """Bring ``old`` back as a replica."""


@dataclass
class ManagedCluster:
    """A cluster replikit's own commands drive through its state file: local (native,
    patroni) or the attached compose stack."""

    target: Target
    data_dir: Path
    scratch: Path
    cleanup: contextlib.ExitStack
    _url: str | None = field(default=None, init=False)

    @property
    def data_dir_args(self) -> tuple[str, str]:
        return ("--data-dir", str(self.data_dir))

    def leader(self) -> str:
        cluster = Cluster.open(self.data_dir)
        cluster.wait_streaming()
        cluster.status()  # the state file follows Patroni's leader
        return cluster.state.primary

    def service_url(self) -> str:
        if self._url is None:
            if self.target not in (Target.COMPOSE, Target.COMPOSE_DIRECT):  # migrates itself
                replikit("migrate", *self.data_dir_args)
            service = target_for(Cluster.open(self.data_dir), self.scratch, 1)
            self.cleanup.callback(service.close)
            self._url = service.load_urls[0]
        return self._url

    def inject(self, step: Step, leader: str) -> Injected:
        postgres_only = step.fault is Fault.POSTGRES
        issued = time.monotonic()
        failover_seconds = None
        if step.via is Via.IN_PROCESS:
            # Imported here: only this way of issuing the fault calls replication's functions.
            from replication import cluster as clusters

            clusters.kill(self.data_dir, leader, postgres_only=postgres_only)
            done = time.monotonic()
            if self.target in MANUAL:
                failover_seconds = float(clusters.failover(self.data_dir)["duration_seconds"])
        else:
            extra = ["--postgres-only"] if postgres_only else []
            replikit_json("cluster", "kill", leader, *extra, *self.data_dir_args)
            done = time.monotonic()
            if self.target in MANUAL:
                result = replikit_json("cluster", "failover", *self.data_dir_args)
                failover_seconds = float(result["duration_seconds"])
        return Injected(leader, issued, done, failover_seconds)

    def leader_after(self, old: str) -> str:
        cluster = Cluster.open(self.data_dir)
        cluster.status()  # the state file follows Patroni's leader
        return cluster.state.primary

    def heal(self, fault: Fault, old: str) -> None:
        # A crashed PostgreSQL under a live agent is restarted by the agent itself.
        if fault is not Fault.POSTGRES:
            replikit("cluster", "rejoin", old, *self.data_dir_args)

    def switchover(self) -> None:
        replikit("cluster", "switchover", *self.data_dir_args)


@dataclass
class HaTarget:
    """The compose HA stack, faulted with Docker: ``node`` kills the leader's container,
    ``partition`` cuts it off the peer network while its clients still reach it."""

    ha: HaStack
    url: str
    target: Target = Target.COMPOSE_HA
    aliases: list[str] = field(default_factory=list)

    def leader(self) -> str:
        return self.ha.wait_settled()

    def service_url(self) -> str:
        return self.url

    def inject(self, step: Step, leader: str) -> Injected:
        issued = time.monotonic()
        if step.fault is Fault.PARTITION:
            self.aliases = self.ha.partition(leader)
        else:
            self.ha.crash(leader)
        return Injected(leader, issued, time.monotonic())

    def leader_after(self, old: str) -> str:
        return self.ha.wait_writer(other_than=old)

    def heal(self, fault: Fault, old: str) -> None:
        if fault is Fault.PARTITION:
            self.ha.reconnect(old, self.aliases)
        else:
            self.ha.start(old)
        self.ha.wait_rejoined(old)


@contextlib.contextmanager
def local_cluster(
    target: Target, scratch: Path, plan: Plan, first_port: int | None
) -> Iterator[ManagedCluster]:
    """A local 1+2 cluster on the first free ports from ``first_port`` (None: anywhere below
    the ephemeral range); down and purged at the end."""
    data_dir = scratch / target.value
    d = ("--data-dir", str(data_dir))
    base = free_ports_below_ephemeral(3, first_port)
    manager = ["--manager", "patroni"] if target is Target.PATRONI else []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(replikit_quietly, "cluster", "down", "--purge", *d)
        replikit("cluster", "up", *manager, "--sync", plan.sync.value, "--base-port", str(base), *d)
        yield ManagedCluster(target, data_dir, scratch, cleanup)


def stack_env(scratch: Path, name: str, settings: dict[str, str]) -> Path:
    """An env file for a stack of the benchmark's own: generated passwords, every published
    port free on this host, and ``settings``."""
    env_file = scratch / f"{name}.env"
    ensure_env_file(env_file, ports=free_ports())
    with env_file.open("a") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in settings.items())
    return env_file


@contextlib.contextmanager
def running_stack(stack: ComposeStack, *, build: bool) -> Iterator[ComposeStack]:
    try:
        if build:
            stack.build()  # every layer cached after the first time
        stack.up(timeout=300)
        yield stack
    finally:
        stack.down(volumes=True)


# The app instances straight on the nodes (compose-direct) instead of through their poolers.
DIRECT_ENDPOINTS = {f"REPLIKIT_PG{i}_ENDPOINT": f"pg{i}:5432" for i in range(3)}


@contextlib.contextmanager
def compose_cluster(scratch: Path, plan: Plan, target: Target) -> Iterator[ManagedCluster]:
    env_file = stack_env(
        scratch,
        target.value,
        {
            "REPLIKIT_SYNC_MODE": plan.sync.value,
            "REPLIKIT_UPLOAD_RATE_LIMIT": "0",
            **(DIRECT_ENDPOINTS if target is Target.COMPOSE_DIRECT else {}),
        },
    )
    project = f"rkbench{uuid.uuid4().hex[:6]}"
    data_dir = scratch / target.value
    stack = ComposeStack(root=ROOT, env_file=env_file, project_name=project)
    with running_stack(stack, build=plan.build), contextlib.ExitStack() as cleanup:
        replikit(
            "cluster", "attach-compose", "--env-file", str(env_file), "-p", project,
            "--data-dir", str(data_dir),
        )  # fmt: skip
        yield ManagedCluster(target, data_dir, scratch, cleanup)


@contextlib.contextmanager
def compose_ha(scratch: Path, plan: Plan) -> Iterator[HaTarget]:
    env_file = stack_env(scratch, "compose-ha", {"REPLIKIT_UPLOAD_RATE_LIMIT": "0"})
    stack = ComposeStack(
        root=ROOT,
        env_file=env_file,
        project_name=f"rkbenchha{uuid.uuid4().hex[:6]}",
        variant=Variant.HA,
    )
    with running_stack(stack, build=plan.build):
        yield HaTarget(
            HaStack(stack), f"http://127.0.0.1:{read_env(env_file)['REPLIKIT_HTTP_PORT']}"
        )


def built(
    target: Target, scratch: Path, plan: Plan, first_port: int | None
) -> contextlib.AbstractContextManager[FailoverTarget]:
    """The cluster or stack of ``target``, for a ``with`` block."""
    if target in (Target.COMPOSE, Target.COMPOSE_DIRECT):
        return compose_cluster(scratch, plan, target)
    if target is Target.COMPOSE_HA:
        return compose_ha(scratch, plan)
    return local_cluster(target, scratch, plan, first_port)
