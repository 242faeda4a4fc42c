"""The side-by-side bench (make bench) runs end to end, so it cannot rot: every configuration
serves requests for a second, and the JSON holds every field the report and docs rely on.

It needs wrk and pgpool2; the bench installs them with apt as root. Without them this test
fails with the bench's own message (the install command), it never skips.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.benchmarks.bench_report import THROUGHPUT_FIELDS
from loadtests.benchmarks.side_by_side import (
    CONFIGURATIONS,
    WORKLOADS,
    BenchOptions,
    run_bench,
)

pytestmark = pytest.mark.destructive  # a scratch cluster of its own, primary killed twice

KILL_FIELDS = {
    "killed",
    "failover_s",
    "observed_s",
    "writes",
    "write_errors",
    "reads",
    "read_errors",
    "write_gap_s",
    "writes_after_failover",
    "reads_ok_after_failover",
}
STALE_FIELDS = {"reads", "stale", "errors", "stale_rate", "read_p50_ms", "read_max_ms"}


def test_bench_runs_every_configuration_and_writes_every_field(tmp_path: Path) -> None:
    options = BenchOptions(
        rounds=1,
        seconds=1.0,
        stale_samples=3,
        kill_seconds=3.5,
        warm_up_seconds=0,
        kill_configurations=["replikit round_robin read_your_writes", "pgpool"],
        results_dir=tmp_path,
    )
    out = run_bench(options, log=lambda line: None)
    result = json.loads((out / "bench.json").read_text())

    for key in ("machine", "options", "rows", "throughput", "memory", "stale_reads"):
        assert result[key], f"bench.json has an empty {key}"
    throughput = result["throughput"]
    for configuration in CONFIGURATIONS:
        workloads = ("metadata", "file") if configuration.name == "ceiling" else WORKLOADS
        for workload in workloads:
            entry = throughput[configuration.name][workload]
            missing = set(THROUGHPUT_FIELDS) - set(entry)
            assert not missing, f"{configuration.name}/{workload} lacks {missing}"
            (sample,) = entry["rounds"]
            assert sample["requests"] - sample["failed"] > 0, (configuration.name, workload)
            assert entry["ok_per_second"] > 0, (configuration.name, workload)
            assert entry["vs_pinned"] is not None, (configuration.name, workload)
            assert entry["vs_baseline"] is not None, (configuration.name, workload)
        if configuration.name != "ceiling":
            (processes,) = result["memory"][configuration.name]
            assert processes, configuration.name
            assert all(p["rss_mib"] > 0 for p in processes), configuration.name

    assert set(result["stale_reads"]) >= {"pgpool", "replikit round_robin read_your_writes"}
    for name, entry in result["stale_reads"].items():
        assert set(entry) >= STALE_FIELDS, name
        assert entry["reads"] == options.stale_samples, name

    assert set(result["primary_kill"]) == set(options.kill_configurations)
    for name, entry in result["primary_kill"].items():
        assert set(entry) >= KILL_FIELDS, name
        assert entry["writes"] > 0, name
        assert entry["reads"] > 0, name

    report = (out / "bench.md").read_text()
    for configuration in CONFIGURATIONS:
        assert f"| {configuration.name} |" in report
