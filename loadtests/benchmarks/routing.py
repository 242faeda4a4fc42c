"""Benchmark the session router's decision: what one ``Router.choose_reader()`` costs.

    .venv/bin/python -m loadtests.benchmarks.routing --calls 200000

No cluster: the router is given a primary and two healthy replicas as probes would leave them,
and each call is timed on its own; the median is printed per consistency mode. What the router
costs a request end to end (routed against pinned throughput) is a side-by-side run:

    .venv/bin/python -m loadtests.benchmarks.side_by_side --configuration pinned \\
        --configuration "replikit round_robin eventual" --workload metadata \\
        --rounds 9 --seconds 5 --no-stale --no-kills
"""

from __future__ import annotations

import argparse
import statistics
import time

from service.routing.consistency import Consistency, RequestRouting
from service.routing.metrics import ServiceMetrics
from service.routing.nodes import Probe, Role
from service.routing.router import Router
from service.settings import Settings

FAKE_URL = "postgresql+asyncpg://app:pw@127.0.0.1:{port}/replikit"
MODES = (Consistency.EVENTUAL, Consistency.BOUNDED, Consistency.READ_YOUR_WRITES)


def decision_nanoseconds(consistency: Consistency, calls: int = 200_000) -> float:
    """Median wall time of Router.choose_reader over fake, healthy node states."""
    settings = Settings(
        _env_file=None,
        primary_url=FAKE_URL.format(port=7000),
        replica_urls=[FAKE_URL.format(port=7001), FAKE_URL.format(port=7002)],
    )
    router = Router(settings, ServiceMetrics())
    for index, node in enumerate(router.nodes):
        node.probe = Probe(index > 0, 1, 1000, 1000, False, f"pg{index}")
        node.role = Role.PRIMARY if index == 0 else Role.REPLICA
        node.lag_bytes, node.lag_seconds = 0, 0.0
    router.monitor.writer = router.nodes[0]
    routing = RequestRouting(consistency=consistency, token=900)  # token known replayed
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        router.choose_reader(routing, set())
        samples.append(clock() - started)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="timed calls per mode")
    options = parser.parse_args(argv)
    if options.calls < 1:
        parser.error("--calls must be 1 or more.")
    for mode in MODES:
        median = decision_nanoseconds(mode, options.calls) / 1000
        print(f"routing decision ({mode.value}): median {median:.2f} µs")


if __name__ == "__main__":
    main()
