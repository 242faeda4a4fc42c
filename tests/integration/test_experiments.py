"""Short real runs of the Locust scenarios and both experiments (a few users, seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from loadtests.experiments.common import experiment, read_requests
from loadtests.experiments.consistency import ConsistencyRun, run_consistency
from loadtests.experiments.consistency_records import read_log
from loadtests.experiments.failover import run_failover
from loadtests.experiments.lag import run_lag
from replication import cluster as clusters
from replication.cluster import Cluster
from replication.lag import LagChange
from replication.topology import SyncMode
from tests.integration.clusters import reachable_temp_dir, running_cluster

SCHEMAS = Path(__file__).resolve().parents[2] / "loadtests" / "experiments" / "schemas"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_valid(summary_path: Path, schema_name: str) -> dict[str, object]:
    summary = json.loads(summary_path.read_text())
    jsonschema.validate(summary, json.loads((SCHEMAS / schema_name).read_text()))
    return dict(summary)


def assert_plots(out: Path, names: list[str]) -> None:
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5000, f"{name} is suspiciously small"


@pytest.mark.parametrize("scenario", ["browse", "upload", "mixed", "ryw"])
def test_each_scenario_makes_requests_without_unexpected_failures(
    migrated: Cluster, scenario: str
) -> None:
    out = reachable_temp_dir("replikit-scenario-")
    with experiment(migrated, out) as run:
        run.start_services(1)
        locust = run.start_locust(
            url=run.urls[0], label=scenario, users=3, seconds=5, tags=[scenario]
        )
        run.wait_locusts(timeout=40)
        records = read_requests([locust])
        assert locust.process.returncode == 0
    names = {r["name"] for r in records}
    failures = [r for r in records if not r["ok"]]
    assert len(records) > 10, f"{scenario} made only {len(records)} requests"
    assert failures == [], failures[:3]
    expected = {
        "browse": "/api/v1/images",
        "upload": "/api/v1/images/upload",
        "mixed": "/api/v1/images/upload",
        "ryw": "/api/v1/images/[id] (ryw)",
    }
    assert expected[scenario] in names
    assert all("/api/v1/images/" not in n or "[id]" in n or n.endswith("upload") for n in names), (
        names
    )  # grouped names, never raw ids
    assert (out / f"locust-{scenario}_stats.csv").exists()
    assert (out / f"locust-{scenario}.html").exists()


def test_lag_experiment_finds_stale_reads_only_without_read_your_writes(
    migrated: Cluster,
) -> None:
    results = reachable_temp_dir("replikit-results-")
    out = run_lag(
        data_dir=migrated.data_dir,
        results=results,
        delays=["1s"],
        modes=["eventual", "read_your_writes"],
        users=4,
        seconds_per_cell=6,
    )
    summary = assert_valid(out / "summary.json", "lag.schema.json")
    cells = {cell["consistency"]: cell for cell in summary["cells"]}  # type: ignore[attr-defined]
    assert cells["eventual"]["ryw_reads"] > 0
    assert cells["eventual"]["stale_reads"] > 0
    assert cells["read_your_writes"]["ryw_reads"] > 0
    assert cells["read_your_writes"]["stale_reads"] == 0
    # Replicas 1 s behind cannot replay within the 0.2 s wait: those reads skip the wait.
    assert cells["read_your_writes"]["ryw_waits"]["skipped"] > 0
    assert_plots(out, ["stale_reads.png", "replica_lag.png"])
    assert "| 1s | eventual |" in (out / "summary.md").read_text()


@pytest.mark.destructive
def test_failover_experiment_with_sync_loses_no_acknowledged_upload() -> None:
    results = reachable_temp_dir("replikit-results-")
    with running_cluster(replicas=2, sync=SyncMode.ON, name="experiment") as cluster:
        out = run_failover(
            data_dir=cluster.data_dir,
            results=results,
            users=4,
            duration=14,
            kill_at=5,
            sync=SyncMode.ON,
        )
        summary = assert_valid(out / "summary.json", "failover.schema.json")
    window = summary["write_unavailability"]
    assert isinstance(window, dict)
    for measured in ("client_seconds", "database_seconds"):
        assert window[measured] is not None, measured
        assert 0 < window[measured] < 10, window
    uploads = summary["acknowledged_uploads"]
    assert isinstance(uploads, dict)
    assert uploads["total"] > 5
    assert uploads["lost"] == 0
    assert summary["new_timeline"] == 2
    assert_plots(out, ["throughput.png", "replica_lag.png"])
    assert (out / "locust-a_stats_history.csv").exists()
    assert "acknowledged uploads lost | 0 of" in (out / "summary.md").read_text()


def test_consistency_experiment_catches_eventual_anomalies_and_none_in_monotonic(
    migrated: Cluster,
) -> None:
    """Replicas 0 and 1.5 s behind, clients alternating two instances: an eventual client
    that lists on the fresh replica and then reads on the stale one sees images vanish within
    the first second or two, so eventual anomalies are near-certain; monotonic must show none."""
    results = reachable_temp_dir("replikit-results-")
    run = ConsistencyRun.parse(
        modes=["eventual", "monotonic"],
        delays=["0", "1500ms"],
        clients=4,
        readers=1,
        seconds_per_mode=4,
        think="25ms",
        instances=2,
        failover=False,
        seed=3,
    )
    out = run_consistency(data_dir=migrated.data_dir, results=results, run=run)
    summary = assert_valid(out / "summary.json", "consistency.schema.json")
    modes = {m["mode"]: m for m in summary["modes"]}  # type: ignore[attr-defined]
    eventual, monotonic = modes["eventual"]["anomalies"], modes["monotonic"]["anomalies"]
    assert eventual["monotonic_violations"] > 0, eventual
    assert eventual["ryw_violations"] > 0, eventual
    for kind in ("ryw_violations", "monotonic_violations", "lost_writes"):
        assert monotonic[kind] == 0, (kind, monotonic["examples"])
    assert monotonic["reads"] > 50
    assert monotonic["writes_verified"] == monotonic["writes_acknowledged"] > 5
    assert modes["monotonic"]["cost"]["token_waits"]["immediate"] > 0
    # Every request is in the log, each client on both instances.
    records = list(read_log(out / "requests.jsonl"))
    assert {(r.client, r.instance) for r in records if r.client >= 0} == {
        (c, i) for c in range(4) for i in range(2)
    }
    assert_plots(out, ["consistency.png", "replica_lag.png"])
    assert "| monotonic |" in (out / "summary.md").read_text()
    # The delays are cleared afterwards: the shared cluster is as it was.
    lags = [clusters.lag(migrated.data_dir, n.name, LagChange()) for n in
            migrated.state.replicas]  # fmt: skip
    assert [lag["apply_delay"] for lag in lags] == [None, None]
