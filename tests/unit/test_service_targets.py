"""Reading every instance's /metrics through a load balancer that answers from one at a time."""

from __future__ import annotations

import itertools

import httpx

from loadtests.experiments.lag import ryw_outcomes
from loadtests.experiments.targets import DeployedService, instance_of
from replication.topology import ServiceEndpoints

ENDPOINTS = ServiceEndpoints(url="http://lb:8080", admin_url="http://lb:8081")


def exposition(instance: str, timeouts: int) -> str:
    return (
        "# HELP replikit_instance_info 1, labelled with this service instance's id.\n"
        "# TYPE replikit_instance_info gauge\n"
        f'replikit_instance_info{{instance="{instance}"}} 1.0\n'
        "# HELP replikit_ryw_waits_total Read-your-writes checks, by outcome.\n"
        "# TYPE replikit_ryw_waits_total counter\n"
        f'replikit_ryw_waits_total{{outcome="timeout"}} {timeouts}.0\n'
    )


def round_robin(*texts: str) -> httpx.MockTransport:
    answers = itertools.cycle(texts)
    return httpx.MockTransport(lambda request: httpx.Response(200, text=next(answers)))


def test_every_instance_behind_the_balancer_is_counted_once() -> None:
    texts = [exposition("app-1", 3), exposition("app-2", 4), exposition("app-3", 5)]
    target = DeployedService(ENDPOINTS, transport=round_robin(*texts))
    collected = target.metrics_texts()
    assert sorted(instance_of(t) or "" for t in collected) == ["app-1", "app-2", "app-3"]
    assert ryw_outcomes("\n".join(collected)) == {"timeout": 12}


def test_a_single_instance_is_read_once_for_all_the_requests() -> None:
    target = DeployedService(ENDPOINTS, transport=round_robin(exposition("only", 2)))
    assert ryw_outcomes("\n".join(target.metrics_texts())) == {"timeout": 2}
