"""Overload on a real cluster and real service processes (issue 25): a saturating open-loop
load with a tiny pool and short timeouts gets no PRIMARY_UNAVAILABLE / NO_READER_AVAILABLE
while every node is up, and every refusal is a 503 with Retry-After and a JSON code; and
``replikit experiment overload --quick`` runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import pytest

from loadtests.experiments.open_loop import NO_RETRY_AFTER, run_load
from replication.cluster import Cluster
from tests.integration.clusters import reachable_temp_dir, replikit
from tests.integration.live_service import live_service
from tests.integration.service_fixtures import image_bytes

SCHEMAS = Path(__file__).resolve().parents[2] / "loadtests" / "experiments" / "schemas"
FALSE_ALARMS = ("PRIMARY_UNAVAILABLE", "NO_READER_AVAILABLE")


def nodes_running(cluster: Cluster) -> bool:
    return all(cluster.driver.is_running(node) for node in cluster.state.nodes)


@pytest.mark.parametrize("adaptive", ["true", "false"], ids=["adaptive", "static-cap"])
def test_saturating_load_gets_only_honest_refusals_and_no_false_alarms(
    migrated: Cluster, adaptive: str, tmp_path: Path
) -> None:
    tiny = {
        "adaptive_concurrency": adaptive,
        "db_pool_size": "1",
        "db_max_overflow": "0",
        "db_pool_timeout": "0.05",
        "db_connect_timeout": "0.2",
        "write_timeout": "0.1",  # every command's timeout: 100 ms under a saturated loop
    }
    with live_service(migrated, **tiny) as live:
        created = httpx.post(
            f"{live.url}/api/v1/images/upload",
            files={"file": ("o.png", image_bytes("PNG"), "image/png")},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert nodes_running(migrated)
        load = run_load(
            [live.url],
            read_path=f"/api/v1/images/{created.json()['id']}",
            rate=4000,  # several times what one worker on this machine serves
            seconds=5,
            scratch=tmp_path,
        )
        assert nodes_running(migrated)
        health = httpx.get(f"{live.url}/health", timeout=5)
        log = live.log_text()
    errors = load.errors_by_code()
    assert load.ok > 0, load.counts
    assert sum(errors.values()) > 0, f"the load did not saturate the service: {load.counts}"
    alarms = {key: n for key, n in errors.items() if any(code in key for code in FALSE_ALARMS)}
    assert not alarms, f"false alarms with every node up: {errors}"
    for key in errors:
        assert key.startswith("503 "), errors
        assert NO_RETRY_AFTER not in key, errors
        assert key.split(" ")[1] in {"SERVER_BUSY", "DATABASE_BUSY"}, errors
    assert not load.socket_errors, load
    assert health.status_code == 200
    assert "event=node_suspect" not in log


def test_overload_experiment_quick_runs_end_to_end(migrated: Cluster) -> None:
    results = reachable_temp_dir("replikit-results-")
    done = replikit(
        "experiment",
        "overload",
        "--quick",
        "--data-dir",
        str(migrated.data_dir),
        "--results",
        str(results),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (out,) = results.glob("overload-*")
    summary = json.loads((out / "summary.json").read_text())
    jsonschema.validate(summary, json.loads((SCHEMAS / "overload.schema.json").read_text()))
    assert [step["multiple"] for step in summary["steps"]] == [0.5, 2.0, 4.0]
    assert summary["closed_loop"]["goodput_per_second"] > 0
    assert all(step["goodput_per_second"] > 0 for step in summary["steps"])
    assert all(step["nodes_up"] for step in summary["steps"])
    assert summary["goals"]["false_alarms_while_nodes_up"] == 0
    assert summary["goals"]["every_refusal_honest"], summary["steps"]
    assert (out / "overload.png").read_bytes().startswith(b"\x89PNG")
    assert "| 4.0x |" in (out / "summary.md").read_text()


def test_overload_experiment_refuses_bad_input(migrated: Cluster) -> None:
    done = replikit(
        "experiment", "overload", "--multiples", "1,x", "--data-dir", str(migrated.data_dir)
    )
    assert done.returncode != 0
    assert "--multiples takes numbers" in done.stdout + done.stderr
    done = replikit("experiment", "overload", "--env", "NOEQUALS", "--data-dir", "/nonexistent")
    assert done.returncode != 0
    assert "--env takes KEY=VALUE" in done.stdout + done.stderr
