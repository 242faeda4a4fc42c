"""The TLS bench (make bench-tls) runs its smallest round end to end, so it cannot rot: two real
clusters (--tls on and off), a service on each answering wrk, connections timed (the bench
itself refuses a TLS side whose connection is not encrypted, or a plain side whose is), and a
pg_basebackup of each primary, with every figure in tls.json and the table in tls.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.benchmarks.tls_cost import MEASURES, MODES, TlsCostOptions, run_bench
from tests.integration.clusters import free_base_port

pytestmark = pytest.mark.slow  # two clusters of its own, about 40 s on 2 idle cores


def test_tls_bench_measures_both_sides_and_writes_the_table(tmp_path: Path) -> None:
    options = TlsCostOptions(
        rounds=1,
        seconds=0.5,
        connections=4,
        warm_up_seconds=0,
        connects=3,
        backup_mb=1,
        base_port=free_base_port(8),
        results_dir=tmp_path,
    )
    out = run_bench(options, log=lambda line: None)
    result = json.loads((out / "tls.json").read_text())

    for mode in MODES:
        (figures,) = result["rounds"][mode]
        assert set(figures) == set(MEASURES), mode
        assert all(value > 0 for value in figures.values()), (mode, figures)
    for measure in MEASURES:
        entry = result["summary"][measure]
        assert entry["tls_over_plain"] > 0, measure
    assert set(result["summary"]["metadata_rps"]) >= {"goal_met", "ratio_range"}
    assert len(result["load_average_per_round"]) == 1
    assert result["tls_cipher"].startswith("TLSv1."), result["tls_cipher"]
    table = (out / "tls.md").read_text()
    assert table.count("\n| ") == 2 + len(MEASURES), table
