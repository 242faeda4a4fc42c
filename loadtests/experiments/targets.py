"""Where an experiment sends its load and reads the router's view: a service target.

A local cluster has no service in front of it, so the experiment starts its own
``replikit serve`` instances and talks to each directly (the router's view on each one's
operations listener). A compose stack already runs its
instances behind a load balancer: the load goes to the public URL, and the router's view
(``/cluster``, ``/metrics``) comes from the load balancer's admin URL, since the public one does
not serve it. Everything else in an experiment is the same for both.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from replication.cluster import Cluster
from replication.compose.attach import recorded_stack_value
from replication.errors import BadInputError
from replication.ports import find_free_port_range
from replication.serving.process import ServiceRecord, start_service, stop_service
from replication.serving.urls import service_urls
from replication.topology import ServiceEndpoints
from service.routing.metrics import INSTANCE_METRIC

# Reading /metrics through a load balancer reaches one instance per request. After this many
# answers in a row from instances already seen, every instance has been seen (round robin
# reaches each of N instances within N requests; the margin covers interleaved traffic).
METRICS_SETTLED_AFTER = 6
METRICS_MAX_REQUESTS = 40
RATE_LIMIT_VARIABLE = "REPLIKIT_UPLOAD_RATE_LIMIT"


class ServiceTarget(Protocol):
    @property
    def kind(self) -> str:
        """``local`` (instances started here) or ``compose`` (a deployed load balancer)."""

    @property
    def load_urls(self) -> list[str]:
        """Base URLs the Locust load is spread over, one Locust process each."""

    @property
    def view_url(self) -> str:
        """Base URL whose ``/cluster`` is the router's view of the nodes."""

    def metrics_texts(self) -> list[str]:
        """The ``/metrics`` exposition of every service instance, one text each."""

    def close(self) -> None:
        """Stop whatever the target started."""


@dataclass
class LocalInstances:
    """Service instances started for the experiment, each reached directly."""

    records: list[tuple[Path, ServiceRecord]] = field(default_factory=list)
    kind: str = "local"
    env: dict[str, str] = field(default_factory=dict)  # what each instance was started with

    @classmethod
    def start(
        cls,
        cluster: Cluster,
        scratch: Path,
        count: int,
        extra_env: dict[str, str] | None = None,
        *,
        first_port: int | None = None,
    ) -> LocalInstances:
        env = {
            **service_urls(cluster.state),
            # The experiment measures the database, not the per-address upload limit.
            "REPLIKIT_UPLOAD_RATE_LIMIT": "0",
            "REPLIKIT_HEALTH_INTERVAL": "0.5",
            **(extra_env or {}),
        }
        instances = cls(env=env)
        # A random start: experiments running at once on one host (several engineers, or a
        # test run beside a demo) would otherwise all probe 41000 and race for the same port.
        if first_port is None:
            first_port = random.randrange(41000, 49000, 500)
        try:
            for index in range(count):
                port = find_free_port_range(2, start=first_port + 50 * index)
                record_dir = scratch / f"service-{index}"
                record = start_service(
                    record_dir, host="127.0.0.1", port=port, ops_port=port + 1, workers=1, env=env
                )
                instances.records.append((record_dir, record))
        except BaseException:
            instances.close()
            raise
        return instances

    @property
    def load_urls(self) -> list[str]:
        return [record.url for _, record in self.records]

    @property
    def view_url(self) -> str:
        return self.records[0][1].ops_url

    def metrics_texts(self) -> list[str]:
        return [
            httpx.get(f"{record.ops_url}/metrics", timeout=5).text for _, record in self.records
        ]

    def crash(self, index: int) -> int:
        """SIGKILL instance ``index`` (its worker and decode processes: its whole session),
        as a lost process would go; returns the pid it had."""
        pid = self.records[index][1].pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return pid

    def restart(self, index: int) -> ServiceRecord:
        """Start instance ``index`` again on its ports, with its environment."""
        record_dir, old = self.records[index]
        record = start_service(
            record_dir, host=old.host, port=old.port, ops_port=old.ops_port, workers=1, env=self.env
        )
        self.records[index] = (record_dir, record)
        return record

    def close(self) -> None:
        for record_dir, _ in self.records:
            with contextlib.suppress(Exception):
                stop_service(record_dir)
        self.records.clear()


def instance_of(metrics_text: str) -> str | None:
    """The instance id an exposition carries (``replikit_instance_info``), if any."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == INSTANCE_METRIC:
            for sample in family.samples:
                return sample.labels.get("instance")
    return None


@dataclass
class DeployedService:
    """A service already running behind a load balancer (the compose stack's ``lb``)."""

    endpoints: ServiceEndpoints
    kind: str = "compose"
    transport: httpx.BaseTransport | None = None  # tests replace the network

    @classmethod
    def check(cls, endpoints: ServiceEndpoints) -> DeployedService:
        """Fail before the experiment when either URL does not answer as it must."""
        target = cls(endpoints)
        for url, path in ((endpoints.url, "/health"), (endpoints.admin_url, "/cluster")):
            try:
                httpx.get(f"{url}{path}", timeout=5).raise_for_status()
            except httpx.HTTPError as error:
                raise BadInputError(
                    f"{url}{path} does not answer ({error}); bring the compose stack up "
                    "(replikit compose up) and attach it again with 'replikit cluster "
                    "attach-compose' if its ports changed."
                ) from None
        return target

    @property
    def load_urls(self) -> list[str]:
        return [self.endpoints.url]

    @property
    def view_url(self) -> str:
        return self.endpoints.admin_url

    def metrics_texts(self) -> list[str]:
        by_instance: dict[str, str] = {}
        unchanged = 0
        with httpx.Client(
            base_url=self.endpoints.admin_url, timeout=5, transport=self.transport
        ) as client:
            for _ in range(METRICS_MAX_REQUESTS):
                text = client.get("/metrics").text
                instance = instance_of(text) or "unnamed"
                unchanged = unchanged + 1 if instance in by_instance else 0
                by_instance[instance] = text
                if unchanged >= METRICS_SETTLED_AFTER:
                    break
        return list(by_instance.values())

    def close(self) -> None:
        return None


def target_for(
    cluster: Cluster, scratch: Path, local_instances: int, extra_env: dict[str, str] | None = None
) -> ServiceTarget:
    """The deployed service the cluster's state records, else ``local_instances`` new ones."""
    if cluster.state.driver == "compose":
        if cluster.state.service is None:
            raise BadInputError(
                "The attached compose stack has no admin port recorded; set REPLIKIT_ADMIN_PORT "
                "in its env file and run 'replikit cluster attach-compose' again."
            )
        limit = recorded_stack_value(cluster.state, RATE_LIMIT_VARIABLE)
        if limit not in (None, "0"):
            env_file = cluster.state.compose_env_file or ".env"
            raise BadInputError(
                f"The compose stack limits uploads to {limit} a minute per client address and "
                f"all the load comes from one; set {RATE_LIMIT_VARIABLE}=0 in {env_file} and "
                "recreate the app containers (replikit compose up) before the experiment."
            )
        return DeployedService.check(cluster.state.service)
    return LocalInstances.start(cluster, scratch, local_instances, extra_env)
