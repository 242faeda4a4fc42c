"""The CI-sized soak: ``replikit experiment soak --duration 3m`` on a local cluster of its own,
every check passing (about 3.5 minutes)."""

from __future__ import annotations

import json
import subprocess

import pytest

from replication.topology import SyncMode
from tests.integration.clusters import REPLIKIT, reachable_temp_dir, running_cluster

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.destructive
@pytest.mark.timeout(480)
def test_a_three_minute_soak_under_every_local_fault_passes_every_check() -> None:
    results = reachable_temp_dir("replikit-soak-")
    with running_cluster(replicas=2, sync=SyncMode.ON, name="soak") as cluster:
        finished = subprocess.run(
            [
                REPLIKIT, "experiment", "soak", "--data-dir", str(cluster.data_dir),
                "--results", str(results), "--duration", "3m", "--fault-every", "30s",
                "--seed", "1",
            ],
            capture_output=True, text=True, timeout=420, check=False,
        )  # fmt: skip
    (out,) = results.glob("soak-*")
    summary = json.loads((out / "summary.json").read_text())
    failed = [c for c in summary["checks"] if not c["passed"]]
    assert failed == [], (failed, finished.stdout[-3000:], finished.stderr[-3000:])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert summary["verdict"] == "pass"
    # Seed 1 deals every local kind within three minutes, and each was repaired.
    kinds = {f["kind"] for f in summary["faults"] if f["ended"] is not None}
    assert kinds == {"primary_crash", "replica_crash", "replica_lag", "app_crash"}, kinds
    checks = {c["check"]: c for c in summary["checks"]}
    assert "no growth: service RSS" in checks
    assert "no growth: WAL on disk" in checks
    assert summary["anomalies"]["monotonic"]["reads"] > 50
    assert summary["errors"]["failures"] > 0, "the faults should have cost some requests"
    assert (out / "timeline.png").read_bytes().startswith(PNG_MAGIC)
    lines = (out / "watch.jsonl").read_text().splitlines()
    assert len(lines) >= 15  # every 10 s for 3 minutes
    assert "| errors only inside fault windows | **pass** |" in (out / "summary.md").read_text()
