"""Both experiments on a compose-attached cluster, through the CLI as a user runs them: the
nodes are a local cluster acted on by the fake compose (v2, attached without a project name,
so running nodes are listed with compose ps), and the "stack's" service is a
``replikit serve`` instance standing in for the load balancer (its public URL, and its
operations listener as the admin URL).
The experiments must drive that URL, never start instances of their own, and leave it and
the cluster running."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.experiments.targets import LocalInstances
from replication.cluster import Cluster
from replication.topology import ServiceEndpoints, require_state
from service import migrate
from tests.integration.clusters import (
    free_base_port,
    reachable_temp_dir,
    replikit,
    running_cluster,
)
from tests.integration.compose_fakes import FakeCompose, fake_compose
from tests.integration.test_experiments import assert_plots, assert_valid


@pytest.fixture
def compose_stack() -> Iterator[tuple[Cluster, FakeCompose, str]]:
    with running_cluster(replicas=2, name="compose-exp") as local:
        migrate.upgrade(local.state.owner_url(local.state.primary_node))
        scratch = reachable_temp_dir("replikit-compose-exp-service-")
        # A port of its own: parallel test runs on this host start services at 41000 too.
        lb = LocalInstances.start(local, scratch, 1, first_port=free_base_port(2))
        try:
            url = lb.load_urls[0]
            # The instance's operations listener plays the load balancer's admin port.
            endpoints = ServiceEndpoints(url=url, admin_url=lb.view_url)
            with fake_compose(local, persona="v2", project=None, service=endpoints) as fake:
                yield local, fake, url
        finally:
            lb.close()
            shutil.rmtree(scratch, ignore_errors=True)


def experiment(fake: FakeCompose, results: Path, *args: str) -> tuple[Path, dict[str, object]]:
    done = replikit(
        "experiment", *args, "--data-dir", str(fake.data_dir), "--results", str(results),
        env=fake.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (out,) = results.iterdir()
    return out, json.loads((out / "summary.json").read_text())


@pytest.mark.destructive
def test_failover_experiment_drives_the_stacks_load_balancer_and_rejoins_through_compose(
    compose_stack: tuple[Cluster, FakeCompose, str], tmp_path: Path
) -> None:
    local, fake, url = compose_stack
    out, summary = experiment(
        fake,
        tmp_path,
        "failover",
        "--users",
        "4",
        "--duration",
        "9",
        "--kill-at",
        "3",
        "--sync",
        "off",
    )
    assert_valid(out / "summary.json", "failover.schema.json")
    assert_plots(out, ["throughput.png", "replica_lag.png"])
    assert summary["parameters"]["service"] == {  # type: ignore[index]
        "kind": "compose",
        "load_urls": [url],
        "instances": 1,
    }
    assert summary["old_primary"] == "pg0"
    assert summary["acknowledged_uploads"]["lost"] == 0  # type: ignore[index]
    assert f"the compose load balancer {url}" in (out / "summary.md").read_text()
    verbs = fake.verbs()
    assert fake.programs() == {"compose"}  # docker compose ..., v2
    assert ["kill", "-s", "SIGQUIT", "pg0"] in verbs
    assert ["start", "pg0"] in verbs  # rejoined through compose
    assert (out / "requests-a.jsonl").exists()
    assert not (out / "requests-b.jsonl").exists()  # one load URL, one Locust
    state = require_state(fake.data_dir)
    assert state.fenced == []
    assert all(local.driver.is_running(node) for node in local.state.nodes)  # left running


def test_lag_experiment_injects_lag_over_sql_and_reads_metrics_from_the_admin_url(
    compose_stack: tuple[Cluster, FakeCompose, str], tmp_path: Path
) -> None:
    _, fake, _ = compose_stack
    out, summary = experiment(
        fake, tmp_path, "lag", "--apply-delay", "1s", "--consistency", "eventual,read_your_writes",
        "--users", "4", "--duration", "8",
    )  # fmt: skip
    assert_valid(out / "summary.json", "lag.schema.json")
    assert_plots(out, ["stale_reads.png", "replica_lag.png"])
    cells = {c["consistency"]: c for c in summary["cells"]}  # type: ignore[attr-defined]
    assert cells["eventual"]["stale_reads"] > 0
    assert cells["read_your_writes"]["stale_reads"] == 0
    waits = cells["read_your_writes"]["ryw_waits"]
    assert sum(waits.values()) > 0  # counted from the admin URL's /metrics
    # Lag goes over SQL: no compose call is needed (the nodes were all running).
    assert [v for v in fake.verbs() if v[0] != "ps"] == []


def test_an_upload_rate_limit_on_the_stack_is_refused_before_the_load(
    cluster: Cluster, tmp_path: Path
) -> None:
    endpoints = ServiceEndpoints(url="http://127.0.0.1:9", admin_url="http://127.0.0.1:9")
    with fake_compose(cluster, service=endpoints, stack_env="") as fake:
        done = replikit(
            "experiment", "lag", "--data-dir", str(fake.data_dir), "--results", str(tmp_path),
            env=fake.env,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "limits uploads to 60 a minute" in done.stderr
    assert "REPLIKIT_UPLOAD_RATE_LIMIT=0" in done.stderr


def test_consistency_experiment_goes_through_the_stacks_load_balancer(
    compose_stack: tuple[Cluster, FakeCompose, str], tmp_path: Path
) -> None:
    local, fake, url = compose_stack
    out, summary = experiment(
        fake, tmp_path, "consistency", "--consistency", "eventual,monotonic",
        "--apply-delay", "0,1500ms", "--clients", "4", "--duration", "4",
    )  # fmt: skip
    assert_valid(out / "summary.json", "consistency.schema.json")
    assert_plots(out, ["consistency.png", "replica_lag.png"])
    assert summary["parameters"]["service"] == {  # type: ignore[index]
        "kind": "compose",
        "load_urls": [url],
        "instances": 1,
    }
    modes = {m["mode"]: m["anomalies"] for m in summary["modes"]}  # type: ignore[attr-defined]
    assert modes["eventual"]["monotonic_violations"] > 0
    assert modes["monotonic"]["monotonic_violations"] == 0
    assert modes["monotonic"]["ryw_violations"] == 0
    assert f"the compose load balancer {url}" in (out / "summary.md").read_text()
    # Lag goes over SQL, and the stack is left running with no delay left behind.
    assert [v for v in fake.verbs() if v[0] != "ps"] == []
    assert all(local.driver.is_running(node) for node in local.state.nodes)
