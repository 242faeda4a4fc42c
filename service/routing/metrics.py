"""Prometheus metrics of one service instance (its own registry, so several apps can live in
one process, as they do in the tests)."""

from __future__ import annotations

import os
import socket
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

INSTANCE_METRIC = "replikit_instance_info"


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Behind a load balancer every /metrics answer comes from some instance; this label
        # says which, so a reader can collect one exposition per instance and sum them.
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        Gauge(
            INSTANCE_METRIC,
            "1, labelled with this service instance's id.",
            ["instance"],
            registry=r,
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
        )
        self.lag_bytes = Gauge(
            "replikit_replica_lag_bytes",
            "WAL bytes the replica has not replayed.",
            ["node"],
            registry=r,
        )
        self.role_changes = Counter(
            "replikit_role_changes_total",
            "Role changes the monitor observed, by node and new role.",
            ["node", "role"],
            registry=r,
        )
        self.writer = Gauge(
            "replikit_node_is_writer", "1 for the node taking writes.", ["node"], registry=r
        )
        self.unavailable = Counter(
            "replikit_unavailable_total", "503 responses, by reason.", ["reason"], registry=r
        )
        self.in_flight = Gauge(
            "replikit_in_flight_requests",
            "Requests this instance is handling now (bounded by REPLIKIT_MAX_IN_FLIGHT).",
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
