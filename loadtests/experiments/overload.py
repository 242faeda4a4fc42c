"""The overload experiment: offered load past what the service sustains, and what it answers.

First a short closed-loop run (wrk, a few connections per instance, no pauses) finds the rate
the service sustains on one image's metadata (``GET /api/v1/images/{id}``, the hot read); then
open-loop steps (loadtests/experiments/open_loop.py) offer multiples of it, e.g. 0.5x to 4x.
Per step: offered and sent rate, goodput (2xx/s), every answer by status and error code, p50
and p99 latency, what the instances shed (``replikit_shed_requests_total``) and their
concurrency limits, and whether any ``PRIMARY_UNAVAILABLE`` / ``NO_READER_AVAILABLE`` came
while every node was running: a false alarm (issue 25). The load goes to instances started
for the experiment on a local cluster, or to an attached compose stack's load balancer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtests.experiments import plots
from loadtests.experiments.common import Experiment, experiment, results_dir
from loadtests.experiments.open_loop import NO_RETRY_AFTER, LoadResult, run_load
from loadtests.experiments.report import write_overload_report
from loadtests.sample_images import make_image
from replication.cluster import Cluster, cluster_up
from replication.errors import BadInputError
from service import migrate

FALSE_ALARM_CODES = ("PRIMARY_UNAVAILABLE", "NO_READER_AVAILABLE")
GOODPUT_GOAL = 0.8  # of the peak, at the highest multiple (issue 25)
SETTLE_SECONDS = 1.0  # between steps, so one step's queues do not spill into the next
CLOSED_LOOP_CONNECTIONS = 8  # per instance: enough to keep one worker's CPU busy


def metric_sum(metrics_text: str, family_name: str) -> float:
    """The sum of every sample of one family (counters: their ``_total`` samples)."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name == family_name:
            total += sum(s.value for s in family.samples if not s.name.endswith("_created"))
    return total


def _instance_metrics(run: Experiment) -> dict[str, float]:
    text = run.metrics_text()
    return {
        "shed": metric_sum(text, "replikit_shed_requests"),
        "probe_inconclusive": metric_sum(text, "replikit_probe_inconclusive"),
        "concurrency_limit": metric_sum(text, "replikit_concurrency_limit"),
    }


def _nodes_running(cluster: Cluster) -> bool:
    return all(cluster.driver.is_running(node) for node in cluster.state.nodes)


def _seed_image(run: Experiment) -> str:
    """Upload one image and wait until every load URL serves it (replicas replay it)."""
    image = make_image("PNG", 64, seed=25)
    with httpx.Client(timeout=10) as client:
        created = client.post(
            f"{run.urls[0]}/api/v1/images/upload",
            files={"file": (image.filename, image.data, image.content_type)},
        )
        if created.status_code != 201:
            raise RuntimeError(f"could not upload the image to read: {created.text[:200]}")
        image_id = str(created.json()["id"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answers = [client.get(f"{url}/api/v1/images/{image_id}") for url in run.urls * 3]
            if all(answer.status_code == 200 for answer in answers):
                return image_id
            time.sleep(0.2)
    raise RuntimeError(f"image {image_id} was not readable through every URL within 10 s")


def _code(key: str) -> str:
    """The error code of a count's key ("503 SERVER_BUSY" -> "SERVER_BUSY")."""
    parts = key.split(" ")
    return parts[1] if len(parts) > 1 else ""


def _step(
    multiple: float, rate: float, load: LoadResult, before: dict[str, float], after: dict[str, Any]
) -> dict[str, Any]:
    errors = load.errors_by_code()
    false_alarms = sum(n for key, n in errors.items() if _code(key) in FALSE_ALARM_CODES)
    dishonest = sum(
        n
        for key, n in errors.items()
        if key.startswith("5") and (not key.startswith("503 ") or NO_RETRY_AFTER in key)
    )
    return {
        "multiple": multiple,
        "offered_per_second": round(rate, 1),
        "sent_per_second": round(load.rate(load.requests), 1),
        "goodput_per_second": round(load.rate(load.ok), 1),
        "errors_by_code": errors,
        "socket_errors": load.socket_errors,
        "p50_ms": round(load.p50_ms, 2),
        "p99_ms": round(load.p99_ms, 2),
        "shed": int(after["shed"] - before["shed"]),
        "probe_inconclusive": int(after["probe_inconclusive"] - before["probe_inconclusive"]),
        "concurrency_limit": after["concurrency_limit"],
        "nodes_up": after["nodes_up"],
        "false_alarms": false_alarms,
        # No answer at all, or the connection closed under the request: not an honest 503.
        "dishonest_refusals": dishonest
        + sum(n for kind, n in load.socket_errors.items() if kind != "connect"),
    }


def _goals(sustainable: float, steps: list[dict[str, Any]]) -> dict[str, Any]:
    peak = max([sustainable, *(s["goodput_per_second"] for s in steps)])
    top = max(steps, key=lambda s: s["multiple"])
    ratio = top["goodput_per_second"] / peak if peak else 0.0
    alarms = sum(s["false_alarms"] for s in steps if s["nodes_up"])
    dishonest = sum(s["dishonest_refusals"] for s in steps)
    return {
        "peak_goodput_per_second": round(peak, 1),
        "goodput_at_top_over_peak": round(ratio, 3),
        "goodput_goal_met": ratio >= GOODPUT_GOAL,
        "false_alarms_while_nodes_up": alarms,
        "no_false_alarms": alarms == 0,
        "dishonest_refusals": dishonest,
        "every_refusal_honest": dishonest == 0,
    }


def run_overload(
    *,
    data_dir: Path,
    results: Path,
    instances: int,
    multiples: list[float],
    step_seconds: float,
    closed_loop_seconds: float,
    rate: float | None = None,
    service_env: dict[str, str] | None = None,
) -> Path:
    """Run the experiment; returns the results folder (summary.json, summary.md, png)."""
    if not multiples or any(m <= 0 for m in multiples):
        raise BadInputError("--multiples takes positive numbers, e.g. 0.5,1,2,3,4.")
    cluster, _ = cluster_up(data_dir)
    if cluster.state.driver == "compose" and service_env:
        raise BadInputError(
            "--env only applies to service instances the experiment starts; for a compose "
            "stack set the variables in its env file and run 'replikit compose up'."
        )
    migrate.upgrade(cluster.state.owner_url(cluster.state.primary_node))
    out = results_dir(results, "overload")
    started = time.time()
    with experiment(cluster, out) as run:
        run.start_services(instances, extra_env=service_env)
        service = run.describe_service()
        read_path = f"/api/v1/images/{_seed_image(run)}"
        scratch = out / "scripts"
        scratch.mkdir()
        closed = run_load(
            run.urls,
            read_path=read_path,
            rate=None,
            seconds=closed_loop_seconds,
            scratch=scratch,
            closed_loop_connections=CLOSED_LOOP_CONNECTIONS,
        )
        sustainable = closed.rate(closed.ok)
        base = rate if rate is not None else sustainable
        if base <= 0:
            raise RuntimeError(f"the closed-loop run served nothing: {closed.counts}")
        steps = []
        for multiple in sorted(multiples):
            time.sleep(SETTLE_SECONDS)
            before = _instance_metrics(run)
            up_before = _nodes_running(cluster)
            load = run_load(
                run.urls,
                read_path=read_path,
                rate=multiple * base,
                seconds=step_seconds,
                scratch=scratch,
            )
            after: dict[str, Any] = {
                **_instance_metrics(run),
                "nodes_up": up_before and _nodes_running(cluster),
            }
            steps.append(_step(multiple, multiple * base, load, before, after))
    summary = {
        "experiment": "overload",
        "schema_version": 1,
        "started_at": started,
        "parameters": {
            "service_instances": service["instances"],
            "service": service,
            "service_env": service_env or {},
            "read_path": "/api/v1/images/{id}",
            "multiples": sorted(multiples),
            "step_seconds": step_seconds,
            "closed_loop_seconds": closed_loop_seconds,
            "rate_given": rate,
        },
        "closed_loop": {
            "goodput_per_second": round(sustainable, 1),
            "errors_by_code": closed.errors_by_code(),
            "p50_ms": round(closed.p50_ms, 2),
            "p99_ms": round(closed.p99_ms, 2),
        },
        "base_rate_per_second": round(base, 1),
        "steps": steps,
        "goals": _goals(sustainable, steps),
        "plots": ["overload.png"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plots.overload_plot(out / "overload.png", steps, sustainable, "Goodput and p99 under overload")
    write_overload_report(out, summary)
    return out
