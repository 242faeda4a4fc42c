"""Prometheus metrics of one service instance (its own registry, so several apps can live in
one process, as they do in the tests).

With ``replikit serve --workers N`` (N > 1) the instance is N processes behind one socket, and a
scrape reaches whichever worker accepts it. The server then runs prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by :mod:`service.http_server` before the
workers start): every worker writes its values to files there and ``/metrics`` merges them, so
one scrape shows the whole instance. Counters and histograms add up across workers; each gauge
says how to merge (``multiprocess_mode``), ignored outside that mode.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

INSTANCE_METRIC = "replikit_instance_info"
# Set by the server for its workers, so they report one instance, not one per process.
INSTANCE_ENV = "REPLIKIT_INSTANCE_ID"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Behind a load balancer every /metrics answer comes from some instance; this label
        # says which, so a reader can collect one exposition per instance and sum them.
        self.instance = os.environ.get(INSTANCE_ENV) or new_instance_id()
        Gauge(
            INSTANCE_METRIC,
            "1, labelled with this service instance's id.",
            ["instance"],
            registry=r,
            multiprocess_mode="max",
        ).labels(instance=self.instance).set(1)
        self.routed = Counter(
            "replikit_routed_total",
            "Sessions routed, by node and kind.",
            ["node", "kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "replikit_read_fallbacks_total",
            "Reads sent to the primary because no replica could serve them, by reason.",
            ["reason"],
            registry=r,
        )
        self.ryw_waits = Counter(
            "replikit_ryw_waits_total",
            "Read-your-writes checks, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.ryw_wait_seconds = Histogram(
            "replikit_ryw_wait_seconds",
            "Time spent waiting for a replica to replay a token.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        self.lag_seconds = Gauge(
            "replikit_replica_lag_seconds",
            "Replica lag in seconds as the router sees it.",
            ["node"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.lag_bytes = Gauge(
            "replikit_replica_lag_bytes",
            "WAL bytes the replica has not replayed.",
            ["node"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.role_changes = Counter(
            "replikit_role_changes_total",
            "Role changes the monitor observed, by node and new role.",
            ["node", "role"],
            registry=r,
        )
        self.writer = Gauge(
            "replikit_node_is_writer",
            "1 for the node taking writes.",
            ["node"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.certificate_expiry = Gauge(
            "replikit_node_certificate_expiry_timestamp_seconds",
            "When the TLS certificate the node presents expires (Unix time), as the monitor "
            "verified it (only with REPLIKIT_DB_SSL_ROOT_CERT).",
            ["node"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.unavailable = Counter(
            "replikit_unavailable_total", "503 responses, by reason.", ["reason"], registry=r
        )
        self.probe_inconclusive = Counter(
            "replikit_probe_inconclusive_total",
            "Probes that timed out while this process's event loop ran late: not counted "
            "against the node.",
            ["node"],
            registry=r,
        )
        self.in_flight = Gauge(
            "replikit_in_flight_requests",
            "Requests this instance is handling now (REPLIKIT_MAX_IN_FLIGHT bounds each worker).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.concurrency_limit = Gauge(
            "replikit_concurrency_limit",
            "Requests this instance admits at once now (the adaptive limit of each worker, "
            "summed; REPLIKIT_MAX_IN_FLIGHT per worker when it is off).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shed = Counter(
            "replikit_shed_requests_total",
            "Requests refused with 503 SERVER_BUSY, by reason (max_in_flight: the static cap; "
            "limit: past the adaptive limit with its queue full; queue_timeout: no slot freed "
            "up within REPLIKIT_QUEUE_TIMEOUT).",
            ["reason"],
            registry=r,
        )
        self.requests = Counter(
            "replikit_http_requests_total",
            "HTTP requests.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "replikit_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text ``/metrics`` serves: this registry, or every worker's files merged."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        merged.register(WorkersMerged(self.registry, directory))
        return generate_latest(merged)


class WorkersMerged(Collector):
    """Every worker's values (prometheus-client's multiprocess files), plus this process's
    declaration of each metric no worker has written yet: the files only hold metrics with a
    value, and a dashboard or scraper should see ``# TYPE`` for every metric from the start,
    as it does with one worker."""

    def __init__(self, local: CollectorRegistry, directory: str) -> None:
        self.local = local
        self.workers = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        written = list(self.workers.collect())  # type: ignore[no-untyped-call]
        yield from written
        names = {family.name for family in written}
        for family in self.local.collect():
            if family.name not in names:
                yield family
